//! One log line and one count per ACME request, under an id the client also
//! sees: in the `Tenure-Request-Id` header of every response and in the
//! `instance` member of every problem document (RFC 7807 §3.1), so a client's
//! error report leads the operator to the request's log lines.
//!
//! Each request is handled inside an `acme_request{id=…}` span (the account is
//! added once known), so whatever else is logged while handling it, including
//! the engine's lines on the blocking threads, carries the id too. When the
//! response is ready, one `info` event on the target `tenure::acme::request`
//! says how it went, and `tenure_acme_requests_total{resource, status}` counts it.

use std::net::IpAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderName, Method, StatusCode};

use crate::problem::Problem;

/// The log target of the one line per request; `TENURE_LOG=…,tenure::acme::request=warn`
/// silences it without silencing the rest.
pub const TARGET: &str = "tenure::acme::request";

/// The response header that names the request.
pub const HEADER: HeaderName = HeaderName::from_static("tenure-request-id");

/// The span's target, apart from [`TARGET`]: silencing the per-request lines
/// must leave the request id on every other line.
pub const SPAN_TARGET: &str = "tenure::acme";

/// The counter of answered requests.
pub const REQUESTS_TOTAL: &str = "tenure_acme_requests_total";

/// At most this much of a path or a problem's detail goes into the log line:
/// both can carry what the client sent, which the line must not be made to
/// grow with.
const LOGGED_CHARS: usize = 256;

/// The id of one request: 16 hex digits. Ids are distinct within a process
/// (a counter through a bijection) and unrelated across processes (the
/// bijection is keyed at random per process), so servers sharing a database
/// do not hand out the same ids. An id names a request; it grants nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(u64);

impl RequestId {
    /// The next id of this process.
    pub fn next() -> RequestId {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        static KEY: OnceLock<u64> = OnceLock::new();
        let key = *KEY.get_or_init(process_key);
        RequestId(mix(COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_add(key)))
    }

    /// The problem document's `instance`: a URN, since the id names an
    /// occurrence and no resource can be fetched at it.
    pub fn urn(self) -> String {
        format!("urn:tenure:request:{self}")
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A random key per process; without the system's randomness (never seen in
/// practice) the clock and process id still set processes apart.
fn process_key() -> u64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    match ring::rand::SystemRandom::new().fill(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            mix(now.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32))
        }
    }
}

/// SplitMix64's finalizer: a bijection of u64, so distinct inputs give
/// distinct ids, and consecutive ones look unrelated.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The span a request is handled in; its `account` is filled in by
/// [`note_account`] once the request is authenticated.
pub fn span(id: RequestId) -> tracing::Span {
    tracing::info_span!(target: SPAN_TARGET, "acme_request", id = %id, account = tracing::field::Empty)
}

/// Records the request's account on the current request span (a no-op
/// outside one).
pub fn note_account(account_id: &str) {
    tracing::Span::current().record("account", tracing::field::display(account_id));
}

/// How a request went, for its log line and its count.
pub struct Completed<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The request path (never the query).
    pub path: &'a str,
    /// The resource label of the path ([`crate::routes::resource_label`]).
    pub resource: &'static str,
    /// The status answered.
    pub status: StatusCode,
    /// The problem answered, if the request failed.
    pub problem: Option<&'a Problem>,
    /// Where the request came from.
    pub peer: IpAddr,
    /// From the request's arrival to its response's completion.
    pub elapsed: Duration,
}

impl Completed<'_> {
    /// Logs the request's one line (call it inside the request's span, which
    /// carries the id and account) and counts it.
    pub fn record(&self) {
        let duration_ms = format_args!("{:.3}", self.elapsed.as_secs_f64() * 1000.0);
        let path = bounded(self.path);
        match self.problem {
            None => tracing::info!(
                target: TARGET,
                method = %self.method,
                path,
                resource = %self.resource,
                status = self.status.as_u16(),
                duration_ms = %duration_ms,
                peer = %self.peer,
                "answered"
            ),
            Some(p) => tracing::info!(
                target: TARGET,
                method = %self.method,
                path,
                resource = %self.resource,
                status = self.status.as_u16(),
                duration_ms = %duration_ms,
                peer = %self.peer,
                problem = %p.kind.name(),
                detail = bounded(&p.detail),
                "refused"
            ),
        }
        count(self.resource, self.status);
    }
}

