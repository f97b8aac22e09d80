//! The resource registry: which tenant holds which resource (names, zones,
//! addresses), its state, and the append-only log of events that changed it.
//! The platform writes it (CLI, admin API); policies read it, scoped to the
//! calling tenant.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

mod service;
pub use service::{PermitOverlap, Registry, TenantCreated};

use crate::error::{Error, ErrorKind, Result};
use crate::identifier::{Identifier, IdentifierKind, normalize_dns};
use crate::model::UnixTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceState {
    Active,
    Suspended,
    Released,
}

impl ResourceState {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceState::Active => "active",
            ResourceState::Suspended => "suspended",
            ResourceState::Released => "released",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(ResourceState::Active),
            "suspended" => Some(ResourceState::Suspended),
            "released" => Some(ResourceState::Released),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    pub id: String,
    pub tenant: String,
    pub kind: String,
    pub names: Vec<String>,
    pub zones: Vec<String>,
    pub addresses: Vec<String>,
    pub state: ResourceState,
    pub attributes: BTreeMap<String, String>,
    pub anchor: Option<String>,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
}

impl Resource {
    /// Whether this resource covers the identifier: an exact name, a name
    /// under one of its zones, or one of its addresses.
    pub fn covers(&self, id: &Identifier) -> bool {
        match id.kind {
            IdentifierKind::Dns => {
                let name = id.authorization_target().value;
                self.names.contains(&name) || self.zones.iter().any(|z| name_in_zone(&name, z))
            }
            IdentifierKind::Ip => self.addresses.contains(&id.value),
        }
    }
}

impl Resource {
    /// What this resource would be as another tenant's: same names, zones and
    /// addresses (for checking the new tenant's permits and conflicts).
    pub fn moved_to(&self, tenant: &str) -> NewResource {
        NewResource {
            tenant: tenant.to_string(),
            kind: self.kind.clone(),
            names: self.names.clone(),
            zones: self.zones.clone(),
            addresses: self.addresses.clone(),
            ..Default::default()
        }
    }
}

/// `name` equals `zone` or lies under it.
pub fn name_in_zone(name: &str, zone: &str) -> bool {
    name == zone || name.strip_suffix(zone).is_some_and(|head| head.ends_with('.'))
}

/// The zones a name could be held through, itself first: `a.b.c` → a.b.c, b.c, c.
pub fn enclosing_zones(name: &str) -> Vec<&str> {
    let mut out = vec![name];
    let mut rest = name;
    while let Some((_, tail)) = rest.split_once('.') {
        out.push(tail);
        rest = tail;
    }
    out
}

/// What `tenure resource add` asks for.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NewResource {
    pub tenant: String,
    pub kind: String,
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub zones: Vec<String>,
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub anchor: Option<String>,
}

impl NewResource {
    /// Normalizes names, zones and addresses; refuses what no certificate could name.
    pub fn normalized(mut self) -> Result<NewResource> {
        if self.kind.is_empty() || self.kind.len() > 64 || !self.kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(Error::malformed(format!("resource kind {:?} must be 1-64 letters, digits, '-' or '_'", self.kind)));
        }
        let dns = |list: &[String], what: &str| -> Result<Vec<String>> {
            let mut out = Vec::new();
            for n in list {
                if n.starts_with("*.") {
                    return Err(Error::malformed(format!(
                        "{what} {n:?}: a wildcard is not a name; hold the whole subtree as a zone instead"
                    )));
                }
                let n = normalize_dns(n).map_err(|e| Error::malformed(format!("{what}: {}", e.detail)))?;
                if !out.contains(&n) {
                    out.push(n);
                }
            }
            Ok(out)
        };
        self.names = dns(&self.names, "name")?;
        self.zones = dns(&self.zones, "zone")?;
        let mut addrs = Vec::new();
        for a in &self.addresses {
            let ip: IpAddr = a.parse().map_err(|_| Error::malformed(format!("address {a:?} is not an IP address")))?;
            let ip = ip.to_string();
            if !addrs.contains(&ip) {
                addrs.push(ip);
            }
        }
        self.addresses = addrs;
        for (k, v) in &self.attributes {
            if k.is_empty() || k.len() > 128 {
                return Err(Error::malformed(format!("attribute name {k:?} must be 1-128 characters")));
            }
            if v.len() > 4096 {
                return Err(Error::malformed(format!("attribute {k:?} is longer than 4096 bytes")));
            }
        }
        if let Some(dir) = self.attributes.get(crate::lifecycle::DELIVERY_DIR_ATTRIBUTE) {
            crate::lifecycle::delivery::check_delivery_dir(dir)?;
        }
        Ok(self)
    }

    /// The identifiers this resource would let its tenant hold (zones as their apex).
    pub fn identifiers(&self) -> Vec<Identifier> {
        let mut ids: Vec<Identifier> = self.names.iter().chain(&self.zones).map(|n| Identifier::dns(n)).collect();
        ids.extend(self.addresses.iter().filter_map(|a| a.parse().ok()).map(Identifier::ip));
        ids
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Created,
    Transferred,
    Suspended,
    Resumed,
    Released,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Transferred => "transferred",
            EventKind::Suspended => "suspended",
            EventKind::Resumed => "resumed",
            EventKind::Released => "released",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub seq: i64,
    pub resource_id: String,
    pub tenant: String,
    pub kind: String,
    pub at: UnixTime,
    pub detail: serde_json::Value,
}

/// Parses `K=V` attribute arguments.
pub fn parse_attribute(kv: &str) -> Result<(String, String)> {
    let (k, v) = kv.split_once('=').ok_or_else(|| Error::new(ErrorKind::Malformed, format!("attribute {kv:?} must be KEY=VALUE")))?;
    Ok((k.to_string(), v.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_cover_their_subtree_only() {
        assert!(name_in_zone("a.example.com", "example.com"));
        assert!(name_in_zone("example.com", "example.com"));
        assert!(!name_in_zone("notexample.com", "example.com"));
        assert_eq!(enclosing_zones("a.b.c"), vec!["a.b.c", "b.c", "c"]);
    }

    #[test]
    fn resources_cover_names_zones_and_addresses() {
        let r = Resource {
            id: "r1".into(),
            tenant: "t".into(),
            kind: "vm".into(),
            names: vec!["www.example.com".into()],
            zones: vec!["apps.example.com".into()],
            addresses: vec!["10.0.0.1".into()],
            state: ResourceState::Active,
            attributes: BTreeMap::new(),
            anchor: None,
            created_at: 0,
            updated_at: 0,
        };
        assert!(r.covers(&Identifier::dns("www.example.com")));
        assert!(r.covers(&Identifier::dns("x.apps.example.com")));
        assert!(r.covers(&Identifier::dns("*.apps.example.com")));
        assert!(!r.covers(&Identifier::dns("example.com")));
        assert!(r.covers(&Identifier::ip("10.0.0.1".parse().unwrap())));
        assert!(!r.covers(&Identifier::ip("10.0.0.2".parse().unwrap())));
    }

    #[test]
    fn new_resources_are_normalized() {
        let r = NewResource {
            tenant: "t".into(),
            kind: "vm".into(),
            names: vec!["WWW.Example.com.".into()],
            addresses: vec!["2001:DB8::1".into()],
            ..Default::default()
        }
        .normalized()
        .unwrap();
        assert_eq!(r.names, vec!["www.example.com"]);
        assert_eq!(r.addresses, vec!["2001:db8::1"]);
        assert!(NewResource { kind: "vm".into(), names: vec!["*.x.com".into()], ..Default::default() }.normalized().is_err());
    }
}
