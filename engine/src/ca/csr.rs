//! PKCS#10 certificate signing requests (RFC 2986) as ACME finalize sends them.

use std::net::IpAddr;

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::error::X509Error;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{OID_PKCS1_SHA1WITHRSA, OID_SHA1_WITH_RSA, OID_X509_EXT_SUBJECT_ALT_NAME};
use x509_parser::prelude::FromDer as _;

use super::keys::{KeyType, leaf_key_type};
use crate::error::{Error, ErrorKind};
use crate::identifier::{Identifier, normalize_dns};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Csr {
    /// SANs (dNSName, iPAddress) and a CN that is a DNS name or IP address,
    /// normalized, deduplicated, CN first.
    pub identifiers: Vec<Identifier>,
    pub spki_der: Vec<u8>,
    pub key_type: KeyType,
}

fn bad_csr(detail: impl Into<String>) -> Error {
    Error::new(ErrorKind::BadCsr, detail)
}

/// id-pe-tlsfeature (RFC 7633 §6): the TLS features a certificate promises.
const TLS_FEATURE: &str = "1.3.6.1.5.5.7.1.24";

/// Parses a DER CSR, checks its key against policy and its self-signature,
/// refuses what cannot be honoured (Must-Staple), and collects the names it
/// asks for. Every refusal is BadCsr: RFC 8555 §7.4 and §6.7 ("the CSR is
/// unacceptable (e.g., due to a short key)"); badPublicKey is for JWS keys.
pub fn parse_csr(der: &[u8]) -> Result<Csr, Error> {
    let (rest, csr) =
        X509CertificationRequest::from_der(der).map_err(|e| bad_csr(format!("not a DER PKCS#10 certificate request: {e}")))?;
    if !rest.is_empty() {
        return Err(bad_csr(format!("{} bytes of trailing data after the request", rest.len())));
    }
    let info = &csr.certification_request_info;
    if info.version.0 != 0 {
        return Err(bad_csr(format!("request version {} is not v1", u64::from(info.version.0) + 1)));
    }
    // Key policy first, so an undersized key is reported as such rather than
    // as a signature ring refuses to check.
    let key_type = leaf_key_type(&info.subject_pki).map_err(|refused| bad_csr(refused.detail("the CSR's key")))?;
    let sig_alg = &csr.signature_algorithm.algorithm;
    if *sig_alg == OID_PKCS1_SHA1WITHRSA || *sig_alg == OID_SHA1_WITH_RSA {
        return Err(bad_csr("SHA-1 signatures are not accepted"));
    }
    csr.verify_signature().map_err(|e| match e {
        X509Error::SignatureUnsupportedAlgorithm => bad_csr(format!("signature algorithm {sig_alg} is not supported for this key")),
        _ => bad_csr("the request's signature does not verify with its own public key"),
    })?;

    let mut identifiers = Vec::new();
    let mut add = |id: Identifier| {
        if !identifiers.contains(&id) {
            identifiers.push(id);
        }
    };
    for cn in info.subject.iter_common_name() {
        // A CN that is not a host name or address is a label, not a request.
        if let Some(id) = cn.as_str().ok().and_then(name_like) {
            add(id);
        }
    }
    for attr in info.iter_attributes() {
        let ParsedCriAttribute::ExtensionRequest(req) = attr.parsed_attribute() else {
            continue;
        };
        for ext in &req.extensions {
            match ext.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => {
                    for name in &san.general_names {
                        add(san_identifier(name)?);
                    }
                }
                ParsedExtension::ParseError { error } if ext.oid == OID_X509_EXT_SUBJECT_ALT_NAME => {
                    return Err(bad_csr(format!("malformed subjectAltName: {error}")));
                }
                _ if ext.oid == OID_X509_EXT_SUBJECT_ALT_NAME => {
                    return Err(bad_csr("malformed subjectAltName"));
                }
                // Issuing without the extension would drop a promise the
                // subscriber asked for; issuing with it, certificates no TLS
                // server can staple for. So, as CAs without OCSP do, refuse.
                _ if ext.oid.to_id_string() == TLS_FEATURE => {
                    return Err(bad_csr(format!(
                        "the CSR asks for the TLS Feature extension ({TLS_FEATURE}) with {}, but tenure runs no OCSP responder; \
                         Must-Staple (RFC 7633) cannot be honoured",
                        tls_features(ext.value)
                    )));
                }
                _ => {}
            }
        }
    }
    if identifiers.is_empty() {
        return Err(bad_csr("the request names no DNS name or IP address"));
    }
    Ok(Csr { identifiers, spki_der: info.subject_pki.raw.to_vec(), key_type })
}

