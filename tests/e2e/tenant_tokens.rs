//! Tenant tokens on a real `tenure serve`: a tenant's token reaches only its
//! own tenant, resources, certificates, plugin and audit; everything else is a
//! 403 problem document, whether it belongs to another tenant or to nobody.
//! The walk over the admin API is driven by `tenure_admin::routes::ROUTES`
//! itself, so a route added without a case here fails this test.

use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::Method as M;
use serde_json::{Value, json};
use tenure_admin::routes::{Access, ROUTES, Scope};
use tenure_engine::policy::builtin::built_plugin_path;

use crate::admin::{call, client};
use crate::support::{self, ServeOptions, Server};

/// A P-256 public key (SPKI, base64) for `public-key=`: the platform holds the private key.
fn platform_key() -> String {
    use rcgen::PublicKeyData as _;
    let key = rcgen::KeyPair::generate().unwrap();
    base64::engine::general_purpose::STANDARD.encode(key.subject_public_key_info())
}

struct Api {
    c: reqwest::Client,
    base: String,
}

impl Api {
    async fn call(&self, token: &str, method: M, path: &str, body: Option<Vec<u8>>) -> (u16, Value) {
        call(&self.c, token, method, format!("{}{path}", self.base), body).await
    }
    async fn json(&self, token: &str, method: M, path: &str, body: Value) -> (u16, Value) {
        self.call(token, method, path, Some(body.to_string().into_bytes())).await
    }
}

/// A 403 problem document that says why.
fn assert_forbidden(what: &str, (status, body): (u16, Value)) {
    assert_eq!(status, 403, "{what}: {body}");
    assert_eq!(body["status"], 403, "{what}: {body}");
    assert!(body["type"].as_str().is_some_and(|t| t.starts_with("urn:")), "{what}: {body}");
    assert!(body["detail"].as_str().is_some_and(|d| d.contains("tenant") || d.contains("operator")), "{what}: {body}");
}

