//! Account resources (RFC 8555 §7.3) against a real `tenure serve`:
//! onlyReturnExisting, contact update, orders list, key-change conflicts, deactivation.

use crate::support;

use serde_json::json;
use support::raw::{EcKey, RawClient, jws};
use support::{ServeOptions, Server};

#[tokio::test]
async fn account_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), ServeOptions::new(None));
    let mut client = RawClient::new(&server.directory_url(), &server.root_pem()).await;
    let new_account = client.url("newAccount");

    // onlyReturnExisting for an unknown key.
    let r = client.post(&new_account, &json!({ "onlyReturnExisting": true }).to_string()).await;
    assert_eq!(r.problem_type(), "accountDoesNotExist");

    // A bad contact is refused; a good one is kept.
    let r = client.post(&new_account, &json!({ "contact": ["tel:+1555"], "termsOfServiceAgreed": true }).to_string()).await;
    assert_eq!(r.problem_type(), "invalidContact");
    let created = client.register().await;
    assert_eq!(created.status, 201);
    let kid = client.kid.clone().unwrap();

    // The same key again: 200 and the same Location.
    let mut again = RawClient::new(&server.directory_url(), &server.root_pem()).await;
    again.key = EcKey::from_pkcs8(&client.key.pkcs8);
    let r = again.post(&new_account, &json!({ "onlyReturnExisting": true }).to_string()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("location").as_deref(), Some(kid.as_str()));

    // Contact update, then read back with POST-as-GET.
    let r = client.post(&kid, &json!({ "contact": ["mailto:new@example.test"] }).to_string()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = client.post(&kid, "").await;
    assert_eq!(r.json()["contact"], json!(["mailto:new@example.test"]));

    // Orders list.
    let order =
        client.post(&client.url("newOrder"), &json!({ "identifiers": [{ "type": "dns", "value": "x.example.test" }] }).to_string()).await;
    assert_eq!(order.status, 201);
    let orders_url = r.json()["orders"].as_str().unwrap().to_string();
    let r = client.post(&orders_url, "").await;
    assert_eq!(r.json()["orders"], json!([order.header("location").unwrap()]));

    // Another account may not read this one.
    let mut other = RawClient::new(&server.directory_url(), &server.root_pem()).await;
    other.register().await;
    let r = other.post(&kid, "").await;
    assert_eq!(r.problem_type(), "unauthorized");
    let r = other.post(&order.header("location").unwrap(), "").await;
    assert_eq!(r.problem_type(), "unauthorized");

    // Key change to a key another account holds: 409.
    let key_change = client.url("keyChange");
    let inner_protected = json!({ "alg": "ES256", "jwk": other.key.jwk(), "url": key_change });
    let inner = jws(&other.key, &inner_protected, &json!({ "account": kid, "oldKey": client.key.jwk() }).to_string());
    let r = client.post(&key_change, &inner.to_string()).await;
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));

    // Key change with an inner JWS signed by a key other than the one it names.
    let fresh = EcKey::generate();
    let inner_protected = json!({ "alg": "ES256", "jwk": fresh.jwk(), "url": key_change });
    let inner = jws(&EcKey::generate(), &inner_protected, &json!({ "account": kid, "oldKey": client.key.jwk() }).to_string());
    let r = client.post(&key_change, &inner.to_string()).await;
    assert_eq!(r.problem_type(), "malformed");

    // Deactivation: the account can do nothing afterwards.
    let r = client.post(&kid, &json!({ "status": "deactivated" }).to_string()).await;
    assert_eq!(r.json()["status"], "deactivated");
    let r = client.post(&kid, "").await;
    assert_eq!(r.problem_type(), "unauthorized");
    let r =
        client.post(&client.url("newOrder"), &json!({ "identifiers": [{ "type": "dns", "value": "y.example.test" }] }).to_string()).await;
    assert_eq!(r.problem_type(), "unauthorized");
}

/// A client that sends half a request header and then nothing is cut off
/// after the header timeout (10 s), not held open for ever (slowloris).
#[test]
fn a_half_sent_header_is_cut_off() {
    use std::io::{Read, Write};
    support::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let mut options = ServeOptions::new(None);
    options.extra = vec!["--header-read-timeout".into(), "3".into(), "--max-connections".into(), "3".into()];
    let server = Server::start(&dir.path().join("data"), options);
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(server.root_pem()).unwrap();
    for cert in <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = std::sync::Arc::new(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth());
    let connect = || {
        let conn = rustls::ClientConnection::new(config.clone(), "localhost".try_into().unwrap()).unwrap();
        let tcp = std::net::TcpStream::connect(server.listen).unwrap();
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
        rustls::StreamOwned::new(conn, tcp)
    };

    // Half a header: cut off after --header-read-timeout.
    let mut tls = connect();
    let started = std::time::Instant::now();
    tls.write_all(b"GET /directory HTTP/1.1\r\nHost: localhost\r\n").unwrap();
    tls.flush().unwrap();
    let mut got = Vec::new();
    let ended = tls.read_to_end(&mut got);
    let waited = started.elapsed();
    assert!(waited >= std::time::Duration::from_secs(2), "cut off too early ({waited:?}): {ended:?}");
    assert!(waited < std::time::Duration::from_secs(10), "held open {waited:?}");
    assert!(!String::from_utf8_lossy(&got).contains("200 OK"), "{}", String::from_utf8_lossy(&got));

    // An idle keep-alive connection is closed as well.
    let mut tls = connect();
    tls.write_all(b"GET /directory HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut first = [0u8; 4096];
    let n = tls.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&first[..n]));
    let idle = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = tls.read_to_end(&mut rest);
    assert!(idle.elapsed() < std::time::Duration::from_secs(10), "an idle connection stayed open {:?}", idle.elapsed());

    // --max-connections silent clients fill the listener: a new client waits
    // in the backlog and is served once they are cut off, not refused forever.
    let squatters: Vec<_> = (0..3).map(|_| std::net::TcpStream::connect(server.listen).unwrap()).collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let started = std::time::Instant::now();
    let mut tls = connect();
    tls.write_all(b"GET /directory HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let _ = tls.read_to_end(&mut got);
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got));
    let waited = started.elapsed();
    assert!(waited >= std::time::Duration::from_secs(1), "served past the cap at once ({waited:?})");
    drop(squatters);
    drop(server);
}