/// The features of a TLS Feature extension (RFC 7633: SEQUENCE OF INTEGER),
/// named where TLS names them, for the refusal.
fn tls_features(value: &[u8]) -> String {
    let parsed = x509_parser::der_parser::parse_der(value).ok().and_then(|(_, seq)| {
        let items = seq.as_sequence().ok()?;
        items.iter().map(|i| i.as_u32().ok()).collect::<Option<Vec<u32>>>()
    });
    match parsed {
        Some(features) if !features.is_empty() => features
            .iter()
            .map(|f| match f {
                5 => "status_request (5, Must-Staple)".to_string(),
                17 => "status_request_v2 (17)".to_string(),
                other => format!("feature {other}"),
            })
            .collect::<Vec<_>>()
            .join(", "),
        Some(_) => "no features".into(),
        None => "an unparsable value".into(),
    }
}

fn name_like(cn: &str) -> Option<Identifier> {
    if let Ok(addr) = cn.parse::<IpAddr>() {
        return Some(Identifier::ip(addr));
    }
    normalize_dns(cn).ok().map(|name| Identifier::dns(&name))
}

fn san_identifier(name: &GeneralName<'_>) -> Result<Identifier, Error> {
    match name {
        GeneralName::DNSName(dns) => {
            normalize_dns(dns).map(|n| Identifier::dns(&n)).map_err(|e| bad_csr(format!("subjectAltName dNSName: {}", e.detail)))
        }
        GeneralName::IPAddress(bytes) => match bytes.len() {
            4 => Ok(Identifier::ip(IpAddr::from(<[u8; 4]>::try_from(*bytes).map_err(|_| bad_csr("bad iPAddress"))?))),
            16 => Ok(Identifier::ip(IpAddr::from(<[u8; 16]>::try_from(*bytes).map_err(|_| bad_csr("bad iPAddress"))?))),
            n => Err(bad_csr(format!("subjectAltName iPAddress of {n} octets"))),
        },
        other => Err(bad_csr(format!("subjectAltName {} is not supported (only dNSName and iPAddress are)", general_name_kind(other)))),
    }
}

