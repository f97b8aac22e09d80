//! The admin API of a real `tenure serve`: bearer token, tenants, resources
//! (add, transfer, release, suspend, resume, events), plugins (install,
//! remove), audit; typed bodies and queries, 404/405; and the CLI's
//! `resource suspend|resume`.

use crate::support;

use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use support::{ServeOptions, Server};

pub(crate) fn client(server: &Server) -> reqwest::Client {
    reqwest::Client::builder().tls_backend_preconfigured(client_tls(server)).build().unwrap()
}

fn client_tls(server: &Server) -> rustls::ClientConfig {
    support::install_crypto_provider();
    let pem = std::fs::read(server.root_pem()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth()
}

pub(crate) async fn call(c: &reqwest::Client, token: &str, method: reqwest::Method, url: String, body: Option<Vec<u8>>) -> (u16, Value) {
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
        // Overlapping permits, as the operator allows explicitly: the registry keeps them apart.
        Some(json!({ "name": "b", "permits": ["shared.example"], "allow_overlap": true }).to_string().into_bytes()),
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

/// Like `call`, with the response headers.
async fn call_with_headers(
    c: &reqwest::Client,
    token: &str,
    method: reqwest::Method,
    url: String,
    body: Option<&str>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = c.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    let r = req.send().await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    let bytes = r.bytes().await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null), headers)
}

struct AdminApi {
    _dir: tempfile::TempDir,
    server: Server,
    c: reqwest::Client,
    base: String,
    token: String,
}

impl AdminApi {
    fn start() -> AdminApi {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let server = Server::start(&data, ServeOptions::new(None));
        let c = client(&server);
        let base = format!("https://{}", server.admin);
        let token = std::fs::read_to_string(data.join("admin-token")).unwrap().trim().to_string();
        AdminApi { _dir: dir, server, c, base, token }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        call(&self.c, &self.token, method, format!("{}{path}", self.base), body.map(|b| b.to_string().into_bytes())).await
    }

    async fn raw(&self, method: reqwest::Method, path: &str, body: Option<&str>) -> (u16, Value, reqwest::header::HeaderMap) {
        call_with_headers(&self.c, &self.token, method, format!("{}{path}", self.base), body).await
    }
}

