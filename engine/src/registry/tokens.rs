//! Tenants' admin-API tokens: `tenure-tenant.<tenant>.<secret>`, the secret 32
//! random bytes in base64url without padding. Tenant names are
//! `[a-z0-9_-]` and base64url has no '.', so the token splits unambiguously.
//!
//! Only SHA-256(secret) is stored (`TokenStore`), so a token is shown once,
//! when issued. Every check reads the store (no cache in the process): a
//! rotation, one UPDATE of the hash, ends the old token at once on every
//! server, and a removed tenant's token never works.

use ring::digest::{SHA256, digest};

use crate::error::{Error, ErrorKind, Result};
use crate::registry::Registry;

/// What every tenant token starts with.
pub const TENANT_TOKEN_PREFIX: &str = "tenure-tenant.";

/// Bytes of randomness in a token's secret.
const SECRET_BYTES: usize = 32;

/// The longest token there can be: the prefix, a 63-character tenant name,
/// '.', and 43 characters of base64url. Anything longer is refused unread.
pub const MAX_TENANT_TOKEN_LEN: usize = TENANT_TOKEN_PREFIX.len() + 63 + 1 + (SECRET_BYTES * 4).div_ceil(3);

/// A token taken apart: the tenant it names and its secret's bytes. Nothing
/// here says the token is valid; only [`Registry::tenant_of_token`] does.
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedTenantToken<'a> {
    /// The tenant the token claims to be.
    pub tenant: &'a str,
    /// The secret's bytes.
    pub secret: Vec<u8>,
}

/// Takes a token apart; None for anything that is not shaped like one (too
/// long, another prefix, a tenant name of other characters, a secret that is
/// not 32 bytes of unpadded base64url).
pub fn parse_tenant_token(token: &str) -> Option<ParsedTenantToken<'_>> {
    use base64::Engine as _;
    if token.len() > MAX_TENANT_TOKEN_LEN {
        return None;
    }
    let (tenant, secret) = token.strip_prefix(TENANT_TOKEN_PREFIX)?.split_once('.')?;
    let name_ok = !tenant.is_empty()
        && tenant.len() <= 63
        && tenant.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !name_ok {
        return None;
    }
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(secret).ok()?;
    (secret.len() == SECRET_BYTES).then_some(ParsedTenantToken { tenant, secret })
}

impl Registry {
    /// Issues the tenant's admin-API token and returns it (the only time it
    /// can be shown: only its hash is kept). Without `rotate`, a tenant that
    /// has a token keeps it (a conflict); with it, the new token replaces the
    /// old one, which stops working at once.
    pub fn issue_tenant_token(&self, tenant: &str, rotate: bool) -> Result<String> {
        // The public tenant is every account without EAB: a token for it
        // would reach strangers' certificates, audit and plugin.
        if tenant == crate::PUBLIC_TENANT {
            return Err(Error::malformed(format!("the {tenant} tenant is every account without EAB; it has no token of its own")));
        }
        let token = format!("{TENANT_TOKEN_PREFIX}{tenant}.{}", self.core.random_id(SECRET_BYTES));
        // Parsing what we made checks the tenant's name and yields the secret's bytes, which are what is hashed.
        let parsed = parse_tenant_token(&token).ok_or_else(|| Error::malformed(format!("{tenant:?} is not a tenant name")))?;
        let hash = digest(&SHA256, &parsed.secret);
        if !self.core.store.store_tenant_token_hash(tenant, hash.as_ref(), rotate)? {
            return Err(Error::new(ErrorKind::Conflict, format!("tenant {tenant} already has a token; rotate to replace it")));
        }
        tracing::info!(tenant, rotated = rotate, "tenant token issued");
        Ok(token)
    }

