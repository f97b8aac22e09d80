//! Certificates no one asks for, against a real `tenure serve`: a resource
//! added with `certificate=auto` gets its certificate with no ACME client,
//! delivered with its key encrypted to the resource's age recipient (opened by
//! the `age` tool) or for the platform's own key; the sweep replaces both with
//! a new key; the policy, suspension, resumption, leases and release act on it
//! and are notified through signed webhooks; and a SIGKILL in a burst of
//! creations leaves every resource with exactly one certificate.

use crate::admin::{call, client};
use crate::lifecycle::{Webhook, cert_list, cert_show, server_with, wait_for};
use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::Method as M;
use serde_json::{Value, json};

/// Adds a resource through the admin API (the server's delivery bounds apply); its id.
async fn admin_add(server: &support::Server, tenant: &str, name: &str, attributes: Value) -> String {
    let token = std::fs::read_to_string(server.data.join("admin-token")).unwrap().trim().to_string();
    let body = json!({ "tenant": tenant, "kind": "vm", "names": [name], "attributes": attributes });
    let (status, v) =
        call(&client(server), &token, M::POST, format!("https://{}/v1/resources", server.admin), Some(body.to_string().into_bytes())).await;
    assert!(status == 201 || status == 200, "{status} {v}");
    v["id"].as_str().unwrap().to_string()
}

