//! Plain Rust mirrors of the WIT records (`wit/policy.wit`), with serde for audit logs
//! and `plugin eval --input REQUEST.json`. The wasmtime bindings stay private; these are
//! what the rest of the engine sees.

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

/// What made the host ask (interim: the WIT 0.2.0 work replaces this file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    AcmeOrder,
    AcmeFinalize,
    Renewal,
    Rekey,
    Provisioning,
}

/// The certificate key, once known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub key_type: KeyType,
    pub bits: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuanceRequest {
    pub tenant: String,
    pub account: Option<String>,
    pub trigger: Trigger,
    pub identifiers: Vec<Identifier>,
    pub key: Option<KeyInfo>,
    pub profile: String,
    pub requested_lifetime_seconds: u64,
    pub resource: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateInfo {
    pub serial: String,
    pub identifiers: Vec<Identifier>,
    pub not_before: u64,
    pub not_after: u64,
    /// Ids of the registry resources the certificate is bound to.
    #[serde(default)]
    pub resources: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewalRequest {
    pub tenant: String,
    pub trigger: Trigger,
    pub identifiers: Vec<Identifier>,
    pub resources: Vec<String>,
    pub profile: String,
    pub requested_lifetime_seconds: u64,
    pub certificate: Option<CertificateInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistributionRequest {
    pub tenant: String,
    pub key_id: String,
    pub source_hsm: String,
    pub target_hsm: String,
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
    /// Every import of the component, e.g. `tenure:policy/registry@0.1.0`.
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
