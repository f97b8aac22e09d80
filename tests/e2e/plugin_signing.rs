//! Tenant plugin signing against a real `tenure serve`: keys made with
//! openssl and registered with `tenure tenant key add`; with signatures
//! required, unsigned plugins and plugins signed by a key the tenant never
//! registered are refused (CLI and admin API), signed ones installed; an
//! ACME issuance then leaves an audit record naming the signing key beside
//! the plugin's digest.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use instant_acme::{Identifier, NewOrder, OrderStatus, RetryPolicy};
use reqwest::Method as M;
use serde_json::Value;
use tenure_engine::policy::builtin::built_plugin_path;

use crate::admin::client;
use crate::support::{self, ServeOptions, Server};

/// Runs openssl, which must succeed.
fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A private key (`KIND`: ed25519 or p256) and its public key beside it: (key.pem, key.pub).
fn keypair(dir: &Path, name: &str, kind: &str) -> (String, String) {
    let (key, public) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.pub")));
    let (key, public) = (key.to_str().unwrap().to_string(), public.to_str().unwrap().to_string());
    match kind {
        "ed25519" => openssl(&["genpkey", "-algorithm", "ed25519", "-out", &key]),
        _ => openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", &key]),
    }
    openssl(&["pkey", "-in", &key, "-pubout", "-out", &public]);
    (key, public)
}

/// Signs `file` as the README says: Ed25519 raw, ECDSA P-256 over SHA-256 (DER).
fn sign(key: &str, kind: &str, file: &str, out: &str) {
    match kind {
        "ed25519" => openssl(&["pkeyutl", "-sign", "-rawin", "-inkey", key, "-in", file, "-out", out]),
        _ => openssl(&["dgst", "-sha256", "-sign", key, "-out", out, file]),
    }
}

/// The key id as a tenant computes it: sha256: + 32 hex digits of SHA-256(SPKI DER).
fn key_id_of(public: &str) -> String {
    let out = Command::new("openssl").args(["pkey", "-pubin", "-in", public, "-outform", "DER"]).output().unwrap();
    assert!(out.status.success());
    let hex = hex_sha256(&out.stdout);
    format!("sha256:{}", &hex[..32])
}

