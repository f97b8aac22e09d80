//! Several stateless `tenure serve` processes on one PostgreSQL database, as a
//! deployment runs them behind a load balancer: a nonce from one server is
//! good once at any server, one issuance may hop between servers at every
//! step, a change made by the CLI (a tenant, a plugin) reaches every running
//! server at once and their CRLs agree byte for byte, real clients on every
//! server lose no certificate when one server is SIGKILLed, and two servers
//! sweeping the same database issue exactly one successor per certificate and
//! exactly one certificate per provisioned resource.
//!
//! Every test makes its own database on the test cluster (`TENURE_TEST_POSTGRES`)
//! and fails, never skips, without one.

use crate::support;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use instant_acme::{Account, Identifier, NewOrder};
use serde_json::{Value, json};
use support::raw::{EcKey, RawClient, jws};
use support::{ServeOptions, Server, TenantCreds};

/// Runs a `tenure` CLI command on `data` against the database `db`; stdout.
fn cli(data: &Path, db: &str, args: &[&str]) -> String {
    let out = Command::new(support::tenure_bin())
        .env(support::PLUGIN_DEADLINE.0, support::PLUGIN_DEADLINE.1)
        .args(args)
        .arg("--data")
        .arg(data)
        .arg("--database")
        .arg(db)
        .output()
        .expect("run tenure");
    assert!(
        out.status.success(),
        "tenure {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `tenure serve` on `data` and the database `db`.
fn serve(data: &Path, db: &str, dns: Option<SocketAddr>, extra: &[&str]) -> Server {
    let mut options = ServeOptions::new(dns);
    options.extra = [&["--database", db][..], extra].concat().iter().map(|s| s.to_string()).collect();
    Server::start(data, options)
}

/// A data directory for another server of the deployment whose first
/// directory is `first`: mode 0700, with copies (0600) of the deployment's
/// key-encryption key and admin token.
fn join_dir(first: &Path, dir: &Path) -> PathBuf {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().mode(0o700).create(dir).expect("make the data directory");
    for f in ["ca-key.kek", "admin-token"] {
        std::fs::copy(first.join(f), dir.join(f)).unwrap_or_else(|e| panic!("copy {f}: {e}"));
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    dir.to_path_buf()
}

/// Starts the first server on a fresh database (it makes the CA), then `more`
/// servers joining it; each with its own data directory under `root`.
fn deployment(root: &Path, db: &str, count: usize, dns: Option<SocketAddr>, extra: &[&str]) -> Vec<Server> {
    let first = root.join("s0");
    let mut servers = vec![serve(&first, db, dns, extra)];
    for i in 1..count {
        let dir = join_dir(&first, &root.join(format!("s{i}")));
        servers.push(serve(&dir, db, dns, extra));
    }
    let root_pem = std::fs::read(servers[0].root_pem()).unwrap();
    for s in &servers[1..] {
        assert_eq!(std::fs::read(s.root_pem()).unwrap(), root_pem, "every server of the deployment has the same root");
    }
    servers
}

/// Every server's log, for a failure message.
fn logs(servers: &[&Server]) -> String {
    servers.iter().map(|s| format!("--- server {} ---\n{}", s.listen, s.log())).collect::<Vec<_>>().join("\n")
}

/// `url` with its scheme and authority replaced by `server`'s: the request goes there.
fn on(server: &Server, url: &str) -> String {
    let rest = url.strip_prefix("https://").unwrap_or_else(|| panic!("not an https URL: {url}"));
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    format!("https://{}{path}", server.listen)
}

fn cert_list(data: &Path, db: &str) -> Vec<Value> {
    cli(data, db, &["cert", "list", "--json", "--limit", "100000"]).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn serial_of(chain: &str) -> String {
    crate::lifecycle::serial_of(chain)
}

fn leaf_der(chain: &str) -> Vec<u8> {
    support::crl::leaf_der(chain)
}

async fn wait_async<T, F: std::future::Future<Output = Option<T>>>(what: &str, timeout: Duration, mut f: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// RFC 7638 thumbprint of a P-256 JWK.
fn thumbprint(key: &EcKey) -> String {
    let jwk = key.jwk();
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#, jwk["x"].as_str().unwrap(), jwk["y"].as_str().unwrap());
    B64.encode(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()))
}

/// Orders held names (no challenge); the PEM chain.
async fn issue(account: &Account, name: &str) -> Result<String, String> {
    crate::lifecycle::issue(account, &[name], None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonce_and_a_validation_cross_servers() {
    support::install_crypto_provider();
    let db = support::fresh_database();
    let dns = support::dns::TestDns::start().await;
    let dir = tempfile::tempdir().unwrap();
    let servers = deployment(dir.path(), &db, 3, Some(dns.addr), &[]);
    let (a, b, c) = (&servers[0], &servers[1], &servers[2]);
    let all = [a, b, c];

    // A nonce from A: accepted once by B, then badNonce at C.
    let ca = RawClient::new(&a.directory_url(), &a.root_pem()).await;
    let mut cb = RawClient::new(&b.directory_url(), &b.root_pem()).await;
    let mut cc = RawClient::new(&c.directory_url(), &c.root_pem()).await;
    let nonce = ca.nonce().await;
    let payload = json!({ "termsOfServiceAgreed": true }).to_string();
    let url = cb.url("newAccount");
    assert!(url.contains(&b.listen.port().to_string()), "B's directory names B: {url}");
    let protected = json!({ "alg": "ES256", "nonce": nonce, "url": url, "jwk": cb.key.jwk() });
    let r = cb.post_jws(&url, &jws(&cb.key, &protected, &payload)).await;
    assert!(r.status == 201 || r.status == 200, "A's nonce at B: {} {}\n{}", r.status, String::from_utf8_lossy(&r.body), logs(&all));
    let url = cc.url("newAccount");
    let protected = json!({ "alg": "ES256", "nonce": nonce, "url": url, "jwk": cc.key.jwk() });
    let r = cc.post_jws(&url, &jws(&cc.key, &protected, &payload)).await;
    assert_eq!(r.status, 400, "the nonce replayed at C: {}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["type"], "urn:ietf:params:acme:error:badNonce", "{}", r.json());

    // One issuance, each step at another server, with one account key.
    let mut ca = ca;
    ca.register().await;
    let kid = ca.kid.clone().expect("the account URL");
    for (client, server) in [(&mut cb, b), (&mut cc, c)] {
        client.key = EcKey::from_pkcs8(&ca.key.pkcs8);
        client.kid = Some(on(server, &kid));
    }
    let name = "hop.example.test";
    let r = cb.post(&cb.url("newOrder"), &json!({ "identifiers": [{ "type": "dns", "value": name }] }).to_string()).await;
    assert_eq!(r.status, 201, "newOrder at B: {}\n{}", String::from_utf8_lossy(&r.body), logs(&all));
    let order_url = r.header("location").expect("order URL");
    let order = r.json();
    let authz_url = order["authorizations"][0].as_str().unwrap().to_string();
    let finalize_url = order["finalize"].as_str().unwrap().to_string();

    let r = cc.post(&on(c, &authz_url), "").await;
    assert_eq!(r.status, 200, "authorization at C: {}", String::from_utf8_lossy(&r.body));
    let authz = r.json();
    let challenge = authz["challenges"].as_array().unwrap().iter().find(|ch| ch["type"] == "dns-01").expect("a dns-01 challenge").clone();
    let key_authorization = format!("{}.{}", challenge["token"].as_str().unwrap(), thumbprint(&cc.key));
    dns.set_txt(
        &format!("_acme-challenge.{name}"),
        vec![B64.encode(ring::digest::digest(&ring::digest::SHA256, key_authorization.as_bytes()))],
    );
    let r = cc.post(&on(c, challenge["url"].as_str().unwrap()), "{}").await;
    assert_eq!(r.status, 200, "challenge response at C: {}\n{}", String::from_utf8_lossy(&r.body), logs(&all));

    let authz_on_a = on(a, &authz_url);
    let ca_ref = &ca;
    wait_async("the authorization, polled at A, to be valid", Duration::from_secs(30), || {
        let url = authz_on_a.clone();
        async move {
            let r = ca_ref.post(&url, "").await;
            let status = r.json()["status"].as_str().unwrap_or("").to_string();
            assert_ne!(status, "invalid", "validation failed: {}", r.json());
            (status == "valid").then_some(())
        }
    })
    .await;

    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap().serialize_request(&key).unwrap();
    let r = cb.post(&on(b, &finalize_url), &json!({ "csr": B64.encode(csr.der()) }).to_string()).await;
    assert_eq!(r.status, 200, "finalize at B: {}\n{}", String::from_utf8_lossy(&r.body), logs(&all));

    let order_on_a = on(a, &order_url);
    let certificate_url = wait_async("the order, polled at A, to be valid", Duration::from_secs(30), || {
        let url = order_on_a.clone();
        async move {
            let o = ca_ref.post(&url, "").await.json();
            assert_ne!(o["status"], "invalid", "{o}");
            o["certificate"].as_str().filter(|_| o["status"] == "valid").map(str::to_string)
        }
    })
    .await;
    let r = cc.post(&on(c, &certificate_url), "").await;
    assert_eq!(r.status, 200, "certificate at C: {}", String::from_utf8_lossy(&r.body));
    let chain = String::from_utf8(r.body).unwrap();
    support::openssl_verify(&a.root_pem(), &chain, dir.path());
}

/// The CRL a server serves at `path`, or None while it cannot.
async fn get_crl(server: &Server, path: &str) -> Option<Vec<u8>> {
    let root = reqwest::Certificate::from_pem(&std::fs::read(server.root_pem()).unwrap()).unwrap();
    let client = reqwest::Client::builder().add_root_certificate(root).build().unwrap();
    let r = client.get(format!("https://{}{path}", server.listen)).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    Some(r.bytes().await.ok()?.to_vec())
}

fn crl_has(der: &[u8], serial: &str) -> bool {
    let (_, crl) = x509_parser::parse_x509_crl(der).expect("a DER CRL");
    crl.iter_revoked_certificates()
        .any(|r| r.raw_serial().iter().skip_while(|b| **b == 0).map(|b| format!("{b:02x}")).collect::<String>() == serial)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_on_one_server_reach_the_others_without_restart() {
    support::install_crypto_provider();
    let db = support::fresh_database();
    let dir = tempfile::tempdir().unwrap();
    let servers = deployment(dir.path(), &db, 3, None, &[]);
    let all: Vec<&Server> = servers.iter().collect();
    // The CLI runs against yet another data directory of the deployment.
    let admin = join_dir(&servers[0].data, &dir.path().join("cli"));

    // A tenant added after the servers started: usable on every server at once.
    let out = cli(&admin, &db, &["tenant", "add", "corp", "--permit", "corp.example", "--json"]);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let creds = TenantCreds {
        tenant: v["tenant"].as_str().unwrap().into(),
        eab_kid: v["eab_kid"].as_str().unwrap().into(),
        eab_hmac: v["eab_hmac"].as_str().unwrap().into(),
    };
    cli(&admin, &db, &["resource", "add", "--tenant", "corp", "--kind", "zone", "--zone", "zone.corp.example"]);
    let mut accounts = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        let account = support::eab_account(s, &creds).await;
        issue(&account, &format!("new{i}.zone.corp.example"))
            .await
            .unwrap_or_else(|e| panic!("the new tenant at {}: {e}\n{}", s.listen, logs(&all)));
        accounts.push(account);
    }

    // A tenant plugin installed by the CLI denies on every server; removed, every server allows again.
    let deny = tenure_engine::policy::builtin::built_plugin_path("deny-all");
    cli(&admin, &db, &["plugin", "install", deny.to_str().unwrap(), "--tenant", "corp"]);
    for (i, (s, account)) in servers.iter().zip(&accounts).enumerate() {
        let ids = [Identifier::Dns(format!("denied{i}.zone.corp.example"))];
        let err = account.new_order(&NewOrder::new(&ids)).await.err();
        let err = err.unwrap_or_else(|| panic!("{} ignored the installed deny-all plugin", s.listen)).to_string();
        assert!(err.contains("unauthorized"), "{}: {err}", s.listen);
    }
    cli(&admin, &db, &["plugin", "remove", "--tenant", "corp"]);
    for (i, (s, account)) in servers.iter().zip(&accounts).enumerate() {
        issue(account, &format!("allowed{i}.zone.corp.example"))
            .await
            .unwrap_or_else(|e| panic!("{} still denies after the plugin's removal: {e}", s.listen));
    }

    // A revocation (the resource released) shows in every server's CRL, byte for byte the same.
    let out = cli(&admin, &db, &["resource", "add", "--tenant", "corp", "--kind", "vm", "--name", "gone.corp.example", "--json"]);
    let gone: Value = serde_json::from_str(out.trim()).unwrap();
    let chain = issue(&accounts[0], "gone.corp.example").await.expect("issued by control");
    let serial = serial_of(&chain);
    let url = support::crl::crl_url(&chain);
    let path = url.strip_prefix("https://").and_then(|r| r.find('/').map(|i| r[i..].to_string())).expect("a CRL path");
    assert!(path.starts_with("/crl/"), "{url}");
    cli(&admin, &db, &["resource", "release", gone["id"].as_str().unwrap()]);
    let crls = wait_async("the revocation in every server's CRL", Duration::from_secs(30), || {
        let (servers, path, serial) = (&servers, &path, &serial);
        async move {
            let mut crls = Vec::new();
            for s in servers {
                let crl = get_crl(s, path).await?;
                if !crl_has(&crl, serial) {
                    return None;
                }
                crls.push(crl);
            }
            Some(crls)
        }
    })
    .await;
    for (s, crl) in servers.iter().zip(&crls).skip(1) {
        assert!(crl == &crls[0], "the CRL from {} differs from {}'s", s.listen, servers[0].listen);
    }
    // And once more, after the servers' own refreshes had a chance: still one CRL.
    let mut again = Vec::new();
    for s in &servers {
        again.push(get_crl(s, &path).await.expect("the CRL"));
    }
    assert!(again.iter().all(|c| c == &again[0]), "the servers' CRLs differ");
}

/// A certificate a client received: (client, serial, leaf DER).
type Got = (&'static str, String, Vec<u8>);

fn run_ok(out: &std::process::Output) -> bool {
    out.status.success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_each_server_and_a_sigkill_lose_no_certificate() {
    support::install_crypto_provider();
    let db = support::fresh_database();
    let dns = support::dns::TestDns::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut servers = deployment(dir.path(), &db, 3, Some(dns.addr), &[]);
    let data_a = servers[0].data.clone();
    let creds = {
        let out = cli(&data_a, &db, &["tenant", "add", "fleet", "--permit", "fleet.example", "--json"]);
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        TenantCreds {
            tenant: v["tenant"].as_str().unwrap().into(),
            eab_kid: v["eab_kid"].as_str().unwrap().into(),
            eab_hmac: v["eab_hmac"].as_str().unwrap().into(),
        }
    };
    cli(&data_a, &db, &["resource", "add", "--tenant", "fleet", "--kind", "zone", "--zone", "fleet.example"]);

    // Every certificate a client received: (client, serial, leaf DER).
    let received: Arc<Mutex<Vec<Got>>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(150);

    // certbot on A: standalone http-01, one run per name.
    let certbot = {
        let (received, failures) = (received.clone(), failures.clone());
        let (directory, root, port) = (servers[0].directory_url(), servers[0].root_pem(), servers[0].options.http01_port);
        let work = dir.path().join("certbot");
        tokio::spawn(async move {
            for i in 0..2 {
                let domain = format!("certbot{i}.example.test");
                let out = tokio::process::Command::new("certbot")
                    .env("REQUESTS_CA_BUNDLE", &root)
                    .args(["--non-interactive", "--server", &directory])
                    .arg("--config-dir")
                    .arg(work.join("conf"))
                    .arg("--work-dir")
                    .arg(work.join("work"))
                    .arg("--logs-dir")
                    .arg(work.join("logs"))
                    .args(["certonly", "--standalone", "--agree-tos", "--email", "certbot@example.test"])
                    .args(["--preferred-challenges", "http", "--http-01-address", "127.0.0.1", "--http-01-port", &port.to_string()])
                    .args(["-d", &domain])
                    .output()
                    .await
                    .expect("certbot is installed");
                if run_ok(&out) {
                    let chain = std::fs::read_to_string(work.join("conf/live").join(&domain).join("fullchain.pem")).unwrap();
                    received.lock().unwrap().push(("certbot", serial_of(&chain), leaf_der(&chain)));
                } else {
                    failures.lock().unwrap().push(format!("certbot {domain}: {}", String::from_utf8_lossy(&out.stderr)));
                }
            }
        })
    };

    // lego on B, which is killed under it: a failed run is retried until it succeeds.
    let lego_runs = Arc::new(Mutex::new(0usize));
    let lego = {
        let (received, lego_runs) = (received.clone(), lego_runs.clone());
        let (directory, root, port) = (servers[1].directory_url(), servers[1].root_pem(), servers[1].options.http01_port);
        let work = dir.path().join("lego");
        tokio::spawn(async move {
            let mut got = 0;
            let mut i = 0;
            while got < 3 && Instant::now() < deadline {
                let domain = format!("lego{i}.example.test");
                i += 1;
                *lego_runs.lock().unwrap() += 1;
                let out = tokio::process::Command::new("lego")
                    .env("LEGO_CA_CERTIFICATES", &root)
                    .args(["--server", &directory, "--accept-tos", "--email", "lego@example.test"])
                    .arg("--path")
                    .arg(&work)
                    .args(["--domains", &domain, "--http", "--http.port", &format!("127.0.0.1:{port}"), "run"])
                    .output()
                    .await
                    .expect("lego is installed");
                if run_ok(&out) {
                    let chain = std::fs::read_to_string(work.join(format!("certificates/{domain}.crt"))).unwrap();
                    received.lock().unwrap().push(("lego", serial_of(&chain), leaf_der(&chain)));
                    got += 1;
                } else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            got
        })
    };

    // instant-acme on C: a loop of issuances by control until the others are done.
    let account = support::eab_account(&servers[2], &creds).await;
    let looper = {
        let (received, failures, stop) = (received.clone(), failures.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                match issue(&account, &format!("n{i}.fleet.example")).await {
                    Ok(chain) => received.lock().unwrap().push(("instant-acme", serial_of(&chain), leaf_der(&chain))),
                    Err(e) => failures.lock().unwrap().push(format!("instant-acme n{i}: {e}")),
                }
                i += 1;
            }
        })
    };

    // SIGKILL B once lego got a certificate from it (its next run is under way), then restart it.
    let count = |who: &str| received.lock().unwrap().iter().filter(|r| r.0 == who).count();
    while count("lego") < 1 {
        assert!(Instant::now() < deadline, "lego got no certificate from B:\n{}", servers[1].log());
        assert!(failures.lock().unwrap().is_empty(), "{:?}", failures.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = servers.remove(1);
    let (b_data, b_options, b_listen) = (b.data.clone(), b.options.clone(), b.listen);
    b.kill();
    let b = Server::start_on(&b_data, b_options, b_listen);
    servers.insert(1, b);

    certbot.await.unwrap();
    let lego_got = lego.await.unwrap();
    stop.store(true, Ordering::SeqCst);
    looper.await.unwrap();
    let all: Vec<&Server> = servers.iter().collect();
    assert!(failures.lock().unwrap().is_empty(), "clients of A and C failed: {:#?}\n{}", failures.lock().unwrap(), logs(&all));
    assert_eq!(lego_got, 3, "lego kept failing after B's restart:\n{}", logs(&all));
    let received = std::mem::take(&mut *received.lock().unwrap());
    assert_eq!(count_of(&received, "certbot"), 2);
    assert!(count_of(&received, "instant-acme") > 0);

    // Every certificate received is downloadable from another server than its own.
    let data_c = servers[2].data.clone();
    for (who, serial, der) in &received {
        let data = if *who == "instant-acme" { &data_a } else { &data_c };
        let shown: Value = serde_json::from_str(cli(data, &db, &["cert", "show", serial, "--pem", "--json"]).trim()).unwrap();
        let pem = shown["pem"].as_str().unwrap_or_else(|| panic!("no PEM for {serial}: {shown}"));
        assert_eq!(&leaf_der(pem), der, "the stored certificate {serial} ({who}) is not the one received");
    }
    // The database holds what was received, plus at most the one lego run B
    // died under (issued, the answer lost), and that one is whole.
    let stored = cert_list(&data_a, &db);
    let stored_serials: HashSet<String> = stored.iter().map(|c| c["serial"].as_str().unwrap().to_string()).collect();
    assert_eq!(stored_serials.len(), stored.len(), "a serial listed twice");
    let received_serials: HashSet<String> = received.iter().map(|r| r.1.clone()).collect();
    assert_eq!(received_serials.len(), received.len(), "a serial received twice");
    let missing: Vec<&String> = received_serials.difference(&stored_serials).collect();
    assert!(missing.is_empty(), "received but not stored: {missing:?}");
    let extra: Vec<&Value> = stored.iter().filter(|c| !received_serials.contains(c["serial"].as_str().unwrap())).collect();
    let lego_failed_runs = *lego_runs.lock().unwrap() - 3;
    assert!(extra.len() <= lego_failed_runs.min(1), "stored but never received: {extra:#?} ({lego_failed_runs} failed lego runs)");
    for c in &extra {
        let names = c["identifiers"].to_string();
        assert!(names.contains("lego"), "an unreceived certificate not from the killed server's client: {c}");
        let serial = c["serial"].as_str().unwrap();
        let shown: Value = serde_json::from_str(cli(&data_c, &db, &["cert", "show", serial, "--pem", "--json"]).trim()).unwrap();
        support::openssl_verify(&servers[0].root_pem(), shown["pem"].as_str().unwrap(), dir.path());
    }
    eprintln!(
        "{} certificates received ({} certbot, {} lego, {} instant-acme), {} stored",
        received.len(),
        count_of(&received, "certbot"),
        count_of(&received, "lego"),
        count_of(&received, "instant-acme"),
        stored.len()
    );
}

fn count_of(received: &[Got], who: &str) -> usize {
    received.iter().filter(|r| r.0 == who).count()
}

/// A platform key (base64 SPKI DER) for a provisioned resource.
fn platform_key() -> String {
    use rcgen::PublicKeyData as _;
    let key = rcgen::KeyPair::generate().unwrap();
    base64::engine::general_purpose::STANDARD.encode(key.subject_public_key_info())
}

fn wait_for<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    crate::lifecycle::wait_for(what, timeout, f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sweeping_servers_issue_exactly_one_successor_each() {
    support::install_crypto_provider();
    const N: usize = 24;
    let db = support::fresh_database();
    let dir = tempfile::tempdir().unwrap();
    // First no sweep but the one at start: the originals are issued undisturbed.
    let servers = deployment(dir.path(), &db, 2, None, &["--renewal-interval", "3600"]);
    let data = servers[0].data.clone();
    let out = cli(&data, &db, &["tenant", "add", "corp", "--permit", "corp.example", "--json"]);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let creds = TenantCreds {
        tenant: v["tenant"].as_str().unwrap().into(),
        eab_kid: v["eab_kid"].as_str().unwrap().into(),
        eab_hmac: v["eab_hmac"].as_str().unwrap().into(),
    };
    let out = cli(
        &data,
        &db,
        &[
            "resource",
            "add",
            "--tenant",
            "corp",
            "--kind",
            "zone",
            "--zone",
            "fleet.corp.example",
            "--attr",
            "lifetime-seconds=8",
            "--json",
        ],
    );
    let zone = serde_json::from_str::<Value>(out.trim()).unwrap()["id"].as_str().unwrap().to_string();
    let mut originals = HashSet::new();
    let accounts = [support::eab_account(&servers[0], &creds).await, support::eab_account(&servers[1], &creds).await];
    for i in 0..N {
        let chain = issue(&accounts[i % 2], &format!("n{i}.fleet.corp.example")).await.expect("issued by control");
        originals.insert(serial_of(&chain));
    }
    assert_eq!(originals.len(), N);
    // Successors live an hour: each original is renewed once, and its successor not again.
    cli(&data, &db, &["resource", "set-attr", &zone, "--attr", "lifetime-seconds=3600"]);
    let (dirs, options): (Vec<PathBuf>, Vec<ServeOptions>) = servers.iter().map(|s| (s.data.clone(), s.options.clone())).unzip();
    drop(servers);

    // Two servers sweeping every second the same database.
    let servers: Vec<Server> = dirs
        .iter()
        .zip(options)
        .map(|(d, mut o)| {
            o.extra = ["--database", &db, "--renewal-interval", "1"].iter().map(|s| s.to_string()).collect();
            Server::start(d, o)
        })
        .collect();
    let all: Vec<&Server> = servers.iter().collect();
    let certs = wait_for("every original renewed", Duration::from_secs(60), || {
        let certs = cert_list(&data, &db);
        let done = certs.iter().filter(|c| originals.contains(c["serial"].as_str().unwrap()) && c["renewal"] == "renewed").count();
        (done == N && certs.len() >= 2 * N).then_some(certs)
    });
    let mut successors: HashMap<String, Vec<String>> = HashMap::new();
    for c in &certs {
        if let Some(p) = c["predecessor"].as_str() {
            successors.entry(p.to_string()).or_default().push(c["serial"].as_str().unwrap().to_string());
        }
    }
    for o in &originals {
        let s = successors.get(o).cloned().unwrap_or_default();
        assert_eq!(s.len(), 1, "certificate {o} has successors {s:?}\n{}", logs(&all));
    }
    assert_eq!(certs.len(), 2 * N, "two sweepers issued {} certificates for {N} renewals:\n{certs:#?}", certs.len() - N);
    // Both servers swept (each logs its sweeps), and a few more sweeps change nothing.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(cert_list(&data, &db).len(), 2 * N, "certificates issued after every original was renewed");

    // Provisioning: N resources added while both servers run, one certificate each.
    let key = platform_key();
    let mut resources = Vec::new();
    for i in 0..N {
        let attr = format!("public-key={key}");
        let out = cli(
            &data,
            &db,
            &[
                "resource",
                "add",
                "--tenant",
                "corp",
                "--kind",
                "vm",
                "--name",
                &format!("p{i}.corp.example"),
                "--attr",
                "certificate=auto",
                "--attr",
                &attr,
                "--attr",
                "lifetime-seconds=3600",
                "--json",
            ],
        );
        resources.push(serde_json::from_str::<Value>(out.trim()).unwrap()["id"].as_str().unwrap().to_string());
    }
    let per_resource =
        |certs: &[Value], id: &str| certs.iter().filter(|c| c["resources"].as_array().unwrap().iter().any(|x| x == id)).count();
    wait_for("every resource provisioned", Duration::from_secs(60), || {
        let certs = cert_list(&data, &db);
        resources.iter().all(|r| per_resource(&certs, r) > 0).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    let certs = cert_list(&data, &db);
    for r in &resources {
        assert_eq!(per_resource(&certs, r), 1, "resource {r} has {} certificates\n{}", per_resource(&certs, r), logs(&all));
    }
    assert_eq!(certs.len(), 3 * N);
}
