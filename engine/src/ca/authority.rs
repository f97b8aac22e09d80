//! The root and the per-tenant intermediates.

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SerialNumber};
use time::OffsetDateTime;

use super::constraints::{Permit, name_constraints};
use super::material::CaMaterial;
use super::signing::CaKey;
use super::util::{add_days, now, random_serial, rcgen_err};
use crate::error::Error;

const ROOT_DAYS: i64 = 3653; // ten years
/// How long an intermediate lasts: five years.
pub(crate) const INTERMEDIATE_DAYS: i64 = 1827;
/// CA certificates start a little in the past so a client whose clock lags
/// does not see a brand-new CA as not yet valid.
const BACKDATE: time::Duration = time::Duration::hours(1);

/// A self-signed ECDSA P-256 root: CA:true (critical), keyCertSign + cRLSign,
/// SKI, ten years (from an hour ago).
pub fn new_root(common_name: &str) -> Result<CaMaterial, Error> {
    new_root_with(common_name, CaKey::generate_software()?)
}

/// `new_root` with a key from elsewhere (an HSM): it must be ECDSA P-256.
pub fn new_root_with(common_name: &str, ca_key: CaKey) -> Result<CaMaterial, Error> {
    let key = ca_key.signing_key()?;
    let start = now()?;
    let mut params = ca_params(common_name, start - BACKDATE, add_days(start, ROOT_DAYS)?)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).map_err(rcgen_err("root certificate"))?;
    Ok(CaMaterial::new(cert.der().to_vec(), ca_key))
}

/// An ECDSA P-256 intermediate under `root`: pathLen 0, AKI + SKI,
/// keyCertSign + cRLSign, EKU serverAuth, five years (from an hour ago, not
/// before the root) but never past the root.
///
/// `permits`: `None` makes an unconstrained intermediate (the public
/// tenant); `Some` writes a critical nameConstraints extension permitting
/// exactly those subtrees (see `constraints::name_constraints`). An empty
/// `Some` is refused: it could certify nothing, so it is surely a mistake.
pub fn new_intermediate(root: &CaMaterial, common_name: &str, permits: Option<&[Permit]>) -> Result<CaMaterial, Error> {
    new_intermediate_with(root, common_name, permits, CaKey::generate_software()?)
}

/// `new_intermediate` with a key from elsewhere (an HSM).
pub fn new_intermediate_with(root: &CaMaterial, common_name: &str, permits: Option<&[Permit]>, ca_key: CaKey) -> Result<CaMaterial, Error> {
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, common_name);
    intermediate(root, common_name, subject, permits, ca_key, INTERMEDIATE_DAYS)
}

/// The common name of a tenant's `generation`th intermediate (its first is
/// 1): `tenure NAME CA`, then `tenure NAME CA 2`, … Every generation has a
/// subject of its own, since relying parties match chains and CRLs by the
/// issuer's name: two CRLs under one name with different keys fail
/// `openssl verify -crl_check_all`.
pub(crate) fn tenant_ca_name(tenant: &str, generation: i64) -> String {
    if generation <= 1 { format!("tenure {tenant} CA") } else { format!("tenure {tenant} CA {generation}") }
}

/// A tenant's `generation`th intermediate ([`tenant_ca_name`]), valid for
/// `days` (five years unless a test asks for less). When the numbered name is
/// longer than a common name may be, the first generation's name stays and
/// an organizationalUnitName `generation N` tells the subjects apart.
pub(crate) fn new_tenant_intermediate(
    root: &CaMaterial,
    tenant: &str,
    generation: i64,
    permits: Option<&[Permit]>,
    ca_key: CaKey,
    days: i64,
) -> Result<CaMaterial, Error> {
    let numbered = tenant_ca_name(tenant, generation);
    let mut subject = DistinguishedName::new();
    let common_name = if numbered.chars().count() <= 64 {
        subject.push(DnType::CommonName, numbered.as_str());
        numbered
    } else {
        let first = tenant_ca_name(tenant, 1);
        subject.push(DnType::CommonName, first.as_str());
        subject.push(DnType::OrganizationalUnitName, format!("generation {generation}"));
        first
    };
    intermediate(root, &common_name, subject, permits, ca_key, days.clamp(1, INTERMEDIATE_DAYS))
}

