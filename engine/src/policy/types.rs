//! Plain Rust mirrors of the WIT records (`wit/policy.wit`), with serde for audit logs
//! and `plugin eval`. The requests are spelled as in the WIT (kebab-case) and refuse
//! unknown fields, so the audit log records the input as the plugin saw it and a
//! misspelt field is an error, not a silent default. The wasmtime bindings stay
//! private; these are what the rest of the engine sees.

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::identifier::{Identifier, IdentifierKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum KeyType {
    EcdsaP256,
    EcdsaP384,
    Rsa,
    Ed25519,
    #[default]
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceState {
    #[default]
    Active,
    Suspended,
    Released,
}

/// A resource of the registry, as a plugin sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Resource {
    pub id: String,
    pub tenant: String,
    pub kind: String,
    pub names: Vec<String>,
    pub zones: Vec<String>,
    pub addresses: Vec<String>,
    pub state: ResourceState,
    pub attributes: Vec<(String, String)>,
    pub anchor: Option<String>,
}

/// The brief answer to "who holds this identifier?" (WIT `holding`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    pub resource_id: String,
    pub tenant: String,
    pub state: ResourceState,
    /// The `lifetime-seconds` attribute, if set and a positive number.
    pub lifetime_seconds: Option<u64>,
}

impl Resource {
    /// The brief form of this resource, as `holder` answers.
    pub fn holding(&self) -> Holding {
        Holding {
            resource_id: self.id.clone(),
            tenant: self.tenant.clone(),
            state: self.state,
            lifetime_seconds: self.attribute("lifetime-seconds").and_then(|v| v.trim().parse::<u64>().ok()).filter(|&s| s > 0),
        }
    }

    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// The WIT `tenant` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct TenantInfo {
    pub name: String,
    pub permits: Vec<String>,
}

/// What made the host ask a plugin (WIT `trigger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// An ACME new-order: the client's key is not known yet.
    AcmeOrder,
    /// An ACME finalize, with the CSR's key.
    AcmeFinalize,
    /// The server's own renewal sweep.
    Renewal,
    /// A new key generated in a tenant's HSM.
    Rekey,
    /// A certificate issued on resource creation, with no ACME request.
    Provisioning,
}

impl Trigger {
    /// The WIT (and JSON) spelling, e.g. `"acme-finalize"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::AcmeOrder => "acme-order",
            Trigger::AcmeFinalize => "acme-finalize",
            Trigger::Renewal => "renewal",
            Trigger::Rekey => "rekey",
            Trigger::Provisioning => "provisioning",
        }
    }
}

/// The certificate's public key (WIT `key-info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct KeyInfo {
    /// The key's algorithm.
    pub key_type: KeyType,
    /// 256 (P-256), 384 (P-384), the modulus size for RSA, 255 for Ed25519.
    pub bits: u32,
}

/// The input of `decide-issuance` (WIT `issuance-request`; see the WIT for each field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct IssuanceRequest {
    /// The tenant the certificate is for.
    pub tenant: String,
    /// The ACME account that asked; `None` when no ACME account asked.
    #[serde(default)]
    pub account: Option<String>,
    /// What made the host ask.
    pub trigger: Trigger,
    /// The names the certificate would carry.
    pub identifiers: Vec<Identifier>,
    /// The certificate's key; `None` at `acme-order`.
    #[serde(default)]
    pub key: Option<KeyInfo>,
    /// The profile the certificate will use (asked for or the default); never "".
    pub profile: String,
    /// The lifetime given if the plugins do not narrow it; never 0.
    pub requested_lifetime_seconds: u64,
    /// The resource being provisioned, for trigger `provisioning`.
    #[serde(default)]
    pub resource: Option<String>,
}

/// A certificate tenure issued before (WIT `certificate-info`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CertificateInfo {
    /// Hex serial number.
    pub serial: String,
    /// The names it carries.
    pub identifiers: Vec<Identifier>,
    /// Unix seconds.
    pub not_before: u64,
    /// Unix seconds.
    pub not_after: u64,
    /// Ids of the registry resources the certificate is bound to.
    #[serde(default)]
    pub resources: Vec<String>,
}

