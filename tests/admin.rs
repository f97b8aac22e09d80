//! The admin API of a real `tenure serve`: bearer token, tenants, resources
//! (add, transfer, release, events), plugins, audit.

mod support;

use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use support::{ServeOptions, Server};

fn client(server: &Server) -> reqwest::Client {
    support::install_crypto_provider();
    let pem = std::fs::read(server.root_pem()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    reqwest::Client::builder().tls_backend_preconfigured(tls).build().unwrap()
}

async fn call(c: &reqwest::Client, token: &str, method: reqwest::Method, url: String, body: Option<Vec<u8>>) -> (u16, Value) {
    let mut req = c.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.body(b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let bytes = r.bytes().await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn admin_api_drives_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, ServeOptions::new(None));
    let c = client(&server);
    let base = format!("https://{}", server.admin);
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap().trim().to_string();
    use reqwest::Method as M;

    let (status, body) = call(&c, "wrong", M::GET, format!("{base}/v1/tenants"), None).await;
    assert_eq!(status, 401, "{body}");

    let (status, t) = call(
        &c,
        &token,
        M::POST,
        format!("{base}/v1/tenants"),
        Some(json!({ "name": "a", "permits": ["a.example", "shared.example"] }).to_string().into_bytes()),
    )
    .await;
    assert_eq!(status, 201, "{t}");
    assert!(t["eab_kid"].as_str().unwrap().starts_with("a-"));
    call(
        &c,
        &token,
        M::POST,
        format!("{base}/v1/tenants"),
        Some(json!({ "name": "b", "permits": ["shared.example"] }).to_string().into_bytes()),
    )
    .await;

    let (status, r) = call(
        &c,
        &token,
        M::POST,
        format!("{base}/v1/resources"),
        Some(json!({ "tenant": "a", "kind": "vm", "names": ["www.shared.example"] }).to_string().into_bytes()),
    )
    .await;
    assert_eq!(status, 201, "{r}");
    let id = r["id"].as_str().unwrap().to_string();

    // Outside the tenant's permits, and held by another tenant: refused.
    let (status, p) = call(
        &c,
        &token,
        M::POST,
        format!("{base}/v1/resources"),
        Some(json!({ "tenant": "b", "kind": "vm", "names": ["www.a.example"] }).to_string().into_bytes()),
    )
    .await;
    assert_eq!(status, 400, "{p}");
    let (status, p) = call(
        &c,
        &token,
        M::POST,
        format!("{base}/v1/resources"),
        Some(json!({ "tenant": "b", "kind": "vm", "names": ["www.shared.example"] }).to_string().into_bytes()),
    )
    .await;
    assert_eq!(status, 409, "{p}");

    let (status, r) =
        call(&c, &token, M::POST, format!("{base}/v1/resources/{id}/transfer"), Some(json!({ "to": "b" }).to_string().into_bytes())).await;
    assert_eq!((status, r["tenant"].as_str()), (200, Some("b")), "{r}");
    let (status, r) = call(&c, &token, M::POST, format!("{base}/v1/resources/{id}/release"), None).await;
    assert_eq!((status, r["state"].as_str()), (200, Some("released")), "{r}");
    let (_, r) = call(&c, &token, M::GET, format!("{base}/v1/resources/{id}"), None).await;
    let kinds: Vec<&str> = r["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["created", "transferred", "released"]);

    let wasm = std::fs::read(tenure_engine::policy::builtin::built_plugin_path("deny-all")).unwrap();
    let (status, p) = call(&c, &token, M::PUT, format!("{base}/v1/plugins/tenant/a"), Some(wasm)).await;
    assert_eq!(status, 200, "{p}");
    let (status, p) = call(&c, &token, M::PUT, format!("{base}/v1/plugins/operator"), Some(b"not wasm".to_vec())).await;
    assert_eq!(status, 400, "{p}");
    let (_, list) = call(&c, &token, M::GET, format!("{base}/v1/plugins"), None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (status, audit) = call(&c, &token, M::GET, format!("{base}/v1/audit?tenant=a"), None).await;
    assert_eq!(status, 200);
    assert!(audit.is_array());
}
