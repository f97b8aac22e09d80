//! The per-decision state of a `Store`, the host functions the plugin may call
//! (registry, log, clock), and the conversions between the wasmtime bindings of
//! `wit/` and the plain types of `types.rs`.

use std::sync::Arc;

use wasmtime::ResourceLimiter;

use super::RegistryView;
use super::types as t;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "tenure:policy/policy",
});

use tenure::policy::types as w;

/// Log lines kept per decision, and the bytes kept of each: a plugin cannot flood the log.
const MAX_LOG_LINES: u32 = 32;
const MAX_LOG_BYTES: usize = 1024;

/// Registry calls per decision. The deadline counts only the plugin's own time,
/// so this is what bounds a plugin that does nothing but call the registry.
pub(super) const MAX_REGISTRY_CALLS: u32 = 1000;

pub(super) struct HostState {
    pub tenant: String,
    pub registry: Arc<dyn RegistryView>,
    /// First 8 hex digits of the plugin's digest, for log lines.
    pub digest8: Arc<str>,
    pub limiter: MemoryLimiter,
    pub log_lines: u32,
    /// The last error-level line the plugin logged (the SDK logs its panic message
    /// there just before trapping), to explain a trap.
    pub last_error: Option<String>,
    /// When the decision began, and how long it has spent in registry calls: the
    /// deadline is the plugin's own time, so a registry lookup that waits on the
    /// database (a checkpoint, a busy writer) does not make the plugin time out.
    pub started: std::time::Instant,
    pub host_time: std::time::Duration,
    pub registry_calls: u32,
}

/// Caps linear memory below the pool's hard limit, and remembers that it did, so a
/// trap that follows can be reported as the memory cap rather than a bare trap.
pub(super) struct MemoryLimiter {
    pub memory_bytes: usize,
    pub hit: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        // Tables hold function references; nothing a policy needs many of.
        Ok(desired <= 65536)
    }
}

impl HostState {
    /// The registry view is trusted to scope by tenant; this checks it anyway, so a
    /// bug there cannot show a plugin another tenant's resource.
    fn scoped(&self, r: Option<t::Resource>) -> Option<w::Resource> {
        r.filter(|r| r.tenant == self.tenant).map(Into::into)
    }
}

impl w::Host for HostState {}

impl HostState {
    /// Runs a registry query, counting its time as the host's, not the plugin's.
    /// Past the call cap it answers an error at once, and the decision is denied.
    fn timed<R>(&mut self, f: impl FnOnce(&mut Self) -> Result<R, String>) -> Result<R, String> {
        self.registry_calls = self.registry_calls.saturating_add(1);
        if self.registry_calls > MAX_REGISTRY_CALLS {
            return Err(format!("more than {MAX_REGISTRY_CALLS} registry calls in one decision"));
        }
        let t = std::time::Instant::now();
        let r = f(self);
        self.host_time += t.elapsed();
        r.map_err(|e| format!("registry unavailable: {e}"))
    }
}

impl tenure::policy::registry::Host for HostState {
    fn holder(&mut self, id: w::Identifier) -> Result<Option<w::Holding>, String> {
        self.timed(|s| s.holder_now(id))
    }

    fn resource_by_name(&mut self, name: String) -> Result<Option<w::Resource>, String> {
        self.timed(|s| {
            let r = s.registry.resource_by_name(&s.tenant, &name)?;
            Ok(s.scoped(r))
        })
    }

    fn resource_by_address(&mut self, address: String) -> Result<Option<w::Resource>, String> {
        self.timed(|s| {
            let r = s.registry.resource_by_address(&s.tenant, &address)?;
            Ok(s.scoped(r))
        })
    }

    fn resource_by_id(&mut self, id: String) -> Result<Option<w::Resource>, String> {
        self.timed(|s| {
            let r = s.registry.resource_by_id(&s.tenant, &id)?;
            Ok(s.scoped(r))
        })
    }

    fn resources(&mut self) -> Result<Vec<w::Resource>, String> {
        self.timed(|s| Ok(s.registry.resources(&s.tenant)?.into_iter().filter(|r| r.tenant == s.tenant).map(Into::into).collect()))
    }

    fn tenant(&mut self) -> Result<w::Tenant, String> {
        let tenant = self.tenant.clone();
        self.timed(|s| match s.registry.tenant(&s.tenant)? {
            Some(info) if info.name == s.tenant => Ok(info.into()),
            // The decision's tenant is not in the registry: no permits to show, and
            // an empty list would read as "permits nothing".
            _ => Err(format!("no tenant {tenant:?} in the registry")),
        })
    }
}

impl HostState {
    fn holder_now(&mut self, id: w::Identifier) -> Result<Option<w::Holding>, String> {
        let id = t::Identifier { kind: kind_out(id.kind), value: id.value };
        let h = self.registry.holder(&self.tenant, &id)?.filter(|h| h.tenant == self.tenant);
        Ok(h.map(|h| w::Holding { resource_id: h.resource_id, state: state_out(h.state), lifetime_seconds: h.lifetime_seconds }))
    }
}

