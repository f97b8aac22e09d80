//! Decisions by WebAssembly policy plugins against a real `tenure serve`:
//! authorization by control, challenges for unheld names, names of other
//! tenants refused, malicious plugins denied (server keeps serving), audit log,
//! and a plugin swapped at run time with no failed request.

use crate::support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use instant_acme::{Account, AuthorizationStatus, Identifier, NewOrder, OrderStatus, RetryPolicy};
use support::dns::TestDns;
use support::{ServeOptions, Server, TenantCreds};
use tenure_engine::policy::builtin::built_plugin_path;

async fn account(server: &Server, creds: &TenantCreds) -> Account {
    support::eab_account(server, creds).await
}

/// Orders a held name and downloads the certificate without touching a challenge.
async fn issue_by_control(account: &Account, name: &str) -> Result<String, String> {
    let ids = [Identifier::Dns(name.into())];
    let mut order = account.new_order(&NewOrder::new(&ids)).await.map_err(|e| e.to_string())?;
    if order.state().status != OrderStatus::Ready {
        return Err(format!("order is {:?}, not ready", order.state().status));
    }
    order.finalize().await.map_err(|e| e.to_string())?;
    order.poll_certificate(&RetryPolicy::new().timeout(Duration::from_secs(20))).await.map_err(|e| e.to_string())
}

