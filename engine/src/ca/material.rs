//! Issuing material (certificate + key) and loading it into something that signs.

use base64::Engine as _;
use rcgen::{Issuer, PublicKeyData as _, SigningKey as _};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer as _;

use super::signing::{CaKey, CaSigningKey};
use super::util::rcgen_err;
use crate::error::Error;

/// One issuing CA: certificate DER + its private key (software PKCS#8, or a
/// key in an HSM). Used for the root and each intermediate.
#[derive(Clone)]
pub struct CaMaterial {
    pub cert_der: Vec<u8>,
    pub key: CaKey,
}

impl CaMaterial {
    pub fn software(cert_der: Vec<u8>, key_pkcs8: Vec<u8>) -> CaMaterial {
        CaMaterial { cert_der, key: CaKey::Software(key_pkcs8) }
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

    /// Parses the certificate and key and checks they belong together and may
    /// sign certificates: a mismatch would yield certificates nobody can verify.
    pub(super) fn signer(&self) -> Result<Signer<'_>, Error> {
        let bad = |why: String| Error::internal(format!("issuing CA material: {why}"));
        let (rest, cert) = X509Certificate::from_der(&self.cert_der)
            .map_err(|e| bad(format!("certificate: {e}")))?;
        if !rest.is_empty() {
            return Err(bad("trailing data after the certificate".into()));
        }
        let key = self.key.signing_key()?;
        if key.subject_public_key_info() != cert.public_key().raw {
            return Err(bad("the private key does not match the certificate".into()));
        }
        let bc = cert
            .basic_constraints()
            .map_err(|e| bad(format!("basicConstraints: {e}")))?;
        if !bc.is_some_and(|bc| bc.value.ca) {
            return Err(bad("the certificate is not a CA".into()));
        }
        let ku = cert
            .key_usage()
            .map_err(|e| bad(format!("keyUsage: {e}")))?;
        if ku.is_some_and(|ku| !ku.value.key_cert_sign()) {
            return Err(bad("the certificate may not sign certificates".into()));
        }
        // rcgen panics on an empty RDN and refuses multi-valued ones; say so
        // plainly instead.
        if cert.subject().iter().any(|rdn| rdn.iter().count() != 1) {
            return Err(bad("subject RDNs must hold exactly one attribute".into()));
        }
        let issuer = Issuer::from_ca_cert_der(&self.cert_der.as_slice().into(), key)
            .map_err(rcgen_err("issuing CA material"))?;
        Ok(Signer { cert, issuer, remote: self.key.is_remote() })
    }
}

impl std::fmt::Debug for CaMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaMaterial")
            .field("cert_der", &format_args!("{} bytes", self.cert_der.len()))
            .field("key", &self.key)
            .finish()
    }
}

/// A CA ready to sign: its parsed certificate (for constraints, validity and
/// name checks) and the rcgen issuer (DN, key identifier, key).
pub(super) struct Signer<'a> {
    pub cert: X509Certificate<'a>,
    pub issuer: Issuer<'static, CaSigningKey>,
    /// Whether the key signs elsewhere (an HSM), where a faulty signature is
    /// possible and every one is verified before it leaves.
    pub remote: bool,
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
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_ASN1,
            &cert.public_key().subject_public_key.data,
        )
        .verify(tbs, &sig)
        .unwrap();
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
