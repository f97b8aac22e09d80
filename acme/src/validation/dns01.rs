//! dns-01 (RFC 8555 §8.4): a TXT record at `_acme-challenge.<domain>` holding
//! base64url(SHA-256(key authorization)).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tenure_engine::{Identifier, IdentifierKind};
use tokio::time::Instant;

use super::{Inner, before, key_authorization_digest, quote_truncated};
use crate::problem::{Problem, ProblemType};

pub(super) async fn validate(va: &Inner, identifier: &Identifier, key_authorization: &str, deadline: Instant) -> Result<(), Problem> {
    if identifier.kind != IdentifierKind::Dns {
        // RFC 8738 §7: there is no DNS zone to prove control of for an address.
        return Err(Problem::malformed(format!("dns-01 cannot validate the IP identifier {}", identifier.value)));
    }
    // A wildcard is proven on its base domain (RFC 8555 §8.4).
    let base = identifier.value.strip_prefix("*.").unwrap_or(&identifier.value);
    let name = format!("_acme-challenge.{base}");
    let expected = URL_SAFE_NO_PAD.encode(key_authorization_digest(key_authorization));

    let records = before(deadline, ProblemType::Dns, || format!("looking up TXT for {name}"), va.resolver.lookup_txt(&name)).await?;
    if records.iter().any(|r| r == &expected) {
        return Ok(());
    }
    let detail = match records.as_slice() {
        [] => format!("No TXT record found at {name}"),
        [only] => format!("Incorrect TXT record {} found at {name} (expected {expected:?})", quote_truncated(only.as_bytes(), 100)),
        [first, rest @ ..] => format!(
            "Incorrect TXT record {} (and {} more) found at {name} (expected {expected:?})",
            quote_truncated(first.as_bytes(), 100),
            rest.len()
        ),
    };
    Err(Problem::new(ProblemType::Unauthorized, detail))
}

#[cfg(test)]
mod tests {
    use super::super::testdns::TestDns;
    use super::super::{ChallengeKind, ValidationConfig, Validator};
    use super::*;

    const KEY_AUTH: &str = "token-abc.thumbprint-xyz";

    fn digest(ka: &str) -> String {
        URL_SAFE_NO_PAD.encode(key_authorization_digest(ka))
    }

    async fn setup() -> (TestDns, Validator) {
        let dns = TestDns::start().await;
        let va = Validator::new(ValidationConfig { dns_resolver: Some(dns.addr), ..Default::default() }).unwrap();
        (dns, va)
    }

    #[tokio::test]
    async fn matching_record_passes_even_among_others() {
        let (dns, va) = setup().await;
        dns.set_txt("_acme-challenge.example.com", vec!["stale".into(), digest(KEY_AUTH)]);
        va.validate(ChallengeKind::Dns01, &Identifier::dns("example.com"), "token-abc", KEY_AUTH).await.unwrap();
    }

    #[tokio::test]
    async fn wildcard_is_validated_on_its_base() {
        let (dns, va) = setup().await;
        dns.set_txt("_acme-challenge.example.org", vec![digest(KEY_AUTH)]);
        va.validate(ChallengeKind::Dns01, &Identifier::dns("*.example.org"), "token-abc", KEY_AUTH).await.unwrap();
    }

    #[tokio::test]
    async fn wrong_value_is_unauthorized() {
        let (dns, va) = setup().await;
        dns.set_txt("_acme-challenge.example.com", vec![digest("other.key")]);
        let err = va.validate(ChallengeKind::Dns01, &Identifier::dns("example.com"), "token-abc", KEY_AUTH).await.unwrap_err();
        assert_eq!(err.kind, ProblemType::Unauthorized);
        assert!(err.detail.contains(&digest("other.key")) && err.detail.contains(&digest(KEY_AUTH)), "{err}");
    }

    #[tokio::test]
    async fn missing_record_is_unauthorized_and_then_fresh_record_passes() {
        let (dns, va) = setup().await;
        let id = Identifier::dns("example.com");
        let err = va.validate(ChallengeKind::Dns01, &id, "token-abc", KEY_AUTH).await.unwrap_err();
        assert_eq!(err.kind, ProblemType::Unauthorized);
        assert!(err.detail.contains("No TXT record found at _acme-challenge.example.com"), "{err}");
        // No negative caching: the record published now is seen now.
        dns.set_txt("_acme-challenge.example.com", vec![digest(KEY_AUTH)]);
        va.validate(ChallengeKind::Dns01, &id, "token-abc", KEY_AUTH).await.unwrap();
    }

    #[tokio::test]
    async fn ip_identifiers_are_refused() {
        let (_dns, va) = setup().await;
        let id = Identifier::ip([127, 0, 0, 1].into());
        let err = va.validate(ChallengeKind::Dns01, &id, "token-abc", KEY_AUTH).await.unwrap_err();
        assert_eq!(err.kind, ProblemType::Malformed);
    }
}