impl tenure::policy::log::Host for HostState {
    fn log(&mut self, level: tenure::policy::log::Level, message: String) {
        use tenure::policy::log::Level;
        let mut message = message;
        if message.len() > MAX_LOG_BYTES {
            let mut cut = MAX_LOG_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        if matches!(level, Level::Error) {
            self.last_error = Some(message.clone());
        }
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES {
            return;
        }
        let (plugin, tenant) = (&*self.digest8, &self.tenant);
        match level {
            Level::Debug => tracing::debug!(plugin, tenant, "{message}"),
            Level::Info => tracing::info!(plugin, tenant, "{message}"),
            Level::Warn => tracing::warn!(plugin, tenant, "{message}"),
            Level::Error => tracing::error!(plugin, tenant, "{message}"),
        }
    }
}

impl tenure::policy::clock::Host for HostState {
    fn now(&mut self) -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
    }
}

// ---- conversions: moves, no copies of the strings ----

fn kind_in(k: t::IdentifierKind) -> w::IdentifierKind {
    match k {
        t::IdentifierKind::Dns => w::IdentifierKind::Dns,
        t::IdentifierKind::Ip => w::IdentifierKind::Ip,
    }
}

fn kind_out(k: w::IdentifierKind) -> t::IdentifierKind {
    match k {
        w::IdentifierKind::Dns => t::IdentifierKind::Dns,
        w::IdentifierKind::Ip => t::IdentifierKind::Ip,
    }
}

fn ids_in(ids: &[t::Identifier]) -> Vec<w::Identifier> {
    ids.iter().map(|i| w::Identifier { kind: kind_in(i.kind), value: i.value.clone() }).collect()
}

fn ids_out(ids: Vec<w::Identifier>) -> Vec<t::Identifier> {
    ids.into_iter().map(|i| t::Identifier { kind: kind_out(i.kind), value: i.value }).collect()
}

fn state_out(s: t::ResourceState) -> w::ResourceState {
    match s {
        t::ResourceState::Active => w::ResourceState::Active,
        t::ResourceState::Suspended => w::ResourceState::Suspended,
        t::ResourceState::Released => w::ResourceState::Released,
    }
}

impl From<t::Resource> for w::Resource {
    fn from(r: t::Resource) -> Self {
        w::Resource {
            id: r.id,
            tenant: r.tenant,
            kind: r.kind,
            names: r.names,
            zones: r.zones,
            addresses: r.addresses,
            state: state_out(r.state),
            attributes: r.attributes,
            anchor: r.anchor,
        }
    }
}

impl From<t::TenantInfo> for w::Tenant {
    fn from(t: t::TenantInfo) -> Self {
        w::Tenant { name: t.name, permits: t.permits }
    }
}

fn trigger_in(t: t::Trigger) -> w::Trigger {
    match t {
        t::Trigger::AcmeOrder => w::Trigger::AcmeOrder,
        t::Trigger::AcmeFinalize => w::Trigger::AcmeFinalize,
        t::Trigger::Renewal => w::Trigger::Renewal,
        t::Trigger::Rekey => w::Trigger::Rekey,
        t::Trigger::Provisioning => w::Trigger::Provisioning,
    }
}

fn key_in(k: &t::KeyInfo) -> w::KeyInfo {
    w::KeyInfo {
        key_type: match k.key_type {
            t::KeyType::EcdsaP256 => w::KeyType::EcdsaP256,
            t::KeyType::EcdsaP384 => w::KeyType::EcdsaP384,
            t::KeyType::Rsa => w::KeyType::Rsa,
            t::KeyType::Ed25519 => w::KeyType::Ed25519,
            t::KeyType::Unknown => w::KeyType::Unknown,
        },
        bits: k.bits,
    }
}

pub(super) fn issuance_in(r: &t::IssuanceRequest) -> w::IssuanceRequest {
    w::IssuanceRequest {
        tenant: r.tenant.clone(),
        account: r.account.clone(),
        trigger: trigger_in(r.trigger),
        identifiers: ids_in(&r.identifiers),
        key: r.key.as_ref().map(key_in),
        profile: r.profile.clone(),
        requested_lifetime_seconds: r.requested_lifetime_seconds,
        resource: r.resource.clone(),
    }
}

pub(super) fn renewal_in(r: &t::RenewalRequest) -> w::RenewalRequest {
    w::RenewalRequest {
        tenant: r.tenant.clone(),
        trigger: trigger_in(r.trigger),
        identifiers: ids_in(&r.identifiers),
        resources: r.resources.clone(),
        profile: r.profile.clone(),
        requested_lifetime_seconds: r.requested_lifetime_seconds,
        certificate: r.certificate.as_ref().map(|c| w::CertificateInfo {
            serial: c.serial.clone(),
            identifiers: ids_in(&c.identifiers),
            not_before: c.not_before,
            not_after: c.not_after,
            resources: c.resources.clone(),
        }),
    }
}

pub(super) fn distribution_in(r: &t::DistributionRequest) -> w::DistributionRequest {
    w::DistributionRequest {
        tenant: r.tenant.clone(),
        key_id: r.key_id.clone(),
        source_hsm: r.source_hsm.clone(),
        target_hsm: r.target_hsm.clone(),
    }
}

pub(super) fn decision_out(d: w::Decision) -> t::Decision {
    match d {
        w::Decision::Allow(g) => t::Decision::Allow(t::Grant {
            identifiers: ids_out(g.identifiers),
            lifetime_seconds: g.lifetime_seconds,
            profile: g.profile,
            authorize_by_control: ids_out(g.authorize_by_control),
            rekey: g.rekey,
        }),
        w::Decision::Deny(reason) => t::Decision::Deny(reason),
    }
}
