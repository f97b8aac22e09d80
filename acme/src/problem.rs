//! RFC 7807 problem documents with the ACME error types of RFC 8555 §6.7.
//!
//! Every failure on the wire is one of these; handlers return `Result<_, Problem>`
//! and the server turns the error into `application/problem+json`.

use http::StatusCode;
use serde::Serialize;

/// The ACME error types (RFC 8555 §6.7, and RFC 9773's alreadyReplaced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemType {
    /// `urn:ietf:params:acme:error:accountDoesNotExist`.
    AccountDoesNotExist,
    /// `urn:ietf:params:acme:error:alreadyReplaced`.
    AlreadyReplaced,
    /// `urn:ietf:params:acme:error:alreadyRevoked`.
    AlreadyRevoked,
    /// `urn:ietf:params:acme:error:badCSR`.
    BadCsr,
    /// `urn:ietf:params:acme:error:badNonce`.
    BadNonce,
    /// `urn:ietf:params:acme:error:badPublicKey`.
    BadPublicKey,
    /// `urn:ietf:params:acme:error:badRevocationReason`.
    BadRevocationReason,
    /// `urn:ietf:params:acme:error:badSignatureAlgorithm`.
    BadSignatureAlgorithm,
    /// `urn:ietf:params:acme:error:caa`.
    Caa,
    /// `urn:ietf:params:acme:error:compound`.
    Compound,
    /// `urn:ietf:params:acme:error:connection`.
    Connection,
    /// `urn:ietf:params:acme:error:dns`.
    Dns,
    /// `urn:ietf:params:acme:error:externalAccountRequired`.
    ExternalAccountRequired,
    /// `urn:ietf:params:acme:error:incorrectResponse`.
    IncorrectResponse,
    /// `urn:ietf:params:acme:error:invalidContact`.
    InvalidContact,
    /// `urn:ietf:params:acme:error:malformed`.
    Malformed,
    /// `urn:ietf:params:acme:error:orderNotReady`.
    OrderNotReady,
    /// `urn:ietf:params:acme:error:rateLimited`.
    RateLimited,
    /// `urn:ietf:params:acme:error:rejectedIdentifier`.
    RejectedIdentifier,
    /// `urn:ietf:params:acme:error:serverInternal`.
    ServerInternal,
    /// `urn:ietf:params:acme:error:tls`.
    Tls,
    /// `urn:ietf:params:acme:error:unauthorized`.
    Unauthorized,
    /// `urn:ietf:params:acme:error:unsupportedContact`.
    UnsupportedContact,
    /// `urn:ietf:params:acme:error:unsupportedIdentifier`.
    UnsupportedIdentifier,
    /// `urn:ietf:params:acme:error:userActionRequired`.
    UserActionRequired,
    /// `urn:ietf:params:acme:error:invalidProfile`.
    InvalidProfile,
}