#[tokio::test]
async fn admin_api_suspends_and_resumes_resources_and_removes_plugins() {
    use reqwest::Method as M;
    let api = AdminApi::start();
    let (status, t) = api.call(M::POST, "/v1/tenants", Some(json!({ "name": "a", "permits": ["a.example"] }))).await;
    assert_eq!(status, 201, "{t}");
    let (status, r) = api.call(M::POST, "/v1/resources", Some(json!({ "tenant": "a", "kind": "vm", "names": ["www.a.example"] }))).await;
    assert_eq!(status, 201, "{r}");
    let id = r["id"].as_str().unwrap().to_string();

    // Suspend, resume: the state follows and both are events.
    let (status, r) = api.call(M::POST, &format!("/v1/resources/{id}/suspend"), None).await;
    assert_eq!((status, r["state"].as_str()), (200, Some("suspended")), "{r}");
    let (status, r) = api.call(M::POST, &format!("/v1/resources/{id}/resume"), Some(json!({}))).await;
    assert_eq!((status, r["state"].as_str()), (200, Some("active")), "{r}");
    let (_, r) = api.call(M::GET, &format!("/v1/resources/{id}"), None).await;
    let kinds: Vec<&str> = r["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["created", "suspended", "resumed"]);

    // An unknown resource is a 404; a released one cannot be suspended (409).
    let (status, p) = api.call(M::POST, "/v1/resources/nope/suspend", None).await;
    assert_eq!(status, 404, "{p}");
    let (status, _) = api.call(M::POST, &format!("/v1/resources/{id}/release"), None).await;
    assert_eq!(status, 200);
    let (status, p) = api.call(M::POST, &format!("/v1/resources/{id}/suspend"), None).await;
    assert_eq!(status, 409, "{p}");
    let (status, p) = api.call(M::POST, &format!("/v1/resources/{id}/resume"), None).await;
    assert_eq!(status, 409, "{p}");

    // Plugins: removing what is not installed is a 404; removing what is, 200, once.
    let wasm = std::fs::read(tenure_engine::policy::builtin::built_plugin_path("deny-all")).unwrap();
    let (status, p) = api.call(M::DELETE, "/v1/plugins/operator", None).await;
    assert_eq!((status, p["status"].as_u64()), (404, Some(404)), "{p}");
    let (status, p) = api.call(M::DELETE, "/v1/plugins/tenant/a", None).await;
    assert_eq!(status, 404, "{p}");
    for path in ["/v1/plugins/operator", "/v1/plugins/tenant/a"] {
        let (status, p) = call(&api.c, &api.token, M::PUT, format!("{}{path}", api.base), Some(wasm.clone())).await;
        assert_eq!(status, 200, "{p}");
    }
    let (_, list) = api.call(M::GET, "/v1/plugins", None).await;
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    let (status, p) = api.call(M::DELETE, "/v1/plugins/tenant/a", None).await;
    assert_eq!((status, p["scope"].as_str(), p["removed"].as_bool()), (200, Some("tenant:a"), Some(true)), "{p}");
    let (_, list) = api.call(M::GET, "/v1/plugins", None).await;
    assert_eq!(
        list,
        json!([{ "scope": "operator", "digest": list[0]["digest"], "installed_at": list[0]["installed_at"], "signed_by": null }])
    );
    let (status, _) = api.call(M::DELETE, "/v1/plugins/tenant/a", None).await;
    assert_eq!(status, 404);
    let (status, p) = api.call(M::DELETE, "/v1/plugins/operator", None).await;
    assert_eq!((status, p["scope"].as_str()), (200, Some("operator")), "{p}");
    let (_, list) = api.call(M::GET, "/v1/plugins", None).await;
    assert_eq!(list, json!([]));
    drop(api.server);
}

#[tokio::test]
async fn admin_api_refuses_unknown_fields_parameters_paths_and_methods() {
    use reqwest::Method as M;
    let api = AdminApi::start();
    let problem = |status: u16, p: &Value, needle: &str| {
        assert_eq!(status, 400, "{p}");
        assert_eq!(p["type"], "urn:ietf:params:acme:error:malformed", "{p}");
        assert!(p["detail"].as_str().unwrap().contains(needle), "{needle:?} not in {p}");
    };

    // A typo in a body is named, and nothing is created.
    let (status, p) = api.call(M::POST, "/v1/tenants", Some(json!({ "name": "a", "permit": ["a.example"] }))).await;
    problem(status, &p, "permit");
    let (_, list) = api.call(M::GET, "/v1/tenants", None).await;
    assert!(list.as_array().unwrap().iter().all(|t| t["tenant"] != "a"), "{list}");
    let (status, p) = api.call(M::POST, "/v1/tenants", Some(json!({ "name": ["a"], "permits": [] }))).await;
    problem(status, &p, "\"name\"");
    let (status, p, _) = api.raw(M::POST, "/v1/tenants", Some("{\"name\": \"a\",")).await;
    problem(status, &p, "the body");
    let (status, t) = api.call(M::POST, "/v1/tenants", Some(json!({ "name": "a", "permits": ["a.example"] }))).await;
    assert_eq!(status, 201, "{t}");
    let (status, p) = api.call(M::POST, "/v1/resources", Some(json!({ "tenant": "a", "kind": "vm", "name": ["www.a.example"] }))).await;
    problem(status, &p, "name");
    let (status, p) = api.call(M::POST, "/v1/resources", Some(json!({ "tenant": "a", "kind": "vm", "attributes": { "k": 1 } }))).await;
    problem(status, &p, "attributes.k");
    let (status, r) = api.call(M::POST, "/v1/resources", Some(json!({ "tenant": "a", "kind": "vm", "names": ["www.a.example"] }))).await;
    assert_eq!(status, 201, "{r}");
    let id = r["id"].as_str().unwrap().to_string();
    let (status, p) = api.call(M::POST, &format!("/v1/resources/{id}/transfer"), Some(json!({ "tenant": "b" }))).await;
    problem(status, &p, "tenant");
    let (status, p) = api.call(M::POST, &format!("/v1/resources/{id}/release"), Some(json!({ "force": true }))).await;
    problem(status, &p, "force");
    let (_, r) = api.call(M::GET, &format!("/v1/resources/{id}"), None).await;
    assert_eq!(r["resource"]["state"], "active", "refused requests changed nothing: {r}");

    // Query parameters are typed: a limit that is not a number, and a typo.
    for (query, needle) in [("limit=ten", "limit"), ("limit=-5", "limit"), ("tenant=a&limt=5", "limt")] {
        let (status, p) = api.call(M::GET, &format!("/v1/audit?{query}"), None).await;
        problem(status, &p, needle);
    }
    let (status, audit) = api.call(M::GET, "/v1/audit?tenant=a&limit=5", None).await;
    assert_eq!(status, 200, "{audit}");
    let (status, p) = api.call(M::GET, "/v1/resources?tenant=a&kind=vm", None).await;
    problem(status, &p, "kind");
    let (status, list) = api.call(M::GET, "/v1/resources?tenant=a", None).await;
    assert_eq!((status, list.as_array().map(Vec::len)), (200, Some(1)), "{list}");

    // A known path with another method: 405 and Allow; an unknown path: 404.
    let (status, p, headers) = api.raw(M::DELETE, "/v1/tenants", None).await;
    assert_eq!(status, 405, "{p}");
    assert_eq!(headers.get("allow").and_then(|v| v.to_str().ok()), Some("GET, POST"));
    let (status, _, headers) = api.raw(M::GET, "/v1/plugins/operator", None).await;
    assert_eq!(status, 405);
    assert_eq!(headers.get("allow").and_then(|v| v.to_str().ok()), Some("PUT, DELETE"));
    let (status, p, _) = api.raw(M::GET, "/v1/nothing", None).await;
    assert_eq!(status, 404, "{p}");

    // Without the token, nothing is revealed: not even whether a path exists.
    let (status, _, headers) = call_with_headers(&api.c, "wrong", M::GET, format!("{}/v1/nothing", api.base), None).await;
    assert_eq!(status, 401);
    assert!(headers.get("www-authenticate").and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("Bearer")));
}

