//! End-entity certificates: tenant leaves and the ACME server's own.

use std::net::IpAddr;
use std::time::SystemTime;

use rcgen::string::Ia5String;
use rcgen::{
    CertificateParams, CrlDistributionPoint, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber,
};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer as _;

use super::keys::KeyType;
use super::material::{CaMaterial, Signer};
use super::util::{add_days, now, random_serial, rcgen_err, serial_hex, to_datetime, to_system};
use crate::error::{Error, ErrorKind};
use crate::identifier::{Identifier, IdentifierKind, normalize_dns};
use crate::issuance::LeafSigning;

const SERVER_CERT_DAYS: i64 = 90;

pub struct LeafRequest<'a> {
    /// DER SubjectPublicKeyInfo, normally `Csr::spki_der`.
    pub spki_der: &'a [u8],
    pub identifiers: &'a [Identifier],
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub crl_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedLeaf {
    pub der: Vec<u8>,
    pub serial_hex: String,
    /// As encoded: whole seconds.
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// Issues a leaf: SANs exactly the identifiers (CN = the first DNS identifier
/// that fits in 64 characters, else none), a random 16-octet serial, AKI, SKI,
/// EKU serverAuth, keyUsage digitalSignature (+ keyEncipherment for RSA),
/// CA:false, and a CRL distribution point when given.
///
/// Refuses (RejectedIdentifier) any identifier outside the nameConstraints of
/// the issuer certificate itself, whatever the caller believes the permits
/// are; a validity ending after the issuer's ends with the issuer's.
///
/// Only the issuance path may call it: it demands the [`LeafSigning`]
/// capability, which only `issuance` can make.
pub(crate) fn issue_leaf(_capability: &LeafSigning, issuer: &CaMaterial, req: &LeafRequest<'_>) -> Result<IssuedLeaf, Error> {
    let key_type = KeyType::of_leaf_spki(req.spki_der)?;
    let public_key =
        rcgen::SubjectPublicKeyInfo::from_der(req.spki_der).map_err(|e| Error::new(ErrorKind::BadPublicKey, format!("public key: {e}")))?;
    let signer = issuer.signer()?;
    sign_end_entity(
        &signer,
        &public_key,
        &EndEntity {
            identifiers: req.identifiers,
            key_type,
            not_before: to_datetime(req.not_before)?,
            // A leaf never outlives its issuer: one asked for longer ends with
            // it (the scheduler rotates intermediates long before this bites).
            not_after: to_datetime(req.not_after)?.min(signer.not_after),
            crl_url: req.crl_url.as_deref(),
            public_names_only: true,
        },
    )
}

/// The ACME server's own TLS certificate, signed directly by the root: a new
/// P-256 key, SANs = names, EKU serverAuth, 90 days (never past the root).
/// Returns (certificate DER, key PKCS#8 DER).
pub fn server_certificate(root: &CaMaterial, names: &[Identifier]) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let signer = root.signer()?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(rcgen_err("server key"))?;
    let not_before = now()?;
    let not_after = add_days(not_before, SERVER_CERT_DAYS)?.min(signer.not_after);
    let issued = sign_end_entity(
        &signer,
        &key,
        &EndEntity {
            identifiers: names,
            key_type: KeyType::EcdsaP256,
            not_before,
            not_after,
            crl_url: None,
            // The server's own names come from the operator and include
            // single-label ones such as "localhost".
            public_names_only: false,
        },
    )?;
    Ok((issued.der, key.serialize_der()))
}

struct EndEntity<'a> {
    identifiers: &'a [Identifier],
    key_type: KeyType,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    crl_url: Option<&'a str>,
    /// Whether DNS names must be names a public CA could certify (two labels or more).
    public_names_only: bool,
}

