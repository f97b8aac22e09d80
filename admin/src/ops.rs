//! The operations listener: plain HTTP/1 for a Prometheus scraper and a load
//! balancer, apart from the ACME and admin listeners (no TLS, no token: bind
//! it where only they reach it).
//!
//! - `GET /metrics`: every metric the process records, in the Prometheus
//!   text format, with the backlog gauges counted in the store at the scrape.
//! - `GET /healthz`: 200 `ok` while the process answers.
//! - `GET /readyz`: 200 when every readiness check passes, 503 otherwise; the
//!   JSON body names each check and why it failed. A result is reused for
//!   [`READY_CACHE`], so scrapes cannot hammer the database or the HSM.
//!
//! Bounded like the others: a header must arrive within [`HEADER_READ_TIMEOUT`],
//! a connection lives at most [`CONNECTION_LIFETIME`], at most
//! [`MAX_CONNECTIONS`] are served at once, and a request with a body is refused.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use tenure_engine::Engine;
use tenure_engine::observe::{self, Backlog};
use tenure_engine::readiness::Readiness;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, Semaphore};

/// How long a readiness result is reused.
pub const READY_CACHE: Duration = Duration::from_secs(1);
/// How long the backlog counts are reused between scrapes.
const BACKLOG_CACHE: Duration = Duration::from_secs(1);
/// How long counting the backlog may take before a scrape goes without it.
const BACKLOG_DEADLINE: Duration = Duration::from_secs(3);
/// Connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send a request's header.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection may stay open, keep-alive included.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// How often histograms are folded in when nobody scrapes, so they stay small.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Default histogram buckets (seconds), for histograms without their own:
/// rendered as Prometheus histograms, which aggregate across servers, rather
/// than as summaries, which do not.
const DEFAULT_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Where the operations listener listens, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsListen {
    /// No operations listener.
    Off,
    /// Listen here.
    At(SocketAddr),
}

impl std::str::FromStr for MetricsListen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(MetricsListen::Off);
        }
        s.parse().map(MetricsListen::At).map_err(|_| format!("{s:?} is neither ADDR:PORT nor `off`"))
    }
}

impl std::fmt::Display for MetricsListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsListen::Off => f.write_str("off"),
            MetricsListen::At(addr) => addr.fmt(f),
        }
    }
}

/// Installs the process's metrics recorder (Prometheus, rendered by
/// [`serve_ops`]) and describes the engine's metrics. Once per process.
pub fn install_recorder() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets(DEFAULT_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(observe::POLICY_DECISION_SECONDS.to_string()), observe::POLICY_DECISION_BUCKETS)?
        .install_recorder()?;
    observe::describe();
    Ok(handle)
}

/// What the listener answers from.
struct Ops {
    engine: Engine,
    metrics: PrometheusHandle,
    /// The last readiness result and when it was made. A tokio mutex: a
    /// request that finds it stale checks while the others wait for its answer.
    ready: Mutex<Option<(Instant, Arc<Readiness>)>>,
    /// The last backlog counts and when they were made.
    backlog: Mutex<Option<(Instant, Backlog)>>,
    /// Whether a count is still running on a blocking thread: one that
    /// outlived its deadline is not started again until it ends, so scrapes of a
    /// hung database cannot pile up threads.
    counting: Arc<AtomicBool>,
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until the task is dropped.
pub async fn serve_ops(engine: Engine, listener: TcpListener, metrics: PrometheusHandle) -> std::io::Result<()> {
    let ops = Arc::new(Ops { engine, metrics, ready: Mutex::new(None), backlog: Mutex::new(None), counting: Arc::default() });
    let upkeep = ops.metrics.clone();
    let _upkeep = AbortOnDrop(tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    }));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // Past the limit, stop accepting: new connections wait in the kernel's backlog.
        let Ok(slot) = slots.clone().acquire_owned().await else { return Ok(()) };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // A client that hung up before accept, or no descriptors left: not fatal.
                tracing::debug!(error = %e, "operations listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let ops = ops.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req| {
                let ops = ops.clone();
                async move { Ok::<_, Infallible>(answer(&ops, req).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "operations connection ended"),
                Err(_) => tracing::debug!(%peer, "operations connection closed after its lifetime"),
                Ok(Ok(())) => {}
            }
        });
    }
}