fn tenants_of(list: &Value, member: &str) -> Vec<String> {
    let mut t: Vec<String> = list.as_array().unwrap().iter().map(|x| x[member].as_str().unwrap().to_string()).collect();
    t.dedup();
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_token_reaches_only_its_own_things() {
    support::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, ServeOptions::new(None));
    let api = Api { c: client(&server), base: format!("https://{}", server.admin) };
    let op = std::fs::read_to_string(data.join("admin-token")).unwrap().trim().to_string();
    let key = platform_key();

    // Tenants a and b, each with a provisioned resource and its certificate.
    let mut resources = Vec::new();
    for t in ["a", "b"] {
        let (status, body) = api.json(&op, M::POST, "/v1/tenants", json!({ "name": t, "permits": [format!("{t}.example")] })).await;
        assert_eq!(status, 201, "{body}");
        let resource = json!({ "tenant": t, "kind": "vm", "names": [format!("vm.{t}.example")],
                               "attributes": { "certificate": "auto", "public-key": key } });
        let (status, r) = api.json(&op, M::POST, "/v1/resources", resource).await;
        assert_eq!(status, 201, "{r}");
        resources.push(r["id"].as_str().unwrap().to_string());
    }
    let (res_a, res_b) = (resources[0].clone(), resources[1].clone());
    let mut serials = Vec::new();
    for t in ["a", "b"] {
        let started = Instant::now();
        loop {
            let (status, list) = api.call(&op, M::GET, &format!("/v1/certificates?tenant={t}"), None).await;
            assert_eq!(status, 200, "{list}");
            if let Some(c) = list.as_array().unwrap().first() {
                serials.push(c["serial"].as_str().unwrap().to_string());
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "no certificate provisioned for {t}\n{}", server.log());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let (serial_a, serial_b) = (serials[0].clone(), serials[1].clone());

    // Tokens: a's from the CLI, b's from the API; a second issue without rotate is refused.
    let issued: Value = serde_json::from_str(support::tenure_cli(&data, &["tenant", "token", "a", "--json"]).trim()).unwrap();
    let a = issued["token"].as_str().unwrap().to_string();
    assert!(a.starts_with("tenure-tenant.a."), "{issued}");
    let (status, body) = api.json(&op, M::POST, "/v1/tenants/b/token", json!({})).await;
    assert_eq!(status, 201, "{body}");
    let b = body["token"].as_str().unwrap().to_string();
    let (status, body) = api.json(&op, M::POST, "/v1/tenants/b/token", json!({ "rotate": false })).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("already has a token; rotate to replace it"), "{body}");
    let (status, body) = api.json(&op, M::POST, "/v1/tenants/b/token", json!({ "rotat": true })).await;
    assert_eq!(status, 400, "an unknown member is refused: {body}");
    let out = support::tenure_command(&data).args(["tenant", "token", "a", "--data"]).arg(&data).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--rotate"), "{out:?}");
    let (status, _) = api.call(&b, M::GET, "/v1/tenants", None).await;
    assert_eq!(status, 200, "b's token works");

    // Every route, with a's token and b's names, ids and serials (or ones that
    // do not exist): 403. Operator-only routes: 403 even with a's own.
    let mut tried = 0;
    for (method, pattern, access, _) in ROUTES {
        let body = || Some(b"{}".to_vec());
        let with = |segment: &str| match (pattern.find('{'), pattern.find('}')) {
            (Some(start), Some(end)) => format!("{}{segment}{}", &pattern[..start], &pattern[end + 1..]),
            _ => pattern.to_string(),
        };
        match access {
            Access::Operator => {
                let segment = if pattern.contains("{id}") { res_a.as_str() } else { "a" };
                let path = with(segment);
                assert_forbidden(&format!("{method} {path}"), api.call(&a, method.clone(), &path, body()).await);
            }
            Access::Tenant(scope) => {
                let others: Vec<String> = match scope {
                    Scope::PathTenant => vec!["b".into(), "nobody".into()],
                    Scope::PathResource => vec![res_b.clone(), "res_nothing".into()],
                    Scope::PathCertificate => vec![serial_b.clone(), serial_b.to_uppercase(), "00ff".into()],
                    Scope::Handler => match *pattern {
                        "/v1/tenants" | "/v1/plugins" | "/v1/plugins/signatures" => vec![],
                        "/v1/resources" | "/v1/audit" => vec!["?tenant=b".into(), "?tenant=nobody".into()],
                        "/v1/certificates" => vec!["?tenant=b".into(), format!("?resource={res_b}"), "?resource=res_nothing".into()],
                        other => panic!("{method} {other} is new: say here what a tenant's token may see of it"),
                    },
                };
                for other in others {
                    let path = if *scope == Scope::Handler { format!("{pattern}{other}") } else { with(&other) };
                    assert_forbidden(&format!("{method} {path}"), api.call(&a, method.clone(), &path, body()).await);
                }
            }
        }
        tried += 1;
    }
    assert_eq!(tried, ROUTES.len());

    // Lists answer with a's things only; the operator sees everything.
    let (_, list) = api.call(&a, M::GET, "/v1/tenants", None).await;
    assert_eq!(tenants_of(&list, "tenant"), ["a"], "{list}");
    let (_, list) = api.call(&a, M::GET, "/v1/resources", None).await;
    assert_eq!(tenants_of(&list, "tenant"), ["a"], "{list}");
    let (_, list) = api.call(&a, M::GET, "/v1/resources?tenant=a", None).await;
    assert_eq!(tenants_of(&list, "tenant"), ["a"], "{list}");
    let (_, list) = api.call(&a, M::GET, "/v1/certificates", None).await;
    assert_eq!(tenants_of(&list, "tenant"), ["a"], "{list}");
    let (_, list) = api.call(&a, M::GET, &format!("/v1/certificates?resource={res_a}&limit=5"), None).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let (_, list) = api.call(&op, M::GET, "/v1/certificates", None).await;
    let mut all = tenants_of(&list, "tenant");
    all.sort();
    all.dedup();
    assert_eq!(all, ["a", "b"], "{list}");
    let (_, list) = api.call(&op, M::GET, "/v1/tenants", None).await;
    assert!(tenants_of(&list, "tenant").contains(&"b".to_string()), "{list}");

    // Its own things: limits, webhook secret, resource, certificate.
    for path in ["/v1/tenants/a/limits", "/v1/tenants/a/webhook-secret", &format!("/v1/resources/{res_a}")] {
        let (status, body) = api.call(&a, M::GET, path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, body) = api.call(&a, M::POST, "/v1/tenants/a/webhook-secret/rotate", None).await;
    assert_eq!(status, 200, "{body}");
    let (status, cert) = api.call(&a, M::GET, &format!("/v1/certificates/{}", serial_a.to_uppercase()), None).await;
    assert_eq!(status, 200, "{cert}");
    assert_eq!((cert["serial"].as_str(), cert["tenant"].as_str()), (Some(serial_a.as_str()), Some("a")), "{cert}");
    assert!(cert["renew_at"].is_i64() && cert["deliveries"].is_array() && cert["renewal"].is_string(), "{cert}");
    assert_eq!(cert["resources"], json!([res_a]), "{cert}");
    let (status, p) = api.call(&op, M::GET, "/v1/certificates/00ff", None).await;
    assert_eq!(status, 404, "the operator learns that a serial does not exist: {p}");

    // Renew its resource's certificate now: a successor.
    let (status, report) = api.call(&a, M::POST, &format!("/v1/resources/{res_a}/renew"), None).await;
    assert_eq!((status, report["renewed"].as_u64()), (200, Some(1)), "{report}");
    let (_, list) = api.call(&a, M::GET, &format!("/v1/certificates?resource={res_a}"), None).await;
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    let (_, cert) = api.call(&a, M::GET, &format!("/v1/certificates/{serial_a}"), None).await;
    assert!(cert["successor"].is_string(), "{cert}");

    // Revoke its own certificate (a subscriber's reasons only), once.
    let (status, p) = api.json(&a, M::POST, &format!("/v1/certificates/{serial_a}/revoke"), json!({ "reason": 2 })).await;
    assert_eq!(status, 400, "{p}");
    let (status, revoked) = api.json(&a, M::POST, &format!("/v1/certificates/{serial_a}/revoke"), json!({ "reason": 4 })).await;
    assert_eq!((status, revoked["status"].as_str(), revoked["revocation_reason"].as_u64()), (200, Some("revoked"), Some(4)), "{revoked}");
    let (status, p) = api.call(&a, M::POST, &format!("/v1/certificates/{serial_a}/revoke"), None).await;
    assert_eq!(status, 400, "already revoked: {p}");
    assert!(p["type"].as_str().unwrap().ends_with("alreadyRevoked"), "{p}");

    // Its plugin: check, evaluate (a candidate alone, then the chain), install, list, remove.
    let deny = std::fs::read(built_plugin_path("deny-all")).unwrap();
    let (status, info) = api.call(&a, M::POST, "/v1/plugins/tenant/a/check", Some(deny.clone())).await;
    assert_eq!(status, 200, "{info}");
    assert!(info["digest"].as_str().is_some_and(|d| d.len() == 64) && info["exports"].is_array(), "{info}");
    let (status, p) = api.call(&a, M::POST, "/v1/plugins/tenant/a/check", Some(b"not wasm".to_vec())).await;
    assert_eq!(status, 400, "{p}");
    let request = |tenant: &str| {
        json!({ "account": "acct", "tenant": tenant, "trigger": "acme-order",
                "identifiers": [{ "type": "dns", "value": format!("vm.{tenant}.example") }],
                "profile": "default", "requested-lifetime-seconds": 3600 })
    };
    let wasm = base64::engine::general_purpose::STANDARD.encode(&deny);
    let (status, v) =
        api.json(&a, M::POST, "/v1/plugins/tenant/a/eval", json!({ "hook": "issuance", "request": request("a"), "wasm": wasm })).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["decision"]["deny"].is_string(), "{v}");
    let (status, v) =
        api.json(&a, M::POST, "/v1/plugins/tenant/a/eval", json!({ "hook": "issuance", "request": request("a"), "chain": true })).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["decision"]["allow"].is_object(), "the default chain allows a held name: {v}");
    // The request's tenant must be the caller's; a typo in it is refused by name.
    assert_forbidden(
        "eval of b's request",
        api.json(&a, M::POST, "/v1/plugins/tenant/a/eval", json!({ "hook": "issuance", "request": request("b"), "chain": true })).await,
    );
    let (status, p) = api
        .json(
            &a,
            M::POST,
            "/v1/plugins/tenant/a/eval",
            json!({ "hook": "issuance", "request": { "tenant": "a", "requestedLifetime": 60 }, "chain": true }),
        )
        .await;
    assert!(status == 400 && p["detail"].as_str().unwrap().contains("requestedLifetime"), "{p}");
    let (status, p) =
        api.json(&a, M::POST, "/v1/plugins/tenant/a/eval", json!({ "hook": "issuance", "request": request("a"), "chains": true })).await;
    assert_eq!(status, 400, "{p}");

    let (status, installed) = api.call(&a, M::PUT, "/v1/plugins/tenant/a", Some(deny.clone())).await;
    assert_eq!(status, 200, "{installed}");
    assert_eq!((installed["scope"].as_str(), installed["digest"].as_str()), (Some("tenant:a"), info["digest"].as_str()), "{installed}");
    assert!(installed.get("signed_by").is_some(), "{installed}");
    let (status, _) = api.call(&op, M::PUT, "/v1/plugins/tenant/b", Some(std::fs::read(built_plugin_path("issuance-only")).unwrap())).await;
    assert_eq!(status, 200);
    let (_, list) = api.call(&a, M::GET, "/v1/plugins", None).await;
    assert_eq!(tenants_of(&list, "scope"), ["tenant:a"], "{list}");
    let (_, list) = api.call(&op, M::GET, "/v1/plugins", None).await;
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    let (_, v) =
        api.json(&a, M::POST, "/v1/plugins/tenant/a/eval", json!({ "hook": "issuance", "request": request("a"), "chain": true })).await;
    assert!(v["decision"]["deny"].is_string(), "its installed plugin is in the chain now: {v}");

    // A decision under its plugin, then its audit: its own records only.
    let resource =
        json!({ "tenant": "a", "kind": "vm", "names": ["www.a.example"], "attributes": { "certificate": "auto", "public-key": key } });
    let (status, _) = api.json(&op, M::POST, "/v1/resources", resource).await;
    assert_eq!(status, 201);
    let started = Instant::now();
    loop {
        let (status, records) = api.call(&a, M::GET, "/v1/audit?limit=100", None).await;
        assert_eq!(status, 200, "{records}");
        assert_eq!(tenants_of(&records, "tenant"), ["a"], "{records}");
        if records.as_array().unwrap().iter().any(|r| r["outcome"] == "deny") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no denial audited: {records}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, records) = api.call(&a, M::GET, "/v1/audit?tenant=a", None).await;
    assert_eq!((status, tenants_of(&records, "tenant")), (200, vec!["a".to_string()]), "{records}");
    let (_, records) = api.call(&op, M::GET, "/v1/audit?tenant=b", None).await;
    assert!(records.as_array().unwrap().iter().all(|r| r["tenant"] == "b"), "{records}");

    let (status, body) = api.call(&a, M::DELETE, "/v1/plugins/tenant/a", None).await;
    assert_eq!((status, body["removed"].as_bool()), (200, Some(true)), "{body}");
    assert_forbidden("b's plugin", api.call(&a, M::DELETE, "/v1/plugins/tenant/b", None).await);

    // Rotation: the old token is refused at once, the new one works.
    let (status, body) = api.json(&op, M::POST, "/v1/tenants/a/token", json!({ "rotate": true })).await;
    assert_eq!(status, 201, "{body}");
    let rotated = body["token"].as_str().unwrap().to_string();
    let (status, p) = api.call(&a, M::GET, "/v1/tenants", None).await;
    assert_eq!(status, 401, "the old token: {p}");
    let (status, list) = api.call(&rotated, M::GET, "/v1/tenants", None).await;
    assert_eq!((status, tenants_of(&list, "tenant")), (200, vec!["a".to_string()]), "{list}");
    let (status, _) = api.call(&b, M::GET, "/v1/tenants/b/limits", None).await;
    assert_eq!(status, 200, "b's token is untouched");

    // Malformed and oversized tokens are 401s.
    for bad in ["tenure-tenant.a", "tenure-tenant.a.!!", &format!("{rotated}x"), &format!("tenure-tenant.a.{}", "A".repeat(5000))] {
        let (status, _) = api.call(bad, M::GET, "/v1/tenants", None).await;
        assert_eq!(status, 401, "{bad}");
    }
}