fn hex_sha256(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs a `tenure` command that must fail; its standard error.
fn tenure_refused(data: &Path, args: &[&str]) -> String {
    let out = support::tenure_command(data).args(args).arg("--data").arg(data).output().expect("run tenure");
    assert!(!out.status.success(), "tenure {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_plugins_install_only_signed_and_decisions_name_their_signer() {
    support::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, ServeOptions::new(None));
    let corp = support::add_tenant(&data, "corp", &["corp.example"]);
    support::tenure_cli(&data, &["resource", "add", "--tenant", "corp", "--kind", "vm", "--name", "www.corp.example"]);
    let work = dir.path();
    let wasm_path = built_plugin_path("control-or-challenge");
    let wasm = wasm_path.to_str().unwrap();

    // Keys: Ed25519 and P-256 registered, one more the tenant never registers.
    let (ed_key, ed_pub) = keypair(work, "ed", "ed25519");
    let (ec_key, ec_pub) = keypair(work, "ec", "p256");
    let (stranger_key, _) = keypair(work, "stranger", "ed25519");
    let ed_id = support::tenure_cli(&data, &["tenant", "key", "add", "corp", "--public-key", &ed_pub]).trim().to_string();
    assert_eq!(ed_id, key_id_of(&ed_pub), "the key id is the documented one");
    let added: Value =
        serde_json::from_str(support::tenure_cli(&data, &["tenant", "key", "add", "corp", "--public-key", &ec_pub, "--json"]).trim())
            .unwrap();
    let ec_id = added["key_id"].as_str().unwrap().to_string();
    assert_eq!(ec_id, key_id_of(&ec_pub));
    assert_eq!(added["algorithm"], "ecdsa-p256");
    let listed = support::tenure_cli(&data, &["tenant", "key", "list", "corp", "--json"]);
    let mut ids: Vec<String> =
        listed.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["key_id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    let mut expected = vec![ed_id.clone(), ec_id.clone()];
    expected.sort();
    assert_eq!(ids, expected);
    // A private key is not a public key.
    let refused = tenure_refused(&data, &["tenant", "key", "add", "corp", "--public-key", &ed_key]);
    assert!(refused.contains("private key"), "{refused}");

    // Required from now on.
    assert!(support::tenure_cli(&data, &["plugin", "signatures"]).starts_with("optional"));
    support::tenure_cli(&data, &["plugin", "signatures", "--require"]);
    let state: Value = serde_json::from_str(support::tenure_cli(&data, &["plugin", "signatures", "--json"]).trim()).unwrap();
    assert_eq!(state["required"], true);

    // Unsigned: refused, saying what is missing.
    let refused = tenure_refused(&data, &["plugin", "install", wasm, "--tenant", "corp"]);
    assert!(refused.contains("comes without a signature"), "{refused}");
    // Signed by a key the tenant never registered: refused.
    let stranger_sig = work.join("stranger.sig");
    sign(&stranger_key, "ed25519", wasm, stranger_sig.to_str().unwrap());
    let refused = tenure_refused(&data, &["plugin", "install", wasm, "--tenant", "corp", "--signature", stranger_sig.to_str().unwrap()]);
    assert!(refused.contains("does not verify under any of tenant corp's keys"), "{refused}");

    // The admin API, with the operator's token: unsigned refused; P-256-signed installed.
    let c = client(&server);
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap().trim().to_string();
    let url = format!("https://{}/v1/plugins/tenant/corp", server.admin);
    let bytes = std::fs::read(&wasm_path).unwrap();
    let r = c.request(M::PUT, &url).bearer_auth(&token).body(bytes.clone()).send().await.unwrap();
    let status = r.status().as_u16();
    let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null);
    assert!((400..500).contains(&status), "{status} {body}");
    assert!(body["detail"].as_str().is_some_and(|d| d.contains("comes without a signature")), "{body}");
    let ec_sig = work.join("ec.sig");
    sign(&ec_key, "p256", wasm, ec_sig.to_str().unwrap());
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(std::fs::read(&ec_sig).unwrap());
    let r = c.request(M::PUT, &url).bearer_auth(&token).header("Tenure-Plugin-Signature", header).body(bytes).send().await.unwrap();
    let status = r.status().as_u16();
    let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["signed_by"], ec_id.as_str(), "{body}");

    // Signed with Ed25519 by the CLI: installed, the signer shown.
    let ed_sig = work.join("ed.sig");
    sign(&ed_key, "ed25519", wasm, ed_sig.to_str().unwrap());
    let out = support::tenure_cli(&data, &["plugin", "install", wasm, "--tenant", "corp", "--signature", ed_sig.to_str().unwrap()]);
    let digest = out.split_whitespace().next().unwrap().to_string();
    assert_eq!(out.trim(), format!("{digest} (signed by {ed_id})"));
    let listed = support::tenure_cli(&data, &["plugin", "list", "--json"]);
    let row: Value = serde_json::from_str(listed.lines().find(|l| l.contains("tenant:corp")).unwrap()).unwrap();
    assert_eq!((row["digest"].as_str(), row["signed_by"].as_str()), (Some(digest.as_str()), Some(ed_id.as_str())));
    assert!(support::tenure_cli(&data, &["plugin", "list"]).contains(&ed_id));

    // An ACME issuance for the tenant: its audit record names the signer beside the digest.
    let account = support::eab_account(&server, &corp).await;
    let mut order = account.new_order(&NewOrder::new(&[Identifier::Dns("www.corp.example".into())])).await.unwrap();
    assert_eq!(order.state().status, OrderStatus::Ready);
    order.finalize().await.unwrap();
    order.poll_certificate(&RetryPolicy::new().timeout(Duration::from_secs(20))).await.unwrap();
    let audit = support::tenure_cli(&data, &["audit", "--tenant", "corp", "--json"]);
    let record: Value = audit.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).rfind(|r| r["hook"] == "issuance").unwrap();
    assert_eq!(record["outcome"], "allow", "{record}");
    assert_eq!(record["plugins"][1], digest.as_str(), "{record}");
    assert_eq!(record["signers"], serde_json::json!([null, ed_id]), "{record}");
    assert!(support::tenure_cli(&data, &["audit", "--tenant", "corp"]).contains(&format!("(signed by {ed_id})")));

    // Removing the key leaves the plugin installed and recorded as signed by it.
    let out = support::tenure_cli(&data, &["tenant", "key", "remove", "corp", &ed_id]);
    assert!(out.contains("stay installed"), "{out}");
    assert!(support::tenure_cli(&data, &["plugin", "list", "--json"]).contains(&ed_id));
}
