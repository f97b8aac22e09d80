//! Native unit tests of a policy (feature `testing`): an in-memory registry that
//! answers as tenure's does, and request builders.
//!
//! ```ignore
//! use tenure_policy_sdk::prelude::*;
//! use tenure_policy_sdk::testing::{self, Registry, resource};
//!
//! #[test]
//! fn held_names_are_allowed() {
//!     Registry::new("acme")
//!         .resource(resource("vm-1", "vm").name("www.acme.test"))
//!         .resource(resource("lb-1", "load-balancer").zone("apps.acme.test"))
//!         .install();
//!     let d = MyPolicy::decide_issuance(testing::issuance("acme", &["www.acme.test"])).unwrap();
//!     assert!(d.is_allow());
//! }
//! ```
//!
//! The registry is per thread (each `#[test]` runs on its own), installed by
//! [`Registry::install`]. Its answers follow the host's rules: scoped to the decision's
//! tenant; by exact name, or by a zone the name is under (the zone itself included);
//! a wildcard `*.x` through `x`'s name or a zone holding `x` or above; by address;
//! released resources hold nothing (but `resource_by_id` still finds them); when
//! several match, the smallest id wins.

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;

use crate::{Identifier, IdentifierKind, IssuanceRequest, RenewalRequest, Resource, ResourceState, Tenant, Trigger};

std::thread_local! {
    static CURRENT: RefCell<Option<Registry>> = const { RefCell::new(None) };
}

/// An in-memory registry for one tenant's decisions.
#[derive(Clone, Debug)]
pub struct Registry {
    tenant: Tenant,
    resources: Vec<Resource>,
    failure: Option<String>,
    now: u64,
    logs: Vec<(crate::log::Level, String)>,
}

/// A resource of the registry's tenant (active, no names yet): refine it with the
/// builder methods (`name`, `zone`, `address`, `attribute`, `state`, `anchor`, `tenant`).
pub fn resource(id: &str, kind: &str) -> Resource {
    Resource {
        id: id.to_owned(),
        tenant: String::new(),
        kind: kind.to_owned(),
        names: Vec::new(),
        zones: Vec::new(),
        addresses: Vec::new(),
        state: ResourceState::Active,
        attributes: Vec::new(),
        anchor: None,
    }
}

impl Resource {
    /// Adds a DNS name the resource answers to.
    pub fn name(mut self, name: &str) -> Self {
        self.names.push(name.to_owned());
        self
    }
    /// Adds a DNS zone the resource holds (every name under it).
    pub fn zone(mut self, zone: &str) -> Self {
        self.zones.push(zone.to_owned());
        self
    }
    /// Adds an IP address.
    pub fn address(mut self, address: &str) -> Self {
        self.addresses.push(address.to_owned());
        self
    }
    /// Sets an attribute, e.g. `("lifetime-seconds", "3600")`.
    pub fn attribute(mut self, key: &str, value: &str) -> Self {
        self.attributes.retain(|(k, _)| k != key);
        self.attributes.push((key.to_owned(), value.to_owned()));
        self
    }
    /// Sets the state (suspended, released).
    pub fn state(mut self, state: ResourceState) -> Self {
        self.state = state;
        self
    }
    /// Binds its certificates to another resource.
    pub fn anchor(mut self, anchor: &str) -> Self {
        self.anchor = Some(anchor.to_owned());
        self
    }
    /// Gives it to another tenant (whose resources the policy must never see).
    pub fn tenant(mut self, tenant: &str) -> Self {
        self.tenant = tenant.to_owned();
        self
    }
}

fn under(name: &str, zone: &str) -> bool {
    name == zone || name.strip_suffix(zone).is_some_and(|p| p.ends_with('.'))
}

impl Registry {
    /// An empty registry deciding for `tenant` (no permits, clock at 1,700,000,000).
    pub fn new(tenant: &str) -> Self {
        Registry {
            tenant: Tenant { name: tenant.to_owned(), permits: Vec::new() },
            resources: Vec::new(),
            failure: None,
            now: 1_700_000_000,
            logs: Vec::new(),
        }
    }

    /// The tenant's permits (what `registry::tenant()` reports).
    pub fn permits(mut self, permits: &[&str]) -> Self {
        self.tenant.permits = permits.iter().map(|p| (*p).to_owned()).collect();
        self
    }

    /// Adds a resource; one without a tenant belongs to this registry's tenant.
    pub fn resource(mut self, mut resource: Resource) -> Self {
        if resource.tenant.is_empty() {
            resource.tenant = self.tenant.name.clone();
        }
        self.resources.push(resource);
        self
    }

    /// Every call fails with this reason, as tenure's does when its store cannot be read.
    pub fn failing(mut self, reason: &str) -> Self {
        self.failure = Some(reason.to_owned());
        self
    }

    /// What `now()` answers (Unix seconds).
    pub fn now(mut self, unix_seconds: u64) -> Self {
        self.now = unix_seconds;
        self
    }

    /// Makes this the registry of the current thread's decisions.
    pub fn install(self) {
        CURRENT.with(|c| *c.borrow_mut() = Some(self));
    }

