//! RFC 8555 §6 rules, each broken on purpose against a real `tenure serve`:
//! the server answers with the exact problem type and keeps serving.

use crate::support;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::json;
use support::raw::{EcKey, RawClient, jws};
use support::{ServeOptions, Server};

async fn setup() -> (Server, RawClient, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), ServeOptions::new(None));
    let mut client = RawClient::new(&server.directory_url(), &server.root_pem()).await;
    client.register().await;
    (server, client, dir)
}

fn assert_problem(r: &support::raw::Response, status: u16, kind: &str) {
    assert_eq!(r.status, status, "body: {}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.problem_type(), kind, "body: {}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type").as_deref(), Some("application/problem+json"));
    assert!(r.header("replay-nonce").is_some(), "every response carries a nonce");
}

#[tokio::test]
async fn jws_rules_each_get_their_problem_type() {
    let (mut server, client, _dir) = setup().await;
    let new_order = client.url("newOrder");
    let payload = json!({ "identifiers": [{ "type": "dns", "value": "a.example.test" }] }).to_string();

    // An unknown nonce.
    let mut p = client.protected(&new_order).await;
    p["nonce"] = json!(B64.encode([7u8; 16]));
    assert_problem(&client.post_jws(&new_order, &jws(&client.key, &p, &payload)).await, 400, "badNonce");

    // No nonce at all.
    let mut p = client.protected(&new_order).await;
    p.as_object_mut().unwrap().remove("nonce");
    assert_problem(&client.post_jws(&new_order, &jws(&client.key, &p, &payload)).await, 400, "badNonce");

    // A replayed nonce: the first use succeeds, the second is refused.
    let p = client.protected(&new_order).await;
    let body = jws(&client.key, &p, &payload);
    assert_eq!(client.post_jws(&new_order, &body).await.status, 201);
    assert_problem(&client.post_jws(&new_order, &body).await, 400, "badNonce");

    // The url header names another resource.
    let mut p = client.protected(&new_order).await;
    p["url"] = json!(client.url("revokeCert"));
    assert_problem(&client.post_jws(&new_order, &jws(&client.key, &p, &payload)).await, 403, "unauthorized");

    // Algorithms outside the allowed set, and one that does not fit the key.
    for alg in ["HS256", "none", "RS256", "ES384"] {
        let mut p = client.protected(&new_order).await;
        p["alg"] = json!(alg);
        let r = client.post_jws(&new_order, &jws(&client.key, &p, &payload)).await;
        assert_problem(&r, 400, "badSignatureAlgorithm");
    }

    // kid where jwk is required, jwk where kid is required, and both.
    let new_account = client.url("newAccount");
    let p = client.protected(&new_account).await; // carries kid: registered already
    assert_problem(&client.post_jws(&new_account, &jws(&client.key, &p, "{}")).await, 400, "malformed");
    let mut p = client.protected(&new_order).await;
    p.as_object_mut().unwrap().remove("kid");
    p["jwk"] = client.key.jwk();
    assert_problem(&client.post_jws(&new_order, &jws(&client.key, &p, &payload)).await, 400, "malformed");
    let mut p = client.protected(&new_order).await;
    p["jwk"] = client.key.jwk();
    assert_problem(&client.post_jws(&new_order, &jws(&client.key, &p, &payload)).await, 400, "malformed");

    // A kid naming no account.
    let mut p = client.protected(&new_order).await;
    let kid = p["kid"].as_str().unwrap().to_string();
    let bogus = format!("{}nope", &kid[..kid.rfind('/').unwrap() + 1]);
    p["kid"] = json!(bogus);
    assert_problem(&client.post_jws(&new_order, &jws(&client.key, &p, &payload)).await, 400, "accountDoesNotExist");

    // A signature by another key.
    let p = client.protected(&new_order).await;
    let r = client.post_jws(&new_order, &jws(&EcKey::generate(), &p, &payload)).await;
    assert_problem(&r, 400, "malformed");

    assert!(server.is_running());
}

#[tokio::test]
async fn bad_input_gets_a_problem_and_the_server_keeps_serving() {
    let (mut server, client, _dir) = setup().await;
    let new_order = client.url("newOrder");

    // Wrong content type: 415.
    let p = client.protected(&new_order).await;
    let body = jws(&client.key, &p, "{}").to_string().into_bytes();
    assert_problem(&client.post_raw(&new_order, body, "application/json").await, 415, "malformed");

    // Not JSON, not a JWS, broken base64, a JSON payload that is not JSON.
    for garbage in [&b"\x00\xff garbage"[..], b"{}", b"[]", b"{\"protected\":\"!!\",\"payload\":\"\",\"signature\":\"\"}"] {
        let r = client.post_raw(&new_order, garbage.to_vec(), "application/jose+json").await;
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
        assert!(r.json()["type"].as_str().unwrap().starts_with("urn:ietf:params:acme:error:"));
    }
    let r = client.post(&new_order, "this is not json").await;
    assert_problem(&r, 400, "malformed");
    let r = client.post(&new_order, &json!({ "identifiers": "nope" }).to_string()).await;
    assert_problem(&r, 400, "malformed");
    let r = client.post(&new_order, &json!({ "identifiers": [{ "type": "email", "value": "a@b.c" }] }).to_string()).await;
    assert_problem(&r, 400, "unsupportedIdentifier");
    let r = client.post(&new_order, &json!({ "identifiers": [{ "type": "dns", "value": "bad_name.example" }] }).to_string()).await;
    assert_problem(&r, 400, "rejectedIdentifier");
    let r = client
        .post(&new_order, &json!({ "identifiers": [{ "type": "dns", "value": "a.example.test" }], "profile": "forever" }).to_string())
        .await;
    assert_problem(&r, 400, "invalidProfile");

    // An oversized request: 413.
    let big = vec![b'a'; 200 * 1024];
    let r = client.post_raw(&new_order, big, "application/jose+json").await;
    assert_problem(&r, 413, "malformed");

    // A malformed CSR at finalize, and finalize before the order is ready.
    let r = client.post(&new_order, &json!({ "identifiers": [{ "type": "dns", "value": "c.example.test" }] }).to_string()).await;
    assert_eq!(r.status, 201);
    let finalize = r.json()["finalize"].as_str().unwrap().to_string();
    let r = client.post(&finalize, &json!({ "csr": B64.encode(b"not a csr") }).to_string()).await;
    assert_problem(&r, 403, "orderNotReady");
    let r = client.post(&finalize, &json!({ "csr": "***" }).to_string()).await;
    assert_problem(&r, 400, "badCSR");

    // GET on a POST-only resource, and an unknown path.
    let r = client.get(&new_order).await;
    assert_eq!(r.status, 405);
    let r = client.get(&new_order.replace("new-order", "nothing-here")).await;
    assert_eq!(r.status, 404);

    assert!(server.is_running());
    let r = client.get(&server.directory_url()).await;
    assert_eq!(r.status, 200);
    let dir = r.json();
    assert!(dir["meta"]["profiles"]["shortlived"].is_string());
    assert!(r.header("link").unwrap().contains("rel=\"index\""));
}

#[tokio::test]
async fn payloads_are_typed_members_named_and_extensions_ignored() {
    let (mut server, client, _dir) = setup().await;
    let new_order = client.url("newOrder");

    // A known member of the wrong type: malformed, naming the member.
    let r = client.post(&new_order, &json!({ "identifiers": [{ "type": "dns", "value": 5 }] }).to_string()).await;
    assert_problem(&r, 400, "malformed");
    assert!(r.json()["detail"].as_str().unwrap().contains("identifiers[0].value"), "{}", r.json());
    let kid = client.kid.clone().unwrap();
    let r = client.post(&kid, &json!({ "contact": "mailto:a@example.test" }).to_string()).await;
    assert_problem(&r, 400, "malformed");
    assert!(r.json()["detail"].as_str().unwrap().contains("contact"), "{}", r.json());
    let r = client.post(&client.url("revokeCert"), &json!({ "certificate": "AAAA", "reason": "keyCompromise" }).to_string()).await;
    assert_problem(&r, 400, "badRevocationReason");

    // Members the server does not know are ignored (RFC 8555 clients may send extensions).
    let r = client
        .post(
            &new_order,
            &json!({ "identifiers": [{ "type": "dns", "value": "ext.example.test" }], "x-extension": { "a": 1 } }).to_string(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let authz_url = r.json()["authorizations"][0].as_str().unwrap().to_string();
    let r = client.post(&authz_url, &json!({ "status": "valid" }).to_string()).await;
    assert_problem(&r, 400, "malformed");
    assert!(r.json()["detail"].as_str().unwrap().contains("status"), "{}", r.json());
    let authz = client.post(&authz_url, "").await.json();
    let challenge_url = authz["challenges"][0]["url"].as_str().unwrap().to_string();
    let r = client.post(&challenge_url, &json!({ "keyAuthorization": "from an old client" }).to_string()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = client.post(&challenge_url, "[]").await;
    assert_problem(&r, 400, "malformed");

    // The route table: 405 names the allowed methods.
    let r = client.get(&new_order).await;
    assert_eq!((r.status, r.header("allow").as_deref()), (405, Some("POST")));
    let r = client.post(&server.directory_url(), "{}").await;
    assert_eq!((r.status, r.header("allow").as_deref()), (405, Some("GET, HEAD")));
    assert!(server.is_running());
}