fn sign_end_entity(signer: &Signer, public_key: &impl PublicKeyData, ee: &EndEntity<'_>) -> Result<IssuedLeaf, Error> {
    let identifiers = renormalize(ee.identifiers, ee.public_names_only)?;
    if let Some(constraints) = signer.constraints.as_ref().map_err(Clone::clone)?
        && let Some(outside) = identifiers.iter().find(|id| !constraints.allows(id))
    {
        return Err(Error::new(ErrorKind::RejectedIdentifier, format!("{outside} is outside the names this issuer may certify")));
    }
    if ee.not_before >= ee.not_after {
        return Err(Error::internal("certificate validity ends before it begins"));
    }
    // Only the end matters: a leaf outliving its issuer would stop verifying
    // early. A not_before earlier than the issuer's (backdating) is harmless.
    if ee.not_after > signer.not_after {
        return Err(Error::internal("requested validity ends after the issuer's; rotate the issuing CA"));
    }

    let serial = random_serial()?;
    let mut params = CertificateParams::default();
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.not_before = ee.not_before;
    params.not_after = ee.not_after;
    params.distinguished_name = DistinguishedName::new();
    // ub-common-name is 64: a longer first name stays in the SANs only (and
    // rcgen then marks the SAN extension critical, as RFC 5280 asks).
    if let Some(cn) = identifiers.iter().find(|id| id.kind == IdentifierKind::Dns && id.value.len() <= 64) {
        params.distinguished_name.push(DnType::CommonName, cn.value.as_str());
    }
    params.subject_alt_names = identifiers.iter().map(san).collect::<Result<_, _>>()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if matches!(ee.key_type, KeyType::Rsa(_)) {
        params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    if let Some(url) = ee.crl_url {
        // rcgen asserts IA5 (ASCII); a bad URL is configuration, not input.
        if url.is_empty() || !url.is_ascii() || url.contains(char::is_whitespace) {
            return Err(Error::internal(format!("CRL URL {url:?} is not a plain ASCII URI")));
        }
        params.crl_distribution_points = vec![CrlDistributionPoint { uris: vec![url.to_string()] }];
    }
    let cert = params.signed_by(public_key, &signer.issuer).map_err(rcgen_err("leaf certificate"))?;
    let der = cert.der().to_vec();
    check_issued(signer, &der, &public_key.subject_public_key_info())?;
    Ok(IssuedLeaf { der, serial_hex: serial_hex(&serial), not_before: to_system(ee.not_before), not_after: to_system(ee.not_after) })
}

/// A host name for the server's own certificate: LDH labels, any count.
fn local_dns_name(value: &str) -> Result<String, Error> {
    let name = value.strip_suffix('.').unwrap_or(value).to_ascii_lowercase();
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if ok { Ok(name) } else { Err(Error::malformed(format!("{value:?} is not a host name"))) }
}

/// Normalizes again (the caller's identifiers are trusted for nothing),
/// dropping duplicates and refusing an empty list.
fn renormalize(identifiers: &[Identifier], public_names_only: bool) -> Result<Vec<Identifier>, Error> {
    let mut out: Vec<Identifier> = Vec::with_capacity(identifiers.len());
    for id in identifiers {
        let id = match id.kind {
            IdentifierKind::Dns if public_names_only => Identifier::dns(&normalize_dns(&id.value)?),
            IdentifierKind::Dns => Identifier::dns(&local_dns_name(&id.value)?),
            IdentifierKind::Ip => Identifier::ip(
                id.value
                    .parse::<IpAddr>()
                    .map_err(|_| Error::new(ErrorKind::RejectedIdentifier, format!("{:?} is not an IP address", id.value)))?,
            ),
        };
        if !out.contains(&id) {
            out.push(id);
        }
    }
    if out.is_empty() {
        return Err(Error::internal("a certificate needs at least one identifier"));
    }
    Ok(out)
}

fn san(id: &Identifier) -> Result<SanType, Error> {
    match id.kind {
        IdentifierKind::Dns => Ia5String::try_from(id.value.as_str())
            .map(SanType::DnsName)
            .map_err(|e| Error::new(ErrorKind::RejectedIdentifier, format!("{id}: {e}"))),
        IdentifierKind::Ip => id
            .ip_addr()
            .map(SanType::IpAddress)
            .ok_or_else(|| Error::new(ErrorKind::RejectedIdentifier, format!("{id} is not an IP address"))),
    }
}

/// Reads back what was just signed: it must chain to the issuer by name and
/// signature and certify exactly the key asked for. A failure is our bug,
/// and must never reach a client as a certificate.
fn check_issued(signer: &Signer, der: &[u8], spki: &[u8]) -> Result<(), Error> {
    let bad = |why: &str| Error::internal(format!("issued certificate failed self-check: {why}"));
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| bad("unparsable"))?;
    if cert.issuer().as_raw() != signer.subject_der.as_slice() {
        return Err(bad("issuer name differs from the issuer's subject"));
    }
    if cert.public_key().raw != spki {
        return Err(bad("subject public key differs from the one requested"));
    }
    // A signature from an HSM is checked before the certificate leaves (a
    // device fault must not reach a client). ring's software ECDSA needs no
    // second look, and the check costs more than the signature.
    if signer.remote {
        let (_, issuer_key) =
            x509_parser::x509::SubjectPublicKeyInfo::from_der(&signer.spki_der).map_err(|_| bad("issuer key unparsable"))?;
        cert.verify_signature(Some(&issuer_key)).map_err(|_| bad("signature does not verify"))?;
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Duration;

    use rcgen::{KeyPair, PKCS_ECDSA_P384_SHA384, PKCS_ED25519};
    use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};

    use super::*;
    use crate::ca::{Permit, cert_info, csr::tests::rsa2048, new_intermediate, new_root};

    pub(in crate::ca) fn dns(s: &str) -> Identifier {
        Identifier::dns(s)
    }
    pub(in crate::ca) fn ip(s: &str) -> Identifier {
        Identifier::ip(s.parse().unwrap())
    }

    pub(in crate::ca) fn hierarchy(permits: &[&str]) -> (CaMaterial, CaMaterial) {
        let root = new_root("tenure test root").unwrap();
        let permits: Vec<Permit> = permits.iter().map(|p| Permit::parse(p).unwrap()).collect();
        let inter = new_intermediate(&root, "tenant test", Some(&permits)).unwrap();
        (root, inter)
    }

    pub(in crate::ca) fn request<'a>(spki: &'a [u8], ids: &'a [Identifier]) -> LeafRequest<'a> {
        let now = SystemTime::now();
        LeafRequest {
            spki_der: spki,
            identifiers: ids,
            not_before: now - Duration::from_secs(60),
            not_after: now + Duration::from_secs(7 * 86400),
            crl_url: None,
        }
    }

    #[test]
    fn leaf_from_constrained_intermediate() {
        let (_, inter) = hierarchy(&["example.com", "192.0.2.0/24"]);
        let key = KeyPair::generate().unwrap();
        let spki = key.subject_public_key_info();
        let ids = [dns("www.example.com"), dns("*.api.example.com"), ip("192.0.2.10")];
        let mut req = request(&spki, &ids);
        req.crl_url = Some("http://crl.example.net/tenant.crl".into());
        let leaf = issue_leaf(&LeafSigning::for_tests(), &inter, &req).unwrap();
        let (_, cert) = X509Certificate::from_der(&leaf.der).unwrap();

        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert!(!san.critical);
        assert_eq!(
            san.value.general_names,
            vec![
                GeneralName::DNSName("www.example.com"),
                GeneralName::DNSName("*.api.example.com"),
                GeneralName::IPAddress(&[192, 0, 2, 10]),
            ]
        );
        let cn: Vec<_> = cert.subject().iter_common_name().map(|a| a.as_str().unwrap()).collect();
        assert_eq!(cn, ["www.example.com"]);

        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth && !eku.any && eku.other.is_empty());
        let ku = cert.key_usage().unwrap().unwrap();
        assert!(ku.critical && ku.value.digital_signature() && !ku.value.key_encipherment() && !ku.value.key_cert_sign());
        let bc = cert.basic_constraints().unwrap().unwrap();
        assert!(!bc.value.ca);

        // Serial: 16 octets, positive, matching the reported hex.
        let serial = cert.tbs_certificate.raw_serial();
        assert_eq!(serial.len(), 16);
        assert_eq!(serial[0] & 0x80, 0);
        assert!(cert.serial.bits() >= 64);
        assert_eq!(leaf.serial_hex, cert.serial.to_str_radix(16));

        // Validity exactly as asked, to the second.
        let secs = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
        assert_eq!(cert.validity().not_before.timestamp(), secs(req.not_before));
        assert_eq!(cert.validity().not_after.timestamp(), secs(req.not_after));
        assert_eq!(secs(leaf.not_after), secs(req.not_after));

        // AKI is the intermediate's SKI; SKI present.
        let (_, ic) = X509Certificate::from_der(&inter.cert_der).unwrap();
        let find = |c: &X509Certificate<'_>, aki: bool| {
            c.iter_extensions().find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(k) if aki => k.key_identifier.as_ref().map(|k| k.0.to_vec()),
                ParsedExtension::SubjectKeyIdentifier(k) if !aki => Some(k.0.to_vec()),
                _ => None,
            })
        };
        assert_eq!(find(&cert, true), find(&ic, false));
        assert!(find(&cert, false).is_some());

        let crl = cert
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::CRLDistributionPoints(p) => Some(p.points[0].distribution_point.clone()),
                _ => None,
            })
            .flatten();
        assert!(matches!(crl, Some(DistributionPointName::FullName(n)) if n == [GeneralName::URI("http://crl.example.net/tenant.crl")]));

        let info = cert_info(&leaf.der).unwrap();
        assert_eq!(info.serial_hex, leaf.serial_hex);
        assert_eq!(info.spki_der, spki);
        assert_eq!(info.identifiers, ids);
        assert_eq!(info.issuer_der_name, ic.subject().as_raw());
        assert_eq!(info.not_after, leaf.not_after);
    }

    #[test]
    fn out_of_constraint_names_are_refused() {
        let (_, inter) = hierarchy(&["example.com", "10.0.0.0/8"]);
        let spki = KeyPair::generate().unwrap().subject_public_key_info();
        for bad in [dns("notexample.com"), dns("*.com.example"), ip("11.0.0.1"), ip("2001:db8::1")] {
            let ids = [dns("www.example.com"), bad.clone()];
            let err = issue_leaf(&LeafSigning::for_tests(), &inter, &request(&spki, &ids)).unwrap_err();
            assert_eq!(err.kind, ErrorKind::RejectedIdentifier, "{bad}");
            assert!(err.detail.contains(&bad.value), "{}", err.detail);
        }

        // An IP-only tenant: DNS names are refused even though no DNS subtree
        // is permitted (the exclusion read from the certificate does it).
        let (_, ip_only) = hierarchy(&["10.0.0.0/8"]);
        let err = issue_leaf(&LeafSigning::for_tests(), &ip_only, &request(&spki, &[dns("example.com")])).unwrap_err();
        assert_eq!(err.kind, ErrorKind::RejectedIdentifier);
        issue_leaf(&LeafSigning::for_tests(), &ip_only, &request(&spki, &[ip("10.1.1.1")])).unwrap();
    }

    #[test]
    fn key_types_and_usages() {
        let (_, inter) = hierarchy(&["example.com"]);
        let ids = [dns("example.com")];
        let rsa_spki = rsa2048().subject_public_key_info();
        let leaf = issue_leaf(&LeafSigning::for_tests(), &inter, &request(&rsa_spki, &ids)).unwrap();
        let (_, cert) = X509Certificate::from_der(&leaf.der).unwrap();
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && ku.key_encipherment());
        assert_eq!(cert.public_key().raw, rsa_spki.as_slice());

        let p384 = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap().subject_public_key_info();
        issue_leaf(&LeafSigning::for_tests(), &inter, &request(&p384, &ids)).unwrap();

        let ed = KeyPair::generate_for(&PKCS_ED25519).unwrap().subject_public_key_info();
        assert_eq!(issue_leaf(&LeafSigning::for_tests(), &inter, &request(&ed, &ids)).unwrap_err().kind, ErrorKind::BadPublicKey);
    }

    #[test]
    fn validity_and_inputs_are_checked() {
        let (_, inter) = hierarchy(&["example.com"]);
        let spki = KeyPair::generate().unwrap().subject_public_key_info();
        let ids = [dns("example.com")];
        let mut req = request(&spki, &ids);
        req.not_after = SystemTime::now() + Duration::from_secs(10 * 365 * 86400);
        // A leaf asked to outlive its issuer ends with it.
        let clamped = issue_leaf(&LeafSigning::for_tests(), &inter, &req).unwrap();
        let issuer_end = X509Certificate::from_der(&inter.cert_der).unwrap().1.validity().not_after.timestamp();
        let leaf_end = X509Certificate::from_der(&clamped.der).unwrap().1.validity().not_after.timestamp();
        assert_eq!(leaf_end, issuer_end);
        let mut req = request(&spki, &ids);
        req.not_after = req.not_before;
        assert_eq!(issue_leaf(&LeafSigning::for_tests(), &inter, &req).unwrap_err().kind, ErrorKind::Internal);
        assert!(issue_leaf(&LeafSigning::for_tests(), &inter, &request(&spki, &[])).is_err());
        let sloppy = [Identifier { kind: IdentifierKind::Dns, value: "WWW.Example.COM".into() }];
        let leaf = issue_leaf(&LeafSigning::for_tests(), &inter, &request(&spki, &sloppy)).unwrap();
        assert_eq!(cert_info(&leaf.der).unwrap().identifiers, [dns("www.example.com")]);
        let junk = [Identifier { kind: IdentifierKind::Dns, value: "a b.example.com".into() }];
        assert_eq!(issue_leaf(&LeafSigning::for_tests(), &inter, &request(&spki, &junk)).unwrap_err().kind, ErrorKind::RejectedIdentifier);

        // Material whose key does not match its certificate never signs.
        let (_, other) = hierarchy(&["example.com"]);
        let mixed = CaMaterial::new(inter.cert_der.clone(), other.key.clone());
        assert_eq!(issue_leaf(&LeafSigning::for_tests(), &mixed, &request(&spki, &ids)).unwrap_err().kind, ErrorKind::Internal);
    }

    #[test]
    fn server_certificate_is_signed_by_the_root() {
        let root = new_root("tenure test root").unwrap();
        let (der, key) = server_certificate(&root, &[dns("acme.internal.example"), ip("127.0.0.1")]).unwrap();
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let (_, rc) = X509Certificate::from_der(&root.cert_der).unwrap();
        cert.verify_signature(Some(rc.public_key())).unwrap();
        assert!(cert.extended_key_usage().unwrap().unwrap().value.server_auth);
        let days = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) / 86400;
        assert_eq!(days, 90);
        let key = KeyPair::try_from(key.as_slice()).unwrap();
        assert_eq!(key.subject_public_key_info(), cert.public_key().raw);
        assert_eq!(cert_info(&der).unwrap().identifiers, [dns("acme.internal.example"), ip("127.0.0.1")]);
    }
}
