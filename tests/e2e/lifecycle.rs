//! The certificate lifecycle against a real `tenure serve` with lifetimes of
//! seconds: server-initiated reissue delivered to a file drop and a webhook;
//! revocation on release (CRL, ARI) and transfer; anchors; ARI `replaces` and
//! policy changes; and
//! a SIGKILL in the middle of a sweep.

use crate::support;

use support::crl::{crl_url, fetch, leaf_der, openssl_crl_verify};

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use instant_acme::{Account, CertificateIdentifier, Identifier, NewOrder, OrderStatus, RetryPolicy};
use rustls::pki_types::CertificateDer;
use support::{ServeOptions, Server, TenantCreds};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub(crate) async fn account(server: &Server, creds: &TenantCreds) -> Account {
    support::eab_account(server, creds).await
}

/// Orders held names (no challenge) and returns the PEM chain.
pub(crate) async fn issue(account: &Account, names: &[&str], replaces: Option<CertificateIdentifier<'_>>) -> Result<String, String> {
    let ids: Vec<Identifier> = names.iter().map(|n| Identifier::Dns(n.to_string())).collect();
    let mut new_order = NewOrder::new(&ids);
    if let Some(r) = replaces {
        new_order = new_order.replaces(r);
    }
    let mut order = account.new_order(&new_order).await.map_err(|e| e.to_string())?;
    if order.state().status != OrderStatus::Ready {
        return Err(format!("order is {:?}, not ready", order.state().status));
    }
    order.finalize().await.map_err(|e| e.to_string())?;
    order.poll_certificate(&RetryPolicy::new().timeout(Duration::from_secs(20))).await.map_err(|e| e.to_string())
}

pub(crate) fn serial_of(chain: &str) -> String {
    let der = leaf_der(chain);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    cert.tbs_certificate.raw_serial().iter().skip_while(|b| **b == 0).map(|b| format!("{b:02x}")).collect()
}

fn cert_id(chain: &str) -> CertificateIdentifier<'static> {
    let der = CertificateDer::from(leaf_der(chain));
    CertificateIdentifier::try_from(&der).unwrap().into_owned()
}

pub(crate) fn add_resource(data: &Path, args: &[&str]) -> String {
    let mut all = vec!["resource", "add"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = support::tenure_cli(data, &all);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    v["id"].as_str().unwrap().to_string()
}

pub(crate) fn cert_show(data: &Path, serial: &str) -> serde_json::Value {
    serde_json::from_str(support::tenure_cli(data, &["cert", "show", serial, "--json"]).trim()).unwrap()
}

pub(crate) fn cert_list(data: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["cert", "list", "--json"];
    all.extend_from_slice(args);
    support::tenure_cli(data, &all).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

pub(crate) fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn server_with(data: &Path, extra: &[&str]) -> Server {
    let mut options = ServeOptions::new(None);
    options.extra = extra.iter().map(|s| s.to_string()).collect();
    Server::start(data, options)
}

/// One POST a webhook receiver got: (headers, body).
pub(crate) type Received = (HashMap<String, String>, Vec<u8>);

/// A webhook receiver: records every POST, answers 200.
pub(crate) struct Webhook {
    pub(crate) url: String,
    pub(crate) received: Arc<Mutex<Vec<Received>>>,
}

impl Webhook {
    pub(crate) async fn start() -> Webhook {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let sink = sink.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let header_end = loop {
                        let n = stream.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break p + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
                    let headers: HashMap<String, String> = head
                        .lines()
                        .skip(1)
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                        .collect();
                    let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                    while buf.len() < header_end + len {
                        let n = stream.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    sink.lock().unwrap().push((headers, buf[header_end..].to_vec()));
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
                });
            }
        });
        Webhook { url, received }
    }
}

