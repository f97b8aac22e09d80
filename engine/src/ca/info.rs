//! Reading back a certificate we issued (revocation, checks).

use std::net::IpAddr;
use std::time::SystemTime;

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer as _;

use super::util::{serial_hex, to_system};
use crate::error::Error;
use crate::identifier::{Identifier, normalize_dns};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Same format as `IssuedLeaf::serial_hex`.
    pub serial_hex: String,
    pub spki_der: Vec<u8>,
    /// The DER issuer Name, byte for byte.
    pub issuer_der_name: Vec<u8>,
    /// dNSName and iPAddress SANs, in certificate order.
    pub identifiers: Vec<Identifier>,
    pub not_after: SystemTime,
    /// The authorityKeyIdentifier's keyIdentifier, which with the serial names
    /// the certificate in ACME renewal information (RFC 9773 §4.1).
    pub authority_key_id: Option<Vec<u8>>,
}

/// Parses a DER certificate. It does not check the signature: callers match
/// the result against what they stored when issuing.
pub fn cert_info(der: &[u8]) -> Result<CertInfo, Error> {
    let bad = |why: String| Error::malformed(format!("certificate: {why}"));
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| bad(format!("not a DER X.509 certificate: {e}")))?;
    if !rest.is_empty() {
        return Err(bad("trailing data after the certificate".into()));
    }
    let mut identifiers = Vec::new();
    let san = cert.subject_alternative_name().map_err(|e| bad(format!("subjectAltName: {e}")))?;
    for name in san.iter().flat_map(|san| san.value.general_names.iter()) {
        match name {
            GeneralName::DNSName(dns) => {
                let name = normalize_dns(dns).map_err(|e| bad(e.detail))?;
                identifiers.push(Identifier::dns(&name));
            }
            GeneralName::IPAddress(bytes) => {
                let addr = match bytes.len() {
                    4 => <[u8; 4]>::try_from(*bytes).map(IpAddr::from).ok(),
                    16 => <[u8; 16]>::try_from(*bytes).map(IpAddr::from).ok(),
                    _ => None,
                };
                let addr = addr.ok_or_else(|| bad(format!("iPAddress of {} octets", bytes.len())))?;
                identifiers.push(Identifier::ip(addr));
            }
            _ => {}
        }
    }
    let authority_key_id = cert.iter_extensions().find_map(|ext| match ext.parsed_extension() {
        ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref().map(|k| k.0.to_vec()),
        _ => None,
    });
    Ok(CertInfo {
        authority_key_id,
        serial_hex: serial_hex(cert.raw_serial()),
        spki_der: cert.public_key().raw.to_vec(),
        issuer_der_name: cert.issuer().as_raw().to_vec(),
        identifiers,
        not_after: to_system(cert.validity().not_after.to_datetime()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn garbage_is_malformed() {
        assert_eq!(cert_info(b"nope").unwrap_err().kind, ErrorKind::Malformed);
    }
}