    fn live(&self) -> impl Iterator<Item = &Resource> {
        self.resources.iter().filter(|r| r.tenant == self.tenant.name)
    }

    fn first_holding(&self, matches: impl Fn(&Resource) -> bool) -> Option<Resource> {
        self.live().filter(|r| r.state != ResourceState::Released && matches(r)).min_by(|a, b| a.id.cmp(&b.id)).cloned()
    }

    fn by_name(&self, name: &str) -> Option<Resource> {
        let name = name.strip_prefix("*.").unwrap_or(name);
        self.first_holding(|r| r.names.iter().any(|n| n == name) || r.zones.iter().any(|z| under(name, z)))
    }

    fn by_address(&self, address: &str) -> Option<Resource> {
        self.first_holding(|r| r.addresses.iter().any(|a| a == address))
    }
}

/// The log lines the current thread's decisions wrote, oldest first.
pub fn logs() -> Vec<(crate::log::Level, String)> {
    CURRENT.with(|c| c.borrow().as_ref().map(|r| r.logs.clone()).unwrap_or_default())
}

/// An ACME new-order request from account `acct-1` of `tenant`: profile `default`,
/// 24 h requested, no key yet. Change the fields you test.
pub fn issuance(tenant: &str, names: &[&str]) -> IssuanceRequest {
    IssuanceRequest {
        tenant: tenant.to_owned(),
        account: Some("acct-1".to_owned()),
        trigger: Trigger::AcmeOrder,
        identifiers: identifiers(names),
        key: None,
        profile: "default".to_owned(),
        requested_lifetime_seconds: 24 * 3600,
        resource: None,
    }
}

/// A renewal-sweep request for a certificate of `names` bound to `resources`: profile
/// `default`, 24 h requested, the predecessor serial `01`.
pub fn renewal(tenant: &str, names: &[&str], resources: &[&str]) -> RenewalRequest {
    let resources: Vec<String> = resources.iter().map(|r| (*r).to_owned()).collect();
    RenewalRequest {
        tenant: tenant.to_owned(),
        trigger: Trigger::Renewal,
        identifiers: identifiers(names),
        resources: resources.clone(),
        profile: "default".to_owned(),
        requested_lifetime_seconds: 24 * 3600,
        certificate: Some(crate::CertificateInfo {
            serial: "01".to_owned(),
            identifiers: identifiers(names),
            not_before: 1_699_900_000,
            not_after: 1_699_986_400,
            resources,
        }),
    }
}

/// DNS identifiers, or IP ones for what parses as an address.
pub fn identifiers(names: &[&str]) -> Vec<Identifier> {
    names
        .iter()
        .map(|n| match n.parse::<core::net::IpAddr>() {
            Ok(_) => Identifier { kind: IdentifierKind::Ip, value: (*n).to_owned() },
            Err(_) => Identifier { kind: IdentifierKind::Dns, value: (*n).to_owned() },
        })
        .collect()
}

/// The registry functions natively, over the thread's [`Registry`].
pub(crate) mod native {
    use alloc::format;
    use alloc::string::String;
    use alloc::vec::Vec;

    use super::{CURRENT, Registry};
    use crate::{Holding, Identifier, IdentifierKind, Resource, Tenant, lifetime_attribute};

    fn with<T>(f: impl FnOnce(&Registry) -> T) -> Result<T, String> {
        CURRENT.with(|c| match c.borrow().as_ref() {
            None => Err("no registry installed: call testing::Registry::new(..)..install() first".into()),
            Some(r) => match &r.failure {
                Some(why) => Err(format!("registry unavailable: {why}")),
                None => Ok(f(r)),
            },
        })
    }

    pub fn holder(id: &Identifier) -> Result<Option<Holding>, String> {
        with(|r| {
            let found = match id.kind {
                IdentifierKind::Dns => r.by_name(&id.value),
                IdentifierKind::Ip => r.by_address(&id.value),
            };
            found.map(|res| Holding { lifetime_seconds: lifetime_attribute(&res), resource_id: res.id, state: res.state })
        })
    }
    pub fn resource_by_name(name: &str) -> Result<Option<Resource>, String> {
        with(|r| r.by_name(name))
    }
    pub fn resource_by_address(address: &str) -> Result<Option<Resource>, String> {
        with(|r| r.by_address(address))
    }
    pub fn resource_by_id(id: &str) -> Result<Option<Resource>, String> {
        with(|r| r.live().find(|x| x.id == id).cloned())
    }
    pub fn resources() -> Result<Vec<Resource>, String> {
        with(|r| r.live().cloned().collect())
    }
    pub fn tenant() -> Result<Tenant, String> {
        with(|r| r.tenant.clone())
    }
    pub fn now() -> u64 {
        CURRENT.with(|c| c.borrow().as_ref().map_or(0, |r| r.now))
    }
    pub fn log(level: crate::log::Level, message: &str) {
        std::eprintln!("[{level:?}] {message}");
        CURRENT.with(|c| {
            if let Some(r) = c.borrow_mut().as_mut() {
                r.logs.push((level, message.into()));
            }
        });
    }
}
