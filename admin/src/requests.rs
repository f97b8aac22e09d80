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

/// `POST /v1/tenants/{name}/token`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// Replace the tenant's token (without: refused if it has one).
    #[serde(default)]
    pub rotate: bool,
}

/// `GET /v1/certificates?tenant=&resource=&limit=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificatesQuery {
    /// Only this tenant's certificates.
    pub tenant: Option<String>,
    /// Only those bound to this resource.
    pub resource: Option<String>,
    /// At most this many of the newest (default 100, at most 1000).
    pub limit: Option<u32>,
}

/// `POST /v1/plugins/tenant/{tenant}/eval`: one decision against the live
/// registry, as `tenure plugin eval` runs it; nothing is stored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalRequest {
    /// The decision: `issuance`, `renewal` or `distribution`.
    pub hook: String,
    /// The hook's request (its schema: plugins/README.md); its tenant must be the path's.
    pub request: serde_json::Value,
    /// Run the tenant's whole chain, as the server would (with `wasm`, if
    /// given, in place of the tenant's own plugin).
    #[serde(default)]
    pub chain: bool,
    /// A candidate plugin, base64: evaluated alone, or in the chain.
    #[serde(default)]
    pub wasm: Option<String>,
}

/// `POST /v1/certificates/{serial}/revoke`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revoke {
    /// The RFC 5280 reason code: 0 (unspecified, the default), 1 (key
    /// compromise), 3 (affiliation changed), 4 (superseded) or 5 (cessation of operation).
    #[serde(default)]
    pub reason: Option<u8>,
}

/// `PUT /v1/tenants/{name}/permits`: the tenant's permits from now on.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdatePermits {
    /// Domains (each permits itself and every name under it) and address ranges (CIDR).
    pub permits: Vec<String>,
    /// Accept permits that overlap another tenant's (refused otherwise).
    #[serde(default)]
    pub allow_overlap: bool,
}

/// `DELETE /v1/tenants/{name}/keys?key_id=`: the signing key to remove.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyQuery {
    /// The key's id (`sha256:` and 32 hex digits).
    pub key_id: String,
}

/// `PUT /v1/plugins/signatures`: whether tenant plugins must be signed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSignatures {
    /// True: a tenant plugin needs a signature by one of its tenant's keys.
    pub required: bool,
}