/// A new age identity in `dir`: (identity file, its public recipient).
fn age_identity(dir: &Path) -> (PathBuf, String) {
    let file = dir.join("identity.txt");
    let out = Command::new("age-keygen").arg("-o").arg(&file).output().expect("age-keygen (Debian package age) must be installed");
    assert!(out.status.success(), "age-keygen: {}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&file).unwrap();
    let recipient = text.lines().find_map(|l| l.strip_prefix("# public key: ")).expect("a public key line").trim().to_string();
    (file, recipient)
}

/// `age -d -i identity file`: the plaintext, as a platform would get it.
fn age_decrypt(identity: &Path, file: &Path) -> Vec<u8> {
    let out = Command::new("age").arg("-d").arg("-i").arg(identity).arg(file).output().expect("age must be installed");
    assert!(out.status.success(), "age -d: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// The public key of a PEM private key and of a PEM certificate, as openssl prints them.
fn openssl_public(args: &[&str], input: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn key_matches_leaf(key_pem: &[u8], chain_pem: &[u8]) -> bool {
    openssl_public(&["pkey", "-pubout"], key_pem) == openssl_public(&["x509", "-pubkey", "-noout"], chain_pem)
}

/// The events a webhook received, in order, as JSON bodies.
fn events(hook: &Webhook) -> Vec<Value> {
    hook.received.lock().unwrap().iter().map(|(_, body)| serde_json::from_slice(body).unwrap()).collect()
}

fn wait_event(hook: &Webhook, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    wait_for(what, Duration::from_secs(30), || events(hook).into_iter().find(|e| f(e)))
}

/// The serial `DIR/current` points at.
fn current(dir: &Path) -> Option<String> {
    std::fs::read_link(dir.join("current")).ok().map(|p| p.to_string_lossy().into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_gets_its_certificate_and_key_with_no_client() {
    support::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let root = dir.path().join("drops");
    std::fs::create_dir(&root).unwrap();
    let server = server_with(
        &data,
        &["--renewal-interval", "0.3", "--delivery-root", root.to_str().unwrap(), "--webhook-allow", "http://127.0.0.1"],
    );
    support::add_tenant(&data, "corp", &["corp.example"]);
    let hook = Webhook::start().await;
    let (identity, recipient) = age_identity(dir.path());
    let drop = root.join("web");
    let attributes = json!({
        "certificate": "auto",
        "key-recipient": recipient,
        "delivery-dir": drop.display().to_string(),
        "delivery-webhook": hook.url,
        "lifetime-seconds": "60",
    });
    let id = admin_add(&server, "corp", "web.corp.example", attributes).await;

    // Within seconds: the chain verifies against the root, `age -d` opens the
    // key, and the key is the leaf's.
    let first = wait_for("the provisioned certificate", Duration::from_secs(20), || current(&drop));
    let chain = std::fs::read_to_string(drop.join("current/chain.pem")).unwrap();
    support::openssl_verify(&server.root_pem(), &chain, dir.path());
    let key = age_decrypt(&identity, &drop.join("current/key.pem.age"));
    assert!(String::from_utf8_lossy(&key).contains("BEGIN PRIVATE KEY"));
    assert!(key_matches_leaf(&key, chain.as_bytes()), "the delivered key is the leaf's");
    let shown = cert_show(&data, &first);
    assert_eq!(
        (shown["trigger"].as_str(), shown["key_source"].as_str(), shown["generation"].as_i64()),
        (Some("provisioning"), Some("recipient"), Some(1))
    );
    assert!(shown["account"].is_null(), "no ACME account asked: {shown}");
    let provisioned = wait_event(&hook, "certificate.provisioned", |e| e["event"] == "certificate.provisioned");
    assert_eq!(provisioned["serial"], first.as_str());
    assert!(provisioned["key_age"].as_str().unwrap().starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
    // No private key in clear anywhere tenure keeps things.
    for f in walk(&data) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(!bytes.windows(key.len().min(64)).any(|w| w == &key[..key.len().min(64)]), "{} holds the key", f.display());
    }

    // The sweep replaces both without a request: new serial, new key, generation 2.
    let second = wait_for("the renewed certificate", Duration::from_secs(60), || current(&drop).filter(|s| *s != first));
    let chain2 = std::fs::read_to_string(drop.join("current/chain.pem")).unwrap();
    let key2 = age_decrypt(&identity, &drop.join("current/key.pem.age"));
    assert_ne!(key2, key, "a new key");
    assert!(key_matches_leaf(&key2, chain2.as_bytes()));
    support::openssl_verify(&server.root_pem(), &chain2, dir.path());
    let shown = cert_show(&data, &second);
    assert_eq!((shown["predecessor"].as_str(), shown["generation"].as_i64()), (Some(first.as_str()), Some(2)), "{shown}");
    let renewed = wait_event(&hook, "certificate.renewed", |e| e["event"] == "certificate.renewed" && e["serial"] == second.as_str());
    assert!(renewed["key_age"].is_string());
    assert_eq!(cert_list(&data, &["--resource", &id]).len(), 2);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

/// A platform key (base64 SPKI DER) for a resource.
fn platform_key() -> String {
    use base64::Engine as _;
    let key = rcgen::KeyPair::generate().unwrap();
    use rcgen::PublicKeyData as _;
    base64::engine::general_purpose::STANDARD.encode(key.subject_public_key_info())
}

fn audit(data: &Path, tenant: &str) -> Vec<Value> {
    support::tenure_cli(data, &["audit", "--tenant", tenant, "--json"]).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_follows_the_policy_and_the_resource_state() {
    support::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = server_with(&data, &["--renewal-interval", "0.3", "--webhook-allow", "http://127.0.0.1"]);
    support::add_tenant(&data, "corp", &["corp.example"]);
    support::add_tenant(&data, "strict", &["strict.example"]);
    let hook = Webhook::start().await;
    let key = platform_key();
    let add = async |tenant: &str, name: &str, extra: &[(&str, &str)]| {
        let mut attributes = json!({ "certificate": "auto", "public-key": key, "delivery-webhook": hook.url });
        for (k, v) in extra {
            attributes[*k] = (*v).into();
        }
        admin_add(&server, tenant, name, attributes).await
    };
    let certs = |id: &str| cert_list(&data, &["--resource", id]);

    // A tenant plugin that denies: nothing issued, the reason audited.
    let deny = tenure_engine::policy::builtin::built_plugin_path("deny-all");
    support::tenure_cli(&data, &["plugin", "install", deny.to_str().unwrap(), "--tenant", "strict"]);
    let denied = add("strict", "vm.strict.example", &[]).await;
    let record = wait_for("the audited denial", Duration::from_secs(20), || {
        audit(&data, "strict").into_iter().find(|r| r["outcome"] == "deny" && r["hook"] == "issuance")
    });
    assert!(record["reason"].as_str().is_some_and(|r| !r.is_empty()), "{record}");
    assert!(certs(&denied).is_empty());

    // Suspend: no renewal (lapsed, not revoked), notified; resume: reissued.
    let vm = add("corp", "vm.corp.example", &[("lifetime-seconds", "6")]).await;
    let first = wait_for("provisioned", Duration::from_secs(20), || certs(&vm).first().map(|c| c["serial"].as_str().unwrap().to_string()));
    support::tenure_cli(&data, &["resource", "suspend", &vm]);
    wait_event(&hook, "resource.suspended", |e| e["event"] == "resource.suspended" && e["resource"] == vm.as_str());
    std::thread::sleep(Duration::from_secs(7));
    let held = certs(&vm);
    assert_eq!(held.len(), 1, "no renewal while suspended: {held:?}");
    assert_eq!(held[0]["renewal"].as_str(), Some("lapsed"), "lapsed, not revoked: {held:?}");
    assert!(held[0]["revoked_at"].is_null());
    support::tenure_cli(&data, &["resource", "resume", &vm]);
    let reissued = wait_for("reissued after resume", Duration::from_secs(20), || {
        certs(&vm).into_iter().find(|c| c["predecessor"] == first.as_str()).map(|c| c["serial"].as_str().unwrap().to_string())
    });

    // Release: revoked, and told.
    support::tenure_cli(&data, &["resource", "release", &vm]);
    // (Its newest certificate: with six-second lifetimes the sweep may have renewed the reissued one since.)
    let revoked = wait_event(&hook, "certificate.revoked", |e| e["event"] == "certificate.revoked" && e["resource"] == vm.as_str());
    let newest = certs(&vm).into_iter().next().unwrap();
    assert_eq!(newest["status"], "revoked", "{newest}");
    assert!(certs(&vm).iter().any(|c| c["serial"] == revoked["serial"]), "{revoked}");
    assert!(cert_list(&data, &["--resource", &vm]).iter().any(|c| c["serial"] == reissued.as_str()));

    // A lease not confirmed in time: suspended, and told why.
    let leased = add("corp", "leased.corp.example", &[("lease-seconds", "10")]).await;
    wait_for("provisioned", Duration::from_secs(20), || certs(&leased).first().cloned());
    let notice = wait_event(&hook, "the lease's suspension", |e| e["event"] == "resource.suspended" && e["resource"] == leased.as_str());
    assert_eq!(notice["reason"], "lease expired");
    // Every notice is signed with the tenant's secret.
    let secret = support::tenure_cli(&data, &["tenant", "webhook-secret", "corp"]).trim().to_string();
    for (headers, body) in hook.received.lock().unwrap().iter() {
        let sig = headers.get("tenure-signature").expect("signed");
        let t = sig.strip_prefix("t=").unwrap().split(',').next().unwrap();
        let mut msg = format!("{t}.").into_bytes();
        msg.extend_from_slice(body);
        assert!(sig.ends_with(&crate::lifecycle::hmac_hex(secret.as_bytes(), &msg)), "{sig}");
    }
}

/// Resources POSTed through the admin API while the server provisions them,
/// and the server killed (SIGKILL) in the middle of it: after a restart, every
/// resource that exists has exactly one certificate — none lost with the
/// crash, none issued twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_in_a_burst_of_creations_leaves_each_resource_exactly_one_certificate() {
    support::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = server_with(&data, &["--renewal-interval", "0.3"]);
    support::add_tenant(&data, "corp", &["corp.example"]);
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap().trim().to_string();
    let key = platform_key();
    let http = client(&server);
    let url = format!("https://{}/v1/resources", server.admin);
    // The burst goes on in the background until the server dies under it.
    let burst = tokio::spawn(async move {
        let mut created = 0;
        for i in 0..2000 {
            let body = json!({ "tenant": "corp", "kind": "vm", "names": [format!("n{i}.corp.example")],
                               "attributes": { "certificate": "auto", "public-key": key } });
            // The server dies under the burst: a refused or cut request ends it.
            match http.post(&url).bearer_auth(&token).header("content-type", "application/json").body(body.to_string()).send().await {
                Ok(r) if r.status().is_success() => created += 1,
                _ => break,
            }
        }
        created
    });
    // Killed once the worker is at it: some provisioned, more queued, POSTs in flight.
    let count = |data: &Path| support::tenure_cli(data, &["cert", "list", "--tenant", "corp", "--limit", "5000"]).lines().count();
    wait_for("the first certificates", Duration::from_secs(30), || (count(&data) >= 20).then_some(()));
    server.kill();
    let created = burst.await.unwrap();
    let provisioned_before = count(&data);
    let _server = server_with(&data, &["--renewal-interval", "0.3"]);
    let resources: Vec<Value> = support::tenure_cli(&data, &["resource", "list", "--tenant", "corp", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(resources.len() >= created && resources.len() > provisioned_before, "{} resources, {created} acknowledged", resources.len());
    wait_for("every resource provisioned", Duration::from_secs(60), || (count(&data) >= resources.len()).then_some(()));
    std::thread::sleep(Duration::from_secs(2));
    let certs = cert_list(&data, &["--tenant", "corp", "--limit", "5000"]);
    for r in &resources {
        let id = r["id"].as_str().unwrap();
        let n = certs.iter().filter(|c| c["resources"].as_array().unwrap().iter().any(|x| x == id)).count();
        assert_eq!(n, 1, "resource {id} has {n} certificates");
    }
    eprintln!(
        "{} resources ({created} acknowledged), {provisioned_before} provisioned before the SIGKILL, the rest after",
        resources.len()
    );
}