impl ProblemType {
    /// The last part of `urn:ietf:params:acme:error:…`.
    pub fn name(self) -> &'static str {
        use ProblemType::*;
        match self {
            AccountDoesNotExist => "accountDoesNotExist",
            AlreadyReplaced => "alreadyReplaced",
            AlreadyRevoked => "alreadyRevoked",
            BadCsr => "badCSR",
            BadNonce => "badNonce",
            BadPublicKey => "badPublicKey",
            BadRevocationReason => "badRevocationReason",
            BadSignatureAlgorithm => "badSignatureAlgorithm",
            Caa => "caa",
            Compound => "compound",
            Connection => "connection",
            Dns => "dns",
            ExternalAccountRequired => "externalAccountRequired",
            IncorrectResponse => "incorrectResponse",
            InvalidContact => "invalidContact",
            Malformed => "malformed",
            OrderNotReady => "orderNotReady",
            RateLimited => "rateLimited",
            RejectedIdentifier => "rejectedIdentifier",
            ServerInternal => "serverInternal",
            Tls => "tls",
            Unauthorized => "unauthorized",
            UnsupportedContact => "unsupportedContact",
            UnsupportedIdentifier => "unsupportedIdentifier",
            UserActionRequired => "userActionRequired",
            InvalidProfile => "invalidProfile",
        }
    }

    /// The full type URN.
    pub fn urn(self) -> String {
        format!("urn:ietf:params:acme:error:{}", self.name())
    }

    /// The HTTP status that goes with the type (RFC 8555 and Boulder's practice).
    pub fn status(self) -> StatusCode {
        use ProblemType::*;
        match self {
            AccountDoesNotExist
            | AlreadyRevoked
            | BadCsr
            | BadNonce
            | BadPublicKey
            | BadRevocationReason
            | BadSignatureAlgorithm
            | Malformed
            | InvalidContact
            | UnsupportedContact
            | UnsupportedIdentifier
            | RejectedIdentifier
            | InvalidProfile
            | Caa
            | Compound
            | Connection
            | Dns
            | IncorrectResponse
            | Tls => StatusCode::BAD_REQUEST,
            Unauthorized | ExternalAccountRequired | UserActionRequired => StatusCode::FORBIDDEN,
            OrderNotReady => StatusCode::FORBIDDEN,
            AlreadyReplaced => StatusCode::CONFLICT,
            RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ServerInternal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An identifier a subproblem is about (RFC 8555 §6.7.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProblemIdentifier {
    #[serde(rename = "type")]
    /// "dns" or "ip", as the client wrote it.
    pub kind: String,
    /// The name or address.
    pub value: String,
}

/// A problem document: what went wrong, for the client to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The ACME error type.
    pub kind: ProblemType,
    /// A sentence for a person.
    pub detail: String,
    /// Overrides the type's usual status (e.g. 404 for an unknown order, 405, 413).
    pub status: Option<StatusCode>,
    /// Per-identifier problems (type, detail, identifier).
    pub subproblems: Vec<(ProblemType, String, Option<ProblemIdentifier>)>,
    /// For `rateLimited`: seconds until a retry may succeed (the `Retry-After` header).
    pub retry_after: Option<u32>,
}

impl Problem {
    /// A problem of `kind`.
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Problem { kind, detail: detail.into(), status: None, subproblems: Vec::new(), retry_after: None }
    }
    /// `malformed`.
    pub fn malformed(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::Malformed, detail)
    }
    /// `unauthorized` (403).
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::Unauthorized, detail)
    }
    /// `serverInternal` (500); the detail must not leak internals.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::ServerInternal, detail)
    }
    /// 404: nothing at this URL (a `malformed` type, as Boulder answers).
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::Malformed, detail).with_status(StatusCode::NOT_FOUND)
    }
    /// Overrides the type's usual status.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }
    /// The HTTP status to answer with.
    pub fn status(&self) -> StatusCode {
        self.status.unwrap_or_else(|| self.kind.status())
    }

    /// The JSON body, `application/problem+json`.
    pub fn to_json(&self) -> serde_json::Value {
        self.to_json_with_instance(None)
    }

    /// The JSON body with RFC 7807's `instance`, the URI of this occurrence:
    /// the ACME server puts its request id there (a URN), so the document a
    /// client reports names the request's log lines. Clients ignore members
    /// they do not know (RFC 7807 §3.2); lego prints it after the detail.
    pub fn to_json_with_instance(&self, instance: Option<&str>) -> serde_json::Value {
        let mut doc = serde_json::json!({
            "type": self.kind.urn(),
            "detail": self.detail,
            "status": self.status().as_u16(),
        });
        if let Some(instance) = instance {
            doc["instance"] = serde_json::Value::String(instance.to_string());
        }
        if !self.subproblems.is_empty() {
            let subs: Vec<_> = self
                .subproblems
                .iter()
                .map(|(kind, detail, id)| {
                    let mut s = serde_json::json!({ "type": kind.urn(), "detail": detail });
                    if let Some(id) = id {
                        s["identifier"] = serde_json::json!(id);
                    }
                    s
                })
                .collect();
            doc["subproblems"] = serde_json::Value::Array(subs);
        }
        doc
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.detail)
    }
}