fn intermediate(
    root: &CaMaterial,
    common_name: &str,
    subject: DistinguishedName,
    permits: Option<&[Permit]>,
    ca_key: CaKey,
    days: i64,
) -> Result<CaMaterial, Error> {
    if permits.is_some_and(|p| p.is_empty()) {
        return Err(Error::malformed("a constrained intermediate needs at least one permit (None makes an unconstrained one)"));
    }
    let signer = root.signer()?;
    let root_not_after = signer.not_after;
    let start = now()?;
    if start < signer.not_before || start >= root_not_after {
        return Err(Error::internal("the root certificate is not currently valid"));
    }
    let not_before = (start - BACKDATE).max(signer.not_before);
    let not_after = add_days(start, days)?.min(root_not_after);

    let key = ca_key.signing_key()?;
    let mut params = ca_params(common_name, not_before, not_after)?;
    params.distinguished_name = subject;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.use_authority_key_identifier_extension = true;
    // Restricting the intermediate to TLS servers, as the CA/B Forum asks of
    // technically constrained CAs; leaves are serverAuth only anyway.
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.name_constraints = permits.map(name_constraints);
    let cert = params.signed_by(&key, &signer.issuer).map_err(rcgen_err("intermediate certificate"))?;
    Ok(CaMaterial::new(cert.der().to_vec(), ca_key))
}

