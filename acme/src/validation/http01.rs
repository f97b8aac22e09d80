//! http-01 (RFC 8555 §8.3): GET `http://<host>/.well-known/acme-challenge/<token>`
//! must return 200 with the key authorization as its body.
//!
//! We resolve and connect ourselves (so DNS and connection failures get the
//! right problem type and the configured resolver is used for redirects too)
//! and let hyper's HTTP/1.1 client connection parse the response.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use http::header::{ACCEPT, CONNECTION, HOST, LOCATION, USER_AGENT};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use reqwest::Url;
use rustls::pki_types::ServerName;
use tenure_engine::{Identifier, IdentifierKind};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Inner, before, connect_any, error_chain, quote_truncated};
use crate::problem::{Problem, ProblemType};

/// More than any key authorization; a body this long is wrong anyway.
const MAX_BODY: usize = 8 * 1024;
const MAX_REDIRECTS: usize = 10;
const USER_AGENT_VALUE: &str = concat!("tenure-va/", env!("CARGO_PKG_VERSION"), " (ACME validation)");

pub(super) async fn validate(
    va: &Inner,
    identifier: &Identifier,
    token: &str,
    key_authorization: &str,
    deadline: Instant,
) -> Result<(), Problem> {
    // The token goes into a URL path; RFC 8555 §8.1 limits it to base64url.
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(Problem::malformed(format!("challenge token {token:?} is not base64url")));
    }
    let host = url_host(identifier)?;
    let start = format!("http://{host}:{}/.well-known/acme-challenge/{token}", va.cfg.http01_port);
    let mut url = Url::parse(&start).map_err(|e| Problem::malformed(format!("cannot build URL {start:?}: {e}")))?;
    let mut redirects = 0;
    loop {
        let host_header = host_header(&url, &host);
        match fetch(va, &url, &host_header, deadline).await? {
            Fetched::Redirect(location) => {
                if redirects == MAX_REDIRECTS {
                    return Err(Problem::new(
                        ProblemType::Connection,
                        format!("Too many redirects (more than {MAX_REDIRECTS}); the last was from {url} to {location:?}"),
                    ));
                }
                redirects += 1;
                url = redirect_target(va, &url, &location)?;
            }
            Fetched::Final { status, body, too_long, addr } => {
                return check_response(&url, addr, status, &body, too_long, key_authorization);
            }
        }
    }
}