impl std::error::Error for Problem {}

/// Engine errors carry ACME meaning already; this names it on the wire.
impl From<tenure_engine::Error> for Problem {
    fn from(e: tenure_engine::Error) -> Self {
        use tenure_engine::ErrorKind as K;
        let kind = match e.kind {
            K::Malformed => ProblemType::Malformed,
            K::NotFound => return Problem::not_found(e.detail),
            K::Unauthorized => ProblemType::Unauthorized,
            K::AccountDoesNotExist => ProblemType::AccountDoesNotExist,
            K::ExternalAccountRequired => ProblemType::ExternalAccountRequired,
            K::RejectedIdentifier => ProblemType::RejectedIdentifier,
            K::UnsupportedIdentifier => ProblemType::UnsupportedIdentifier,
            K::OrderNotReady => ProblemType::OrderNotReady,
            K::BadCsr => ProblemType::BadCsr,
            K::BadPublicKey => ProblemType::BadPublicKey,
            K::AlreadyRevoked => ProblemType::AlreadyRevoked,
            K::AlreadyReplaced => ProblemType::AlreadyReplaced,
            K::BadRevocationReason => ProblemType::BadRevocationReason,
            K::InvalidProfile => ProblemType::InvalidProfile,
            K::InvalidContact => ProblemType::InvalidContact,
            K::RateLimited => ProblemType::RateLimited,
            K::Conflict => return Problem::malformed(e.detail).with_status(StatusCode::CONFLICT),
            K::Internal => {
                // Internal details (SQL, file paths) stay in the log, not on the wire.
                tracing::error!(error = %e.detail, "internal error");
                return Problem::internal("the server hit an internal error; it has been logged");
            }
        };
        // Whole seconds, rounded up: a client that waits that long finds the allowance back.
        let retry_after = e.retry_after.map(|d| u32::try_from(d.as_secs() + u64::from(d.subsec_nanos() > 0)).unwrap_or(u32::MAX));
        Problem { retry_after, ..Problem::new(kind, e.detail) }
    }
}

/// The problem type named by a recorded error's kind (e.g. "unauthorized").
pub fn urn_of(kind_name: &str) -> String {
    format!("urn:ietf:params:acme:error:{kind_name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urn_and_status_follow_rfc8555() {
        let p = Problem::new(ProblemType::BadNonce, "stale");
        let j = p.to_json();
        assert_eq!(j["type"], "urn:ietf:params:acme:error:badNonce");
        assert_eq!(j["status"], 400);
        assert_eq!(Problem::unauthorized("x").status(), StatusCode::FORBIDDEN);
        assert_eq!(ProblemType::BadCsr.urn(), "urn:ietf:params:acme:error:badCSR");
        assert!(j.get("instance").is_none());
    }

    #[test]
    fn the_instance_names_the_request_and_subproblems_stay() {
        let mut p = Problem::new(ProblemType::Compound, "2 identifiers were refused");
        let id = |v: &str| Some(ProblemIdentifier { kind: "dns".into(), value: v.into() });
        p.subproblems = vec![
            (ProblemType::RejectedIdentifier, "not yours".into(), id("a.example")),
            (ProblemType::Malformed, "not a name".into(), id("-x")),
        ];
        let j = p.to_json_with_instance(Some("urn:tenure:request:0123456789abcdef"));
        assert_eq!(j["instance"], "urn:tenure:request:0123456789abcdef");
        assert_eq!(j["type"], "urn:ietf:params:acme:error:compound");
        assert_eq!(j["subproblems"].as_array().map(Vec::len), Some(2));
        assert_eq!(j["subproblems"][0]["identifier"]["value"], "a.example");
        assert!(j["subproblems"][0].get("instance").is_none(), "the occurrence is the whole document's");
    }
}
