//! The typed request bodies and query strings of the admin API. All refuse
//! unknown members: the API is ours, so an unknown member is a typo to report,
//! not an extension to ignore.

use std::collections::BTreeMap;

use serde::Deserialize;
use tenure_engine::registry::NewResource;

/// `POST /v1/tenants`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    /// The tenant's name.
    pub name: String,
    /// Domains (each permits itself and every name under it) and address ranges (CIDR).
    pub permits: Vec<String>,
    /// Accept permits that overlap another tenant's (refused otherwise).
    #[serde(default)]
    pub allow_overlap: bool,
}

/// `POST /v1/resources`: what a tenant holds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddResource {
    /// The tenant that holds it.
    pub tenant: String,
    /// Its kind (vm, lb, hsm, service, …).
    pub kind: String,
    /// DNS names it answers to.
    #[serde(default)]
    pub names: Vec<String>,
    /// DNS zones: every name under each is held.
    #[serde(default)]
    pub zones: Vec<String>,
    /// IP addresses.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Free-form attributes plugins can read (e.g. lifetime-seconds).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// The resource whose tenure this one's certificates follow.
    #[serde(default)]
    pub anchor: Option<String>,
}

impl From<AddResource> for NewResource {
    fn from(r: AddResource) -> NewResource {
        let AddResource { tenant, kind, names, zones, addresses, attributes, anchor } = r;
        NewResource { tenant, kind, names, zones, addresses, attributes, anchor }
    }
}

/// `PATCH /v1/resources/{id}`: `{"attributes": {"key": "value", "gone": null}}`
/// sets each key with a value and removes each one given null (or "").
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchResource {
    /// The attributes to set (a value) or remove (null).
    pub attributes: BTreeMap<String, Option<String>>,
}

/// `POST /v1/resources/{id}/transfer`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    /// The tenant that receives it.
    pub to: String,
}

/// The body of an operation that takes none: empty, or `{}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoBody {}

/// The query of a list that takes no parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

/// `GET /v1/resources?tenant=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesQuery {
    /// Only this tenant's resources.
    pub tenant: Option<String>,
}

/// `GET /v1/audit?tenant=&limit=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only this tenant's decisions.
    pub tenant: Option<String>,
    /// At most this many of the newest records (default 1000).
    pub limit: Option<u32>,
}