    /// The tenant a token authenticates: its name if the token is shaped
    /// right, names a live tenant, and its secret's hash is the one stored
    /// (compared in constant time); None otherwise.
    pub fn tenant_of_token(&self, token: &str) -> Result<Option<String>> {
        let Some(parsed) = parse_tenant_token(token) else { return Ok(None) };
        if parsed.tenant == crate::PUBLIC_TENANT {
            return Ok(None);
        }
        let Some(stored) = self.core.store.tenant_token_hash(parsed.tenant)? else { return Ok(None) };
        let presented = digest(&SHA256, &parsed.secret);
        #[allow(deprecated)]
        let matches = ring::constant_time::verify_slices_are_equal(presented.as_ref(), &stored).is_ok();
        Ok(matches.then(|| parsed.tenant.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Engine;
    use crate::config::Config;

    #[test]
    fn tokens_parse_only_when_shaped_right() {
        let secret = "A".repeat(43);
        let good = format!("tenure-tenant.a-b_1.{secret}");
        let p = parse_tenant_token(&good).unwrap();
        assert_eq!((p.tenant, p.secret.len()), ("a-b_1", 32));
        assert_eq!(good.len() - "a-b_1".len() + 63, MAX_TENANT_TOKEN_LEN);
        for bad in [
            String::new(),
            "tenure-tenant.".into(),
            format!("tenure-tenant.a{secret}"),
            format!("tenure-tenant..{secret}"),
            format!("tenure-tenant.A.{secret}"),
            format!("tenure-tenant.a.b.{secret}"),
            format!("tenure-other.a.{secret}"),
            format!("tenure-tenant.a.{}", "A".repeat(42)),
            format!("tenure-tenant.a.{}=", "A".repeat(43)),
            format!("tenure-tenant.a.{}", "A".repeat(44)),
            format!("tenure-tenant.a.{}+", "A".repeat(42)),
            format!("tenure-tenant.{}.{secret}", "a".repeat(64)),
            format!("{good} "),
        ] {
            assert_eq!(parse_tenant_token(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_token_authenticates_its_tenant_until_rotated_and_never_another() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path(), Config::default()).unwrap();
        e.registry.create_tenant("a", Some(&["a.example".to_string()])).unwrap();
        e.registry.create_tenant("b", Some(&["b.example".to_string()])).unwrap();
        let r = &e.registry;
        let a = r.issue_tenant_token("a", false).unwrap();
        assert!(a.starts_with("tenure-tenant.a."), "{a}");
        assert_eq!(r.tenant_of_token(&a).unwrap().as_deref(), Some("a"));
        let again = r.issue_tenant_token("a", false).unwrap_err();
        assert_eq!(again.kind, ErrorKind::Conflict);
        assert!(again.detail.contains("already has a token; rotate"), "{}", again.detail);
        assert_eq!(r.tenant_of_token(&a).unwrap().as_deref(), Some("a"), "a refused issue changes nothing");

        // Another tenant's name with A's secret; a wrong secret; a malformed token.
        let secret = a.rsplit_once('.').unwrap().1;
        assert_eq!(r.tenant_of_token(&format!("tenure-tenant.b.{secret}")).unwrap(), None);
        let b = r.issue_tenant_token("b", false).unwrap();
        assert_eq!(r.tenant_of_token(&format!("tenure-tenant.b.{secret}")).unwrap(), None);
        assert_eq!(r.tenant_of_token(&b).unwrap().as_deref(), Some("b"));
        let mut wrong = a.clone().into_bytes();
        let last = wrong.len() - 2;
        wrong[last] = if wrong[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(r.tenant_of_token(&String::from_utf8(wrong).unwrap()).unwrap(), None);
        assert_eq!(r.tenant_of_token("tenure-tenant.a").unwrap(), None);
        assert_eq!(r.tenant_of_token(&e.admin_token().unwrap()).unwrap(), None);
        assert_eq!(r.tenant_of_token(&format!("tenure-tenant.nobody.{secret}")).unwrap(), None);
        assert_eq!(r.issue_tenant_token("nobody", true).unwrap_err().kind, ErrorKind::NotFound);
        assert_eq!(r.issue_tenant_token("No.Body", true).unwrap_err().kind, ErrorKind::Malformed);

        let rotated = r.issue_tenant_token("a", true).unwrap();
        assert_ne!(rotated, a);
        assert_eq!(r.tenant_of_token(&a).unwrap(), None, "the old token ends at once");
        assert_eq!(r.tenant_of_token(&rotated).unwrap().as_deref(), Some("a"));
    }
}