/// Anonymous registrations are bounded per source address: past the limit a
/// new account is `rateLimited` with `Retry-After`; an account bound to a
/// tenant's EAB key is not counted.
#[tokio::test]
async fn new_accounts_without_eab_are_limited_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let creds = support::add_tenant(&data, "corp", &["corp.example"]);
    let mut options = ServeOptions::new(None);
    options.extra = vec!["--max-accounts-per-ip-per-hour".into(), "2".into()];
    let server = Server::start(&data, options);
    for _ in 0..2 {
        RawClient::new(&server.directory_url(), &server.root_pem()).await.register().await;
    }
    let third = RawClient::new(&server.directory_url(), &server.root_pem()).await;
    let r = third.post(&third.url("newAccount"), &json!({ "termsOfServiceAgreed": true }).to_string()).await;
    assert_eq!((r.status, r.problem_type().as_str()), (429, "rateLimited"), "{}", String::from_utf8_lossy(&r.body));
    let retry: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=1800).contains(&retry), "{retry}");
    assert!(r.json()["detail"].as_str().unwrap().contains("127.0.0.1"), "{}", r.json());

    // The same key, registered already, is still found; an EAB account is made.
    let r = third.post(&third.url("newAccount"), &json!({ "onlyReturnExisting": true }).to_string()).await;
    assert_eq!(r.problem_type(), "accountDoesNotExist");
    support::eab_account(&server, &creds).await;
}

/// An account whose validations of a name keep failing must wait before it
/// orders that name again; other names are not held back.
#[tokio::test]
async fn repeated_failed_validations_hold_back_new_orders_for_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = ServeOptions::new(None);
    options.extra = vec!["--max-failed-validations-per-hour".into(), "1".into()];
    // Nobody answers on the http-01 port: validation fails.
    let server = Server::start(&dir.path().join("data"), options);
    let mut client = RawClient::new(&server.directory_url(), &server.root_pem()).await;
    client.register().await;
    let new_order = |name: &str| json!({ "identifiers": [{ "type": "dns", "value": name }] }).to_string();
    let order = client.post(&client.url("newOrder"), &new_order("fails.example.test")).await;
    assert_eq!(order.status, 201);
    let authz_url = order.json()["authorizations"][0].as_str().unwrap().to_string();
    let authz = client.post(&authz_url, "").await.json();
    let http01 =
        authz["challenges"].as_array().unwrap().iter().find(|c| c["type"] == "http-01").unwrap()["url"].as_str().unwrap().to_string();
    assert_eq!(client.post(&http01, "{}").await.status, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while client.post(&authz_url, "").await.json()["status"] != "invalid" {
        assert!(std::time::Instant::now() < deadline, "the validation never failed");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    let r = client.post(&client.url("newOrder"), &new_order("fails.example.test")).await;
    assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.problem_type(), "rateLimited");
    assert!(r.header("retry-after").is_some());
    assert!(r.json()["detail"].as_str().unwrap().contains("fails.example.test"), "{}", r.json());
    let r = client.post(&client.url("newOrder"), &new_order("other.example.test")).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
}

/// A tenant's own limits (CLI) override the server's, on a running server.
#[tokio::test]
async fn a_tenants_own_order_limit_holds_on_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let creds = support::add_tenant(&data, "corp", &["corp.example"]);
    support::tenure_cli(&data, &["resource", "add", "--tenant", "corp", "--kind", "vm", "--name", "www.corp.example"]);
    let server = Server::start(&data, ServeOptions::new(None));
    let shown = support::tenure_cli(&data, &["tenant", "limits", "corp", "--orders-per-hour", "1", "--json"]);
    let shown: serde_json::Value = serde_json::from_str(shown.trim()).unwrap();
    assert_eq!(shown["own"]["orders_per_hour"], 1, "{shown}");
    let account = support::eab_account(&server, &creds).await;
    let ids = [instant_acme::Identifier::Dns("www.corp.example".into())];
    account.new_order(&instant_acme::NewOrder::new(&ids)).await.expect("the first order");
    let err = account.new_order(&instant_acme::NewOrder::new(&ids)).await.err().expect("the second order is refused");
    assert!(err.to_string().contains("at most 1 orders an hour"), "{err}");
    let text = support::tenure_cli(&data, &["tenant", "limits", "corp", "--reset"]);
    assert!(text.contains("the server's --max-orders-per-hour"), "{text}");
}
