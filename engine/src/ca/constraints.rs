//! Name constraints (RFC 5280 §4.2.1.10): the names a tenant's intermediate
//! may certify, written into its certificate and read back out of it.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use rcgen::{CidrSubnet, GeneralSubtree, NameConstraints};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, GeneralSubtree as X509Subtree};

use crate::error::Error;
use crate::identifier::{Identifier, IdentifierKind, normalize_dns};

/// A permitted subtree of a tenant: a DNS domain (permits itself and every
/// name under it) or an IP range.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Permit {
    Dns(String),
    Ip { addr: IpAddr, prefix: u8 },
}

impl Permit {
    /// Parses `"example.com"`, `"10.0.0.0/8"`, `"2001:db8::/32"` or a bare
    /// address (`"192.0.2.7"` = /32). A range with host bits set is refused
    /// rather than silently widened or narrowed.
    pub fn parse(s: &str) -> Result<Permit, Error> {
        let bad = |why: &str| Error::malformed(format!("permit {s:?}: {why}"));
        let text = s.trim();
        if let Some((addr, prefix)) = text.split_once('/') {
            let addr: IpAddr = addr.parse().map_err(|_| bad("not an IP address before the '/'"))?;
            let prefix: u8 = prefix.parse().map_err(|_| bad("the prefix length is not a number"))?;
            if prefix > max_prefix(addr) {
                return Err(bad("the prefix length is longer than the address"));
            }
            if mask_addr(addr, prefix) != addr {
                let net = mask_addr(addr, prefix);
                return Err(bad(&format!("host bits are set (the network is {net}/{prefix})")));
            }
            return Ok(Permit::Ip { addr, prefix });
        }
        if let Ok(addr) = text.parse::<IpAddr>() {
            return Ok(Permit::Ip { addr, prefix: max_prefix(addr) });
        }
        if text.starts_with("*.") {
            return Err(bad("a domain permit already covers every name under it; drop the \"*.\""));
        }
        let name = normalize_dns(text).map_err(|e| bad(&e.detail))?;
        Ok(Permit::Dns(name))
    }

    /// Whether this subtree holds the identifier.
    pub fn contains(&self, id: &Identifier) -> bool {
        Subtree::from(self).contains(id)
    }

    /// Whether some identifier lies in both subtrees: equal or nested domains
    /// (`b.example` and `www.b.example`), or address ranges that intersect.
    pub fn overlaps(&self, other: &Permit) -> bool {
        match (self, other) {
            (Permit::Dns(a), Permit::Dns(b)) => dns_in(a, b) || dns_in(b, a),
            (Permit::Ip { addr: a, prefix: pa }, Permit::Ip { addr: b, prefix: pb }) => {
                a.is_ipv4() == b.is_ipv4() && mask_addr(*a, (*pa).min(*pb)) == mask_addr(*b, (*pa).min(*pb))
            }
            _ => false,
        }
    }
}

impl fmt::Display for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Permit::Dns(name) => f.write_str(name),
            Permit::Ip { addr, prefix } => write!(f, "{addr}/{prefix}"),
        }
    }
}

impl FromStr for Permit {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Permit::parse(s)
    }
}

/// Whether an issuer may certify `id`. `None` is an issuer explicitly without
/// constraints (the public tenant) and permits everything; `Some(permits)`
/// permits only what one of them holds, so an empty list permits nothing.
pub fn permitted(permits: Option<&[Permit]>, id: &Identifier) -> bool {
    match permits {
        None => true,
        Some(permits) => permits.iter().any(|p| p.contains(id)),
    }
}

