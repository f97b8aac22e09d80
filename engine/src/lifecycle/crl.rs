//! Each issuer's CRL: regenerated when a revocation came in since the last
//! one (checked on every fetch, so a release by the CLI shows at once) and
//! at least every `crl_refresh`; numbered in sequence (RFC 5280 §5.2.3).
//! The root's CRL lists the intermediates revoked by `tenant remove`; their
//! count is part of the root's revocation mark, so a removal shows at once.

use std::time::{Duration, UNIX_EPOCH};

use crate::ca::{self, CrlEntry};
use crate::core::Core;
use crate::error::{Error, Result};
use crate::model::*;
use crate::store::{RevokedEntry, RevokedIssuer, StoredCrl};

impl Core {
    /// The current CRL (DER) of an issuer.
    pub(crate) fn crl(&self, issuer_id: i64) -> Result<Vec<u8>> {
        if self.store.issuer(issuer_id)?.is_none() {
            return Err(Error::not_found(format!("no issuer {issuer_id}")));
        }
        // Read the mark before the list: a revocation racing with us makes the
        // stored mark low, so the next fetch regenerates. Intermediates are
        // revoked, never un-revoked, so their count only grows too.
        let intermediates = match self.store.root()? {
            Some(root) if root.id == issuer_id => self.store.revoked_intermediates()?,
            _ => Vec::new(),
        };
        let mark = self.store.revocation_mark(issuer_id)? + intermediates.len() as i64;
        let at = now();
        let refresh = self.config.lifecycle.crl_refresh.as_secs() as i64;
        let previous = self.store.crl(issuer_id)?;
        if let Some(c) = &previous
            && c.revocation_mark == mark
            && at < c.this_update + refresh
            && at < c.next_update
        {
            return Ok(c.der.clone());
        }
        let mut revoked = self.store.revoked_certificates(issuer_id, at)?;
        revoked.extend(revoked_intermediate_entries(&intermediates, at)?);
        let entries: Vec<CrlEntry<'_>> = revoked
            .iter()
            .map(|r| CrlEntry {
                serial_hex: &r.serial,
                revoked_at: UNIX_EPOCH + Duration::from_secs(r.revoked_at.max(0) as u64),
                reason: r.reason,
            })
            .collect();
        let number = previous.as_ref().map_or(1, |c| c.number + 1);
        let this_update = UNIX_EPOCH + Duration::from_secs(at.max(0) as u64);
        let validity = self.config.lifecycle.crl_validity;
        let der = ca::sign_crl(&*self.issuer(issuer_id)?, number as u64, this_update, this_update + validity, &entries)?;
        let stored =
            StoredCrl { issuer_id, number, this_update: at, next_update: at + validity.as_secs() as i64, revocation_mark: mark, der };
        if self.store.put_crl(&stored)? {
            Ok(stored.der)
        } else {
            // Another process stored a newer one meanwhile: serve that.
            Ok(self.store.crl(issuer_id)?.map(|c| c.der).unwrap_or(stored.der))
        }
    }

    /// Brings every issuer's CRL up to date (the scheduler's periodic pass).
    pub(crate) fn refresh_crls(&self) -> Result<usize> {
        let mut n = 0;
        for issuer in self.store.issuers()? {
            self.crl(issuer.id)?;
            n += 1;
        }
        Ok(n)
    }
}

/// The CRL entries of revoked intermediates not yet expired (an expired
/// certificate may leave the CRL, RFC 5280 §3.3): serial and expiry read from
/// each certificate.
fn revoked_intermediate_entries(revoked: &[RevokedIssuer], at: UnixTime) -> Result<Vec<RevokedEntry>> {
    let mut out = Vec::new();
    for r in revoked {
        let (_, cert) = x509_parser::parse_x509_certificate(&r.cert_der)
            .map_err(|e| Error::internal(format!("stored intermediate {} does not parse: {e}", r.issuer_id)))?;
        if cert.validity().not_after.timestamp() <= at {
            continue;
        }
        out.push(RevokedEntry { serial: hex::encode(cert.raw_serial()), revoked_at: r.revoked_at, reason: r.reason });
    }
    Ok(out)
}
