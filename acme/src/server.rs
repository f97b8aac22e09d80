//! The HTTPS listener and the router: TLS via rustls, HTTP/1.1 and HTTP/2 via
//! hyper, every response carrying `Replay-Nonce`, `Link: rel="index"` and
//! `Tenure-Request-Id`, every request logged once (`request_log`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::handlers;
use crate::nonce::NonceStore;
use crate::problem::Problem;
use crate::request_log::{self, Completed, RequestId};
use crate::resources::Urls;
use crate::routes;
use crate::validation::Validator;

/// The engine service the ACME front end calls: the registration authority.
pub use tenure_engine::Ra;

/// What one listener allows its clients: bounded, so no client (slow,
/// idle or many-connectioned) can hold the server's descriptors or memory.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections served at once. Past it, accepting waits (the kernel's
    /// backlog holds new ones) rather than running out of descriptors.
    pub max_connections: usize,
    /// How long an HTTP/1 client may take to send a request's header, and
    /// how long an idle keep-alive connection stays open (slowloris).
    pub header_read_timeout: Duration,
    /// Concurrent streams per HTTP/2 connection.
    pub max_streams: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits { max_connections: 2048, header_read_timeout: Duration::from_secs(10), max_streams: 128 }
    }
}

/// Requests larger than this are refused (413) before parsing.
pub const MAX_BODY: usize = 64 * 1024;

/// What the operator can set about the ACME server.
pub struct Options {
    /// Advertised in the directory's `meta.termsOfService`.
    pub terms_of_service: String,
    /// What the listener allows its clients.
    pub connections: ConnectionLimits,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            terms_of_service: "tenure issues short-lived certificates for names your tenant holds.".into(),
            connections: ConnectionLimits::default(),
        }
    }
}

/// Everything a request handler can reach.
pub struct FrontEnd {
    /// The engine; handlers reach it through `engine` and `blocking`.
    pub ra: Ra,
    /// Nonces issued and not yet redeemed, when this server is the only one
    /// on its database; servers sharing one mint and spend theirs through the
    /// engine (`Ra::mint_shared_nonce`), so any of them accepts each once.
    nonces: Option<NonceStore>,
    /// Verified account keys, so `kid` requests skip re-validating the stored JWK.
    pub(crate) account_keys: crate::keycache::KeyCache,
    /// The validation authority (http-01, dns-01, tls-alpn-01).
    pub validator: Validator,
    /// Operator settings.
    pub options: Options,
}

/// How long a nonce may wait to be used.
const NONCE_LIFETIME: Duration = Duration::from_secs(3600);

impl FrontEnd {
    /// A front end over the engine.
    pub fn new(ra: Ra, validator: Validator, options: Options) -> Arc<FrontEnd> {
        Arc::new(FrontEnd {
            nonces: (!ra.shares_nonces()).then(|| NonceStore::new(NONCE_LIFETIME, 1_000_000)),
            ra,
            account_keys: Default::default(),
            validator,
            options,
        })
    }

    /// A fresh nonce for the `Replay-Nonce` header.
    pub fn issue_nonce(&self) -> String {
        match &self.nonces {
            Some(local) => local.issue(),
            None => self.ra.mint_shared_nonce(NONCE_LIFETIME).unwrap_or_else(|e| {
                tracing::error!(error = %e, "no nonce could be made");
                // An unusable nonce makes the client retry, as RFC 8555 §6.5 has it.
                String::from("unavailable")
            }),
        }
    }

    /// Spends a nonce: true only the first time a live one is presented (to
    /// any server of the deployment). Blocking: a shared nonce is recorded in
    /// the database.
    pub fn redeem_nonce(&self, nonce: &str) -> Result<bool, Problem> {
        match &self.nonces {
            Some(local) => Ok(local.redeem(nonce)),
            None => self.ra.spend_shared_nonce(nonce).map_err(Problem::from),
        }
    }

    /// Runs `f` with the whole front end on a blocking thread: a signed
    /// request's work is signature checks, signing and SQLite, which must not
    /// stall the async workers, and one hop per request costs fewer thread
    /// wakeups than one per engine call.
    pub async fn on_blocking_thread<T, F>(self: &Arc<Self>, f: F) -> Result<T, Problem>
    where
        T: Send + 'static,
        F: FnOnce(&FrontEnd) -> Result<T, Problem> + Send + 'static,
    {
        let fe = self.clone();
        // The request's span goes along, so what the work logs names the request.
        let span = tracing::Span::current();
        match tokio::task::spawn_blocking(move || span.in_scope(|| f(&fe))).await {
            Ok(result) => result,
            Err(e) => {
                tracing::error!(error = %e, "request task failed");
                Err(Problem::internal("the server hit an internal error; it has been logged"))
            }
        }
    }

    /// Calls the engine in place; only for code already on a blocking thread
    /// (inside `on_blocking_thread`).
    pub fn engine<T>(&self, f: impl FnOnce(&Ra) -> tenure_engine::Result<T>) -> Result<T, Problem> {
        f(&self.ra).map_err(Problem::from)
    }

