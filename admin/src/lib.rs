//! The admin API: the platform's authenticated way to write the registry and
//! manage tenants and plugins while the CA runs. HTTPS, a bearer token (the
//! operator's from `DIR/admin-token`, or a tenant's, which reaches only that
//! tenant's own things), JSON in and out, problem documents (RFC 7807) on error.
//!
//! It is the platform's API, not a protocol with extensions: request bodies
//! and query strings are typed and refuse unknown members, so a typo is a 400
//! that names it instead of a setting silently not applied.
//!
//! - [`auth`]: who is calling: the operator's bearer token, or a tenant's.
//! - [`routes`]: the route table (method, path, who may call it, handler),
//!   404, 405, and 403 for a tenant outside its own things.
//! - [`handlers`]: one function per operation, each one engine call.
//! - [`input`]: the body and query string, parsed into the types of [`requests`].
//! - [`ops`]: the operations listener (`/metrics`, `/healthz`, `/readyz`), plain HTTP.

#![warn(missing_docs)]

pub mod auth;
mod handlers;
pub mod input;
pub mod ops;
pub mod requests;
pub mod routes;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use tenure_acme::problem::Problem;
use tokio::net::TcpListener;

/// The engine service that holds tenants, resources, their events and the audit log.
pub use tenure_engine::Registry;

/// The engine service that holds the installed plugins.
pub use tenure_engine::Policies;

/// The engine service that holds issued certificates and renews them.
pub use tenure_engine::Lifecycle;

/// What every admin request can reach: the engine services and the token.
pub struct Admin {
    registry: Registry,
    policies: Policies,
    lifecycle: Lifecycle,
    token: auth::Token,
}

impl Admin {
    /// Runs a registry call on a blocking thread (SQLite must not stall the
    /// async workers).
    async fn registry<T, F>(&self, f: F) -> Result<T, Problem>
    where
        T: Send + 'static,
        F: FnOnce(&Registry) -> tenure_engine::Result<T> + Send + 'static,
    {
        let registry = self.registry.clone();
        blocking(move || f(&registry)).await
    }

    /// Runs a lifecycle call on a blocking thread (a renewal signs).
    async fn lifecycle<T, F>(&self, f: F) -> Result<T, Problem>
    where
        T: Send + 'static,
        F: FnOnce(&Lifecycle) -> tenure_engine::Result<T> + Send + 'static,
    {
        let lifecycle = self.lifecycle.clone();
        blocking(move || f(&lifecycle)).await
    }

    /// Runs a policies call on a blocking thread (plugin loading compiles wasm).
    async fn policies<T, F>(&self, f: F) -> Result<T, Problem>
    where
        T: Send + 'static,
        F: FnOnce(&Policies) -> tenure_engine::Result<T> + Send + 'static,
    {
        let policies = self.policies.clone();
        blocking(move || f(&policies)).await
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> tenure_engine::Result<T> + Send + 'static) -> Result<T, Problem> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Problem::from),
        Err(e) => {
            tracing::error!(error = %e, "admin task failed");
            Err(Problem::internal("the server hit an internal error; it has been logged"))
        }
    }
}

/// Serves the admin API on `listener` until the task is dropped.
pub async fn serve_admin(
    engine: tenure_engine::Engine,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    limits: tenure_acme::ConnectionLimits,
) -> std::io::Result<()> {
    let token = auth::Token::new(engine.admin_token().map_err(|e| std::io::Error::other(e.detail))?);
    let admin = Arc::new(Admin { registry: engine.registry, policies: engine.policies, lifecycle: engine.lifecycle, token });
    tenure_acme::server::serve_https(listener, tls, limits, move |req, peer| {
        let admin = admin.clone();
        async move { handle(admin, req, peer).await }
    })
    .await
}

/// One request: authenticate, route, render.
async fn handle(admin: Arc<Admin>, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
    let (status, body, extra) = match routes::dispatch(admin, req).await {
        Ok(answer) => (answer.status, answer.body, None),
        Err(refusal) => {
            tracing::debug!(%peer, problem = %refusal.problem, "admin request refused");
            (refusal.problem.status(), refusal.problem.to_json(), refusal.header)
        }
    };
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, if status.is_success() { "application/json" } else { "application/problem+json" });
    if let Some((name, value)) = extra {
        builder = builder.header(name, value);
    }
    builder
        .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap_or_default())))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// A successful answer: a status and a JSON body.
pub struct Answer {
    /// 200 or 201.
    pub status: StatusCode,
    /// The JSON body.
    pub body: serde_json::Value,
}

impl Answer {
    /// 200 with `body`.
    pub fn ok(body: serde_json::Value) -> Answer {
        Answer { status: StatusCode::OK, body }
    }
    /// 201 with `body`.
    pub fn created(body: serde_json::Value) -> Answer {
        Answer { status: StatusCode::CREATED, body }
    }
}

/// A refused request: the problem, and a header that explains it (`Allow` on
/// a 405, `WWW-Authenticate` on a 401).
pub struct Refusal {
    /// The problem document.
    pub problem: Problem,
    /// The explaining header, if any.
    pub header: Option<(header::HeaderName, String)>,
}

impl From<Problem> for Refusal {
    fn from(problem: Problem) -> Self {
        Refusal { problem, header: None }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A data directory removed when dropped.
    pub(crate) struct Scratch(std::path::PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// An admin over a fresh engine with these tenants (each permitted `<name>.example`).
    pub(crate) fn test_admin(tenants: &[&str]) -> (Arc<Admin>, Scratch) {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tenure-admin-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let scratch = Scratch(dir.clone());
        let engine = tenure_engine::Engine::open(&dir, tenure_engine::Config::default()).unwrap();
        for t in tenants {
            engine.registry.create_tenant(t, Some(&[format!("{t}.example")])).unwrap();
        }
        let token = auth::Token::new(engine.admin_token().unwrap());
        let admin = Admin { registry: engine.registry, policies: engine.policies, lifecycle: engine.lifecycle, token };
        (Arc::new(admin), scratch)
    }
}
