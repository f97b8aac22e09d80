//! JWS (RFC 7515) as ACME uses it (RFC 8555 §6.2): see the helper notes.
