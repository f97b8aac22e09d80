//! Reading a request: the body (bounded), a typed JSON body, a typed query
//! string. Every parse failure is a 400 problem that names the member or
//! parameter, and an unknown one is refused by name (the types deny them).

use bytes::Bytes;
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use tenure_acme::problem::Problem;

/// Plugins can be large; everything else is small JSON.
pub const MAX_ADMIN_BODY: usize = 32 * 1024 * 1024;

/// How much of an oversized body is read (and dropped) so that the client,
/// over HTTP/1.1 or HTTP/2, receives the 413 rather than a reset.
const DRAIN_ADMIN_BODY: usize = 2 * MAX_ADMIN_BODY;

/// The whole body, at most [`MAX_ADMIN_BODY`] bytes (413 beyond).
pub async fn read_body(body: Incoming) -> Result<Bytes, Problem> {
    tenure_acme::server::read_bounded_body(body, MAX_ADMIN_BODY, DRAIN_ADMIN_BODY).await
}

/// A JSON body of type `T`. An empty body is an empty object, so operations
/// whose body has only optional members (or none) can be called without one.
pub fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| named("the body", e.path(), e.inner()))?;
    de.end().map_err(|e| Problem::malformed(format!("the body has trailing characters: {e}")))?;
    Ok(value)
}

/// The query string as `T` (`application/x-www-form-urlencoded`).
pub fn query<T: DeserializeOwned>(query: Option<&str>) -> Result<T, Problem> {
    let pairs = form_urlencoded::parse(query.unwrap_or("").as_bytes());
    serde_path_to_error::deserialize(serde_urlencoded::Deserializer::new(pairs)).map_err(|e| named("the query", e.path(), e.inner()))
}

/// A 400 naming where parsing failed: `path` is `.` for the whole input
/// (then serde's message names the field, e.g. an unknown one).
fn named(what: &str, path: &serde_path_to_error::Path, error: &dyn std::fmt::Display) -> Problem {
    let path = path.to_string();
    if path == "." { Problem::malformed(format!("{what}: {error}")) } else { Problem::malformed(format!("{what}'s {path:?}: {error}")) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::requests::{AuditQuery, NewTenant};
    use http::StatusCode;

    #[test]
    fn unknown_members_and_parameters_are_named() {
        let p = json::<NewTenant>(br#"{"name":"a","permit":["a.test"]}"#).err().unwrap();
        assert!(p.detail.contains("unknown field `permit`"), "{}", p.detail);
        let p = json::<NewTenant>(br#"{"name":5,"permits":[]}"#).err().unwrap();
        assert!(p.detail.contains("\"name\""), "{}", p.detail);
        let p = query::<AuditQuery>(Some("tenant=a&limt=5")).err().unwrap();
        assert!(p.detail.contains("unknown field `limt`"), "{}", p.detail);
    }

    #[test]
    fn a_limit_that_is_not_a_number_is_refused() {
        let p = query::<AuditQuery>(Some("limit=ten")).err().unwrap();
        assert_eq!(p.status(), StatusCode::BAD_REQUEST);
        assert!(p.detail.contains("\"limit\""), "{}", p.detail);
        assert!(query::<AuditQuery>(Some("limit=-1")).is_err());
        let q: AuditQuery = query(Some("tenant=a%20b&limit=7")).unwrap();
        assert_eq!((q.tenant.as_deref(), q.limit), (Some("a b"), Some(7)));
        let q: AuditQuery = query(None).unwrap();
        assert_eq!((q.tenant, q.limit), (None, None));
    }
}
