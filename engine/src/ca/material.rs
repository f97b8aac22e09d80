//! Issuing material (certificate + key) and loading it into something that signs.

use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use rcgen::{Issuer, PublicKeyData as _, SigningKey as _};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer as _;

use super::constraints::IssuerConstraints;
use super::signing::{CaKey, CaSigningKey};
use super::util::rcgen_err;
use crate::error::Error;

/// One issuing CA: certificate DER + its private key (software PKCS#8, or a
/// key in an HSM). Used for the root and each intermediate.
#[derive(Clone)]
pub struct CaMaterial {
    pub cert_der: Vec<u8>,
    pub key: CaKey,
    /// The signer built from the two, kept so that signing does not parse
    /// the certificate and rebuild the rcgen issuer every time.
    prepared: OnceLock<Arc<Signer>>,
}

impl CaMaterial {
    pub fn new(cert_der: Vec<u8>, key: CaKey) -> CaMaterial {
        CaMaterial { cert_der, key, prepared: OnceLock::new() }
    }

    pub fn software(cert_der: Vec<u8>, key_pkcs8: Vec<u8>) -> CaMaterial {
        CaMaterial::new(cert_der, CaKey::Software(key_pkcs8))
    }

    /// Signs `tbs` (e.g. a TBSCertList) with the CA key, in the encoding of
    /// the CA certificate's signature algorithm. For CRLs and anything else
    /// rcgen does not build itself.
    pub fn sign(&self, tbs: &[u8]) -> Result<Vec<u8>, Error> {
        self.key.signing_key()?.sign(tbs).map_err(rcgen_err("CA signature"))
    }

    pub fn cert_pem(&self) -> String {
        to_pem("CERTIFICATE", &self.cert_der)
    }

    /// The signer of this CA: built (and checked) once, then shared. Holds no
    /// lock while anyone signs. The signer remembers the certificate and key
    /// it was built from; should either field have changed since, a fresh one
    /// is built, so a rotated certificate is never signed for with an old one.
    pub(super) fn signer(&self) -> Result<Arc<Signer>, Error> {
        if let Some(s) = self.prepared.get()
            && s.built_from(self)
        {
            return Ok(s.clone());
        }
        let fresh = Arc::new(self.build_signer()?);
        // The first one built wins; a stale one (fields changed) stays, and
        // material used that way simply builds a signer per call.
        let _ = self.prepared.set(fresh.clone());
        Ok(fresh)
    }

    /// Parses the certificate and key and checks they belong together and may
    /// sign certificates: a mismatch would yield certificates nobody can verify.
    fn build_signer(&self) -> Result<Signer, Error> {
        let bad = |why: String| Error::internal(format!("issuing CA material: {why}"));
        let (rest, cert) = X509Certificate::from_der(&self.cert_der).map_err(|e| bad(format!("certificate: {e}")))?;
        if !rest.is_empty() {
            return Err(bad("trailing data after the certificate".into()));
        }
        let key = self.key.signing_key()?;
        if key.subject_public_key_info() != cert.public_key().raw {
            return Err(bad("the private key does not match the certificate".into()));
        }
        let bc = cert.basic_constraints().map_err(|e| bad(format!("basicConstraints: {e}")))?;
        if !bc.is_some_and(|bc| bc.value.ca) {
            return Err(bad("the certificate is not a CA".into()));
        }
        let ku = cert.key_usage().map_err(|e| bad(format!("keyUsage: {e}")))?;
        if ku.is_some_and(|ku| !ku.value.key_cert_sign()) {
            return Err(bad("the certificate may not sign certificates".into()));
        }
        // rcgen panics on an empty RDN and refuses multi-valued ones; say so
        // plainly instead.
        if cert.subject().iter().any(|rdn| rdn.iter().count() != 1) {
            return Err(bad("subject RDNs must hold exactly one attribute".into()));
        }
        let issuer = Issuer::from_ca_cert_der(&self.cert_der.as_slice().into(), key).map_err(rcgen_err("issuing CA material"))?;
        let validity = cert.validity();
        Ok(Signer {
            cert_der: self.cert_der.clone(),
            constraints: IssuerConstraints::from_cert(&cert),
            not_before: validity.not_before.to_datetime(),
            not_after: validity.not_after.to_datetime(),
            subject_der: cert.subject().as_raw().to_vec(),
            spki_der: cert.public_key().raw.to_vec(),
            issuer,
            remote: self.key.is_remote(),
        })
    }
}