    /// Runs an engine call on a blocking thread: the engine does SQLite and
    /// signing, which must not stall the async workers.
    pub async fn blocking<T, F>(&self, f: F) -> Result<T, Problem>
    where
        T: Send + 'static,
        F: FnOnce(&Ra) -> tenure_engine::Result<T> + Send + 'static,
    {
        let ra = self.ra.clone();
        let span = tracing::Span::current();
        match tokio::task::spawn_blocking(move || span.in_scope(|| f(&ra))).await {
            Ok(result) => result.map_err(Problem::from),
            Err(e) => {
                tracing::error!(error = %e, "engine task failed");
                Err(Problem::internal("the server hit an internal error; it has been logged"))
            }
        }
    }
}

/// Serves ACME over TLS on `listener` until the task is dropped.
pub async fn serve(fe: Arc<FrontEnd>, listener: TcpListener, tls: Arc<rustls::ServerConfig>) -> std::io::Result<()> {
    handlers::resume_interrupted_validations(&fe).await;
    let limits = fe.options.connections;
    serve_https(listener, tls, limits, move |req, peer| {
        let fe = fe.clone();
        async move { handle(&fe, req, peer).await }
    })
    .await
}

/// Accepts TLS connections and serves HTTP/1.1 and HTTP/2 on them with `handler`.
pub async fn serve_https<H, F>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    limits: ConnectionLimits,
    handler: H,
) -> std::io::Result<()>
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let acceptor = TlsAcceptor::from(tls);
    // At most this many connections at once: past it, accepting waits (the
    // kernel's backlog holds new ones) rather than running out of descriptors.
    let open = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    loop {
        let Ok(slot) = open.clone().acquire_owned().await else { return Ok(()) };
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let handler = handler.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let tls = match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper::service::service_fn(move |req| {
                let fut = handler(req, peer);
                async move { Ok::<_, Infallible>(fut.await) }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // A client that sends half a header is cut off (slowloris); HTTP/2
            // peers that stop answering pings are dropped; one connection gets
            // a bounded number of concurrent streams.
            builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_secs(10))
                .max_concurrent_streams(limits.max_streams);
            if let Err(e) = builder.serve_connection(TokioIo::new(tls), service).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// A response under construction; `finish` adds the headers every ACME
/// response carries, and renders a problem's body with the request's id.
pub struct Reply {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: Bytes,
    /// The `Content-Type`; none when empty.
    pub content_type: &'static str,
    /// Further headers.
    pub headers: Vec<(header::HeaderName, String)>,
    /// The problem this reply answers with, if any: its body is rendered when
    /// the response is finished, with the request's id as `instance`.
    pub problem: Option<Box<Problem>>,
}

impl Reply {
    /// A JSON body.
    pub fn json(status: StatusCode, value: &serde_json::Value) -> Reply {
        Reply {
            status,
            body: Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
            content_type: "application/json",
            headers: Vec::new(),
            problem: None,
        }
    }
    /// No body.
    pub fn empty(status: StatusCode) -> Reply {
        Reply { status, body: Bytes::new(), content_type: "", headers: Vec::new(), problem: None }
    }
    /// A problem document (RFC 7807); the body is rendered by `finish`.
    pub fn problem(p: Problem) -> Reply {
        let mut r = Reply::empty(p.status());
        r.content_type = "application/problem+json";
        if let Some(seconds) = p.retry_after {
            r = r.header(header::RETRY_AFTER, seconds.to_string());
        }
        r.problem = Some(Box::new(p));
        r
    }
    /// Adds a header.
    pub fn header(mut self, name: header::HeaderName, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
    /// Adds `Location`.
    pub fn location(self, url: impl Into<String>) -> Reply {
        self.header(header::LOCATION, url)
    }
    /// Adds a `Link` with a relation.
    pub fn link(self, url: &str, rel: &str) -> Reply {
        self.header(header::LINK, format!("<{url}>;rel=\"{rel}\""))
    }
}

/// One request, from its arrival to its response: named, handled in its
/// span, logged once and counted.
async fn handle(fe: &Arc<FrontEnd>, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let id = RequestId::next();
    let span = request_log::span(id);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let (urls, mut reply) = respond(fe, req, peer.ip().to_canonical()).instrument(span.clone()).await;
    let _in_request = span.enter();
    let problem = reply.problem.take();
    let status = reply.status;
    let mut response = finish(fe, id, urls.as_ref(), problem.as_deref(), reply);
    if method == Method::HEAD {
        *response.body_mut() = Full::new(Bytes::new());
    }
    // The request's one line; nothing else logs requests.
    Completed {
        method: &method,
        path: &path,
        resource: routes::resource_label(&path),
        status,
        problem: problem.as_deref(),
        peer: peer.ip().to_canonical(),
        elapsed: started.elapsed(),
    }
    .record();
    response
}

/// The reply to a request, and the URLs it addressed when its Host is valid.
async fn respond(fe: &Arc<FrontEnd>, req: Request<Incoming>, peer: std::net::IpAddr) -> (Option<Urls>, Reply) {
    let urls = match base_urls(&req) {
        Ok(u) => u,
        Err(p) => return (None, Reply::problem(p)),
    };
    let (parts, body) = req.into_parts();
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(p) => return (Some(urls), Reply::problem(p)),
    };
    let reply = routes::dispatch(fe, urls.clone(), &parts, body, peer).await.unwrap_or_else(Reply::problem);
    (Some(urls), reply)
}

/// Reads at most `MAX_BODY` bytes (413 beyond).
async fn read_body(body: Incoming) -> Result<Bytes, Problem> {
    read_bounded_body(body, MAX_BODY, 4 * 1024 * 1024).await
}

/// Reads at most `max` bytes of a request body. A larger one is read on and
/// dropped up to `drain` bytes before the 413 goes out: a server that answers
/// while the client is still sending makes HTTP/1.1 clients see a closed
/// connection and HTTP/2 clients a stream reset, not the answer. Past `drain`
/// the stream is cut (the bound on what an oversized request can cost).
pub async fn read_bounded_body(mut body: Incoming, max: usize, drain: usize) -> Result<Bytes, Problem> {
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Problem::malformed("the request body could not be read"))?;
        if let Ok(data) = frame.into_data() {
            seen = seen.saturating_add(data.len());
            if seen <= max {
                buf.extend_from_slice(&data);
            } else if seen > drain {
                break;
            }
        }
    }
    if seen > max {
        return Err(Problem::malformed(format!("the request body exceeds {max} bytes")).with_status(StatusCode::PAYLOAD_TOO_LARGE));
    }
    Ok(buf.freeze())
}