pub(crate) fn hmac_hex(secret: &[u8], msg: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    ring::hmac::sign(&key, msg).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_certificate_is_reissued_and_delivered_without_a_request() {
    support::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let drop_root = dir.path().join("drops");
    std::fs::create_dir(&drop_root).unwrap();
    let drop_dir = drop_root.join("www");
    let hook = Webhook::start().await;
    // The operator's bounds: drops below the root, webhooks to this loopback receiver over http.
    let root = drop_root.to_str().unwrap();
    let bounds = ["--delivery-root", root, "--webhook-allow", "http://127.0.0.1"];
    let server = server_with(&data, &[&["--renewal-interval", "0.3"][..], &bounds].concat());
    let corp = support::add_tenant(&data, "corp", &["corp.example"]);
    // Renewed about 13 s after issuance: long enough for the checks on the
    // first certificate (and then on its successor) on a busy machine.
    let lifetime = "lifetime-seconds=20";
    let dir_attr = format!("delivery-dir={}", drop_dir.display());
    let hook_attr = format!("delivery-webhook={}", hook.url);
    let vm = add_resource(
        &data,
        &[
            &[
                "--tenant",
                "corp",
                "--kind",
                "vm",
                "--name",
                "www.corp.example",
                "--attr",
                lifetime,
                "--attr",
                &dir_attr,
                "--attr",
                &hook_attr,
            ][..],
            &bounds,
        ]
        .concat(),
    );
    let acct = account(&server, &corp).await;

    let chain = issue(&acct, &["www.corp.example"], None).await.unwrap();
    let first = serial_of(&chain);
    let shown = cert_show(&data, &first);
    assert_eq!(shown["renewal"], "scheduled", "{shown}");
    assert_eq!(shown["resources"], serde_json::json!([vm]));

    // ARI follows the scheduler's plan: the window opens at renew_at, in the future.
    let (info, _) = acct.renewal_info(&cert_id(&chain)).await.unwrap();
    assert_eq!(info.suggested_window.start.unix_timestamp(), shown["renew_at"].as_i64().unwrap());
    assert!(info.suggested_window.start > time::OffsetDateTime::now_utc());

    // No client request: the successor appears in the file drop.
    let meta: serde_json::Value = wait_for("the file drop", Duration::from_secs(30), || {
        let text = std::fs::read_to_string(drop_dir.join("current/metadata.json")).ok()?;
        serde_json::from_str(&text).ok()
    });
    assert_eq!(meta["predecessor"], first.as_str());
    let second = meta["serial"].as_str().unwrap().to_string();
    assert_ne!(second, first);
    let dropped = std::fs::read_to_string(drop_dir.join("current/chain.pem")).unwrap();
    assert_eq!(serial_of(&dropped), second);
    support::openssl_verify(&server.root_pem(), &dropped, dir.path());
    // Same key, same names.
    let a_der = leaf_der(&chain);
    let (_, a) = x509_parser::parse_x509_certificate(&a_der).unwrap();
    let b_der = leaf_der(&dropped);
    let (_, b) = x509_parser::parse_x509_certificate(&b_der).unwrap();
    assert_eq!(a.public_key().raw, b.public_key().raw);

    // ...and at the webhook, signed.
    let (headers, body) = wait_for("the webhook", Duration::from_secs(10), || {
        hook.received.lock().unwrap().iter().find(|(_, b)| String::from_utf8_lossy(b).contains(&second)).cloned()
    });
    let sig = headers.get("tenure-signature").expect("signed webhook");
    let (t, v1) = sig.split_once(",v1=").unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let secret = support::tenure_cli(&data, &["tenant", "webhook-secret", "corp"]);
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(&body);
    assert_eq!(v1, hmac_hex(secret.trim().as_bytes(), &signed));
    let payload: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(payload["event"], "certificate.renewed");
    assert_eq!(payload["resource"], vm.as_str());
    assert!(payload["chain"].as_str().unwrap().contains("BEGIN CERTIFICATE"));

    // The predecessor links to its successor; the successor is scheduled in turn.
    let shown = cert_show(&data, &first);
    assert_eq!(shown["renewal"], "renewed");
    assert_eq!(shown["successor"], second.as_str());
    assert_eq!(shown["deliveries"], serde_json::json!([]));
    let next = cert_show(&data, &second);
    assert_eq!(next["predecessor"], first.as_str());
    assert_eq!(next["renewal"], "scheduled");
    // The receiver recorded the body before it answered; the server marks the
    // delivery done once it has read that answer.
    wait_for("the deliveries marked delivered", Duration::from_secs(10), || {
        let next = cert_show(&data, &second);
        next["deliveries"].as_array().unwrap().iter().all(|d| d["state"] == "delivered").then_some(())
    });

    // The renewal was decided by the policy and audited.
    let audit = support::tenure_cli(&data, &["audit", "--json", "--tenant", "corp"]);
    assert!(audit.lines().any(|l| l.contains("\"hook\":\"renewal\"") && l.contains("\"outcome\":\"allow\"")), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_revokes_at_once_and_crl_and_ari_say_so() {
    support::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The server sweeps only as it starts; the test sweeps with `renew --now`.
    let server = server_with(&data, &["--renewal-interval", "3600"]);
    let corp = support::add_tenant(&data, "corp", &["corp.example"]);
    let vm = add_resource(&data, &["--tenant", "corp", "--kind", "vm", "--name", "gone.corp.example", "--attr", "lifetime-seconds=6"]);
    let kept = add_resource(&data, &["--tenant", "corp", "--kind", "vm", "--name", "kept.corp.example", "--attr", "lifetime-seconds=600"]);
    let _ = kept;
    let acct = account(&server, &corp).await;
    let chain = issue(&acct, &["gone.corp.example"], None).await.unwrap();
    let other = issue(&acct, &["kept.corp.example"], None).await.unwrap();
    let serial = serial_of(&chain);

    // Before: the CRL at the certificate's distribution point accepts both.
    let url = crl_url(&chain);
    assert!(url.starts_with("https://localhost:"), "{url}");
    let crl = fetch(&server, &url).await;
    let (ok, said) = openssl_crl_verify(&server, &chain, &crl, dir.path());
    assert!(ok, "not yet revoked: {said}");

    // The release says what it revoked, for people and in JSON.
    let said = support::tenure_cli(&data, &["resource", "release", &vm]);
    assert!(said.lines().any(|l| l == "revoked 1 certificate (cessationOfOperation)"), "{said}");
    // As soon as the release returns: revoked in the store, in the CRL, and ARI says renew now.
    let shown = cert_show(&data, &serial);
    assert_eq!(shown["status"], "revoked");
    assert_eq!(shown["revocation_reason"], 5, "cessationOfOperation");
    assert_eq!(shown["renewal"], "stopped");
    let crl = fetch(&server, &url).await;
    let (ok, said) = openssl_crl_verify(&server, &chain, &crl, dir.path());
    assert!(!ok && said.contains("revoked"), "revoked certificate must fail -crl_check: {said}");
    assert!(said.to_ascii_uppercase().contains(&serial.to_ascii_uppercase()), "CRL lists the serial: {said}");
    assert!(said.contains("Cessation Of Operation"), "{said}");
    let (info, _) = acct.renewal_info(&cert_id(&chain)).await.unwrap();
    assert!(info.suggested_window.start <= time::OffsetDateTime::now_utc(), "ARI window moved to now");
    // The other certificate of the same issuer still verifies against the new CRL.
    let (ok, said) = openssl_crl_verify(&server, &other, &crl, dir.path());
    assert!(ok, "an unrelated certificate stays valid: {said}");

    // Never renewed, even long past its renewal window.
    std::thread::sleep(Duration::from_secs(6));
    // `renew` alone sweeps now (`--now` is still accepted, as above).
    let out = support::tenure_cli(&data, &["renew", "--json"]);
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["renewed"], 0, "{report}");
    let shown = cert_show(&data, &serial);
    assert!(shown["successor"].is_null(), "{shown}");
    // For people: a header, RFC 3339 times, and the revoked certificate among them.
    let listed = support::tenure_cli(&data, &["cert", "list", "--resource", &vm]);
    let mut lines = listed.lines();
    assert!(lines.next().is_some_and(|h| h.starts_with("SERIAL") && h.contains("NOT AFTER")), "{listed}");
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!((row[0], row[2]), (serial.as_str(), "revoked"), "{listed}");
    assert!(row[5].len() == 20 && row[5].ends_with('Z') && row[5].as_bytes()[10] == b'T', "RFC 3339: {listed}");
    assert_eq!(support::tenure_cli(&data, &["cert", "list", "--tenant", "nobody"]).trim(), "no certificates of tenant nobody");
    assert!(cert_list(&data, &["--resource", &vm]).len() == 1);
    // A new order for the released name needs a challenge now.
    let err = issue(&acct, &["gone.corp.example"], None).await.unwrap_err();
    assert!(err.contains("not ready"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_revokes_and_the_new_holder_gets_its_own() {
    support::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = server_with(&data, &[]);
    let corp = support::add_tenant(&data, "corp", &["corp.example"]);
    let buyer = support::add_overlapping_tenant(&data, "buyer", &["corp.example"]);
    let lb = add_resource(&data, &["--tenant", "corp", "--kind", "lb", "--name", "shop.corp.example"]);
    let corp_acct = account(&server, &corp).await;
    let buyer_acct = account(&server, &buyer).await;
    let chain = issue(&corp_acct, &["shop.corp.example"], None).await.unwrap();
    // Held by corp: the buyer is refused.
    assert!(issue(&buyer_acct, &["shop.corp.example"], None).await.unwrap_err().contains("rejectedIdentifier"));

    let out = support::tenure_cli(&data, &["resource", "transfer", &lb, "--to", "buyer", "--json"]);
    let moved: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((moved["tenant"].as_str(), moved["revoked_certificates"].as_u64()), (Some("buyer"), Some(1)), "{moved}");
    let shown = cert_show(&data, &serial_of(&chain));
    assert_eq!(shown["status"], "revoked");
    assert_eq!(shown["revocation_reason"], 4, "superseded");
    let (info, _) = corp_acct.renewal_info(&cert_id(&chain)).await.unwrap();
    assert!(info.suggested_window.start <= time::OffsetDateTime::now_utc());

    let theirs = issue(&buyer_acct, &["shop.corp.example"], None).await.expect("the new holder, by control");
    let shown = cert_show(&data, &serial_of(&theirs));
    assert_eq!(shown["tenant"], "buyer");
    assert_eq!(shown["resources"], serde_json::json!([lb]));
    // The old holder cannot get one any more.
    assert!(issue(&corp_acct, &["shop.corp.example"], None).await.unwrap_err().contains("rejectedIdentifier"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anchor_release_ends_the_certificate_and_replaces_is_honoured() {
    support::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = server_with(&data, &["--renewal-interval", "0.3"]);
    let corp = support::add_tenant(&data, "corp", &["corp.example"]);
    let cluster =
        add_resource(&data, &["--tenant", "corp", "--kind", "cluster", "--name", "cluster.corp.example", "--attr", "lifetime-seconds=600"]);
    let pod = add_resource(
        &data,
        &["--tenant", "corp", "--kind", "vm", "--name", "pod.corp.example", "--anchor", &cluster, "--attr", "lifetime-seconds=600"],
    );
    let acct = account(&server, &corp).await;

    // ARI replaces: the client renews early; the old one is marked replaced, and a second replacement is refused.
    let chain = issue(&acct, &["pod.corp.example"], None).await.unwrap();
    let first = serial_of(&chain);
    let mut expected: Vec<String> = vec![cluster.clone(), pod.clone()];
    expected.sort();
    assert_eq!(cert_show(&data, &first)["resources"], serde_json::json!(expected));
    // A policy change moves the ARI window to now.
    let (info, _) = acct.renewal_info(&cert_id(&chain)).await.unwrap();
    assert!(info.suggested_window.start > time::OffsetDateTime::now_utc());
    let plugin = tenure_engine::policy::builtin::built_plugin_path("registry-control");
    support::tenure_cli(&data, &["plugin", "install", plugin.to_str().unwrap(), "--tenant", "corp"]);
    let (info, _) = acct.renewal_info(&cert_id(&chain)).await.unwrap();
    assert!(info.suggested_window.start <= time::OffsetDateTime::now_utc(), "the tenant's policy changed");
    let renewed = issue(&acct, &["pod.corp.example"], Some(cert_id(&chain))).await.expect("replacement order");
    let shown = cert_show(&data, &first);
    assert_eq!(shown["renewal"], "replaced");
    assert_eq!(shown["successor"], serial_of(&renewed).as_str());
    let err = issue(&acct, &["pod.corp.example"], Some(cert_id(&chain))).await.unwrap_err();
    assert!(err.contains("alreadyReplaced"), "{err}");

    // Releasing the anchor (not the resource the name came from) revokes and stops renewal.
    support::tenure_cli(&data, &["resource", "release", &cluster]);
    let shown = cert_show(&data, &serial_of(&renewed));
    assert_eq!(shown["status"], "revoked");
    assert_eq!(shown["renewal"], "stopped");
    assert!(shown["renewal_note"].as_str().unwrap().contains(&cluster));
    // Even a forced sweep of the pod renews nothing.
    let out = support::tenure_cli(&data, &["renew", "--now", "--resource", &pod, "--json"]);
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["renewed"], 0, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_sweep_ends_with_exactly_one_successor_each() {
    support::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // An hour between sweeps: nothing renews while certificates are issued.
    let server = server_with(&data, &["--renewal-interval", "3600"]);
    let corp = support::add_tenant(&data, "corp", &["corp.example"]);
    add_resource(&data, &["--tenant", "corp", "--kind", "zone", "--zone", "fleet.corp.example", "--attr", "lifetime-seconds=4"]);
    let acct = Arc::new(account(&server, &corp).await);
    const N: usize = 120;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let acct = acct.clone();
        tasks.spawn(async move {
            let mut serials = Vec::new();
            for i in (worker..N).step_by(8) {
                let chain = issue(&acct, &[&format!("n{i}.fleet.corp.example")], None).await.unwrap();
                serials.push(serial_of(&chain));
            }
            serials
        });
    }
    let mut originals = HashSet::new();
    while let Some(r) = tasks.join_next().await {
        originals.extend(r.unwrap());
    }
    assert_eq!(originals.len(), N);
    server.kill();
    std::thread::sleep(Duration::from_secs(3));

    // Every original is due. One certificate per transaction, 20 a second (a
    // sweep of 6 s: an unpaced one can end before the first look), and kill -9
    // as soon as the first lands.
    let server = server_with(&data, &["--renewal-interval", "0.2", "--renewal-batch", "1", "--renewal-rate", "20"]);
    let renewed_at_kill = wait_for("the first successor", Duration::from_secs(30), || {
        let n = cert_list(&data, &[]).iter().filter(|c| c["renewal"] == "renewed").count();
        (n > 0).then_some(n)
    });
    server.kill();
    assert!(renewed_at_kill < N, "the kill must land mid-sweep ({renewed_at_kill} of {N} renewed)");

    let _server = server_with(&data, &["--renewal-interval", "0.2"]);
    let certs = wait_for("every original renewed", Duration::from_secs(60), || {
        let certs = cert_list(&data, &["--limit", "100000"]);
        let done = certs.iter().filter(|c| originals.contains(c["serial"].as_str().unwrap()) && c["renewal"] == "renewed").count();
        (done == N).then_some(certs)
    });
    let mut successors: HashMap<String, Vec<String>> = HashMap::new();
    for c in &certs {
        if let Some(p) = c["predecessor"].as_str() {
            successors.entry(p.to_string()).or_default().push(c["serial"].as_str().unwrap().to_string());
        }
    }
    for o in &originals {
        let s = successors.get(o).cloned().unwrap_or_default();
        assert_eq!(s.len(), 1, "certificate {o} has successors {s:?}");
        let shown = certs.iter().find(|c| c["serial"] == o.as_str()).unwrap();
        assert_eq!(shown["successor"], s[0].as_str());
    }
    // No certificate anywhere in the chain has two successors.
    assert!(successors.values().all(|s| s.len() == 1), "{successors:?}");
}