/// Counts one answered request. `resource` comes from a fixed set and
/// `status` from the few statuses the server sends, so the series stay few.
fn count(resource: &'static str, status: StatusCode) {
    static DESCRIBED: std::sync::Once = std::sync::Once::new();
    DESCRIBED.call_once(|| {
        metrics::describe_counter!(REQUESTS_TOTAL, "ACME requests answered, by resource and HTTP status.");
    });
    metrics::counter!(REQUESTS_TOTAL, "resource" => resource, "status" => status.as_str().to_owned()).increment(1);
}

/// At most [`LOGGED_CHARS`] characters of `s`, cut at a character boundary.
fn bounded(s: &str) -> &str {
    match s.char_indices().nth(LOGGED_CHARS) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    use metrics::{Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

    #[test]
    fn ids_are_sixteen_hex_digits_and_distinct() {
        let ids: Vec<RequestId> = (0..10_000).map(|_| RequestId::next()).collect();
        for id in &ids {
            let s = id.to_string();
            assert_eq!(s.len(), 16, "{s}");
            assert!(s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{s}");
        }
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
        assert_eq!(ids[0].urn(), format!("urn:tenure:request:{}", ids[0]));
    }

    #[test]
    fn the_mix_is_a_bijection_on_a_sample() {
        let outs: HashSet<u64> = (0..100_000u64).map(|n| mix(n.wrapping_add(u64::MAX - 50_000))).collect();
        assert_eq!(outs.len(), 100_000);
    }

    #[test]
    fn bounded_cuts_at_a_character_boundary() {
        assert_eq!(bounded("/directory"), "/directory");
        let long = "é".repeat(LOGGED_CHARS + 10);
        assert_eq!(bounded(&long).chars().count(), LOGGED_CHARS);
    }

    /// A counter's labels.
    type Labels = Vec<(String, String)>;
    /// Every increment: the counter's name, labels and the amount.
    type Increments = Arc<Mutex<Vec<(String, Labels, u64)>>>;

    /// Remembers the key of every counter incremented.
    #[derive(Default)]
    struct Keys(Increments);

    struct Seen(Increments, String, Labels);

    impl CounterFn for Seen {
        fn increment(&self, value: u64) {
            self.0.lock().unwrap().push((self.1.clone(), self.2.clone(), value));
        }
        fn absolute(&self, _: u64) {}
    }

    impl Recorder for Keys {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let labels = key.labels().map(|l| (l.key().to_string(), l.value().to_string())).collect();
            Counter::from_arc(Arc::new(Seen(self.0.clone(), key.name().to_string(), labels)))
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    #[test]
    fn a_completed_request_is_counted_by_resource_and_status() {
        let recorder = Keys::default();
        let problem = Problem::new(crate::problem::ProblemType::BadNonce, "stale");
        metrics::with_local_recorder(&recorder, || {
            Completed {
                method: &Method::POST,
                path: "/acme/order/abc/finalize",
                resource: "finalize",
                status: StatusCode::BAD_REQUEST,
                problem: Some(&problem),
                peer: IpAddr::from([127, 0, 0, 1]),
                elapsed: Duration::from_micros(1500),
            }
            .record();
        });
        let seen = recorder.0.lock().unwrap().clone();
        let labels = vec![("resource".to_string(), "finalize".to_string()), ("status".to_string(), "400".to_string())];
        assert_eq!(seen, vec![(REQUESTS_TOTAL.to_string(), labels, 1)]);
    }
}
