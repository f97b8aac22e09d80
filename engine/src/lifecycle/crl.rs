//! Each issuer's CRL: regenerated when a revocation came in since the last
//! one (checked on every fetch, so a release by the CLI shows at once) and
//! at least every `crl_refresh`; numbered in sequence (RFC 5280 §5.2.3).

use std::time::{Duration, UNIX_EPOCH};

use crate::ca::{self, CrlEntry};
use crate::core::Core;
use crate::error::{Error, Result};
use crate::model::*;
use crate::store::StoredCrl;

impl Core {
    /// The current CRL (DER) of an issuer.
    pub(crate) fn crl(&self, issuer_id: i64) -> Result<Vec<u8>> {
        if self.store.issuer(issuer_id)?.is_none() {
            return Err(Error::not_found(format!("no issuer {issuer_id}")));
        }
        // Read the mark before the list: a revocation racing with us makes the
        // stored mark low, so the next fetch regenerates.
        let mark = self.store.revocation_mark(issuer_id)?;
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
        let revoked = self.store.revoked_certificates(issuer_id, at)?;
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