/// The input of `decide-renewal` (WIT `renewal-request`; see the WIT for each field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RenewalRequest {
    /// The tenant the certificate is for.
    pub tenant: String,
    /// `Renewal` or `Rekey`.
    pub trigger: Trigger,
    /// The names the new certificate would carry.
    pub identifiers: Vec<Identifier>,
    /// Ids of the registry resources it would be bound to.
    pub resources: Vec<String>,
    /// The profile the new certificate will use; never "".
    pub profile: String,
    /// The lifetime given if the plugins do not narrow it; never 0.
    pub requested_lifetime_seconds: u64,
    /// The certificate being succeeded; `None` for a resource's first key in its HSM.
    #[serde(default)]
    pub certificate: Option<CertificateInfo>,
}

/// The input of `decide-distribution` (WIT `distribution-request`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DistributionRequest {
    /// The tenant both HSMs must belong to.
    pub tenant: String,
    /// The key to copy.
    pub key_id: String,
    /// Resource id of the HSM holding the key.
    pub source_hsm: String,
    /// Resource id of the HSM to copy it to.
    pub target_hsm: String,
}

/// The three hooks a plugin exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hook {
    /// `decide-issuance`.
    Issuance,
    /// `decide-renewal`.
    Renewal,
    /// `decide-distribution`.
    Distribution,
}

impl Hook {
    /// Every hook, in WIT order.
    pub const ALL: [Hook; 3] = [Hook::Issuance, Hook::Renewal, Hook::Distribution];

    /// `"issuance"`, `"renewal"` or `"distribution"`: the audit log's and the CLI's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Issuance => "issuance",
            Hook::Renewal => "renewal",
            Hook::Distribution => "distribution",
        }
    }
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Hook {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Hook::ALL
            .into_iter()
            .find(|h| h.as_str() == s)
            .ok_or_else(|| format!("unknown hook {s:?}, expected one of `issuance`, `renewal`, `distribution`"))
    }
}

/// The input of any hook: what `plugin eval` reads and the audit log records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum HookRequest {
    /// For `decide-issuance`.
    Issuance(IssuanceRequest),
    /// For `decide-renewal`.
    Renewal(RenewalRequest),
    /// For `decide-distribution`.
    Distribution(DistributionRequest),
}

impl From<IssuanceRequest> for HookRequest {
    fn from(r: IssuanceRequest) -> Self {
        HookRequest::Issuance(r)
    }
}

impl From<RenewalRequest> for HookRequest {
    fn from(r: RenewalRequest) -> Self {
        HookRequest::Renewal(r)
    }
}

impl From<DistributionRequest> for HookRequest {
    fn from(r: DistributionRequest) -> Self {
        HookRequest::Distribution(r)
    }
}

impl HookRequest {
    /// Parses a request for `hook` from its JSON (the WIT spelling), then checks what
    /// the WIT promises a plugin (a profile, a lifetime, a trigger the hook can have).
    /// The error names the offending field: an unknown one (``unknown field
    /// `requestedLifetime`, expected one of …``), a missing one, or a wrong value.
    pub fn from_json(hook: Hook, text: &str) -> Result<HookRequest, String> {
        let parsed = match hook {
            Hook::Issuance => serde_json::from_str(text).map(HookRequest::Issuance),
            Hook::Renewal => serde_json::from_str(text).map(HookRequest::Renewal),
            Hook::Distribution => serde_json::from_str(text).map(HookRequest::Distribution),
        };
        let request = parsed.map_err(|e| format!("invalid {hook} request: {e}"))?;
        request.check().map_err(|e| format!("invalid {hook} request: {e}"))?;
        Ok(request)
    }

    /// The hook this request is for.
    pub fn hook(&self) -> Hook {
        match self {
            HookRequest::Issuance(_) => Hook::Issuance,
            HookRequest::Renewal(_) => Hook::Renewal,
            HookRequest::Distribution(_) => Hook::Distribution,
        }
    }

    /// The tenant the decision is for.
    pub fn tenant(&self) -> &str {
        match self {
            HookRequest::Issuance(r) => &r.tenant,
            HookRequest::Renewal(r) => &r.tenant,
            HookRequest::Distribution(r) => &r.tenant,
        }
    }

