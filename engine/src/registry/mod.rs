//! The resource registry: which tenant holds which resource (names, zones,
//! addresses), its state, and the append-only log of events that changed it.
//! The platform writes it (CLI, admin API); policies read it, scoped to the
//! calling tenant.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

mod intermediates;
pub mod removal;
mod service;
pub use intermediates::{RotationReport, TenantRotated, TenantUpdated};
pub mod tokens;
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
    /// With a lease (`lease-seconds`): when the resource is suspended unless
    /// confirmed first (counted while active; restarted by confirm and resume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires: Option<UnixTime>,
}

/// Where a resource's provisioning stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProvisioningStatus {
    /// A request waits in the queue (just added or changed, or retrying).
    pub pending: bool,
    /// Failed tries of the waiting request.
    pub attempts: i64,
    /// Why its last try failed.
    pub last_error: Option<String>,
    /// The serial of the certificate tenure provisioned and keeps current, if any.
    pub certificate: Option<String>,
    /// Its generation.
    pub generation: Option<i64>,
    /// Who holds its key: `hsm`, `recipient`, `platform`.
    pub key_source: Option<&'static str>,
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

/// A DNS name's labels in reverse order (`www.corp.example` →
/// `example.corp.www`): the registry indexes names this way too, so the names
/// under a zone are one range of that index instead of a scan of every name.
pub fn reversed_labels(name: &str) -> String {
    name.rsplit('.').collect::<Vec<_>>().join(".")
}

/// The range of [`reversed_labels`] keys of the names strictly under `zone`:
/// from `<reversed zone>.` (inclusive) to `<reversed zone>/` (exclusive; `/`
/// follows `.` in every collation the stores use, byte order).
pub fn under_zone_range(zone: &str) -> (String, String) {
    let reversed = reversed_labels(zone);
    (format!("{reversed}."), format!("{reversed}/"))
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
        check_attribute_values(&self.attributes)?;
        Ok(self)
    }

    /// The identifiers this resource would let its tenant hold (zones as their apex).
    pub fn identifiers(&self) -> Vec<Identifier> {
        let mut ids: Vec<Identifier> = self.names.iter().chain(&self.zones).map(|n| Identifier::dns(n)).collect();
        ids.extend(self.addresses.iter().filter_map(|a| a.parse().ok()).map(Identifier::ip));
        ids
    }
}

/// The note on a certificate lapsed because a resource it is bound to was
/// suspended (followed by the resource's id): what resuming looks for to
/// schedule it again.
pub(crate) const SUSPENDED_LAPSE_NOTE: &str = "suspended with resource";

/// The attribute that gives a resource a lease: it must be confirmed within
/// this many seconds (of its creation, last confirmation or resumption), or
/// it is suspended.
pub const LEASE_ATTRIBUTE: &str = "lease-seconds";
/// The bounds of a lease: shorter than the scheduler could keep; longer than a year is no lease.
pub const LEASE_SECONDS_MIN: i64 = 10;
pub const LEASE_SECONDS_MAX: i64 = 31_536_000;

/// The attribute checks that need no configuration (delivery targets are
/// checked against the server's bounds by the registry): names, sizes, the
/// shape of a delivery directory, the lease. Used at add and at every change.
pub fn check_attribute_values(attributes: &BTreeMap<String, String>) -> Result<()> {
    for (k, v) in attributes {
        if k.is_empty() || k.len() > 128 {
            return Err(Error::malformed(format!("attribute name {k:?} must be 1-128 characters")));
        }
        if v.len() > 4096 {
            return Err(Error::malformed(format!("attribute {k:?} is longer than 4096 bytes")));
        }
    }
    if let Some(dir) = attributes.get(crate::lifecycle::DELIVERY_DIR_ATTRIBUTE) {
        crate::lifecycle::delivery::check_delivery_dir(dir)?;
    }
    lease_seconds(attributes)?;
    Ok(())
}

/// The lease the attributes give, if any.
pub fn lease_seconds(attributes: &BTreeMap<String, String>) -> Result<Option<i64>> {
    let Some(v) = attributes.get(LEASE_ATTRIBUTE) else { return Ok(None) };
    match v.parse::<i64>() {
        Ok(n) if (LEASE_SECONDS_MIN..=LEASE_SECONDS_MAX).contains(&n) => Ok(Some(n)),
        _ => Err(Error::malformed(format!(
            "attribute {LEASE_ATTRIBUTE:?} must be a whole number of seconds from {LEASE_SECONDS_MIN} to {LEASE_SECONDS_MAX}, not {v:?}"
        ))),
    }
}

/// Changes to a resource's attributes: `Some(value)` sets, `None` removes.
/// An empty value removes too (`--attr key=` on the command line): an empty
/// attribute means the same as none everywhere tenure reads one.
pub type AttributeChanges = BTreeMap<String, Option<String>>;

/// The changes `--attr K=V` (set; `K=` removes) and `--remove K` ask for.
pub fn parse_attribute_changes(sets: &[String], removes: &[String]) -> Result<AttributeChanges> {
    let mut changes = AttributeChanges::new();
    for kv in sets {
        let (k, v) = parse_attribute(kv)?;
        if changes.insert(k.clone(), Some(v).filter(|v| !v.is_empty())).is_some() {
            return Err(Error::malformed(format!("attribute {k:?} is given twice")));
        }
    }
    for k in removes {
        if changes.insert(k.clone(), None).is_some() {
            return Err(Error::malformed(format!("attribute {k:?} is given twice")));
        }
    }
    Ok(changes)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Created,
    Transferred,
    Suspended,
    Resumed,
    Released,
    #[serde(rename = "attributes-changed")]
    AttributesChanged,
    Confirmed,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Transferred => "transferred",
            EventKind::Suspended => "suspended",
            EventKind::Resumed => "resumed",
            EventKind::Released => "released",
            EventKind::AttributesChanged => "attributes-changed",
            EventKind::Confirmed => "confirmed",
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
            lease_expires: None,
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