/// The nameConstraints extension for an intermediate with these permits.
///
/// RFC 5280 leaves a name type unconstrained when no permitted subtree has
/// that type, so an intermediate permitted only IP ranges could still certify
/// any DNS name. Excluding the whole of each type the tenant has no permit
/// for (a zero-length dNSName, 0.0.0.0/0 and ::/0, as the CA/B Forum
/// requires of technically constrained CAs) makes the certificate mean
/// exactly `permitted(Some(permits), _)`.
pub(super) fn name_constraints(permits: &[Permit]) -> NameConstraints {
    let permitted_subtrees = permits
        .iter()
        .map(|p| match p {
            Permit::Dns(name) => GeneralSubtree::DnsName(name.clone()),
            Permit::Ip { addr, prefix } => GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(*addr, *prefix)),
        })
        .collect();
    let mut excluded_subtrees = Vec::new();
    if !permits.iter().any(|p| matches!(p, Permit::Dns(_))) {
        excluded_subtrees.push(GeneralSubtree::DnsName(String::new()));
    }
    if !permits.iter().any(|p| matches!(p, Permit::Ip { .. })) {
        excluded_subtrees.push(GeneralSubtree::IpAddress(CidrSubnet::V4([0; 4], [0; 4])));
        excluded_subtrees.push(GeneralSubtree::IpAddress(CidrSubnet::V6([0; 16], [0; 16])));
    }
    NameConstraints { permitted_subtrees, excluded_subtrees }
}

/// The name constraints an issuing certificate carries, as read from it.
#[derive(Debug)]
pub(super) struct IssuerConstraints {
    permitted: Vec<Subtree>,
    excluded: Vec<Subtree>,
}

impl IssuerConstraints {
    /// `None` when the certificate has no nameConstraints extension. Fails
    /// closed on subtree types this CA does not evaluate.
    pub(super) fn from_cert(cert: &X509Certificate<'_>) -> Result<Option<Self>, Error> {
        let ext = cert.name_constraints().map_err(|e| Error::internal(format!("issuer nameConstraints unreadable: {e}")))?;
        let Some(ext) = ext else { return Ok(None) };
        let read = |subtrees: &Option<Vec<X509Subtree<'_>>>| -> Result<Vec<Subtree>, Error> {
            subtrees.iter().flatten().map(|s| Subtree::from_general_name(&s.base)).collect()
        };
        Ok(Some(IssuerConstraints { permitted: read(&ext.value.permitted_subtrees)?, excluded: read(&ext.value.excluded_subtrees)? }))
    }

    /// RFC 5280 §4.2.1.10: in no excluded subtree, and inside a permitted one
    /// whenever any permitted subtree is of the identifier's type.
    pub(super) fn allows(&self, id: &Identifier) -> bool {
        if self.excluded.iter().any(|s| s.overlaps(id)) {
            return false;
        }
        let mut same_kind = self.permitted.iter().filter(|s| s.kind() == id.kind).peekable();
        same_kind.peek().is_none() || same_kind.any(|s| s.contains(id))
    }
}

/// A subtree in certificate terms. A DNS base may be empty (every name) or
/// start with '.' (strict subdomains only, as OpenSSL reads it).
#[derive(Debug, Clone)]
enum Subtree {
    Dns(String),
    Ip { net: Vec<u8>, mask: Vec<u8> },
}

impl From<&Permit> for Subtree {
    fn from(p: &Permit) -> Self {
        match p {
            Permit::Dns(name) => Subtree::Dns(name.clone()),
            Permit::Ip { addr, prefix } => Subtree::Ip { net: octets(*addr), mask: octets(mask_addr(ones(*addr), *prefix)) },
        }
    }
}

impl Subtree {
    fn from_general_name(name: &GeneralName<'_>) -> Result<Self, Error> {
        match name {
            GeneralName::DNSName(base) => {
                let base = base.to_ascii_lowercase();
                Ok(Subtree::Dns(base.strip_suffix('.').unwrap_or(&base).to_string()))
            }
            GeneralName::IPAddress(bytes) if bytes.len() == 8 || bytes.len() == 32 => {
                let (net, mask) = bytes.split_at(bytes.len() / 2);
                Ok(Subtree::Ip { net: net.to_vec(), mask: mask.to_vec() })
            }
            other => Err(Error::internal(format!(
                "issuer nameConstraints hold a subtree this CA does not evaluate ({other:?}); refusing to issue"
            ))),
        }
    }

    fn kind(&self) -> IdentifierKind {
        match self {
            Subtree::Dns(_) => IdentifierKind::Dns,
            Subtree::Ip { .. } => IdentifierKind::Ip,
        }
    }