fn ca_params(common_name: &str, not_before: OffsetDateTime, not_after: OffsetDateTime) -> Result<CertificateParams, Error> {
    // ub-common-name (RFC 5280 Appendix A) is 64 characters.
    if common_name.trim().is_empty() || common_name.chars().count() > 64 {
        return Err(Error::malformed("a CA common name must be 1 to 64 characters"));
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
    params.not_before = not_before;
    params.not_after = not_after;
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

#[cfg(test)]
mod tests {
    use x509_parser::certificate::X509Certificate;
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::prelude::FromDer as _;

    use rcgen::KeyPair;

    use super::*;

    fn parse(der: &[u8]) -> X509Certificate<'_> {
        X509Certificate::from_der(der).unwrap().1
    }

    fn ski(cert: &X509Certificate<'_>) -> Vec<u8> {
        cert.iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
                _ => None,
            })
            .unwrap()
    }

    fn aki(cert: &X509Certificate<'_>) -> Vec<u8> {
        cert.iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(k) => k.key_identifier.as_ref().map(|k| k.0.to_vec()),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn root_is_a_ten_year_ca() {
        let root = new_root("tenure test root").unwrap();
        let cert = parse(&root.cert_der);
        let bc = cert.basic_constraints().unwrap().unwrap();
        assert!(bc.critical && bc.value.ca && bc.value.path_len_constraint.is_none());
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign() && !ku.digital_signature());
        assert!(!ski(&cert).is_empty());
        assert_eq!(cert.subject(), cert.issuer());
        let v = cert.validity();
        let days = (v.not_after.timestamp() - v.not_before.timestamp()) / 86400;
        assert!((3652..=3653).contains(&days), "{days}");
        cert.verify_signature(None).unwrap();
        assert!(root.cert_pem().starts_with("-----BEGIN CERTIFICATE-----\n"));
    }

    #[test]
    fn intermediate_is_constrained_under_the_root() {
        let root = new_root("tenure test root").unwrap();
        let permits = [Permit::parse("example.com").unwrap(), Permit::parse("10.0.0.0/8").unwrap()];
        let inter = new_intermediate(&root, "tenant acme", Some(&permits)).unwrap();
        let (rc, ic) = (parse(&root.cert_der), parse(&inter.cert_der));
        ic.verify_signature(Some(rc.public_key())).unwrap();
        assert_eq!(ic.issuer().as_raw(), rc.subject().as_raw());
        let bc = ic.basic_constraints().unwrap().unwrap();
        assert!(bc.critical && bc.value.ca && bc.value.path_len_constraint == Some(0));
        assert_eq!(aki(&ic), ski(&rc));
        assert_ne!(ski(&ic), ski(&rc));
        let nc = ic.name_constraints().unwrap().unwrap();
        assert!(nc.critical);
        let permitted: Vec<_> = nc.value.permitted_subtrees.as_ref().unwrap().iter().map(|s| s.base.clone()).collect();
        assert_eq!(permitted, vec![GeneralName::DNSName("example.com"), GeneralName::IPAddress(&[10, 0, 0, 0, 255, 0, 0, 0])]);
        assert!(nc.value.excluded_subtrees.is_none());
        assert!(ic.validity().not_after <= rc.validity().not_after);
        let days = (ic.validity().not_after.timestamp() - ic.validity().not_before.timestamp()) / 86400;
        assert!((1826..=1827).contains(&days), "{days}");

        // DNS-only tenant: every IP address is excluded.
        let dns_only = new_intermediate(&root, "dns only", Some(&permits[..1])).unwrap();
        let c = parse(&dns_only.cert_der);
        let nc = c.name_constraints().unwrap().unwrap();
        assert_eq!(nc.value.excluded_subtrees.as_ref().unwrap().len(), 2);

        // Public tenant: no nameConstraints at all.
        let public = new_intermediate(&root, "public", None).unwrap();
        assert!(parse(&public.cert_der).name_constraints().unwrap().is_none());

        assert!(new_intermediate(&root, "nothing", Some(&[])).is_err());
    }

    /// Each generation of a tenant's intermediate has a subject of its own;
    /// the first keeps the name tenure always gave it; a name too long for a
    /// numbered common name is told apart by its organizationalUnitName.
    #[test]
    fn tenant_intermediates_have_a_subject_per_generation() {
        let root = new_root("tenure test root").unwrap();
        let permits = [Permit::parse("corp.example").unwrap()];
        let subject = |tenant: &str, generation: i64| {
            let m = new_tenant_intermediate(&root, tenant, generation, Some(&permits), CaKey::generate_software().unwrap(), 30).unwrap();
            let c = parse(&m.cert_der);
            let days = (c.validity().not_after.timestamp() - c.validity().not_before.timestamp()) / 86400;
            assert!((30..=31).contains(&days), "{days}");
            c.subject().to_string()
        };
        assert_eq!(subject("corp", 1), "CN=tenure corp CA");
        assert_eq!(subject("corp", 2), "CN=tenure corp CA 2");
        assert_eq!(subject("corp", 12), "CN=tenure corp CA 12");
        let long = "l".repeat(54);
        assert_eq!(subject(&long, 1), format!("CN=tenure {long} CA"));
        let second = subject(&long, 2);
        assert!(second.contains(&format!("CN=tenure {long} CA")) && second.contains("OU=generation 2"), "{second}");
        assert_ne!(second, subject(&long, 3));
    }

    #[test]
    fn intermediate_never_outlives_the_root() {
        let root_key = KeyPair::generate().unwrap();
        let start = now().unwrap();
        let mut params = ca_params("short root", start, add_days(start, 30).unwrap()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let root_cert = params.self_signed(&root_key).unwrap();
        let root = CaMaterial::software(root_cert.der().to_vec(), root_key.serialize_der());
        let inter = new_intermediate(&root, "inter", None).unwrap();
        assert_eq!(parse(&inter.cert_der).validity().not_after, parse(&root.cert_der).validity().not_after);
    }
}