/// The Host header names the identifier (RFC 8555 §8.3) and, as RFC 9110
/// §7.2 asks, the port when it is not the scheme's default (`Url` drops a
/// default port, so `port()` is `Some` exactly then).
fn host_header(url: &Url, identifier_host: &str) -> String {
    let host = url.host_str().unwrap_or(identifier_host);
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// The identifier as a URL host: IPv6 literals in brackets.
fn url_host(identifier: &Identifier) -> Result<String, Problem> {
    match identifier.kind {
        IdentifierKind::Dns if identifier.is_wildcard() => {
            Err(Problem::malformed(format!("http-01 cannot validate the wildcard {}", identifier.value)))
        }
        IdentifierKind::Dns => Ok(identifier.value.clone()),
        IdentifierKind::Ip => match identifier.ip_addr() {
            Some(IpAddr::V6(ip)) => Ok(format!("[{ip}]")),
            Some(IpAddr::V4(ip)) => Ok(ip.to_string()),
            None => Err(Problem::malformed(format!("{:?} is not an IP address", identifier.value))),
        },
    }
}

fn check_response(
    url: &Url,
    addr: SocketAddr,
    status: StatusCode,
    body: &[u8],
    too_long: bool,
    key_authorization: &str,
) -> Result<(), Problem> {
    let unauthorized = |detail: String| Err(Problem::new(ProblemType::Unauthorized, detail));
    if status != StatusCode::OK {
        return unauthorized(format!(
            "Invalid response from {url} [{}]: HTTP {status} (expected 200), body {}",
            addr.ip(),
            quote_truncated(body, 100)
        ));
    }
    if too_long {
        return unauthorized(format!(
            "Invalid response from {url} [{}]: body longer than {MAX_BODY} bytes (expected the key authorization {key_authorization:?}), starting {}",
            addr.ip(),
            quote_truncated(body, 100)
        ));
    }
    // RFC 8555 §8.3: the VA trims trailing whitespace before comparing.
    let end = body.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(0, |i| i + 1);
    if &body[..end] != key_authorization.as_bytes() {
        return unauthorized(format!(
            "The key authorization file from {url} [{}] did not match this challenge: expected {key_authorization:?}, got {}",
            addr.ip(),
            quote_truncated(&body[..end], 100)
        ));
    }
    Ok(())
}

/// RFC 8555 §8.3: redirects may go to http or https on ports 80/443. A
/// redirect without a port goes to the configured http-01 port for http (the
/// same thing in production, the test responder's port otherwise).
fn redirect_target(va: &Inner, from: &Url, location: &str) -> Result<Url, Problem> {
    let bad = |why: String| Problem::new(ProblemType::Connection, format!("Invalid redirect from {from} to {location:?}: {why}"));
    let mut next = from.join(location).map_err(|e| bad(e.to_string()))?;
    if next.host().is_none() {
        return Err(bad("no host".into()));
    }
    match (next.scheme(), next.port()) {
        ("http" | "https", Some(port)) if [80, 443, va.cfg.http01_port].contains(&port) => {}
        ("http" | "https", Some(port)) => return Err(bad(format!("port {port} is not allowed, only 80 and 443"))),
        ("http", None) if va.cfg.http01_port != 80 => {
            next.set_port(Some(va.cfg.http01_port)).map_err(|()| bad("cannot set port".into()))?;
        }
        ("http" | "https", None) => {}
        (scheme, _) => return Err(bad(format!("scheme {scheme:?} is not allowed, only http and https"))),
    }
    next.set_fragment(None);
    Ok(next)
}

enum Fetched {
    Redirect(String),
    Final { status: StatusCode, body: Vec<u8>, too_long: bool, addr: SocketAddr },
}

async fn fetch(va: &Inner, url: &Url, host_header: &str, deadline: Instant) -> Result<Fetched, Problem> {
    let port = url.port_or_known_default().unwrap_or(80);
    // `Url` brackets IPv6 hosts; whatever is not an address is a DNS name.
    let host = url.host_str().unwrap_or_default();
    let literal = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let (ips, server_name) = match literal.parse::<IpAddr>() {
        Ok(ip) => (vec![ip], Some(ServerName::IpAddress(ip.into()))),
        Err(_) if host.is_empty() => {
            return Err(Problem::new(ProblemType::Connection, format!("{url} has no host")));
        }
        Err(_) => {
            let ips = before(deadline, ProblemType::Dns, || format!("looking up A/AAAA for {host}"), va.resolver.lookup_ips(host)).await?;
            (ips, ServerName::try_from(host.to_string()).ok())
        }
    };
    let what = format!("fetching {url}");
    let (stream, addr) = connect_any(&ips, port, deadline, &what).await?;

    let mut target = url.path().to_string();
    if let Some(query) = url.query() {
        target.push('?');
        target.push_str(query);
    }
    let request = http::Request::get(target)
        .header(HOST, host_header)
        .header(USER_AGENT, USER_AGENT_VALUE)
        .header(ACCEPT, "*/*")
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| Problem::new(ProblemType::Connection, format!("cannot build a request for {url}: {e}")))?;

    if url.scheme() == "https" {
        let Some(server_name) = server_name else {
            return Err(Problem::new(ProblemType::Connection, format!("{url}: host is not a valid TLS server name")));
        };
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&va.https));
        let tls = before(deadline, ProblemType::Connection, || format!("during TLS handshake with {addr} for {url}"), async {
            connector
                .connect(server_name, stream)
                .await
                .map_err(|e| Problem::new(ProblemType::Tls, format!("TLS handshake with {addr} for {url} failed: {}", error_chain(&e))))
        })
        .await?;
        exchange(TokioIo::new(tls), request, url, addr, deadline).await
    } else {
        exchange(TokioIo::new(stream), request, url, addr, deadline).await
    }
}