    /// Every name the identifier stands for is inside this subtree. A
    /// wildcard stands for names under its base, so it is inside whenever
    /// its base domain's subtree is.
    fn contains(&self, id: &Identifier) -> bool {
        match (self, id.kind) {
            (Subtree::Dns(base), IdentifierKind::Dns) => {
                let name = id.value.strip_prefix("*.").unwrap_or(&id.value);
                dns_in(name, base)
            }
            (Subtree::Ip { net, mask }, IdentifierKind::Ip) => {
                let Some(addr) = id.ip_addr() else {
                    return false;
                };
                let addr = octets(addr);
                addr.len() == net.len() && mask.len() == net.len() && addr.iter().zip(net).zip(mask).all(|((a, n), m)| a & m == n & m)
            }
            _ => false,
        }
    }

    /// Some name the identifier stands for is inside this subtree: what an
    /// exclusion must test, so `*.example.com` is caught by an excluded
    /// `a.example.com`.
    fn overlaps(&self, id: &Identifier) -> bool {
        if let (Subtree::Dns(base), Some(wild_base)) = (self, id.value.strip_prefix("*."))
            && id.kind == IdentifierKind::Dns
        {
            let base = base.strip_prefix('.').unwrap_or(base);
            return dns_in(wild_base, base) || base.ends_with(&format!(".{wild_base}"));
        }
        self.contains(id)
    }
}

/// `name` is `base` or under it (`notexample.com` is not under `example.com`).
fn dns_in(name: &str, base: &str) -> bool {
    if base.is_empty() {
        return true;
    }
    if base.starts_with('.') {
        return name.len() > base.len() && name.ends_with(base);
    }
    name == base || name.strip_suffix(base).is_some_and(|head| head.ends_with('.'))
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

fn ones(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => IpAddr::from([0xff; 4]),
        IpAddr::V6(_) => IpAddr::from([0xff; 16]),
    }
}

/// `addr` with all but its first `prefix` bits cleared.
fn mask_addr(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0);
            IpAddr::from((u32::from(a) & mask).to_be_bytes())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix.min(128))).unwrap_or(0);
            IpAddr::from((u128::from(a) & mask).to_be_bytes())
        }
    }
}

