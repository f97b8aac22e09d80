//! Certificate revocation lists (RFC 5280 §5), one per issuing CA.

use std::time::SystemTime;

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevocationReason, RevokedCertParams, SerialNumber};

use super::material::CaMaterial;
use super::util::{rcgen_err, to_datetime};
use crate::error::Error;

/// A revoked certificate as the CRL lists it.
pub struct CrlEntry<'a> {
    /// Lowercase hex, as `IssuedLeaf::serial_hex`.
    pub serial_hex: &'a str,
    pub revoked_at: SystemTime,
    /// RFC 5280 §5.3.1 reason code; 0 (unspecified) is left out, as §5.3.1 advises.
    pub reason: u8,
}

/// Signs a CRL of `issuer` listing `revoked`. The CA must carry keyUsage
/// cRLSign; the AKI is the issuer's key identifier, as in its certificates.
pub fn sign_crl(
    issuer: &CaMaterial,
    number: u64,
    this_update: SystemTime,
    next_update: SystemTime,
    revoked: &[CrlEntry<'_>],
) -> Result<Vec<u8>, Error> {
    let signer = issuer.signer()?;
    let revoked_certs = revoked
        .iter()
        .map(|e| {
            Ok(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&hex_bytes(e.serial_hex)?),
                revocation_time: to_datetime(e.revoked_at)?,
                reason_code: reason(e.reason),
                invalidity_date: None,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let params = CertificateRevocationListParams {
        this_update: to_datetime(this_update)?,
        next_update: to_datetime(next_update)?,
        crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(&signer.issuer).map_err(rcgen_err("CRL"))?;
    Ok(crl.der().to_vec())
}

fn reason(code: u8) -> Option<RevocationReason> {
    Some(match code {
        1 => RevocationReason::KeyCompromise,
        2 => RevocationReason::CaCompromise,
        3 => RevocationReason::AffiliationChanged,
        4 => RevocationReason::Superseded,
        5 => RevocationReason::CessationOfOperation,
        6 => RevocationReason::CertificateHold,
        9 => RevocationReason::PrivilegeWithdrawn,
        10 => RevocationReason::AaCompromise,
        _ => return None,
    })
}

fn hex_bytes(hex: &str) -> Result<Vec<u8>, Error> {
    let bad = || Error::internal(format!("stored serial {hex:?} is not hex"));
    if hex.is_empty() || !hex.is_ascii() {
        return Err(bad());
    }
    let padded = if hex.len() % 2 == 1 { format!("0{hex}") } else { hex.to_string() };
    let mut out = ::hex::decode(padded).map_err(|_| bad())?;
    // A DER INTEGER is signed: a serial with its top bit set needs a zero octet.
    if out[0] & 0x80 != 0 {
        out.insert(0, 0);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use x509_parser::prelude::*;

    use super::*;
    use crate::ca::{new_intermediate, new_root};

    #[test]
    fn crl_lists_serials_with_reasons_and_verifies_under_the_issuer() {
        let root = new_root("test root").unwrap();
        let inter = new_intermediate(&root, "acme", None).unwrap();
        let t = SystemTime::now();
        let der = sign_crl(
            &inter,
            7,
            t,
            t + Duration::from_secs(3600),
            &[CrlEntry { serial_hex: "4a01", revoked_at: t, reason: 5 }, CrlEntry { serial_hex: "4b02", revoked_at: t, reason: 0 }],
        )
        .unwrap();
        let (_, crl) = CertificateRevocationList::from_der(&der).unwrap();
        let serials: Vec<String> = crl.iter_revoked_certificates().map(|r| r.raw_serial_as_string()).collect();
        assert_eq!(serials, ["4a:01", "4b:02"]);
        let first = crl.iter_revoked_certificates().next().unwrap();
        assert_eq!(first.reason_code().map(|(_, r)| r.0), Some(5));
        assert_eq!(crl.crl_number().map(|n| n.to_string()), Some("7".into()));
        let (_, issuer) = X509Certificate::from_der(&inter.cert_der).unwrap();
        assert!(crl.verify_signature(issuer.public_key()).is_ok());
    }

    #[test]
    fn serial_hex_becomes_a_positive_integer() {
        assert_eq!(hex_bytes("ff").unwrap(), [0, 0xff]);
        assert_eq!(hex_bytes("abc").unwrap(), [0x0a, 0xbc]);
        assert!(hex_bytes("zz").is_err());
    }
}
