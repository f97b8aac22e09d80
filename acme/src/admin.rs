//! The admin API: the platform's authenticated way to write the registry and
//! manage tenants and plugins while the CA runs. HTTPS, bearer token from
//! `DIR/admin-token`, JSON in and out, problem documents on error.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tenure_engine::Engine;
use tenure_engine::policies::PluginScope;
use tenure_engine::registry::NewResource;
use tokio::net::TcpListener;

use crate::problem::Problem;

/// Plugins can be large; everything else is small JSON.
const MAX_ADMIN_BODY: usize = 32 * 1024 * 1024;

pub struct Admin {
    engine: Engine,
    token: String,
}

pub async fn serve_admin(engine: Engine, listener: TcpListener, tls: Arc<rustls::ServerConfig>) -> std::io::Result<()> {
    let token = engine.admin_token().map_err(|e| std::io::Error::other(e.detail))?;
    let admin = Arc::new(Admin { engine, token });
    crate::server::serve_https(listener, tls, move |req, peer| {
        let admin = admin.clone();
        async move { admin.handle(req, peer).await }
    })
    .await
}

impl Admin {
    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let result = self.route(req).await;
        let (status, body) = match result {
            Ok((status, v)) => (status, v),
            Err(p) => {
                tracing::debug!(%peer, problem = %p, "admin request refused");
                (p.status(), p.to_json())
            }
        };
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, if status.is_success() { "application/json" } else { "application/problem+json" })
            .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap_or_default())))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let presented =
            req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
        #[allow(deprecated)]
        ring::constant_time::verify_slices_are_equal(presented.as_bytes(), self.token.as_bytes()).is_ok()
    }

    async fn route(&self, req: Request<Incoming>) -> Result<(StatusCode, Value), Problem> {
        if !self.authorized(&req) {
            return Err(Problem::unauthorized("the admin API needs \"Authorization: Bearer <DIR/admin-token>\"")
                .with_status(StatusCode::UNAUTHORIZED));
        }
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let query: Vec<(String, String)> = req
            .uri()
            .query()
            .map(|q| q.split('&').filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))).collect())
            .unwrap_or_default();
        let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let body = match Limited::new(req.into_body(), MAX_ADMIN_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return Err(
                    Problem::malformed(format!("the body exceeds {MAX_ADMIN_BODY} bytes")).with_status(StatusCode::PAYLOAD_TOO_LARGE)
                );
            }
        };
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let a = self.engine.clone();
        match (&method, segments.as_slice()) {
            (&Method::GET, ["v1", "tenants"]) => {
                let list = blocking(move || a.registry.tenants()).await?;
                Ok((StatusCode::OK, json!(list.iter().map(|t| json!({ "tenant": t.name, "permits": t.permits })).collect::<Vec<_>>())))
            }
            (&Method::POST, ["v1", "tenants"]) => {
                let v = json_body(&body)?;
                let name = str_field(&v, "name")?;
                let permits: Vec<String> = serde_json::from_value(v.get("permits").cloned().unwrap_or(Value::Null))
                    .map_err(|_| Problem::malformed("\"permits\" must be an array of domains and address ranges"))?;
                let created = blocking(move || a.registry.create_tenant(&name, Some(&permits))).await?;
                Ok((
                    StatusCode::CREATED,
                    json!({
                        "tenant": created.tenant.name,
                        "permits": created.tenant.permits,
                        "eab_kid": created.eab_kid,
                        "eab_hmac": b64(&created.eab_hmac),
                    }),
                ))
            }
            (&Method::GET, ["v1", "resources"]) => {
                let tenant = param("tenant");
                let list = blocking(move || a.registry.resources(tenant.as_deref())).await?;
                Ok((StatusCode::OK, json!(list)))
            }
            (&Method::POST, ["v1", "resources"]) => {
                let req: NewResource = serde_json::from_slice(&body)
                    .map_err(|e| Problem::malformed(format!("a resource needs tenant, kind and names/zones/addresses: {e}")))?;
                let r = blocking(move || a.registry.add_resource(req)).await?;
                Ok((StatusCode::CREATED, json!(r)))
            }
            (&Method::GET, ["v1", "resources", id]) => {
                let id = id.to_string();
                let (r, events) = blocking(move || {
                    let r = a.registry.resource(&id)?.ok_or_else(|| tenure_engine::Error::not_found(format!("no resource {id}")))?;
                    Ok((r, a.registry.resource_events(&id)?))
                })
                .await?;
                Ok((StatusCode::OK, json!({ "resource": r, "events": events })))
            }
            (&Method::POST, ["v1", "resources", id, "release"]) => {
                let id = id.to_string();
                Ok((StatusCode::OK, json!(blocking(move || a.registry.release_resource(&id)).await?)))
            }
            (&Method::POST, ["v1", "resources", id, "transfer"]) => {
                let to = str_field(&json_body(&body)?, "to")?;
                let id = id.to_string();
                Ok((StatusCode::OK, json!(blocking(move || a.registry.transfer_resource(&id, &to)).await?)))
            }
            (&Method::GET, ["v1", "plugins"]) => {
                let list = blocking(move || a.policies.plugins()).await?;
                Ok((
                    StatusCode::OK,
                    json!(
                        list.iter()
                            .map(|(scope, digest, at)| json!({ "scope": scope, "digest": digest, "installed_at": at }))
                            .collect::<Vec<_>>()
                    ),
                ))
            }
            (&Method::PUT, ["v1", "plugins", "operator"]) => {
                let wasm = body.to_vec();
                let digest = blocking(move || a.policies.install_plugin(PluginScope::Operator, &wasm)).await?;
                Ok((StatusCode::OK, json!({ "scope": "operator", "digest": digest })))
            }
            (&Method::PUT, ["v1", "plugins", "tenant", tenant]) => {
                let (wasm, tenant) = (body.to_vec(), tenant.to_string());
                let scope = PluginScope::Tenant(tenant.clone());
                let digest = blocking(move || a.policies.install_plugin(scope, &wasm)).await?;
                Ok((StatusCode::OK, json!({ "scope": format!("tenant:{tenant}"), "digest": digest })))
            }
            (&Method::GET, ["v1", "audit"]) => {
                let tenant = param("tenant");
                let limit = param("limit").and_then(|l| l.parse().ok()).unwrap_or(1000);
                Ok((StatusCode::OK, json!(blocking(move || a.registry.audit(tenant.as_deref(), limit)).await?)))
            }
            _ => Err(Problem::not_found(format!("no admin resource {method} {path}"))),
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> tenure_engine::Result<T> + Send + 'static) -> Result<T, Problem> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Problem::from),
        Err(_) => Err(Problem::internal("the server hit an internal error; it has been logged")),
    }
}

fn json_body(body: &[u8]) -> Result<Value, Problem> {
    serde_json::from_slice(body).map_err(|e| Problem::malformed(format!("the body is not JSON: {e}")))
}

fn str_field(v: &Value, name: &str) -> Result<String, Problem> {
    v.get(name).and_then(Value::as_str).map(str::to_string).ok_or_else(|| Problem::malformed(format!("\"{name}\" must be a string")))
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
