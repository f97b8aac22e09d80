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
        let Some(issuer) = self.store.issuer(issuer_id)? else {
            return Err(Error::not_found(format!("no issuer {issuer_id}")));
        };
        // Read the mark before the list: a revocation racing with us makes the
        // stored mark low, so the next fetch regenerates. Intermediates are
        // revoked, never un-revoked, so their count only grows too. The root
        // is the core's (never made again): no query for it per CRL, which on
        // PostgreSQL scanned every issuer (issue 17).
        let intermediates = if issuer.cert_der == self.root.cert_der { self.store.revoked_intermediates()? } else { Vec::new() };
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
        let der = ca::sign_crl(&self.issuer_once(issuer_id)?.0, number as u64, this_update, this_update + validity, &entries)?;
        let stored =
            StoredCrl { issuer_id, number, this_update: at, next_update: at + validity.as_secs() as i64, revocation_mark: mark, der };
        if self.store.put_crl(&stored)? {
            Ok(stored.der)
        } else {
            // Another process stored a newer one meanwhile: serve that.
            Ok(self.store.crl(issuer_id)?.map(|c| c.der).unwrap_or(stored.der))
        }
    }

    /// Brings every issuer's CRL up to date (the scheduler's periodic pass):
    /// those the store finds due, each judged again by [`Core::crl`]. Returns
    /// how many were looked at.
    pub(crate) fn refresh_crls(&self) -> Result<usize> {
        let at = now();
        let made_by = at.saturating_sub(self.config.lifecycle.crl_refresh.as_secs() as i64);
        let due = self.store.issuers_with_crl_due(made_by, at)?;
        for &id in &due {
            self.crl(id)?;
        }
        Ok(due.len())
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

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair};

    use crate::config::Config;
    use crate::ra::NewOrder;
    use crate::{Engine, Identifier};

    /// The scheduler's pass makes what is missing, then looks again only at
    /// the root and at an issuer whose certificates were revoked since.
    #[test]
    fn the_pass_takes_only_issuers_whose_crl_is_due() {
        let dir = tempfile::tempdir().unwrap();
        let a = Engine::open(dir.path(), Config::default()).unwrap();
        let account = crate::ra::tenant_account_holding_corp_example(&a);
        a.registry.create_tenant("other", Some(&["other.example".to_string()])).unwrap();
        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::new(vec!["www.corp.example".to_string()]).unwrap().serialize_request(&key).unwrap();
        let order =
            a.ra.new_order(&account, NewOrder { identifiers: vec![Identifier::dns("www.corp.example")], profile: None, replaces: None })
                .unwrap();
        let serial = a.ra.finalize(&account, &order, csr.der(), b"account key").unwrap().certificate.unwrap();
        let issuers = a.core.store.issuers().unwrap();
        let root = a.core.store.root().unwrap().unwrap().id;
        let corp = a.core.store.tenant("corp").unwrap().unwrap().issuer_id;

        assert_eq!(a.lifecycle.refresh_crls().unwrap(), issuers.len(), "every CRL is made at first");
        assert_eq!(a.lifecycle.refresh_crls().unwrap(), 1, "then only the root is looked at");
        let before = a.core.store.crl(corp).unwrap().unwrap().number;
        a.lifecycle.revoke_certificate(&serial, Some(4)).unwrap();
        let at = super::now();
        assert_eq!(a.core.store.issuers_with_crl_due(at - 3600, at).unwrap(), [root, corp]);
        a.lifecycle.refresh_crls().unwrap();
        assert_eq!(a.core.store.crl(corp).unwrap().unwrap().number, before + 1);
        assert_eq!(a.core.store.issuers_with_crl_due(at - 3600, at).unwrap(), [root]);
        // Made an hour ago or more, or running out: due again.
        assert_eq!(a.core.store.issuers_with_crl_due(at + 1, at).unwrap().len(), issuers.len());
    }
}
