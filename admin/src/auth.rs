//! Who is calling (RFC 6750 bearer tokens): the operator, with the contents of
//! `DIR/admin-token` (compared in constant time), or a tenant, with the token
//! `tenure tenant token` issued it (`tenure-tenant.<tenant>.<secret>`, checked
//! against the hash in the store on every request, so a rotation or a removal
//! ends it at once on every server). Anything else is a 401.

use http::{HeaderMap, StatusCode, header};
use tenure_acme::problem::Problem;
use tenure_engine::registry::tokens::{MAX_TENANT_TOKEN_LEN, TENANT_TOKEN_PREFIX};

use crate::{Admin, Refusal};

/// The longest `Authorization` header read: a tenant token and its scheme
/// with room to spare. The operator's token is far shorter.
pub const MAX_AUTHORIZATION: usize = MAX_TENANT_TOKEN_LEN + 64;

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The operator's token: everything.
    Operator,
    /// A tenant's token: only what is the tenant's own.
    Tenant(String),
}

impl Caller {
    /// The tenant, for a tenant's caller.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Caller::Operator => None,
            Caller::Tenant(t) => Some(t),
        }
    }
}

/// The operator's token.
pub struct Token(String);

impl Token {
    /// The token the engine keeps in the data directory.
    pub fn new(token: String) -> Token {
        Token(token)
    }

    /// Whether `presented` is the operator's token.
    #[allow(deprecated)]
    fn is_operator(&self, presented: &str) -> bool {
        // An empty token (a broken data directory) must not match an empty header.
        !self.0.is_empty() && ring::constant_time::verify_slices_are_equal(presented.as_bytes(), self.0.as_bytes()).is_ok()
    }
}

/// The caller of a request, or a 401 with `WWW-Authenticate`. A tenant
/// token is checked in the store, on a blocking thread.
pub async fn authenticate(admin: &Admin, headers: &HeaderMap) -> Result<Caller, Refusal> {
    let presented = presented(headers).unwrap_or("");
    if admin.token.is_operator(presented) {
        return Ok(Caller::Operator);
    }
    if presented.starts_with(TENANT_TOKEN_PREFIX) {
        let token = presented.to_string();
        if let Some(tenant) = admin.registry(move |r| r.tenant_of_token(&token)).await? {
            return Ok(Caller::Tenant(tenant));
        }
    }
    Err(Refusal {
        problem: Problem::unauthorized(
            "the admin API needs \"Authorization: Bearer <DIR/admin-token>\", or a tenant's token from `tenure tenant token`",
        )
        .with_status(StatusCode::UNAUTHORIZED),
        header: Some((header::WWW_AUTHENTICATE, "Bearer realm=\"tenure-admin\"".into())),
    })
}

/// The credentials the request presents; None without a `Bearer`
/// authorization, or with one longer than [`MAX_AUTHORIZATION`].
fn presented(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?;
    if value.len() > MAX_AUTHORIZATION {
        return None;
    }
    value.to_str().ok().and_then(bearer_credentials)
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
    use crate::tests::test_admin;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, a.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_the_exact_operator_token_is_the_operator() {
        let t = Token::new("s3cret".into());
        for good in ["Bearer s3cret", "bearer s3cret", "BEARER s3cret", "Bearer  s3cret"] {
            assert!(presented(&headers(Some(good))).is_some_and(|p| t.is_operator(p)), "{good}");
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
            assert!(!presented(&headers(bad)).is_some_and(|p| t.is_operator(p)), "{bad:?}");
        }
        assert!(!Token::new(String::new()).is_operator(""));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn tenant_tokens_authenticate_their_tenant_and_nothing_else() {
        let (admin, _dir) = test_admin(&["a", "b"]);
        let operator = admin.token.0.clone();
        let a = admin.registry.issue_tenant_token("a", false).unwrap();
        let b = admin.registry.issue_tenant_token("b", false).unwrap();
        let caller = |token: String| {
            let admin = admin.clone();
            async move { authenticate(&admin, &headers(Some(&format!("Bearer {token}")))).await }
        };
        assert_eq!(caller(operator).await.ok(), Some(Caller::Operator));
        assert_eq!(caller(a.clone()).await.ok(), Some(Caller::Tenant("a".into())));
        assert_eq!(caller(b.clone()).await.ok(), Some(Caller::Tenant("b".into())));

        let secret_of = |t: &str| t.rsplit_once('.').unwrap().1.to_string();
        let mut wrong = secret_of(&a).into_bytes();
        wrong[0] = if wrong[0] == b'A' { b'B' } else { b'A' };
        let wrong = String::from_utf8(wrong).unwrap();
        for bad in [
            format!("tenure-tenant.a.{wrong}"),
            format!("tenure-tenant.b.{}", secret_of(&a)),
            format!("tenure-tenant.nobody.{}", secret_of(&a)),
            format!("tenure-tenant.a.{}x", secret_of(&a)),
            "tenure-tenant.a".to_string(),
            "tenure-tenant.".to_string(),
            format!("tenure-tenant.a.{}", "A".repeat(4000)),
        ] {
            let refusal = caller(bad.clone()).await.expect_err(&bad);
            assert_eq!(refusal.problem.status(), StatusCode::UNAUTHORIZED, "{bad}");
            assert!(refusal.header.is_some());
        }

        let rotated = admin.registry.issue_tenant_token("a", true).unwrap();
        assert_eq!(caller(a).await.expect_err("rotated away").problem.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(caller(rotated).await.ok(), Some(Caller::Tenant("a".into())));

        // A removed tenant's token never works again.
        admin.registry.remove_tenant("b").unwrap();
        assert_eq!(caller(b).await.expect_err("removed").problem.status(), StatusCode::UNAUTHORIZED);
    }
}
