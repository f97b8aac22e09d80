//! ACME Renewal Information (RFC 9773): the window in which a client should
//! renew, following the scheduler's plan, and `replaces` on newOrder.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::ca;
use crate::core::Core;
use crate::error::{Error, ErrorKind, Result};
use crate::identifier::Identifier;
use crate::model::*;
use crate::registry::ResourceState;

/// A suggested renewal window (RFC 9773 §4.2), in Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalWindow {
    pub start: UnixTime,
    pub end: UnixTime,
    /// Why the window moved to now, when it did.
    pub reason: Option<String>,
    /// When the client should ask again (the Retry-After header).
    pub retry_after_seconds: u64,
}

/// Splits an ARI certificate identifier: base64url(AKI keyIdentifier) "."
/// base64url(serial INTEGER content), both unpadded (RFC 9773 §4.1).
fn parse_cert_id(cert_id: &str) -> Result<(Vec<u8>, String)> {
    let bad = |why: &str| Error::malformed(format!("certificate identifier {cert_id:?}: {why}"));
    let (aki, serial) = cert_id.split_once('.').ok_or_else(|| bad("expected base64url(AKI).base64url(serial)"))?;
    if serial.contains('.') {
        return Err(bad("more than one '.'"));
    }
    let aki = URL_SAFE_NO_PAD.decode(aki).map_err(|_| bad("the key identifier is not unpadded base64url"))?;
    let serial = URL_SAFE_NO_PAD.decode(serial).map_err(|_| bad("the serial is not unpadded base64url"))?;
    if aki.is_empty() || serial.is_empty() || serial.len() > 21 {
        return Err(bad("empty key identifier or serial, or a serial longer than 20 octets"));
    }
    Ok((aki, ca::serial_hex(&serial)))
}

impl Core {
    /// The certificate an ARI identifier names, if we issued it.
    pub(crate) fn certificate_by_ari_id(&self, cert_id: &str) -> Result<(Certificate, CertificateLifecycle)> {
        let (aki, serial) = parse_cert_id(cert_id)?;
        let unknown = || Error::not_found(format!("no certificate {cert_id} was issued here"));
        let (cert, life) = self.store.certificate_record(&serial)?.ok_or_else(unknown)?;
        let info = ca::cert_info(&cert.der)?;
        if info.authority_key_id.as_deref() != Some(aki.as_slice()) {
            return Err(unknown());
        }
        Ok((cert, life))
    }

    /// The renewal window of a certificate: the scheduler's own plan, or now
    /// when it must be replaced early.
    pub(crate) fn renewal_info(&self, cert_id: &str) -> Result<RenewalWindow> {
        let (cert, life) = self.certificate_by_ari_id(cert_id)?;
        let at = now();
        if let Some(reason) = self.replace_early_because(&cert, &life)? {
            // A window already open: RFC 9773 clients renew at once.
            return Ok(RenewalWindow { start: at - 60, end: at, reason: Some(reason), retry_after_seconds: 60 });
        }
        let lifetime = (cert.not_after - cert.not_before).max(1);
        let start = life.renew_at.unwrap_or(cert.not_before + lifetime * 2 / 3);
        let end = (start + (cert.not_after - start) / 2).max(start + 1);
        let retry_after_seconds = ((start - at) / 2).clamp(60, 6 * 3600) as u64;
        Ok(RenewalWindow { start, end, reason: None, retry_after_seconds })
    }

    fn replace_early_because(&self, cert: &Certificate, life: &CertificateLifecycle) -> Result<Option<String>> {
        if cert.revoked_at.is_some() {
            return Ok(Some("the certificate is revoked".into()));
        }
        for id in &life.resources {
            match self.store.resource(id)? {
                Some(r) if r.tenant != cert.tenant => return Ok(Some(format!("resource {id} moved to another tenant"))),
                Some(r) if r.state == ResourceState::Released => return Ok(Some(format!("resource {id} was released"))),
                Some(_) => {}
                None => return Ok(Some(format!("resource {id} is gone"))),
            }
        }
        if !life.policy.is_empty() && self.policy_fingerprint(&cert.tenant)? != life.policy {
            return Ok(Some("the policy that allowed the certificate has changed".into()));
        }
        Ok(None)
    }

    /// Checks an order's `replaces` (RFC 9773 §5): a certificate of the same
    /// tenant, sharing a name with the order, not replaced already.
    pub(crate) fn replaced_certificate(&self, account: &Account, identifiers: &[Identifier], cert_id: &str) -> Result<Certificate> {
        let (cert, life) = self.certificate_by_ari_id(cert_id).map_err(|e| match e.kind {
            ErrorKind::NotFound => Error::malformed(format!("replaces: {}", e.detail)),
            _ => e,
        })?;
        if cert.tenant != account.tenant {
            return Err(Error::new(ErrorKind::Unauthorized, "replaces names a certificate of another tenant"));
        }
        if !cert.identifiers.iter().any(|i| identifiers.contains(i)) {
            return Err(Error::malformed("replaces names a certificate that shares no identifier with the order"));
        }
        if life.renewal == RenewalState::Replaced {
            return Err(Error::new(
                ErrorKind::AlreadyReplaced,
                format!("certificate {} was replaced already by {}", cert.serial, life.successor.unwrap_or_default()),
            ));
        }
        Ok(cert)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_ids_parse_as_rfc_9773_writes_them() {
        // RFC 9773 §4.1's example: keyIdentifier 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4
        // and serial 00:87:65:43:21.
        let (aki, serial) = parse_cert_id("aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE").unwrap();
        assert_eq!(aki[0], 0x69);
        assert_eq!(aki.len(), 20);
        assert_eq!(serial, "87654321");
    }

    #[test]
    fn malformed_cert_ids_are_refused() {
        for bad in ["", "abc", "a.b.c", "aYhb.", ".AIdl", "aYhb=.AIdl", "a+b.AIdl"] {
            assert_eq!(parse_cert_id(bad).unwrap_err().kind, ErrorKind::Malformed, "{bad}");
        }
    }
}