#[test]
fn resource_suspend_and_resume_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    support::add_tenant(&data, "a", &["a.example"]);
    let out = support::tenure_cli(&data, &["resource", "add", "--tenant", "a", "--kind", "vm", "--name", "www.a.example", "--json"]);
    let id = serde_json::from_str::<Value>(out.trim()).unwrap()["id"].as_str().unwrap().to_string();

    let out = support::tenure_cli(&data, &["resource", "suspend", &id, "--json"]);
    let r: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((r["id"].as_str(), r["state"].as_str()), (Some(id.as_str()), Some("suspended")), "{out}");
    let out = support::tenure_cli(&data, &["resource", "list", "--tenant", "a"]);
    let row = |out: &str| out.lines().find(|l| l.starts_with(&id)).map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>());
    assert!(out.starts_with("ID ") && out.contains("STATE"), "a header first: {out}");
    assert_eq!(row(&out).as_ref().map(|r| r[3].as_str()), Some("suspended"), "{out}");
    let out = support::tenure_cli(&data, &["resource", "resume", &id, "--json"]);
    assert_eq!(serde_json::from_str::<Value>(out.trim()).unwrap()["state"], "active", "{out}");
    let out = support::tenure_cli(&data, &["resource", "suspend", &id]);
    assert_eq!(row(&out).map(|r| r[..4].join(" ")), Some(format!("{id} a vm suspended")), "{out}");

    // An unknown resource fails with a message, not a panic.
    let out = support::tenure_command(&data).args(["resource", "resume", "nope", "--data"]).arg(&data).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no resource nope"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A command that only reads, run where there is no data directory, says so
/// and makes none; a second `serve` on a data directory in use is refused.
#[test]
fn data_directories_are_not_made_by_readers_nor_shared_by_two_servers() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    let out = std::process::Command::new(support::tenure_bin()).args(["tenant", "list", "--data"]).arg(&missing).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a tenure data directory"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!missing.exists(), "a read-only command made a data directory");

    let data = dir.path().join("data");
    let server = Server::start(&data, ServeOptions::new(None));
    let second = std::process::Command::new(support::tenure_bin())
        .args(["serve", "--listen", &format!("127.0.0.1:{}", support::free_port())])
        .args(["--admin-listen", &format!("127.0.0.1:{}", support::free_port())])
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("another tenure serve"), "{}", String::from_utf8_lossy(&second.stderr));
    drop(server);
}