/// The base URL the client addressed us by: `https://` + Host (or the HTTP/2 authority).
fn base_urls(req: &Request<Incoming>) -> Result<Urls, Problem> {
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_string))
        .ok_or_else(|| Problem::malformed("the request has no Host"))?;
    let valid = !host.is_empty() && host.len() <= 255 && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    if !valid {
        return Err(Problem::malformed("the Host header is not a host name"));
    }
    Ok(Urls { base: format!("https://{}", host.to_ascii_lowercase()) })
}

/// The response: `reply` (its problem, taken out of it, in `problem`) with
/// the headers every response carries.
fn finish(fe: &FrontEnd, id: RequestId, urls: Option<&Urls>, problem: Option<&Problem>, reply: Reply) -> Response<Full<Bytes>> {
    render(id, urls, problem, reply, fe.issue_nonce())
}

/// `finish` without the front end: the nonce is given.
fn render(id: RequestId, urls: Option<&Urls>, problem: Option<&Problem>, mut reply: Reply, nonce: String) -> Response<Full<Bytes>> {
    if let Some(p) = problem {
        reply.body = Bytes::from(serde_json::to_vec(&p.to_json_with_instance(Some(&id.urn()))).unwrap_or_default());
    }
    let mut builder = Response::builder().status(reply.status);
    if !reply.content_type.is_empty() {
        builder = builder.header(header::CONTENT_TYPE, reply.content_type);
    }
    for (name, value) in &reply.headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            builder = builder.header(name, v);
        }
    }
    builder = builder.header("Replay-Nonce", nonce);
    builder = builder.header(request_log::HEADER, id.to_string());
    if let Some(urls) = urls {
        builder = builder.header(header::LINK, format!("<{}>;rel=\"index\"", urls.directory()));
    }
    builder.body(Full::new(reply.body)).unwrap_or_else(|_| Response::new(Full::new(Bytes::from_static(b"internal error"))))
}

/// The server's rustls configuration: its chain and key, HTTP/2 and HTTP/1.1 by ALPN.
pub fn tls_config(chain: Vec<Vec<u8>>, key_pkcs8: Vec<u8>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            chain.into_iter().map(CertificateDer::from).collect(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8)),
        )?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::ProblemType;

    #[test]
    fn every_response_names_its_request_and_problems_carry_the_id() {
        let id = RequestId::next();
        let urls = Urls { base: "https://ca.example".into() };
        let mut p = Problem::new(ProblemType::RateLimited, "too many new orders");
        p.retry_after = Some(30);
        let mut reply = Reply::problem(p);
        let problem = reply.problem.take();
        let response = render(id, Some(&urls), problem.as_deref(), reply, "n0nce".into());
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let headers = response.headers();
        assert_eq!(headers[request_log::HEADER], id.to_string().as_str());
        assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
        assert_eq!(headers[header::RETRY_AFTER], "30");
        assert_eq!(headers["replay-nonce"], "n0nce");
        let body = futures_body(response);
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["instance"], format!("urn:tenure:request:{id}"));
        assert_eq!(doc["type"], "urn:ietf:params:acme:error:rateLimited");
        assert_eq!(doc["status"], 429);

        // A success carries the header and its own body untouched.
        let ok = render(id, None, None, Reply::json(StatusCode::OK, &serde_json::json!({"a": 1})), "n".into());
        assert_eq!(ok.headers()[request_log::HEADER], id.to_string().as_str());
        assert_eq!(futures_body(ok), Bytes::from_static(br#"{"a":1}"#));
    }

    /// The bytes of a finished response.
    fn futures_body(response: Response<Full<Bytes>>) -> Bytes {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(response.into_body().collect()).unwrap().to_bytes()
    }
}
