//! Challenge validation (the VA role): http-01, dns-01, tls-alpn-01.
//!
//! Each challenge is actually performed against the network: an HTTP GET,
//! a TXT lookup, or a TLS handshake with ALPN `acme-tls/1`. Every failure is a
//! `Problem` whose detail says what was expected and what was found.

mod dns01;
mod http01;
mod resolver;
mod tls;
mod tlsalpn01;

#[cfg(test)]
#[path = "../../../tests/e2e/support/dns.rs"]
pub(crate) mod testdns;

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tenure_engine::Identifier;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::problem::{Problem, ProblemType};
use resolver::Resolver;

/// How and where the validation authority reaches out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationConfig {
    /// Port for http-01 requests (RFC 8555 says 80; tests use others).
    pub http01_port: u16,
    /// Port for tls-alpn-01 handshakes (RFC 8737 says 443).
    pub tlsalpn01_port: u16,
    /// Send every DNS query to this server; `None` uses the system's servers.
    pub dns_resolver: Option<SocketAddr>,
    /// Budget for one whole validation, DNS included.
    pub timeout: Duration,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        ValidationConfig { http01_port: 80, tlsalpn01_port: 443, dns_resolver: None, timeout: Duration::from_secs(10) }
    }
}

/// The challenge types the VA can perform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChallengeKind {
    /// http-01 (RFC 8555 §8.3).
    Http01,
    /// dns-01 (RFC 8555 §8.4).
    Dns01,
    /// tls-alpn-01 (RFC 8737).
    TlsAlpn01,
}

impl ChallengeKind {
    /// Every challenge type, in the order they are offered.
    pub const ALL: [ChallengeKind; 3] = [ChallengeKind::Http01, ChallengeKind::Dns01, ChallengeKind::TlsAlpn01];

    /// The challenge's `type` on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ChallengeKind::Http01 => "http-01",
            ChallengeKind::Dns01 => "dns-01",
            ChallengeKind::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

impl std::fmt::Display for ChallengeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChallengeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ChallengeKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| format!("unknown challenge type {s:?}"))
    }
}

/// The validation authority. Cheap to clone; build one per server.
#[derive(Clone)]
pub struct Validator {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: ValidationConfig,
    resolver: Resolver,
    /// Accept-any-certificate TLS client configs: tls-alpn-01 and https redirects.
    acme_tls: Arc<rustls::ClientConfig>,
    https: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator").field("cfg", &self.inner.cfg).finish_non_exhaustive()
    }
}

impl Validator {
    /// A validator with its resolver and TLS client configurations built once.
    pub fn new(cfg: ValidationConfig) -> Result<Validator, String> {
        if cfg.timeout.is_zero() {
            return Err("validation timeout must be positive".into());
        }
        let resolver = Resolver::new(cfg.dns_resolver, cfg.timeout)?;
        let acme_tls = tls::any_cert_config(vec![tlsalpn01::ACME_TLS_ALPN.to_vec()])?;
        let https = tls::any_cert_config(vec![b"http/1.1".to_vec()])?;
        Ok(Validator { inner: Arc::new(Inner { cfg, resolver, acme_tls, https }) })
    }

    /// The ports, resolver and timeout it validates with.
    pub fn config(&self) -> &ValidationConfig {
        &self.inner.cfg
    }

    /// Performs one challenge. `key_authorization` is `token "." thumbprint`
    /// (RFC 8555 §8.1), computed by the caller.
    pub async fn validate(
        &self,
        kind: ChallengeKind,
        identifier: &Identifier,
        token: &str,
        key_authorization: &str,
    ) -> Result<(), Problem> {
        let deadline = Instant::now() + self.inner.cfg.timeout;
        let work = async {
            match kind {
                ChallengeKind::Http01 => http01::validate(&self.inner, identifier, token, key_authorization, deadline).await,
                ChallengeKind::Dns01 => dns01::validate(&self.inner, identifier, key_authorization, deadline).await,
                ChallengeKind::TlsAlpn01 => tlsalpn01::validate(&self.inner, identifier, key_authorization, deadline).await,
            }
        };
        // The stages keep to the deadline themselves with precise details; this
        // is only the backstop for anything that does not.
        match tokio::time::timeout_at(deadline + Duration::from_millis(250), work).await {
            Ok(result) => result,
            Err(_) => Err(Problem::new(
                ProblemType::Connection,
                format!("{kind} validation of {} timed out after {:?}", identifier.value, self.inner.cfg.timeout),
            )),
        }
    }
}

/// SHA-256 of the key authorization: the value dns-01 and tls-alpn-01 publish.
fn key_authorization_digest(key_authorization: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, key_authorization.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Quotes text from the network for a problem detail, cut to a readable length.
fn quote_truncated(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut cut: String = text.chars().take(max).collect();
    if text.chars().count() > max {
        cut.push('…');
    }
    format!("{cut:?}")
}

/// Runs `fut` until `deadline`; on expiry returns `kind` with `what` in the detail.
async fn before<T>(
    deadline: Instant,
    kind: ProblemType,
    what: impl FnOnce() -> String,
    fut: impl Future<Output = Result<T, Problem>>,
) -> Result<T, Problem> {
    match tokio::time::timeout_at(deadline, fut).await {
        Ok(result) => result,
        Err(_) => Err(Problem::new(kind, format!("timed out {}", what()))),
    }
}

/// Connects to the first of `ips` that answers on `port`. Each address gets
/// an equal share of the time left, so one black-holed address (typically
/// IPv6) cannot use up the whole budget before IPv4 is tried.
async fn connect_any(ips: &[IpAddr], port: u16, deadline: Instant, what: &str) -> Result<(TcpStream, SocketAddr), Problem> {
    let mut failures = Vec::new();
    for (i, ip) in ips.iter().enumerate() {
        let addr = SocketAddr::new(*ip, port);
        let now = Instant::now();
        if now >= deadline {
            failures.push(format!("{addr}: no time left"));
            break;
        }
        let share = (deadline - now) / u32::try_from(ips.len() - i).unwrap_or(u32::MAX);
        match tokio::time::timeout_at(now + share, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok((stream, addr)),
            Ok(Err(e)) => failures.push(format!("{addr}: {e}")),
            Err(_) => failures.push(format!("{addr}: timed out during connect (likely firewall problem)")),
        }
    }
    Err(Problem::new(ProblemType::Connection, format!("Connection failed {what}: {}", failures.join("; "))))
}

/// An error and its sources, `: `-separated (rustls and hyper put the useful
/// part in the source).
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_kind_round_trips() {
        for kind in ChallengeKind::ALL {
            assert_eq!(kind.as_str().parse::<ChallengeKind>(), Ok(kind));
        }
        assert!("http-02".parse::<ChallengeKind>().is_err());
    }

    /// The server spawns validations: the future must be `Send`.
    #[test]
    fn validation_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let va = Validator::new(ValidationConfig::default()).unwrap();
        let id = Identifier::dns("example.com");
        let fut = va.validate(ChallengeKind::Http01, &id, "t", "t.k");
        assert_send(&fut);
        fn assert_clone_sync<T: Clone + Send + Sync>() {}
        assert_clone_sync::<Validator>();
    }

    #[test]
    fn quoting_truncates_and_escapes() {
        assert_eq!(quote_truncated(b"abc\n", 10), "\"abc\\n\"");
        assert_eq!(quote_truncated(b"abcdef", 3), "\"abc…\"");
    }
}