fn install(data: &Path, plugin: &str, tenant: &str) -> String {
    let path = built_plugin_path(plugin);
    support::tenure_cli(data, &["plugin", "install", path.to_str().unwrap(), "--tenant", tenant]).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_names_need_no_challenge_and_plugins_fail_closed() {
    support::install_crypto_provider();
    let dns = TestDns::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, ServeOptions::new(Some(dns.addr)));

    let corp = support::add_tenant(&data, "corp", &["corp.example"]);
    let rival = support::add_overlapping_tenant(&data, "rival", &["corp.example", "rival.example"]);
    let out = support::tenure_cli(
        &data,
        &["resource", "add", "--tenant", "corp", "--kind", "vm", "--name", "www.corp.example", "--attr", "lifetime-seconds=3600", "--json"],
    );
    let resource: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(resource["id"].as_str().unwrap().starts_with("res_"));
    support::tenure_cli(&data, &["resource", "add", "--tenant", "rival", "--kind", "lb", "--zone", "rival.example"]);

    let corp_account = account(&server, &corp).await;
    let rival_account = account(&server, &rival).await;

    // Held: ready at once, certificate with the resource's lifetime.
    let chain = issue_by_control(&corp_account, "www.corp.example").await.expect("issued by control");
    support::openssl_verify(&server.root_pem(), &chain, dir.path());
    let der = rustls::pki_types::CertificateDer::from(x509_parser::pem::parse_x509_pem(chain.as_bytes()).unwrap().1.contents);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert!(lifetime <= 3600 + 120, "lifetime {lifetime}s follows the resource attribute");

    // Released between newOrder and finalize: issuance is refused.
    let out = support::tenure_cli(&data, &["resource", "add", "--tenant", "corp", "--kind", "vm", "--name", "gone.corp.example", "--json"]);
    let gone: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let mut order = corp_account.new_order(&NewOrder::new(&[Identifier::Dns("gone.corp.example".into())])).await.unwrap();
    assert_eq!(order.state().status, OrderStatus::Ready);
    support::tenure_cli(&data, &["resource", "release", gone["id"].as_str().unwrap()]);
    let err = order.finalize().await.expect_err("released before finalize");
    assert!(err.to_string().contains("no longer held"), "{err}");

    // Not held: the order waits for a challenge, and finalize before it fails.
    let ids = [Identifier::Dns("api.corp.example".into())];
    let mut order = corp_account.new_order(&NewOrder::new(&ids)).await.unwrap();
    assert_eq!(order.state().status, OrderStatus::Pending);
    let mut authzs = order.authorizations();
    let authz = authzs.next().await.unwrap().unwrap();
    assert_eq!(authz.status, AuthorizationStatus::Pending);
    let err = order.finalize().await.expect_err("finalize before validation is refused");
    assert!(err.to_string().contains("orderNotReady"), "{err}");

    // Held by another tenant: refused, whatever plugins say.
    let err = rival_account.new_order(&NewOrder::new(&[Identifier::Dns("www.corp.example".into())])).await.err().expect("refused");
    assert!(err.to_string().contains("rejectedIdentifier"), "{err}");
    // ...and the rival's own zone works by control.
    issue_by_control(&rival_account, "a.b.rival.example").await.expect("zone held by control");

    // Malicious tenant plugins: each denies with its reason; other tenants keep being served.
    let rival_account = Arc::new(rival_account);
    for (plugin, expected) in [
        ("deny-all", "does not allow"),
        ("infinite-loop", "deadline"),
        ("memory-hog", "memory"),
        ("trap", "trapped"),
        ("huge-answer", "oversized"),
    ] {
        let digest = install(&data, plugin, "corp");
        let ra = rival_account.clone();
        let good = tokio::spawn(async move {
            for i in 0..3 {
                issue_by_control(&ra, &format!("n{i}.rival.example")).await.expect("other tenants keep being served");
            }
        });
        let err = corp_account.new_order(&NewOrder::new(&[Identifier::Dns("www.corp.example".into())])).await.err();
        let err = err.unwrap_or_else(|| panic!("{plugin} must deny")).to_string();
        assert!(err.contains("unauthorized") && err.to_lowercase().contains(expected), "{plugin}: {err}");
        good.await.unwrap();
        let audit = support::tenure_cli(&data, &["audit", "--tenant", "corp", "--json", "--limit", "1"]);
        let rec: serde_json::Value = serde_json::from_str(audit.lines().last().unwrap()).unwrap();
        assert_eq!(rec["outcome"], "deny", "{plugin}");
        assert!(rec["plugins"].as_array().unwrap().iter().any(|d| d == &serde_json::json!(digest)), "{plugin}: {rec}");
        assert!(rec["reason"].as_str().unwrap().to_lowercase().contains(expected), "{plugin}: {rec}");
    }
    // Back to a good plugin: issuance resumes.
    install(&data, "registry-control", "corp");
    issue_by_control(&corp_account, "www.corp.example").await.expect("good plugin allows again");
    let audit = support::tenure_cli(&data, &["audit", "--tenant", "corp", "--json", "--limit", "1"]);
    let rec: serde_json::Value = serde_json::from_str(audit.lines().last().unwrap()).unwrap();
    assert_eq!(rec["outcome"], "allow");
    assert_eq!(rec["hook"], "issuance");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_swapped_at_run_time_drops_no_request() {
    support::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, ServeOptions::new(None));
    let shop = support::add_tenant(&data, "shop", &["shop.example"]);
    support::tenure_cli(&data, &["resource", "add", "--tenant", "shop", "--kind", "lb", "--zone", "shop.example"]);
    let account = Arc::new(account(&server, &shop).await);

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (account, stop) = (account.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                issue_by_control(&account, &format!("w{w}-{n}.shop.example")).await.expect("no request fails during a swap");
                n += 1;
            }
            n
        }));
    }
    let data2 = data.clone();
    tokio::task::spawn_blocking(move || {
        for i in 0..6 {
            install(&data2, if i % 2 == 0 { "registry-control" } else { "control-or-challenge" }, "shop");
            std::thread::sleep(Duration::from_millis(150));
        }
    })
    .await
    .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap();
    }
    assert!(total > 0);
    let list = support::tenure_cli(&data, &["plugin", "list", "--json"]);
    assert!(list.contains("tenant:shop"));
    drop(server);
}