/// Clears a "still counting" flag when dropped.
struct Over(Arc<AtomicBool>);

impl Drop for Over {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Aborts a background task when its owner goes.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One request: route, then answer.
async fn answer(ops: &Ops, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
        return text(StatusCode::NOT_FOUND, "not found: /metrics, /healthz and /readyz are served here\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut refused = text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        refused.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return refused;
    }
    if req.body().size_hint().upper() != Some(0) {
        return text(StatusCode::PAYLOAD_TOO_LARGE, "a request here has no body\n");
    }
    match path {
        "/metrics" => metrics(ops).await,
        "/healthz" => text(StatusCode::OK, "ok\n"),
        _ => ready(ops).await,
    }
}

/// The Prometheus text, after setting the backlog gauges.
async fn metrics(ops: &Ops) -> Response<Full<Bytes>> {
    {
        let mut cached = ops.backlog.lock().await;
        let fresh = cached.as_ref().is_some_and(|(at, _)| at.elapsed() < BACKLOG_CACHE);
        if !fresh && ops.counting.swap(true, Ordering::AcqRel) {
            tracing::warn!("the previous count of the backlog for /metrics has not ended; the gauges keep their last values");
        } else if !fresh {
            let (engine, counting) = (ops.engine.clone(), ops.counting.clone());
            let count = move || {
                // Reset however the count ends, a panic included.
                let _over = Over(counting);
                engine.backlog()
            };
            match tokio::time::timeout(BACKLOG_DEADLINE, tokio::task::spawn_blocking(count)).await {
                Ok(Ok(Ok(backlog))) => {
                    backlog.record();
                    *cached = Some((Instant::now(), backlog));
                }
                // The gauges keep their last values; the scrape still answers.
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "cannot count the backlog for /metrics"),
                Ok(Err(e)) => tracing::warn!(error = %e, "counting the backlog failed"),
                Err(_) => tracing::warn!("counting the backlog for /metrics took over {} s", BACKLOG_DEADLINE.as_secs()),
            }
        }
    }
    let mut response = Response::new(Full::new(Bytes::from(ops.metrics.render())));
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}

/// 200 or 503, with each check as JSON.
async fn ready(ops: &Ops) -> Response<Full<Bytes>> {
    let readiness = {
        let mut cached = ops.ready.lock().await;
        match cached.as_ref().filter(|(at, _)| at.elapsed() < READY_CACHE) {
            Some((_, r)) => r.clone(),
            None => {
                let engine = ops.engine.clone();
                // The engine bounds every check itself; this only moves it off the async workers.
                let r = match tokio::task::spawn_blocking(move || engine.readiness()).await {
                    Ok(r) => Arc::new(r),
                    Err(e) => {
                        tracing::error!(error = %e, "readiness checks failed to run");
                        return text(StatusCode::INTERNAL_SERVER_ERROR, "the readiness checks failed to run; see the log\n");
                    }
                };
                *cached = Some((Instant::now(), r.clone()));
                r
            }
        }
    };
    let ready = readiness.is_ready();
    let checks: Vec<serde_json::Value> = readiness
        .checks
        .iter()
        .map(|c| {
            let mut check = serde_json::json!({ "name": c.name, "ok": c.ok, "took_ms": c.took.as_millis() as u64 });
            check[if c.ok { "detail" } else { "error" }] = c.detail.clone().into();
            check
        })
        .collect();
    if !ready {
        let failing: Vec<String> = readiness.checks.iter().filter(|c| !c.ok).map(|c| format!("{}: {}", c.name, c.detail)).collect();
        tracing::warn!(failing = %failing.join("; "), "not ready");
    }
    let body = serde_json::json!({ "ready": ready, "checks": checks });
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut response = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    response
}

/// A plain-text answer.
fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

#[cfg(test)]
mod tests {
    use super::MetricsListen;

    #[test]
    fn the_listen_address_is_an_address_or_off() {
        assert_eq!("off".parse::<MetricsListen>(), Ok(MetricsListen::Off));
        assert_eq!("OFF".parse::<MetricsListen>(), Ok(MetricsListen::Off));
        let at: MetricsListen = "127.0.0.1:14002".parse().unwrap();
        assert_eq!(at.to_string(), "127.0.0.1:14002");
        assert!("localhost".parse::<MetricsListen>().is_err());
    }
}
