//! Resource state from the platform against a real `tenure serve`: attribute
//! changes (`resource set-attr`, `PATCH /v1/resources/{id}`) validated as at
//! add, and leases (`lease-seconds`): a resource not confirmed in time is
//! suspended by the server's scheduler, one confirmed in time stays active;
//! a suspended resource's certificate is not renewed, and is reissued after resume.

use std::time::{Duration, Instant};

use reqwest::Method as M;
use serde_json::{Value, json};

use crate::admin::{call, client};
use crate::support::{self, ServeOptions, Server};

struct Api {
    server: Server,
    c: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    /// A server whose scheduler passes every second (leases are checked each pass).
    fn start(data: &std::path::Path, extra: &[&str]) -> Api {
        let mut options = ServeOptions::new(None);
        options.extra = ["--renewal-interval", "1"].iter().chain(extra).map(|s| s.to_string()).collect();
        let server = Server::start(data, options);
        let c = client(&server);
        let base = format!("https://{}", server.admin);
        let token = std::fs::read_to_string(data.join("admin-token")).unwrap().trim().to_string();
        Api { server, c, base, token }
    }

    async fn call(&self, method: M, path: &str, body: Option<Value>) -> (u16, Value) {
        call(&self.c, &self.token, method, format!("{}{path}", self.base), body.map(|b| b.to_string().into_bytes())).await
    }

    async fn add(&self, name: &str, attributes: Value) -> String {
        let body = json!({ "tenant": "a", "kind": "vm", "names": [name], "attributes": attributes });
        let (status, r) = self.call(M::POST, "/v1/resources", Some(body)).await;
        assert_eq!(status, 201, "{r}");
        r["id"].as_str().unwrap().to_string()
    }

    async fn events(&self, id: &str) -> Vec<Value> {
        let (status, r) = self.call(M::GET, &format!("/v1/resources/{id}"), None).await;
        assert_eq!(status, 200, "{r}");
        r["events"].as_array().unwrap().clone()
    }
}

/// The CLI's stderr for a command expected to fail.
fn cli_fails(data: &std::path::Path, args: &[&str]) -> String {
    let out = support::tenure_command(data).args(args).arg("--data").arg(data).output().unwrap();
    assert!(!out.status.success(), "tenure {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn attributes_change_through_the_cli_and_patch() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let api = Api::start(&data, &[]);
    let (status, t) = api.call(M::POST, "/v1/tenants", Some(json!({ "name": "a", "permits": ["a.example"] }))).await;
    assert_eq!(status, 201, "{t}");
    let id = api.add("www.a.example", json!({ "team": "blue", "old": "x" })).await;

    // PATCH: a value sets, null removes; the resource comes back.
    let (status, r) =
        api.call(M::PATCH, &format!("/v1/resources/{id}"), Some(json!({ "attributes": { "team": "red", "old": null } }))).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["attributes"], json!({ "team": "red" }), "{r}");
    let last = api.events(&id).await.pop().unwrap();
    assert_eq!((last["kind"].as_str(), &last["detail"]), (Some("attributes-changed"), &json!({ "set": ["team"], "removed": ["old"] })));

    // Refused with the reason, and nothing changed.
    let (status, p) = api.call(M::PATCH, &format!("/v1/resources/{id}"), Some(json!({ "attributes": { "lease-seconds": "5" } }))).await;
    assert_eq!(status, 400, "{p}");
    assert!(
        p["detail"].as_str().unwrap().contains("\"lease-seconds\" must be a whole number of seconds from 10 to 31536000, not \"5\""),
        "{p}"
    );
    let (status, p) = api.call(M::PATCH, &format!("/v1/resources/{id}"), Some(json!({ "attributes": {}, "state": "x" }))).await;
    assert_eq!(status, 400, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("state"), "{p}");
    let (status, p) = api.call(M::PATCH, "/v1/resources/res_nope", Some(json!({ "attributes": { "a": "b" } }))).await;
    assert_eq!(status, 404, "{p}");

    // The CLI, on the data directory the server is using.
    let out = support::tenure_cli(&data, &["resource", "set-attr", &id, "--attr", "tier=gold", "--remove", "team", "--json"]);
    let r: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["attributes"], json!({ "tier": "gold" }), "{out}");
    let err = cli_fails(&data, &["resource", "set-attr", &id, "--attr", "delivery-dir=relative"]);
    assert!(err.contains("delivery-dir \"relative\" must be an absolute path"), "{err}");
    let err = cli_fails(&data, &["resource", "set-attr", &id]);
    assert!(err.contains("no attribute to set or remove"), "{err}");

    // A released resource keeps its attributes.
    let (status, _) = api.call(M::POST, &format!("/v1/resources/{id}/release"), None).await;
    assert_eq!(status, 200);
    let (status, p) = api.call(M::PATCH, &format!("/v1/resources/{id}"), Some(json!({ "attributes": { "a": "b" } }))).await;
    assert_eq!(status, 409, "{p}");
    drop(api.server);
}

