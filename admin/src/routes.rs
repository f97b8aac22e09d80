//! The admin route table: each operation is one row (method, path, handler).
//! Authentication comes first, so a caller without the token learns nothing,
//! not even which paths exist; then 404 for a path no row names, 405 with
//! `Allow` for a path named with other methods.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use hyper::body::Incoming;
use tenure_acme::problem::Problem;
use tenure_acme::routes::match_pattern;

use crate::handlers::*;
use crate::{Admin, Answer, Refusal};

/// What a handler returns, boxed so handlers fit in one table.
pub type Handled = Pin<Box<dyn Future<Output = Result<Answer, Problem>> + Send>>;

/// An operation of the admin API.
pub type Handler = fn(Arc<Admin>, Call) -> Handled;

/// What a handler gets besides the engine.
pub struct Call {
    /// The path's variable segment (a resource id, a tenant), if the path has one.
    pub param: Option<String>,
    /// The raw query string.
    pub query: Option<String>,
    /// The body, read whole.
    pub body: Bytes,
}

impl Call {
    /// The path's variable segment; empty when the row's path has none, which
    /// the table rules out for every handler that asks.
    pub fn param(&self) -> &str {
        self.param.as_deref().unwrap_or("")
    }
}

/// Every operation: method, path (`{name}` is one segment), handler.
pub static ROUTES: &[(Method, &str, Handler)] = &[
    (Method::GET, "/v1/tenants", list_tenants),
    (Method::POST, "/v1/tenants", create_tenant),
    (Method::GET, "/v1/tenants/{name}/limits", tenant_limits),
    (Method::PUT, "/v1/tenants/{name}/limits", set_tenant_limits),
    (Method::GET, "/v1/tenants/{name}/webhook-secret", tenant_webhook_secret),
    (Method::POST, "/v1/tenants/{name}/webhook-secret/rotate", rotate_tenant_webhook_secret),
    (Method::GET, "/v1/resources", list_resources),
    (Method::POST, "/v1/resources", add_resource),
    (Method::GET, "/v1/resources/{id}", show_resource),
    (Method::PATCH, "/v1/resources/{id}", patch_resource),
    (Method::POST, "/v1/resources/{id}/release", release_resource),
    (Method::POST, "/v1/resources/{id}/transfer", transfer_resource),
    (Method::POST, "/v1/resources/{id}/suspend", suspend_resource),
    (Method::POST, "/v1/resources/{id}/resume", resume_resource),
    (Method::POST, "/v1/resources/{id}/confirm", confirm_resource),
    (Method::GET, "/v1/plugins", list_plugins),
    (Method::PUT, "/v1/plugins/operator", install_operator_plugin),
    (Method::DELETE, "/v1/plugins/operator", remove_operator_plugin),
    (Method::PUT, "/v1/plugins/tenant/{tenant}", install_tenant_plugin),
    (Method::DELETE, "/v1/plugins/tenant/{tenant}", remove_tenant_plugin),
    (Method::GET, "/v1/audit", audit),
];

/// Authenticates, routes and runs one request.
pub async fn dispatch(admin: Arc<Admin>, req: Request<Incoming>) -> Result<Answer, Refusal> {
    admin.token.check(req.headers())?;
    let (method, path, query) = (req.method().clone(), req.uri().path().to_string(), req.uri().query().map(str::to_string));
    let mut allowed: Vec<&str> = Vec::new();
    let mut found = None;
    for (m, pattern, handler) in ROUTES {
        if let Some(param) = match_pattern(pattern, &path) {
            if *m == method {
                found = Some((*handler, param));
                break;
            }
            allowed.push(m.as_str());
        }
    }
    let Some((handler, param)) = found else {
        if allowed.is_empty() {
            return Err(Problem::not_found(format!("no admin resource {method} {path}")).into());
        }
        let allow = allowed.join(", ");
        return Err(Refusal {
            problem: Problem::malformed(format!("{path} accepts {allow}, not {method}")).with_status(StatusCode::METHOD_NOT_ALLOWED),
            header: Some((header::ALLOW, allow)),
        });
    };
    let body = crate::input::read_body(req.into_body()).await?;
    Ok(handler(admin, Call { param, query, body }).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_method_and_path_is_one_row() {
        for (i, (m, p, _)) in ROUTES.iter().enumerate() {
            assert!(p.matches('{').count() <= 1, "{p}");
            for (m2, p2, _) in &ROUTES[i + 1..] {
                assert!(!(m == m2 && p == p2), "{m} {p} is named twice");
            }
        }
    }
}
