//! Engine errors carry the ACME-level meaning of a failure (the front end maps
//! each kind to a problem type) without knowing anything of HTTP.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Malformed,
    NotFound,
    Unauthorized,
    AccountDoesNotExist,
    ExternalAccountRequired,
    RejectedIdentifier,
    UnsupportedIdentifier,
    OrderNotReady,
    BadCsr,
    BadPublicKey,
    AlreadyRevoked,
    /// RFC 9773 §5: the certificate named by `replaces` has been replaced already.
    AlreadyReplaced,
    BadRevocationReason,
    InvalidProfile,
    InvalidContact,
    Conflict,
    Internal,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{detail}")]
pub struct Error {
    pub kind: ErrorKind,
    pub detail: String,
}

impl Error {
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Error { kind, detail: detail.into() }
    }
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Error::new(ErrorKind::Internal, detail.to_string())
    }
    pub fn malformed(detail: impl Into<String>) -> Self {
        Error::new(ErrorKind::Malformed, detail)
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Error::new(ErrorKind::NotFound, detail)
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::internal(format!("storage: {e}"))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