fn general_name_kind(name: &GeneralName<'_>) -> &'static str {
    match name {
        GeneralName::OtherName(..) => "otherName",
        GeneralName::RFC822Name(_) => "rfc822Name",
        GeneralName::DNSName(_) => "dNSName",
        GeneralName::X400Address(_) => "x400Address",
        GeneralName::DirectoryName(_) => "directoryName",
        GeneralName::EDIPartyName(_) => "ediPartyName",
        GeneralName::URI(_) => "uniformResourceIdentifier",
        GeneralName::IPAddress(_) => "iPAddress",
        GeneralName::RegisteredID(_) => "registeredID",
        GeneralName::Invalid(..) => "entry (unparsable)",
    }
}

#[cfg(test)]
pub(super) mod tests {
    use base64::Engine as _;
    use rcgen::{
        CertificateParams, DnType, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519, PKCS_RSA_SHA256, SanType,
        SigningKey,
    };

    use super::*;
    use crate::ca::testdata;

    pub(in crate::ca) fn rsa2048() -> KeyPair {
        let der = base64::engine::general_purpose::STANDARD.decode(testdata::RSA2048_PKCS8.concat()).unwrap();
        KeyPair::from_pkcs8_der_and_sign_algo(&der.as_slice().into(), &PKCS_RSA_SHA256).unwrap()
    }

    pub(in crate::ca) fn csr_der(key: &impl SigningKey, cn: Option<&str>, sans: &[&str]) -> Vec<u8> {
        let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.serialize_request(key).unwrap().der().to_vec()
    }

    fn ids(list: &[&str]) -> Vec<Identifier> {
        list.iter()
            .map(|s| match s.parse::<IpAddr>() {
                Ok(a) => Identifier::ip(a),
                Err(_) => Identifier::dns(s),
            })
            .collect()
    }

    #[test]
    fn ecdsa_and_rsa_requests_parse() {
        let cases: [(KeyPair, KeyType); 3] = [
            (KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(), KeyType::EcdsaP256),
            (KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap(), KeyType::EcdsaP384),
            (rsa2048(), KeyType::Rsa(2048)),
        ];
        for (key, want) in cases {
            let der = csr_der(&key, Some("WWW.Example.com"), &["www.example.com", "api.example.com", "192.0.2.1", "2001:db8::1"]);
            let csr = parse_csr(&der).unwrap();
            assert_eq!(csr.key_type, want);
            assert_eq!(csr.identifiers, ids(&["www.example.com", "api.example.com", "192.0.2.1", "2001:db8::1"]));
            assert_eq!(csr.spki_der, rcgen::PublicKeyData::subject_public_key_info(&key));
        }
    }

    #[test]
    fn cn_only_and_non_name_cn() {
        let key = KeyPair::generate().unwrap();
        let csr = parse_csr(&csr_der(&key, Some("solo.example.com"), &[])).unwrap();
        assert_eq!(csr.identifiers, ids(&["solo.example.com"]));
        let csr = parse_csr(&csr_der(&key, Some("My Server"), &["a.example.com"])).unwrap();
        assert_eq!(csr.identifiers, ids(&["a.example.com"]));
        let err = parse_csr(&csr_der(&key, Some("My Server"), &[])).unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadCsr);
    }

    #[test]
    fn tampered_request_fails_bad_csr() {
        let key = KeyPair::generate().unwrap();
        let mut der = csr_der(&key, None, &["www.example.com"]);
        // Turn "www" into "wwx": the signature no longer covers the content.
        let at = der.windows(15).position(|w| w == b"www.example.com").unwrap();
        der[at + 2] = b'x';
        let err = parse_csr(&der).unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadCsr);
        assert!(err.detail.contains("signature"), "{}", err.detail);

        let err = parse_csr(b"\x30\x03\x02\x01\x00").unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadCsr);
        let mut trailing = csr_der(&key, None, &["www.example.com"]);
        trailing.push(0);
        assert!(parse_csr(&trailing).unwrap_err().detail.contains("trailing"));
    }

    /// RFC 8555 §7.4/§6.7: a CSR whose key the CA refuses is badCSR
    /// ("e.g., due to a short key"), not badPublicKey (that is for the JWS
    /// key), and the detail names the key in words and what is accepted.
    #[test]
    fn weak_or_foreign_keys_fail_bad_csr_naming_the_key() {
        let b64 = |lines: &[&str]| base64::engine::general_purpose::STANDARD.decode(lines.concat()).unwrap();
        let accepted = "tenure certifies ECDSA keys on P-256 and P-384 and RSA keys of 2048 to 8192 bits";
        let cases: [(Vec<u8>, &str); 3] = [
            (b64(testdata::RSA1024_CSR), "the CSR's key is an RSA key of 1024 bits; "),
            (b64(testdata::SECP256K1_CSR), "the CSR's key is on curve secp256k1 (1.3.132.0.10); "),
            (b64(testdata::P521_CSR), "the CSR's key is on curve P-521 (1.3.132.0.35); "),
        ];
        for (der, want) in cases {
            let err = parse_csr(&der).unwrap_err();
            assert_eq!(err.kind, ErrorKind::BadCsr, "{}", err.detail);
            assert_eq!(err.detail, format!("{want}{accepted}"));
        }

        let ed = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        let err = parse_csr(&csr_der(&ed, None, &["www.example.com"])).unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadCsr);
        assert!(err.detail.starts_with("the CSR's key is an Ed25519 key; "), "{}", err.detail);
    }

    /// RFC 7633: a CSR asking for Must-Staple (TLS Feature status_request)
    /// is refused with badCSR, since tenure has no OCSP responder; without
    /// it the same request is fine.
    #[test]
    fn must_staple_is_refused_as_bad_csr() {
        let key = KeyPair::generate().unwrap();
        let request = |features: Option<Vec<u8>>| {
            let mut params = CertificateParams::new(vec!["www.example.com".to_string()]).unwrap();
            if let Some(value) = features {
                params.custom_extensions.push(rcgen::CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 24], value));
            }
            params.serialize_request(&key).unwrap().der().to_vec()
        };
        parse_csr(&request(None)).unwrap();
        // SEQUENCE { INTEGER 5 }: status_request.
        let err = parse_csr(&request(Some(vec![0x30, 0x03, 0x02, 0x01, 0x05]))).unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadCsr);
        assert!(err.detail.contains("status_request (5, Must-Staple)"), "{}", err.detail);
        assert!(err.detail.contains("tenure runs no OCSP responder; Must-Staple (RFC 7633) cannot be honoured"), "{}", err.detail);
        // Any TLS feature is a promise tenure cannot keep, and junk is refused too.
        let err = parse_csr(&request(Some(vec![0x30, 0x03, 0x02, 0x01, 0x11]))).unwrap_err();
        assert!(err.detail.contains("status_request_v2 (17)"), "{}", err.detail);
        let err = parse_csr(&request(Some(vec![0x04, 0x00]))).unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadCsr);
        assert!(err.detail.contains("an unparsable value"), "{}", err.detail);
    }

    #[test]
    fn unsupported_san_types_and_bad_names_fail() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["a.example.com".to_string()]).unwrap();
        params.subject_alt_names.push(SanType::Rfc822Name("me@example.com".try_into().unwrap()));
        let der = params.serialize_request(&key).unwrap().der().to_vec();
        let err = parse_csr(&der).unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadCsr);
        assert!(err.detail.contains("rfc822Name"), "{}", err.detail);

        let err = parse_csr(&csr_der(&key, None, &["bad_name.example.com"])).unwrap_err();
        assert_eq!(err.kind, ErrorKind::BadCsr);
    }
}