fn octets(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Identifier {
        match s.parse::<IpAddr>() {
            Ok(addr) => Identifier::ip(addr),
            Err(_) => Identifier::parse("dns", s).unwrap(),
        }
    }

    fn permits(list: &[&str]) -> Vec<Permit> {
        list.iter().map(|p| Permit::parse(p).unwrap()).collect()
    }

    #[test]
    fn permits_overlap_when_an_identifier_lies_in_both() {
        let p = |s: &str| Permit::parse(s).unwrap();
        for (a, b) in [
            ("b.example", "b.example"),
            ("b.example", "www.b.example"),
            ("10.0.0.0/8", "10.20.0.0/16"),
            ("10.20.0.0/16", "10.20.3.4"),
            ("2001:db8::/32", "2001:db8:1::/48"),
        ] {
            assert!(p(a).overlaps(&p(b)) && p(b).overlaps(&p(a)), "{a} and {b}");
        }
        for (a, b) in [
            ("b.example", "c.example"),
            ("b.example", "notb.example"),
            ("10.0.0.0/16", "10.1.0.0/16"),
            ("10.0.0.0/8", "::/0"),
            ("b.example", "10.0.0.0/8"),
        ] {
            assert!(!p(a).overlaps(&p(b)) && !p(b).overlaps(&p(a)), "{a} and {b}");
        }
    }

    /// (permits, identifier, permitted?)
    const TABLE: &[(&[&str], &str, bool)] = &[
        (&["example.com"], "example.com", true),
        (&["example.com"], "www.example.com", true),
        (&["example.com"], "a.b.example.com", true),
        (&["example.com"], "notexample.com", false),
        (&["example.com"], "example.com.evil.net", false),
        (&["example.com"], "com.example", false),
        (&["a.example.com"], "example.com", false),
        (&["a.example.com"], "b.example.com", false),
        (&["example.com"], "*.example.com", true),
        (&["example.com"], "*.a.example.com", true),
        (&["a.example.com"], "*.a.example.com", true),
        (&["a.example.com"], "*.example.com", false),
        (&["x.a.example.com"], "*.a.example.com", false),
        (&["10.0.0.0/8"], "10.1.2.3", true),
        (&["10.0.0.0/8"], "11.0.0.1", false),
        (&["192.0.2.7"], "192.0.2.7", true),
        (&["192.0.2.7"], "192.0.2.8", false),
        (&["2001:db8::/32"], "2001:db8:1::1", true),
        (&["2001:db8::/32"], "2001:db9::1", false),
        (&["10.0.0.0/8"], "::ffff:10.0.0.1", false),
        (&["2001:db8::/32"], "10.0.0.1", false),
        (&["example.com"], "10.0.0.1", false),
        (&["10.0.0.0/8"], "example.com", false),
        (&["example.com", "10.0.0.0/8"], "10.9.9.9", true),
        (&["example.com", "10.0.0.0/8"], "mail.example.com", true),
        (&["example.com", "example.net"], "www.example.net", true),
        (&[], "example.com", false),
        (&[], "10.0.0.1", false),
    ];

    #[test]
    fn matching_table() {
        for (list, name, want) in TABLE {
            let p = permits(list);
            assert_eq!(permitted(Some(&p), &id(name)), *want, "{list:?} vs {name}");
        }
        // Unconstrained only when said so explicitly.
        assert!(permitted(None, &id("anything.example.org")));
        assert!(permitted(None, &id("192.0.2.1")));
    }

    #[test]
    fn certificate_semantics_equal_permit_semantics() {
        // What name_constraints() writes, read back with RFC 5280 semantics,
        // must decide every row exactly as permitted() does.
        for (list, name, want) in TABLE {
            let nc = name_constraints(&permits(list));
            let as_cert = IssuerConstraints {
                permitted: nc.permitted_subtrees.iter().map(rcgen_subtree).collect(),
                excluded: nc.excluded_subtrees.iter().map(rcgen_subtree).collect(),
            };
            assert_eq!(as_cert.allows(&id(name)), *want, "{list:?} vs {name}");
        }
    }

    fn rcgen_subtree(s: &GeneralSubtree) -> Subtree {
        match s {
            GeneralSubtree::DnsName(n) => Subtree::Dns(n.clone()),
            GeneralSubtree::IpAddress(CidrSubnet::V4(a, m)) => Subtree::Ip { net: a.to_vec(), mask: m.to_vec() },
            GeneralSubtree::IpAddress(CidrSubnet::V6(a, m)) => Subtree::Ip { net: a.to_vec(), mask: m.to_vec() },
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn exclusions_catch_overlapping_wildcards() {
        let c = IssuerConstraints { permitted: vec![], excluded: vec![Subtree::Dns("a.example.com".into())] };
        assert!(!c.allows(&id("*.example.com")));
        assert!(!c.allows(&id("x.a.example.com")));
        assert!(c.allows(&id("b.example.com")));
        // No permitted subtree of a type leaves that type open (RFC 5280).
        assert!(c.allows(&id("10.0.0.1")));
    }

    #[test]
    fn leading_dot_means_strict_subdomains() {
        assert!(dns_in("a.example.com", ".example.com"));
        assert!(!dns_in("example.com", ".example.com"));
        assert!(dns_in("anything.test", ""));
    }

    #[test]
    fn permit_parsing() {
        assert_eq!(Permit::parse("Example.COM.").unwrap(), Permit::Dns("example.com".into()));
        assert_eq!(Permit::parse("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
        assert_eq!(Permit::parse("2001:db8::/32").unwrap().to_string(), "2001:db8::/32");
        assert_eq!(Permit::parse("10.0.0.0/8").unwrap(), Permit::Ip { addr: "10.0.0.0".parse().unwrap(), prefix: 8 });
        for bad in ["10.0.0.1/8", "10.0.0.0/33", "2001:db8::/129", "10.0.0.0/x", "*.example.com", "com", "a..b", "", "x/8"] {
            assert!(Permit::parse(bad).is_err(), "{bad}");
        }
        for ok in ["example.com", "10.0.0.0/8", "2001:db8::/32", "0.0.0.0/0"] {
            assert_eq!(Permit::parse(ok).unwrap().to_string().parse::<Permit>().unwrap(), Permit::parse(ok).unwrap());
        }
    }
}