#[test]
fn plugin_check_reports_imports_and_refuses_wasi() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = support::tenure_cli(&data, &["plugin", "check", built_plugin_path("registry-control").to_str().unwrap()]);
    assert!(out.contains("digest: ") && out.contains("import: tenure:policy/registry@0.2.0"), "{out}");
    let bad = support::tenure_command(&data)
        .args(["plugin", "check", built_plugin_path("uses-fs").to_str().unwrap(), "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("wasi"), "{}", String::from_utf8_lossy(&bad.stderr));
    // Not WebAssembly at all: one line that says so.
    let text = dir.path().join("policy.txt");
    std::fs::write(&text, "allow everything\n").unwrap();
    let out = support::tenure_command(&data).args(["plugin", "check"]).arg(&text).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("tenure: {}: not a WebAssembly component (it does not start with \\0asm)\n", text.display())
    );
    // Installing needs a scope, and the error names both.
    let out = support::tenure_command(&data)
        .args(["plugin", "install", built_plugin_path("registry-control").to_str().unwrap(), "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("one of --operator or --tenant") && err.contains("Usage: tenure plugin install"), "{err}");

    support::add_tenant(&data, "eval", &["eval.example"]);
    support::tenure_cli(&data, &["resource", "add", "--tenant", "eval", "--kind", "vm", "--name", "a.eval.example"]);
    let input = dir.path().join("req.json");
    std::fs::write(&input, r#"{"account":"acct","tenant":"eval","trigger":"acme-order","identifiers":[{"type":"dns","value":"a.eval.example"},{"type":"dns","value":"b.eval.example"}],"profile":"default","requested-lifetime-seconds":3600}"#).unwrap();
    let out = support::tenure_cli(
        &data,
        &[
            "plugin",
            "eval",
            built_plugin_path("registry-control").to_str().unwrap(),
            "--hook",
            "issuance",
            "--input",
            input.to_str().unwrap(),
        ],
    );
    assert!(out.contains("b.eval.example") && out.contains("deny"), "{out}");

    // The eval a tenant's engineer runs: inline JSON, any hook, the tenant's whole chain.
    let eval = |args: &[&str]| {
        let mut all = vec!["plugin", "eval"];
        all.extend_from_slice(args);
        support::tenure_command(&data).args(&all).arg("--data").arg(&data).output().unwrap()
    };
    let ok = |out: std::process::Output| -> serde_json::Value {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // A typo in the request is refused by name.
    let typo = eval(&["--chain", "--hook", "issuance", "--input", r#"{"tenant":"eval","requestedLifetime":60}"#]);
    assert!(!typo.status.success() && String::from_utf8_lossy(&typo.stderr).contains("requestedLifetime"), "{typo:?}");
    // A tenant that does not exist is refused, not evaluated against an empty registry.
    let ghost = r#"{"account":"a","tenant":"ghost","trigger":"acme-order","identifiers":[{"type":"dns","value":"a.eval.example"}],"profile":"default","requested-lifetime-seconds":3600}"#;
    let out = eval(&["--chain", "--hook", "issuance", "--input", ghost]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no tenant"), "{out:?}");
    // The chain (the built-in default) allows the held name by control.
    let held = r#"{"account":"a","tenant":"eval","trigger":"acme-order","identifiers":[{"type":"dns","value":"a.eval.example"}],"profile":"default","requested-lifetime-seconds":3600}"#;
    let v = ok(eval(&["--chain", "--hook", "issuance", "--input", held]));
    assert!(v["decision"]["allow"].is_object(), "{v}");
    assert_eq!(v["verdicts"].as_array().unwrap().len(), 1);
    // Renewal, built from the registry as the server would (a rekey of the resource's key),
    // with a candidate plugin in the tenant's place: two verdicts, and deny-all's denial.
    let vm = support::tenure_cli(&data, &["resource", "list", "--tenant", "eval", "--json"]);
    let vm: serde_json::Value = serde_json::from_str(vm.lines().next().unwrap()).unwrap();
    let deny = built_plugin_path("deny-all");
    let v = ok(eval(&[deny.to_str().unwrap(), "--chain", "--hook", "renewal", "--resource", vm["id"].as_str().unwrap()]));
    assert_eq!(v["request"]["trigger"], "rekey", "{v}");
    assert_eq!(v["verdicts"].as_array().unwrap().len(), 2, "{v}");
    assert!(v["decision"]["deny"].is_string(), "{v}");
}

/// The example tenant plugin, copied out of the tree as a tenant's engineer would:
/// its native unit tests pass with plain `cargo test`, it builds for wasm32-wasip2,
/// and the component passes the check and decides by its rules (renewals included).
#[test]
fn the_example_tenant_plugin_works_when_copied_out_of_the_tree() {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let (src, dst) = (entry.path(), to.join(entry.file_name()));
            if src.is_dir() {
                if entry.file_name() != "target" {
                    copy(&src, &dst);
                }
            } else {
                std::fs::copy(&src, &dst).unwrap();
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let example = dir.path().join("my-policy");
    copy(&root.join("examples/tenant-plugin"), &example);
    // Shared across runs: the build is the slow part, not what is tested.
    let target = root.join("target/example-tenant-plugin");
    let cargo = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO"))
            .current_dir(&example)
            .args(args)
            .arg("--target-dir")
            .arg(&target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR")
            .output()
            .expect("cargo runs");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "cargo {args:?} in a copy of examples/tenant-plugin failed:\n{text}");
        text
    };
    let tests = cargo(&["test", "--locked"]);
    assert!(tests.contains("test result: ok") && !tests.contains(" 0 passed"), "{tests}");
    cargo(&["build", "--release", "--locked", "--target", "wasm32-wasip2"]);
    let wasm = target.join("wasm32-wasip2/release/tenant_plugin.wasm");

    let data = dir.path().join("data");
    let out = support::tenure_cli(&data, &["plugin", "check", wasm.to_str().unwrap()]);
    assert!(out.contains("export: decide-issuance") && out.contains("import: tenure:policy/registry@0.2.0"), "{out}");
    support::add_tenant(&data, "corp", &["corp.example"]);
    support::tenure_cli(&data, &["resource", "add", "--tenant", "corp", "--kind", "vm", "--name", "www.corp.example"]);
    let eval = |input: &str| {
        support::tenure_cli(
            &data,
            &["plugin", "eval", wasm.to_str().unwrap(), "--hook", "issuance", "--input", example.join(input).to_str().unwrap()],
        )
    };
    let out = eval("requests/issuance.json");
    assert!(out.contains("\"allow\"") && out.contains("7200"), "held and in the zone: allowed for 2 h: {out}");
}

/// A plugin built against tenure:policy@0.1.0 is refused at check and install, with
/// the version it was built against and how to rebuild it.
#[test]
fn a_0_1_0_plugin_is_refused_at_install_with_how_to_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    support::add_tenant(&data, "corp", &["corp.example"]);
    let legacy = built_plugin_path("legacy-v0-1");
    for args in [vec!["plugin", "check", legacy.to_str().unwrap()], vec!["plugin", "install", legacy.to_str().unwrap(), "--tenant", "corp"]]
    {
        let out = support::tenure_command(&data).args(&args).arg("--data").arg(&data).output().unwrap();
        assert!(!out.status.success(), "{args:?} accepted a 0.1.0 plugin");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("built against tenure:policy@0.1.0; this server speaks tenure:policy@0.2.0"), "{args:?}: {err}");
        assert!(err.contains("cargo build --release --target wasm32-wasip2"), "{args:?}: {err}");
    }
    let list = support::tenure_cli(&data, &["plugin", "list"]);
    assert_eq!(
        list.trim(),
        "no plugins installed; defaults: public-challenge for the public tenant, control-or-challenge for the others",
        "nothing installed"
    );
    assert_eq!(support::tenure_cli(&data, &["plugin", "list", "--json"]), "", "JSON Lines: nothing when empty");
}

/// A tenant plugin that implements only `decide-issuance` keeps renewals going: the SDK's
/// default decides them by its issuance rules, through the real server's sweep, and the
/// audit log records the input as the plugin saw it (WIT spelling, trigger `renewal`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuance_only_tenant_plugin_keeps_renewals() {
    support::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut options = ServeOptions::new(None);
    // The server sweeps as it starts only; the test renews with `renew --now --resource`.
    options.extra = vec!["--renewal-interval".into(), "3600".into()];
    let server = Server::start(&data, options);
    let corp = support::add_tenant(&data, "corp", &["corp.example"]);
    let out = support::tenure_cli(&data, &["resource", "add", "--tenant", "corp", "--kind", "vm", "--name", "www.corp.example", "--json"]);
    let vm: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let vm = vm["id"].as_str().unwrap().to_owned();
    let digest = install(&data, "issuance-only", "corp");
    let acct = account(&server, &corp).await;
    issue_by_control(&acct, "www.corp.example").await.expect("held: issued");

    let out = support::tenure_cli(&data, &["renew", "--now", "--resource", &vm, "--json"]);
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["renewed"], 1, "{report}");
    let audit = support::tenure_cli(&data, &["audit", "--tenant", "corp", "--json", "--limit", "1"]);
    let rec: serde_json::Value = serde_json::from_str(audit.lines().last().unwrap()).unwrap();
    assert_eq!((&rec["hook"], &rec["outcome"]), (&serde_json::json!("renewal"), &serde_json::json!("allow")), "{rec}");
    assert!(rec["plugins"].as_array().unwrap().iter().any(|d| d == &serde_json::json!(digest)), "{rec}");
    assert_eq!(rec["input"]["trigger"], "renewal", "{rec}");
    assert_eq!(rec["input"]["resources"], serde_json::json!([vm]), "{rec}");
    assert!(rec["input"]["requested-lifetime-seconds"].as_u64().is_some_and(|s| s > 0), "{rec}");
    assert_eq!(rec["grant"]["lifetime_seconds"], 3600, "issuance-only's cap, applied to the renewal: {rec}");
    drop(server);
}