// Two workers: the webhook receiver answers while the test blocks on the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_lease_suspends_and_a_confirmed_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hook = crate::lifecycle::Webhook::start().await;
    let api = Api::start(&data, &["--webhook-allow", "http://127.0.0.1"]);
    let (status, t) = api.call(M::POST, "/v1/tenants", Some(json!({ "name": "a", "permits": ["a.example"] }))).await;
    assert_eq!(status, 201, "{t}");
    let forgotten = api.add("one.a.example", json!({ "lease-seconds": "10", "delivery-webhook": hook.url })).await;
    let kept = api.add("two.a.example", json!({ "lease-seconds": "10" })).await;
    // Set later through PATCH: the lease starts with the change.
    let by_patch = api.add("three.a.example", json!({})).await;
    let (status, r) =
        api.call(M::PATCH, &format!("/v1/resources/{by_patch}"), Some(json!({ "attributes": { "lease-seconds": "10" } }))).await;
    assert_eq!(status, 200, "{r}");
    assert!(r["lease_expires"].as_i64().is_some(), "{r}");

    let started = Instant::now();
    let mut confirmations = 0;
    let state = |r: &Value| r["resource"]["state"].as_str().map(str::to_string);
    loop {
        // `kept` is confirmed every few seconds, alternately by the API and the CLI.
        let (status, r) = if confirmations % 2 == 0 {
            api.call(M::POST, &format!("/v1/resources/{kept}/confirm"), None).await
        } else {
            let out = support::tenure_cli(&data, &["resource", "confirm", &kept, "--json"]);
            (200, serde_json::from_str(out.trim()).unwrap())
        };
        assert_eq!((status, r["state"].as_str()), (200, Some("active")), "{r}");
        confirmations += 1;
        let (_, f) = api.call(M::GET, &format!("/v1/resources/{forgotten}"), None).await;
        let (_, p) = api.call(M::GET, &format!("/v1/resources/{by_patch}"), None).await;
        if state(&f).as_deref() == Some("suspended") && state(&p).as_deref() == Some("suspended") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "not suspended in time: {f}\n{p}\n{}", api.server.log());
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    // Past the lease of the first confirmation: only the confirmations kept it.
    assert!(started.elapsed() >= Duration::from_secs(9), "{:?}", started.elapsed());
    let (_, k) = api.call(M::GET, &format!("/v1/resources/{kept}"), None).await;
    assert_eq!(state(&k).as_deref(), Some("active"), "{k}");
    let last = api.events(&forgotten).await.pop().unwrap();
    assert_eq!((last["kind"].as_str(), last["detail"]["reason"].as_str()), (Some("suspended"), Some("lease expired")), "{last}");

    // Its webhook was told, signed under the tenant's secret.
    let (headers, body) =
        crate::lifecycle::wait_for("the suspension webhook", Duration::from_secs(10), || hook.received.lock().unwrap().first().cloned());
    let sent: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((sent["event"].as_str(), sent["resource"].as_str()), (Some("resource.suspended"), Some(forgotten.as_str())), "{sent}");
    assert_eq!(sent["reason"], "lease expired");
    let secret = support::tenure_cli(&data, &["tenant", "webhook-secret", "a"]).trim().to_string();
    let signature = headers.get("tenure-signature").expect("signed");
    let (t, v1) = signature.split_once(",v1=").unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let expected = crate::lifecycle::hmac_hex(secret.as_bytes(), &[format!("{t}.").as_bytes(), &body[..]].concat());
    assert_eq!(v1, expected, "signature over t.body");

    // Confirming a suspended resource is refused; resuming restarts the lease.
    let (status, p) = api.call(M::POST, &format!("/v1/resources/{forgotten}/confirm"), None).await;
    assert_eq!(status, 409, "{p}");
    let (status, r) = api.call(M::POST, &format!("/v1/resources/{forgotten}/resume"), None).await;
    assert_eq!((status, r["state"].as_str()), (200, Some("active")), "{r}");
    assert_eq!(r["lease_expires"].as_i64(), r["updated_at"].as_i64().map(|t| t + 10), "{r}");
}

/// Suspended: its certificate lapses (not revoked) and no sweep renews it,
/// even past its window; resumed: the next sweep reissues it.
#[tokio::test]
async fn suspension_stops_renewal_and_resume_reissues() {
    use crate::lifecycle::{account, add_resource, cert_show, issue, serial_of, server_with};
    support::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The server sweeps only as it starts; the test sweeps with `renew --now`.
    let server = server_with(&data, &["--renewal-interval", "3600"]);
    let corp = support::add_tenant(&data, "corp", &["corp.example"]);
    let vm = add_resource(&data, &["--tenant", "corp", "--kind", "vm", "--name", "vm.corp.example", "--attr", "lifetime-seconds=6"]);
    let acct = account(&server, &corp).await;
    let serial = serial_of(&issue(&acct, &["vm.corp.example"], None).await.unwrap());
    assert_eq!(cert_show(&data, &serial)["renewal"], "scheduled");

    support::tenure_cli(&data, &["resource", "suspend", &vm]);
    let shown = cert_show(&data, &serial);
    assert_eq!((shown["renewal"].as_str(), shown["status"].as_str()), (Some("lapsed"), Some("valid")), "{shown}");
    // Past its renewal window (the last third of six seconds): still not renewed.
    std::thread::sleep(Duration::from_secs(5));
    let report: Value = serde_json::from_str(support::tenure_cli(&data, &["renew", "--now", "--json"]).trim()).unwrap();
    assert_eq!(report["renewed"], 0, "{report}");
    assert!(cert_show(&data, &serial)["successor"].is_null());

    let out = support::tenure_cli(&data, &["resource", "resume", &vm, "--json"]);
    assert_eq!(serde_json::from_str::<Value>(out.trim()).unwrap()["state"], "active", "{out}");
    assert_eq!(cert_show(&data, &serial)["renewal"], "scheduled");
    let report: Value = serde_json::from_str(support::tenure_cli(&data, &["renew", "--now", "--json"]).trim()).unwrap();
    assert_eq!(report["renewed"], 1, "{report}");
    let shown = cert_show(&data, &serial);
    assert_eq!(shown["renewal"], "renewed", "{shown}");
    assert!(shown["successor"].is_string(), "{shown}");
    drop(server);
}