impl std::fmt::Debug for CaMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaMaterial")
            .field("cert_der", &format_args!("{} bytes", self.cert_der.len()))
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// A CA ready to sign: what signing needs of its certificate (constraints,
/// validity, subject, key), read once, and the rcgen issuer (DN, key
/// identifier, key).
pub(super) struct Signer {
    /// The certificate this was built from, to tell it from a newer one.
    cert_der: Vec<u8>,
    pub issuer: Issuer<'static, CaSigningKey>,
    /// The certificate's nameConstraints (`Ok(None)`: none). An error stays
    /// an error of every leaf signed, as when it was read per leaf.
    pub constraints: Result<Option<IssuerConstraints>, Error>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// The certificate's subject, DER: the issuer name of what it signs.
    pub subject_der: Vec<u8>,
    /// The certificate's SubjectPublicKeyInfo, DER.
    pub spki_der: Vec<u8>,
    /// Whether the key signs elsewhere (an HSM), where a faulty signature is
    /// possible and every one is verified before it leaves.
    pub remote: bool,
}

impl Signer {
    /// Whether this signer is the one `m`'s certificate and key make.
    fn built_from(&self, m: &CaMaterial) -> bool {
        let same_key = match (self.issuer.key(), &m.key) {
            (CaSigningKey::Software(k), CaKey::Software(pkcs8)) => k.serialized_der() == pkcs8.as_slice(),
            (CaSigningKey::Remote(a), CaKey::Remote(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        same_key && self.cert_der == m.cert_der
    }
}

/// PEM armour with 64-column lines (RFC 7468).
pub fn to_pem(tag: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {tag}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {tag}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_signs_arbitrary_data_for_crls() {
        let root = crate::ca::new_root("sign test").unwrap();
        let tbs = b"a TBSCertList, say";
        let sig = root.sign(tbs).unwrap();
        let (_, cert) = X509Certificate::from_der(&root.cert_der).unwrap();
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, &cert.public_key().subject_public_key.data)
            .verify(tbs, &sig)
            .unwrap();
    }

    #[test]
    fn the_signer_is_built_once_and_rebuilt_for_other_material() {
        let (root, inter) = crate::ca::issue::tests::hierarchy(&["example.com"]);
        let first = inter.signer().unwrap();
        assert!(Arc::ptr_eq(&first, &inter.signer().unwrap()), "built once");
        // A clone shares it; a clone given another certificate (a rotated
        // intermediate) or key does not.
        assert!(Arc::ptr_eq(&first, &inter.clone().signer().unwrap()));
        let (_, rotated) = crate::ca::issue::tests::hierarchy(&["example.com"]);
        let mut changed = inter.clone();
        changed.cert_der = rotated.cert_der.clone();
        changed.key = rotated.key.clone();
        let other = changed.signer().unwrap();
        assert!(!Arc::ptr_eq(&first, &other));
        assert_eq!(other.subject_der, first.subject_der, "same name, new certificate");
        assert_ne!(other.spki_der, first.spki_der);
        // A changed key alone no longer matches the certificate: refused.
        let mut mismatched = inter.clone();
        mismatched.key = rotated.key.clone();
        assert!(mismatched.signer().is_err());
        assert!(root.signer().is_ok());
    }

    #[test]
    fn pem_wraps_at_64() {
        let pem = to_pem("CERTIFICATE", &[0u8; 100]);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines.last(), Some(&"-----END CERTIFICATE-----"));
    }
}
