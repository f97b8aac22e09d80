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
    let server = Server::start(&dir.path().join("data"), ServeOptions::new(None));
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(server.root_pem()).unwrap();
    for cert in <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let tcp = std::net::TcpStream::connect(server.listen).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let started = std::time::Instant::now();
    tls.write_all(b"GET /directory HTTP/1.1\r\nHost: localhost\r\n").unwrap();
    tls.flush().unwrap();
    let mut got = Vec::new();
    let ended = tls.read_to_end(&mut got);
    let waited = started.elapsed();
    assert!(waited >= std::time::Duration::from_secs(5), "cut off too early ({waited:?}): {ended:?}");
    assert!(waited < std::time::Duration::from_secs(25), "held open {waited:?}");
    assert!(!String::from_utf8_lossy(&got).contains("200 OK"), "{}", String::from_utf8_lossy(&got));
    drop(server);
}