/// A CA is made by `tenure init` (or `serve`) alone, once: the other writers
/// refuse a directory without one, a second `init` changes nothing, and what
/// it makes is private (0700, 0600), its EAB keys sealed in the database.
#[test]
fn init_makes_a_private_ca_once_and_writers_need_one() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = |args: &[&str]| support::tenure_command(&data).args(args).arg("--data").arg(&data).output().unwrap();

    let out = run(&["tenant", "add", "corp", "--permit", "corp.example"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("run `tenure init"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!data.exists(), "a writer made a data directory");

    let out = run(&["init", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let root = std::fs::read(data.join("root.pem")).unwrap();
    let again = run(&["init"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already"), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(std::fs::read(data.join("root.pem")).unwrap(), root, "a second init changed the root");

    let corp = support::add_tenant(&data, "corp", &["corp.example"]);
    assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
    for entry in std::fs::read_dir(&data).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() && entry.file_name() != "root.pem" {
            let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & 0o077, 0, "{:?} is {mode:o}", entry.file_name());
        }
    }
    // The HMAC key the tenant was given is nowhere in the database in clear.
    use base64::Engine as _;
    let hmac = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&corp.eab_hmac).unwrap();
    for file in ["tenure.db", "tenure.db-wal"] {
        let Ok(bytes) = std::fs::read(data.join(file)) else { continue };
        assert!(!bytes.windows(hmac.len()).any(|w| w == hmac.as_slice()), "the EAB HMAC key is in {file} in clear");
    }
}

/// The admin API fails closed: `serve` refuses an empty or short token
/// instead of serving an API that an empty header would open.
#[test]
fn serve_refuses_an_empty_or_short_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    support::ensure_init(&data);
    for token in ["", "  \n", "short-token"] {
        std::fs::write(data.join("admin-token"), token).unwrap();
        let out = std::process::Command::new(support::tenure_bin())
            .args(["serve", "--listen", &format!("127.0.0.1:{}", support::free_port())])
            .args(["--admin-listen", &format!("127.0.0.1:{}", support::free_port())])
            .arg("--data")
            .arg(&data)
            .output()
            .unwrap();
        assert!(!out.status.success(), "serve started with the admin token {token:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("admin token") && stderr.contains("at least 16 characters"), "{stderr}");
    }
    std::fs::remove_file(data.join("admin-token")).unwrap();
    let out = std::process::Command::new(support::tenure_bin())
        .args(["serve", "--listen", &format!("127.0.0.1:{}", support::free_port())])
        .args(["--admin-listen", &format!("127.0.0.1:{}", support::free_port())])
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve started without an admin token");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the admin token"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!data.join("admin-token").exists(), "a missing admin token was silently remade");
}

/// Two tenants' permits may overlap only when the operator says so, on the
/// CLI (`--allow-overlap`) as on the admin API (`allow_overlap`).
#[tokio::test]
async fn overlapping_permits_need_the_operators_word() {
    use reqwest::Method as M;
    let api = AdminApi::start();
    let data = api._dir.path().join("data");
    support::add_tenant(&data, "b", &["b.example", "10.20.0.0/16"]);
    let refused =
        support::tenure_command(&data).args(["tenant", "add", "c", "--permit", "www.b.example", "--data"]).arg(&data).output().unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("overlaps tenant b's permit b.example") && stderr.contains("--allow-overlap"), "{stderr}");
    assert!(!support::tenure_cli(&data, &["tenant", "list"]).lines().any(|l| l.split_whitespace().next() == Some("c")));
    support::tenure_cli(&data, &["tenant", "add", "c", "--permit", "www.b.example", "--allow-overlap"]);

    let (status, body) = api.call(M::POST, "/v1/tenants", Some(json!({ "name": "d", "permits": ["10.20.1.0/24"] }))).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("overlaps tenant b"), "{body}");
    let (status, body) =
        api.call(M::POST, "/v1/tenants", Some(json!({ "name": "d", "permits": ["10.20.1.0/24"], "allow_overlap": true }))).await;
    assert_eq!(status, 201, "{body}");
}

/// An upload over the limit gets its 413 over HTTP/2 too, not a stream reset:
/// the server reads (and drops) what the client sends before answering. curl
/// is the judge: unlike hyper's client, it fails ("Stream error in the HTTP/2
/// framing layer") on a response followed by a reset.
#[test]
fn an_oversized_admin_upload_gets_413_over_http2() {
    let api = AdminApi::start();
    let body = api._dir.path().join("oversized");
    std::fs::write(&body, vec![0u8; tenure_admin::input::MAX_ADMIN_BODY + 1024 * 1024]).unwrap();
    let out = std::process::Command::new("curl")
        .args(["--silent", "--show-error", "--http2", "--request", "PUT", "--write-out", "\n%{http_code} %{http_version}"])
        .arg("--cacert")
        .arg(api.server.root_pem())
        .args(["--header", &format!("Authorization: Bearer {}", api.token)])
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .arg(format!("{}/v1/plugins/operator", api.base))
        .output()
        .expect("curl (scripts/test installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "curl: {}{stdout}", String::from_utf8_lossy(&out.stderr));
    let (problem, status) = stdout.rsplit_once('\n').unwrap();
    assert_eq!(status, "413 2", "{stdout}");
    let problem: Value = serde_json::from_str(problem).unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("exceeds"), "{problem}");
}