/// Aborts the connection driver however the exchange ends (error, timeout).
struct AbortOnDrop(JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn exchange<IO>(
    io: IO,
    request: http::Request<Empty<Bytes>>,
    url: &Url,
    addr: SocketAddr,
    deadline: Instant,
) -> Result<Fetched, Problem>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let failed = |e: &hyper::Error, doing: &str| {
        Problem::new(ProblemType::Connection, format!("Fetching {url} [{}]: {doing}: {}", addr.ip(), error_chain(e)))
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| failed(&e, "HTTP handshake failed"))?;
    let _driver = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let waiting = || format!("waiting for the response from {url} [{}]", addr.ip());
    let response = before(deadline, ProblemType::Connection, waiting, async {
        sender.send_request(request).await.map_err(|e| failed(&e, "error reading the HTTP response"))
    })
    .await?;

    let status = response.status();
    // Only real redirects are followed; a 300 or 304 is just a wrong status.
    if matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
        && let Some(location) = response.headers().get(LOCATION)
    {
        let location = location
            .to_str()
            .map_err(|_| Problem::new(ProblemType::Connection, format!("Fetching {url}: redirect Location is not ASCII")))?;
        return Ok(Fetched::Redirect(location.to_string()));
    }

    let mut body = response.into_body();
    let mut buf = Vec::new();
    let mut too_long = false;
    let reading = || format!("reading the response body from {url} [{}]", addr.ip());
    before(deadline, ProblemType::Connection, reading, async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| failed(&e, "error reading the response body"))?;
            if let Ok(data) = frame.into_data() {
                buf.extend_from_slice(&data);
                if buf.len() > MAX_BODY {
                    buf.truncate(MAX_BODY);
                    too_long = true;
                    break;
                }
            }
        }
        Ok(())
    })
    .await?;
    Ok(Fetched::Final { status, body: buf, too_long, addr })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::super::testdns::TestDns;
    use super::super::{ChallengeKind, ValidationConfig, Validator};
    use super::*;

    const TOKEN: &str = "tok_EN-123";
    const KEY_AUTH: &str = "tok_EN-123.thumbprint";

    type Handler = Arc<dyn Fn(&str, &str) -> String + Send + Sync>;

    /// A one-request-per-connection HTTP responder: `handler(path, host)`
    /// returns the raw response.
    async fn responder(handler: Handler) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        serve(listener, handler, None);
        port
    }

    /// Serves on `listener`; with `tls`, connections whose first byte is a TLS
    /// handshake record (0x16) are served over TLS, the others in plain text,
    /// so one port can test a redirect from http to https.
    fn serve(listener: TcpListener, handler: Handler, tls: Option<tokio_rustls::TlsAcceptor>) {
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let handler = handler.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let mut first = [0u8; 1];
                    match (tls, stream.peek(&mut first).await) {
                        (Some(acceptor), Ok(1)) if first[0] == 0x16 => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                // The handler sees TLS requests as `https:<path>`.
                                let tls_handler: Handler = Arc::new(move |path, host| handler(&format!("https:{path}"), host));
                                answer(stream, tls_handler).await;
                            }
                        }
                        _ => answer(stream, handler).await,
                    }
                });
            }
        });
    }

    async fn answer<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut stream: S, handler: Handler) {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                return;
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_string();
        let path = head.split(' ').nth(1).unwrap_or("").to_string();
        let host = head.lines().find_map(|l| l.strip_prefix("host: ").or_else(|| l.strip_prefix("Host: "))).unwrap_or("").to_string();
        let _ = stream.write_all(handler(&path, &host).as_bytes()).await;
        let _ = stream.shutdown().await;
    }

    fn ok(body: &str) -> String {
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len())
    }

    fn status(code: u16, extra: &str, body: &str) -> String {
        format!("HTTP/1.1 {code} X\r\n{extra}Content-Length: {}\r\n\r\n{body}", body.len())
    }

    async fn validator(port: u16, dns: &TestDns) -> Validator {
        Validator::new(ValidationConfig { http01_port: port, dns_resolver: Some(dns.addr), ..Default::default() }).unwrap()
    }

    async fn run(handler: Handler, id: Identifier) -> Result<(), Problem> {
        let dns = TestDns::start().await;
        let port = responder(handler).await;
        validator(port, &dns).await.validate(ChallengeKind::Http01, &id, TOKEN, KEY_AUTH).await
    }

    #[tokio::test]
    async fn correct_body_passes_with_trailing_whitespace_trimmed() {
        let handler: Handler = Arc::new(|path, host| {
            if path == format!("/.well-known/acme-challenge/{TOKEN}")
                && host.strip_prefix("example.com:").is_some_and(|p| p.parse::<u16>().is_ok())
            {
                ok(&format!("{KEY_AUTH}\r\n"))
            } else {
                status(400, "", &format!("bad request for {host}{path}"))
            }
        });
        run(handler, Identifier::dns("example.com")).await.unwrap();
    }

    #[tokio::test]
    async fn ip_identifier_is_fetched_directly() {
        let handler: Handler = Arc::new(|_, host| if host.starts_with("127.0.0.1:") { ok(KEY_AUTH) } else { status(400, "", host) });
        run(handler, Identifier::ip([127, 0, 0, 1].into())).await.unwrap();
    }

    #[tokio::test]
    async fn wrong_body_is_unauthorized_and_says_what_it_got() {
        let err = run(Arc::new(|_, _| ok("something else")), Identifier::dns("example.com")).await.unwrap_err();
        assert_eq!(err.kind, ProblemType::Unauthorized);
        assert!(err.detail.contains("something else") && err.detail.contains(KEY_AUTH), "{err}");
    }

    #[tokio::test]
    async fn not_found_is_unauthorized() {
        let err = run(Arc::new(|_, _| status(404, "", "nope")), Identifier::dns("example.com")).await.unwrap_err();
        assert_eq!(err.kind, ProblemType::Unauthorized);
        assert!(err.detail.contains("404"), "{err}");
    }

    #[tokio::test]
    async fn oversized_body_is_refused() {
        let err = run(Arc::new(|_, _| ok(&"a".repeat(MAX_BODY + 10))), Identifier::dns("example.com")).await.unwrap_err();
        assert_eq!(err.kind, ProblemType::Unauthorized);
        assert!(err.detail.contains("longer than"), "{err}");
    }

    #[tokio::test]
    async fn connection_refused_is_a_connection_problem() {
        let dns = TestDns::start().await;
        // Bound but not listening, and held for the whole test: nothing else gets the port.
        let closed = tokio::net::TcpSocket::new_v4().unwrap();
        closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = closed.local_addr().unwrap().port();
        let err = validator(port, &dns)
            .await
            .validate(ChallengeKind::Http01, &Identifier::dns("example.com"), TOKEN, KEY_AUTH)
            .await
            .unwrap_err();
        assert_eq!(err.kind, ProblemType::Connection);
        assert!(err.detail.contains("127.0.0.1"), "{err}");
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let dns = TestDns::start().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cfg =
            ValidationConfig { http01_port: port, dns_resolver: Some(dns.addr), timeout: Duration::from_millis(500), ..Default::default() };
        let va = Validator::new(cfg).unwrap();
        let err = va.validate(ChallengeKind::Http01, &Identifier::dns("example.com"), TOKEN, KEY_AUTH).await.unwrap_err();
        assert_eq!(err.kind, ProblemType::Connection);
        assert!(err.detail.contains("timed out"), "{err}");
        drop(listener);
    }

    #[tokio::test]
    async fn redirects_are_followed_relative_and_absolute() {
        let handler: Handler = Arc::new(|path, host| match path {
            p if p.starts_with("/.well-known/") => status(302, "Location: /hop\r\n", ""),
            // No port: goes to the configured http-01 port, resolved via DNS.
            "/hop" => status(301, "Location: http://other.example.net/final?x=1\r\n", ""),
            "/final?x=1" if host.starts_with("other.example.net:") => ok(KEY_AUTH),
            _ => status(404, "", ""),
        });
        run(handler, Identifier::dns("example.com")).await.unwrap();
    }

    #[tokio::test]
    async fn redirect_to_https_accepts_any_certificate() {
        let rcgen::CertifiedKey { cert, signing_key } = rcgen::generate_simple_self_signed(vec!["example.com".to_string()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // The configured http-01 port is an allowed redirect port, so https
        // can be tested on the same listener.
        let handler: Handler = Arc::new(move |path, _| match path {
            "https:/secure" => ok(KEY_AUTH),
            _ => status(302, &format!("Location: https://example.com:{port}/secure\r\n"), ""),
        });
        serve(listener, handler, Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))));
        let dns = TestDns::start().await;
        validator(port, &dns).await.validate(ChallengeKind::Http01, &Identifier::dns("example.com"), TOKEN, KEY_AUTH).await.unwrap();
    }

    #[tokio::test]
    async fn redirect_loops_and_odd_ports_are_refused() {
        let err = run(Arc::new(|_, _| status(302, "Location: /again\r\n", "")), Identifier::dns("example.com")).await.unwrap_err();
        assert_eq!(err.kind, ProblemType::Connection);
        assert!(err.detail.contains("Too many redirects"), "{err}");

        let err =
            run(Arc::new(|_, _| status(302, "Location: http://example.com:1/\r\n", "")), Identifier::dns("example.com")).await.unwrap_err();
        assert_eq!(err.kind, ProblemType::Connection);
        assert!(err.detail.contains("port 1 is not allowed"), "{err}");

        let err =
            run(Arc::new(|_, _| status(302, "Location: ftp://example.com/\r\n", "")), Identifier::dns("example.com")).await.unwrap_err();
        assert!(err.detail.contains("scheme \"ftp\""), "{err}");
    }

    /// RFC 9110 §7.2: Host carries the port unless it is the scheme's
    /// default, so a responder on a test port sees `name:port`.
    #[tokio::test]
    async fn host_names_the_port_when_it_is_not_the_default() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let handler: Handler = Arc::new(move |_, host| {
            log.lock().unwrap().push(host.to_string());
            ok(KEY_AUTH)
        });
        let dns = TestDns::start().await;
        let port = responder(handler).await;
        let va = validator(port, &dns).await;
        va.validate(ChallengeKind::Http01, &Identifier::dns("example.com"), TOKEN, KEY_AUTH).await.unwrap();
        va.validate(ChallengeKind::Http01, &Identifier::ip([127, 0, 0, 1].into()), TOKEN, KEY_AUTH).await.unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen, [format!("example.com:{port}"), format!("127.0.0.1:{port}")]);

        // On the default ports the header is the bare name.
        let url = |u: &str| Url::parse(u).unwrap();
        assert_eq!(host_header(&url("http://example.com:80/x"), "example.com"), "example.com");
        assert_eq!(host_header(&url("https://example.com:443/x"), "example.com"), "example.com");
        assert_eq!(host_header(&url("https://example.com:80/x"), "example.com"), "example.com:80");
        assert_eq!(host_header(&url("http://[::1]:8080/x"), "[::1]"), "[::1]:8080");
    }

    #[test]
    fn wildcards_are_malformed_and_ipv6_is_bracketed() {
        assert_eq!(url_host(&Identifier::dns("*.example.com")).unwrap_err().kind, ProblemType::Malformed);
        assert_eq!(url_host(&Identifier::ip("::1".parse().unwrap())).unwrap(), "[::1]");
    }
}
