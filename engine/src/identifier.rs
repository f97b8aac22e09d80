//! ACME identifiers (RFC 8555 §9.7.7, RFC 8738): DNS names, wildcards and IP addresses.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentifierKind {
    Dns,
    Ip,
}

impl IdentifierKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentifierKind::Dns => "dns",
            IdentifierKind::Ip => "ip",
        }
    }
}

/// A normalized identifier: DNS names lower-cased without a trailing dot,
/// IP addresses in their canonical text form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identifier {
    #[serde(rename = "type")]
    pub kind: IdentifierKind,
    pub value: String,
}

impl PartialOrd for IdentifierKind {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for IdentifierKind {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Identifier {
    pub fn dns(name: &str) -> Self {
        Identifier { kind: IdentifierKind::Dns, value: name.to_string() }
    }
    pub fn ip(addr: IpAddr) -> Self {
        Identifier { kind: IdentifierKind::Ip, value: addr.to_string() }
    }

    /// Parses and normalizes an identifier from the wire (`type`, `value`).
    pub fn parse(kind: &str, value: &str) -> Result<Self, Error> {
        match kind {
            "dns" => {
                let name = normalize_dns(value)?;
                Ok(Identifier { kind: IdentifierKind::Dns, value: name })
            }
            "ip" => {
                let addr: IpAddr =
                    value.parse().map_err(|_| Error::new(ErrorKind::Malformed, format!("{value:?} is not an IP address")))?;
                Ok(Identifier::ip(addr))
            }
            other => {
                Err(Error::new(ErrorKind::UnsupportedIdentifier, format!("identifier type {other:?} is not supported (dns and ip are)")))
            }
        }
    }

    pub fn is_wildcard(&self) -> bool {
        self.kind == IdentifierKind::Dns && self.value.starts_with("*.")
    }

    /// The name an authorization is for: a wildcard's base domain (RFC 8555 §7.1.3).
    pub fn authorization_target(&self) -> Identifier {
        match self.value.strip_prefix("*.") {
            Some(base) if self.kind == IdentifierKind::Dns => Identifier::dns(base),
            _ => self.clone(),
        }
    }

    pub fn ip_addr(&self) -> Option<IpAddr> {
        match self.kind {
            IdentifierKind::Ip => self.value.parse().ok(),
            IdentifierKind::Dns => None,
        }
    }
}

impl std::fmt::Display for Identifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.value)
    }
}

/// Lower-cases and checks a DNS name the way a public CA must: LDH labels of
/// 1–63 octets, 253 in all, at least two labels, a wildcard only as the whole
/// leftmost label, no IP address in disguise.
pub fn normalize_dns(value: &str) -> Result<String, Error> {
    let bad = |why: &str| Error::new(ErrorKind::RejectedIdentifier, format!("{value:?}: {why}"));
    let name = value.strip_suffix('.').unwrap_or(value).to_ascii_lowercase();
    if name.is_empty() {
        return Err(bad("empty name"));
    }
    if name.len() > 253 {
        return Err(bad("name longer than 253 octets"));
    }
    if name.parse::<IpAddr>().is_ok() {
        return Err(bad("an IP address must use the \"ip\" identifier type"));
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 {
        return Err(bad("a name needs at least two labels"));
    }
    for (i, label) in labels.iter().enumerate() {
        if *label == "*" {
            if i != 0 {
                return Err(bad("a wildcard may only be the leftmost label"));
            }
            continue;
        }
        if label.is_empty() || label.len() > 63 {
            return Err(bad("each label must be 1 to 63 octets"));
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(bad("labels may hold only letters, digits and hyphens"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("a label may not begin or end with a hyphen"));
        }
    }
    if labels.len() == 2 && labels[0] == "*" {
        return Err(bad("a wildcard needs a registered domain under it"));
    }
    if labels.last().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit())) {
        return Err(bad("the top-level label may not be all digits"));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_are_normalized() {
        assert_eq!(Identifier::parse("dns", "WWW.Example.COM.").unwrap().value, "www.example.com");
        assert!(Identifier::parse("dns", "*.example.com").unwrap().is_wildcard());
    }

    #[test]
    fn bad_names_are_rejected() {
        for bad in ["", "com", "a..b", "-a.com", "a-.com", "a.*.com", "*.com", "1.2.3.4", "a_b.com", "x.123"] {
            let err = Identifier::parse("dns", bad).unwrap_err();
            assert_eq!(err.kind, ErrorKind::RejectedIdentifier, "{bad}");
        }
        assert_eq!(Identifier::parse("email", "a@b.c").unwrap_err().kind, ErrorKind::UnsupportedIdentifier);
        assert_eq!(Identifier::parse("ip", "300.1.1.1").unwrap_err().kind, ErrorKind::Malformed);
    }

    #[test]
    fn ip_is_canonical() {
        assert_eq!(Identifier::parse("ip", "2001:DB8::0:1").unwrap().value, "2001:db8::1");
    }

    #[test]
    fn wildcard_authorizes_its_base() {
        let id = Identifier::parse("dns", "*.example.com").unwrap();
        assert_eq!(id.authorization_target().value, "example.com");
    }
}
