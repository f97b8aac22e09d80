//! Engine errors carry the ACME-level meaning of a failure (the front end maps
//! each kind to a problem type) without knowing anything of HTTP. They speak
//! the domain: no CLI flag or HTTP path appears in a detail; the CLI and the
//! admin API word their own hints from the kind and the typed [`Conflict`].

use std::sync::Arc;

/// What went wrong, as ACME (RFC 8555 §6.7) and the admin API classify it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is syntactically or semantically wrong.
    Malformed,
    /// No such object.
    NotFound,
    /// The caller may not do this (another account's object, a policy denial).
    Unauthorized,
    /// `onlyReturnExisting` found no account.
    AccountDoesNotExist,
    /// The server requires External Account Binding.
    ExternalAccountRequired,
    /// An identifier this server will not issue for.
    RejectedIdentifier,
    /// An identifier type this server does not support.
    UnsupportedIdentifier,
    /// The order is not ready to finalize.
    OrderNotReady,
    /// The CSR is unacceptable.
    BadCsr,
    /// The public key is unacceptable.
    BadPublicKey,
    /// The certificate is revoked already.
    AlreadyRevoked,
    /// RFC 9773 §5: the certificate named by `replaces` has been replaced already.
    AlreadyReplaced,
    /// A revocation reason this server does not accept.
    BadRevocationReason,
    /// A profile this server does not offer.
    InvalidProfile,
    /// A contact this server does not accept.
    InvalidContact,
    /// The state of the world forbids the change; [`Error::conflict`] says which state.
    Conflict,
    /// Too many requests of this kind from this account for now.
    RateLimited,
    /// A fault of ours.
    Internal,
}

/// The state a [`ErrorKind::Conflict`] ran into, for callers that act on it
/// (the key-change response names the account holding the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// The key is already registered to this account (RFC 8555 §7.3.5).
    AccountKeyInUse {
        /// The account holding the key.
        account: String,
    },
    /// A tenant of that name exists.
    TenantExists,
    /// Another tenant's live resource holds the name, zone or address.
    HeldElsewhere {
        /// The resource holding it.
        resource: String,
        /// Its tenant.
        tenant: String,
    },
    /// A new tenant's permits overlap another tenant's.
    PermitsOverlap {
        /// The tenant whose permits it overlaps.
        tenant: String,
    },
    /// The resource is released (or otherwise not in a state that allows the change).
    ResourceState,
    /// An HSM token or key is not in a state that allows the change.
    Custody,
    /// The HSM pool has no free token.
    PoolExhausted,
    /// The data directory is not in a state to open (a CA without its database).
    DataDirectory,
}

/// An engine error: its kind, a detail for people, and what caused it.
#[derive(Debug, Clone)]
pub struct Error {
    /// The ACME-level meaning.
    pub kind: ErrorKind,
    /// What happened, for the operator or the ACME client.
    pub detail: String,
    /// For conflicts: the state the change ran into.
    pub conflict: Option<Conflict>,
    /// The underlying failure (storage, PKCS#11, I/O), when there is one.
    pub source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    /// For rate limits: how long until the request may succeed.
    pub retry_after: Option<std::time::Duration>,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl Error {
    /// An error of `kind` with a detail.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Error { kind, detail: detail.into(), conflict: None, source: None, retry_after: None }
    }
    /// A fault of ours.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Error::new(ErrorKind::Internal, detail.to_string())
    }
    /// The request is wrong.
    pub fn malformed(detail: impl Into<String>) -> Self {
        Error::new(ErrorKind::Malformed, detail)
    }
    /// No such object.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Error::new(ErrorKind::NotFound, detail)
    }
    /// A rate limit was reached; the request may succeed after `wait`.
    pub fn rate_limited(detail: impl Into<String>, wait: std::time::Duration) -> Self {
        Error { retry_after: Some(wait), ..Error::new(ErrorKind::RateLimited, detail) }
    }
    /// A typed conflict.
    pub fn conflict(conflict: Conflict, detail: impl Into<String>) -> Self {
        Error { conflict: Some(conflict), ..Error::new(ErrorKind::Conflict, detail) }
    }
    /// The same error, caused by `source`.
    pub fn caused_by(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }
}

/// The engine's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_kept() {
        let io = std::io::Error::other("disk on fire");
        let e = Error::internal("writing root.pem").caused_by(io);
        let cause = std::error::Error::source(&e).expect("a source");
        assert_eq!(cause.to_string(), "disk on fire");
    }

    #[test]
    fn conflicts_are_typed() {
        let e = Error::conflict(Conflict::AccountKeyInUse { account: "a1".into() }, "the key is in use");
        assert_eq!(e.kind, ErrorKind::Conflict);
        assert_eq!(e.conflict, Some(Conflict::AccountKeyInUse { account: "a1".into() }));
    }
}
