//! The bearer token (RFC 6750) every admin request presents: the contents of
//! `DIR/admin-token`, compared in constant time.

use http::{HeaderMap, StatusCode, header};
use tenure_acme::problem::Problem;

use crate::Refusal;

/// The token the admin API accepts.
pub struct Token(String);

impl Token {
    /// The token the engine keeps in the data directory.
    pub fn new(token: String) -> Token {
        Token(token)
    }

    /// Whether the request presents the token; a 401 with `WWW-Authenticate` if not.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let presented = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer_credentials).unwrap_or("");
        // An empty token (a broken data directory) must not match an empty header.
        #[allow(deprecated)]
        let matches = !self.0.is_empty() && ring::constant_time::verify_slices_are_equal(presented.as_bytes(), self.0.as_bytes()).is_ok();
        if matches {
            return Ok(());
        }
        Err(Refusal {
            problem: Problem::unauthorized("the admin API needs \"Authorization: Bearer <DIR/admin-token>\"")
                .with_status(StatusCode::UNAUTHORIZED),
            header: Some((header::WWW_AUTHENTICATE, "Bearer realm=\"tenure-admin\"".into())),
        })
    }
}

/// The credentials of a `Bearer` authorization; the scheme name is
/// case-insensitive (RFC 9110 §11.1, RFC 6750 §2.1).
fn bearer_credentials(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| credentials.trim_start_matches(' '))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, a.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_the_exact_bearer_token_passes() {
        let t = Token::new("s3cret".into());
        for good in ["Bearer s3cret", "bearer s3cret", "BEARER s3cret", "Bearer  s3cret"] {
            assert!(t.check(&headers(Some(good))).is_ok(), "{good}");
        }
        for bad in [
            None,
            Some("Bearer s3cre"),
            Some("Bearer s3cret2"),
            Some("Bearers3cret"),
            Some("Basic s3cret"),
            Some("Bearer "),
            Some("s3cret"),
        ] {
            let refusal = t.check(&headers(bad)).expect_err("refused");
            assert_eq!(refusal.problem.status(), StatusCode::UNAUTHORIZED);
        }
        assert!(Token::new(String::new()).check(&headers(Some("Bearer "))).is_err());
    }
}