    /// What the WIT promises a plugin beyond the types: `Err` names the field.
    pub fn check(&self) -> Result<(), String> {
        match self {
            HookRequest::Issuance(r) => r.check(),
            HookRequest::Renewal(r) => r.check(),
            HookRequest::Distribution(_) => Ok(()),
        }
    }
}

fn check_common(profile: &str, lifetime: u64) -> Result<(), String> {
    if profile.is_empty() {
        return Err("field `profile` is empty; it names the profile the certificate will use".to_owned());
    }
    if lifetime == 0 {
        return Err("field `requested-lifetime-seconds` is 0; it is the lifetime the certificate gets".to_owned());
    }
    Ok(())
}

impl IssuanceRequest {
    /// What the WIT promises beyond the types: profile and lifetime set; trigger
    /// `acme-order` (an account, no key), `acme-finalize` (an account and the CSR's
    /// key) or `provisioning` (the resource). `Err` names the field.
    pub fn check(&self) -> Result<(), String> {
        check_common(&self.profile, self.requested_lifetime_seconds)?;
        let trigger = self.trigger.as_str();
        let acme = matches!(self.trigger, Trigger::AcmeOrder | Trigger::AcmeFinalize);
        if matches!(self.trigger, Trigger::Renewal | Trigger::Rekey) {
            return Err(format!("field `trigger` is `{trigger}`; the host asks decide-renewal for that"));
        }
        if acme && self.account.is_none() {
            return Err(format!("field `account` is missing; trigger `{trigger}` comes from an ACME account"));
        }
        if self.trigger == Trigger::AcmeOrder && self.key.is_some() {
            return Err("field `key` is set for trigger `acme-order`, where the key is not known yet".to_owned());
        }
        if self.trigger == Trigger::AcmeFinalize && self.key.is_none() {
            return Err("field `key` is missing; trigger `acme-finalize` has the CSR's key".to_owned());
        }
        match (&self.resource, self.trigger) {
            (None, Trigger::Provisioning) => Err("field `resource` is missing; trigger `provisioning` names the resource".to_owned()),
            (Some(_), t) if t != Trigger::Provisioning => {
                Err(format!("field `resource` is set for trigger `{trigger}`; only `provisioning` has one"))
            }
            _ => Ok(()),
        }
    }
}

impl RenewalRequest {
    /// What the WIT promises beyond the types: profile and lifetime set; trigger
    /// `renewal` (with the certificate it succeeds) or `rekey`. `Err` names the field.
    pub fn check(&self) -> Result<(), String> {
        check_common(&self.profile, self.requested_lifetime_seconds)?;
        match self.trigger {
            Trigger::Renewal if self.certificate.is_none() => {
                Err("field `certificate` is missing; trigger `renewal` succeeds a certificate".to_owned())
            }
            Trigger::Renewal | Trigger::Rekey => Ok(()),
            t => Err(format!("field `trigger` is `{}`; a renewal is `renewal` or `rekey`", t.as_str())),
        }
    }
}

/// What an allow grants; see `record grant` in the WIT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Grant {
    pub identifiers: Vec<Identifier>,
    pub lifetime_seconds: u64,
    pub profile: Option<String>,
    pub authorize_by_control: Vec<Identifier>,
    pub rekey: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow(Grant),
    Deny(String),
}

impl Decision {
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }
    pub fn grant(&self) -> Option<&Grant> {
        match self {
            Decision::Allow(g) => Some(g),
            Decision::Deny(_) => None,
        }
    }
    pub fn deny_reason(&self) -> Option<&str> {
        match self {
            Decision::Allow(_) => None,
            Decision::Deny(r) => Some(r),
        }
    }
}

/// One plugin's decision, as written to the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub decision: Decision,
    /// Hex SHA-256 of the plugin's bytes.
    pub plugin_digest: String,
    #[serde(rename = "duration_us", with = "micros")]
    pub duration: Duration,
}

/// What `PolicyHost::check` reports of a component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginInfo {
    pub digest: String,
    /// Every import of the component, e.g. `tenure:policy/registry@0.2.0`.
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

mod micros {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_micros)
    }
}
