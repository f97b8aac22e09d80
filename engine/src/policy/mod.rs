//! Policy plugins: the wasmtime host that loads, limits and calls them.
//!
//! A plugin is a WebAssembly component built against `wit/` (world
//! `tenure:policy/policy`). It is identified by the SHA-256 of its bytes, compiled once
//! (and cached on disk), checked to import nothing but the world's interfaces, and
//! pre-instantiated. Every decision then instantiates it afresh, from the template, in
//! a slot of wasmtime's pooling allocator, in a new `Store` with a memory cap, an epoch
//! deadline (wall clock) and optionally a fuel budget. Whatever goes wrong — a trap, the
//! deadline, fuel, memory, a malformed or oversized answer — is a denial that says
//! why; nothing a plugin does can make the host panic or allow.

mod cache;
mod chain;
mod host_state;
mod types;

pub mod builtin;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, ComponentExportIndex, HasSelf, Instance, Linker, TypedFunc};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};

pub use chain::chain;
pub use types::{
    CertificateInfo, Decision, DistributionRequest, Grant, Holding, Hook, HookRequest, Identifier, IdentifierKind, IssuanceRequest,
    KeyInfo, KeyType, PluginInfo, RenewalRequest, Resource, ResourceState, TenantInfo, Trigger, Verdict,
};

use cache::DiskCache;
use chain::{Asked, validate};
use host_state::tenure::policy::types as w;
use host_state::{HostState, MemoryLimiter, Policy, PolicyPre};

/// The WIT package plugins are built against; imports must come from its interfaces.
pub const WIT_PACKAGE: &str = "tenure:policy";
/// The version of `wit/` this host speaks.
pub const WIT_VERSION: &str = "0.2.0";
/// Imports of the `0.2` track are accepted (semver: any 0.2.x is compatible).
const WIT_VERSION_PREFIX: &str = "0.2.";
const ALLOWED_INTERFACES: &[&str] = &["types", "registry", "log", "clock"];

/// What one decision may use.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Fuel (≈ wasm instructions) per decision; 0 turns fuel metering off and leaves
    /// the deadline alone to stop a runaway plugin.
    pub fuel: u64,
    /// Cap on a plugin's linear memory.
    pub memory_bytes: usize,
    /// Wall-clock budget of a decision, enforced by epoch interruption.
    pub deadline: Duration,
    /// Cap on an answer: a deny reason, or the identifiers of a grant.
    pub max_answer_bytes: usize,
    /// Decisions that may run at once (pool slots); one more waits for none and denies.
    pub max_instances: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { fuel: 0, memory_bytes: 16 << 20, deadline: Duration::from_millis(100), max_answer_bytes: 64 << 10, max_instances: 256 }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum PolicyError {
    /// The host itself failed (engine configuration, cache directory, ticker thread).
    #[error("policy engine: {0}")]
    Engine(String),
    /// The bytes are not a WebAssembly component wasmtime can compile.
    #[error("plugin {digest8} is not a valid component: {detail}")]
    Invalid { digest8: String, detail: String },
    /// The component imports something outside the `policy` world (WASI, …).
    #[error("plugin {digest8} imports what a policy may not use: {}", forbidden.join(", "))]
    ForbiddenImports { digest8: String, forbidden: Vec<String>, imports: Vec<String> },
    /// The component does not export the world's functions with the world's types.
    #[error("plugin {digest8} does not implement the tenure:policy/policy world: {detail}")]
    NotAPolicy { digest8: String, detail: String },
    /// The component was built against another version of `wit/` (`built`, e.g.
    /// "0.1.0"); the message says how to rebuild it.
    #[error(
        "plugin {digest8} was built against {WIT_PACKAGE}@{built}; this server speaks {WIT_PACKAGE}@{WIT_VERSION}: {}",
        rebuild_hint(built)
    )]
    WrongVersion { digest8: String, built: String },
}

/// How to get a component of the version this host speaks.
fn rebuild_hint(built: &str) -> String {
    let older = built.split('.').map(|n| n.parse::<u64>().unwrap_or(0)).collect::<Vec<_>>()
        < WIT_VERSION.split('.').map(|n| n.parse::<u64>().unwrap_or(0)).collect::<Vec<_>>();
    if older {
        format!(
            "update the plugin's tenure-policy-sdk dependency (or its copy of wit/) to the {WIT_VERSION} of this server's \
             plugins/sdk, adapt the code to the new requests (plugins/README.md), and rebuild with \
             `cargo build --release --target wasm32-wasip2`"
        )
    } else {
        format!(
            "upgrade this server, or build the plugin against this server's wit/ ({WIT_VERSION}) with \
             `cargo build --release --target wasm32-wasip2`"
        )
    }
}

impl From<PolicyError> for crate::Error {
    fn from(e: PolicyError) -> Self {
        match e {
            PolicyError::Engine(_) => crate::Error::internal(e),
            _ => crate::Error::malformed(e.to_string()),
        }
    }
}

/// The registry as plugins see it. Implemented by the engine's store; every answer must
/// be scoped to `tenant` (the host double-checks `Resource::tenant`).
///
/// `Err` is a registry that could not answer (the store failed): the plugin gets it as
/// an error, never as "nobody holds it", so a policy cannot mistake an outage for a
/// released resource.
pub trait RegistryView: Send + Sync + 'static {
    /// The tenant's resource with this exact name, or one holding a zone the name is under.
    fn resource_by_name(&self, tenant: &str, name: &str) -> Result<Option<Resource>, String>;
    /// The tenant's resource with this address.
    fn resource_by_address(&self, tenant: &str, addr: &str) -> Result<Option<Resource>, String>;
    /// The tenant's resource with this id.
    fn resource_by_id(&self, tenant: &str, id: &str) -> Result<Option<Resource>, String>;
    /// Every resource of the tenant.
    fn resources(&self, tenant: &str) -> Result<Vec<Resource>, String>;
    /// The tenant itself; `None` if the registry has no such tenant.
    fn tenant(&self, tenant: &str) -> Result<Option<TenantInfo>, String>;
    /// Who holds an identifier, in brief. The default looks the whole resource
    /// up; a view that can answer more cheaply (no names, zones, attributes to
    /// copy) should.
    fn holder(&self, tenant: &str, id: &Identifier) -> Result<Option<Holding>, String> {
        Ok(match id.kind {
            IdentifierKind::Dns => self.resource_by_name(tenant, &id.value)?,
            IdentifierKind::Ip => self.resource_by_address(tenant, &id.value)?,
        }
        .map(|r| r.holding()))
    }
}

/// A loaded plugin: compiled, checked, and pre-instantiated.
pub struct Plugin {
    /// Hex SHA-256 of the component's bytes: the plugin's identity.
    pub digest: String,
    pub info: PluginInfo,
    /// Whether the compiled code came from the disk cache rather than the compiler.
    pub from_disk_cache: bool,
    pre: PolicyPre<HostState>,
    exports: Exports,
    digest8: Arc<str>,
}

/// The world's three exports, found once at load.
struct Exports {
    issuance: ComponentExportIndex,
    renewal: ComponentExportIndex,
    distribution: ComponentExportIndex,
}

impl Plugin {
    /// The first 8 hex digits of the digest, as reasons and log lines cite it.
    pub fn short_digest(&self) -> &str {
        &self.digest8
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("digest", &self.digest).finish_non_exhaustive()
    }
}

/// The verdicts of a chain of plugins, and what they add up to.
#[derive(Debug, Clone)]
pub struct Chained {
    pub decision: Decision,
    pub verdicts: Vec<Verdict>,
}

/// Counters, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostStats {
    pub compiled: u64,
    pub disk_cache_hits: u64,
}

/// Advances the engine's epoch: the wall clock of every running decision.
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

pub struct PolicyHost {
    engine: Engine,
    linker: Linker<HostState>,
    limits: Limits,
    tick: Duration,
    cache: Option<DiskCache>,
    /// Loaded plugins by digest, so the same bytes compile once per host.
    loaded: Mutex<HashMap<String, Weak<Plugin>>>,
    compiled: AtomicU64,
    disk_hits: AtomicU64,
    _ticker: Ticker,
}

fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut s = String::with_capacity(64);
    for b in d.as_ref() {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn export(store: &mut Store<HostState>, instance: &Instance, index: &ComponentExportIndex) -> wasmtime::Result<wasmtime::component::Func> {
    instance.get_func(&mut *store, index).ok_or_else(|| wasmtime::format_err!("the export is not a function"))
}

/// The registry of a load-time check: no tenant, nothing held.
struct NoRegistry;

impl RegistryView for NoRegistry {
    fn resource_by_name(&self, _: &str, _: &str) -> Result<Option<Resource>, String> {
        Ok(None)
    }
    fn resource_by_address(&self, _: &str, _: &str) -> Result<Option<Resource>, String> {
        Ok(None)
    }
    fn resource_by_id(&self, _: &str, _: &str) -> Result<Option<Resource>, String> {
        Ok(None)
    }
    fn resources(&self, _: &str) -> Result<Vec<Resource>, String> {
        Ok(Vec::new())
    }
    fn tenant(&self, _: &str) -> Result<Option<TenantInfo>, String> {
        Ok(None)
    }
}

/// An import of one of the world's interfaces: (interface, version).
fn policy_import(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(WIT_PACKAGE)?.strip_prefix('/')?;
    let (iface, version) = rest.split_once('@').unwrap_or((rest, ""));
    ALLOWED_INTERFACES.contains(&iface).then_some((iface, version))
}

fn allowed_import(name: &str) -> bool {
    policy_import(name).is_some_and(|(_, version)| version.starts_with(WIT_VERSION_PREFIX))
}

/// The version of the world's interfaces a component imports, when it is not ours.
fn foreign_version(imports: &[String]) -> Option<String> {
    imports
        .iter()
        .filter_map(|n| policy_import(n))
        .map(|(_, v)| v)
        .find(|v| !v.starts_with(WIT_VERSION_PREFIX))
        .map(|v| if v.is_empty() { "(unversioned)".to_owned() } else { v.to_owned() })
}

impl PolicyHost {
    /// One engine for every plugin; `cache_dir` keeps compiled plugins across restarts.
    pub fn new(limits: Limits, cache_dir: Option<PathBuf>) -> Result<Self, PolicyError> {
        let engine_err = |e: wasmtime::Error| PolicyError::Engine(e.to_string());
        let page = 64 << 10;
        let memory_cap = limits.memory_bytes.max(page).div_ceil(page) * page;
        let instances = limits.max_instances.max(1);

        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(instances)
            // A policy component is one core module (plus canonical-ABI shims).
            .total_core_instances(instances.saturating_mul(4))
            .total_memories(instances)
            .total_tables(instances)
            .max_memories_per_module(1)
            .max_memory_size(memory_cap)
            // Reset a returned slot by rewriting the pages it dirtied (found by
            // PAGEMAP_SCAN where the kernel has it) instead of unmapping them: the next
            // decision then takes no page faults on them.
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(64 << 10)
            .pagemap_scan(wasmtime::Enabled::Auto);

        let mut config = Config::new();
        config
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .epoch_interruption(true)
            .consume_fuel(limits.fuel > 0)
            // Traps are explained from their code, not a backtrace.
            .wasm_backtrace_max_frames(None);
        let engine = Engine::new(&config).map_err(engine_err)?;

        let mut linker = Linker::new(&engine);
        Policy::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s).map_err(engine_err)?;

        let cache = match cache_dir {
            Some(dir) => Some(DiskCache::open(&dir, &engine).map_err(PolicyError::Engine)?),
            None => None,
        };

        // Deadline granularity: a tenth of the deadline, between 1 and 10 ms.
        let tick = (limits.deadline / 10).clamp(Duration::from_millis(1), Duration::from_millis(10));
        let stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("policy-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::park_timeout(tick);
                    match weak.upgrade() {
                        Some(e) => e.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| PolicyError::Engine(format!("cannot start the epoch ticker: {e}")))?;

        Ok(PolicyHost {
            engine,
            linker,
            limits,
            tick,
            cache,
            loaded: Mutex::new(HashMap::new()),
            compiled: AtomicU64::new(0),
            disk_hits: AtomicU64::new(0),
            _ticker: Ticker { stop, thread: Some(thread) },
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn stats(&self) -> HostStats {
        HostStats { compiled: self.compiled.load(Ordering::Relaxed), disk_cache_hits: self.disk_hits.load(Ordering::Relaxed) }
    }

    /// Compiles (or finds in the disk cache) and inspects a component; with
    /// `persist`, keeps the compiled artefact in the disk cache.
    fn component(&self, digest: &str, bytes: &[u8], persist: bool) -> Result<(Component, PluginInfo, bool), PolicyError> {
        let digest8 = digest[..8].to_owned();
        let cached = self.cache.as_ref().and_then(|c| c.get(&self.engine, digest));
        let from_cache = cached.is_some();
        let component = match cached {
            Some(c) => {
                self.disk_hits.fetch_add(1, Ordering::Relaxed);
                c
            }
            None => {
                // A core module (the preamble's layer field is 0; a component's is 1)
                // is a common mistake: say what it is, not what the parser tripped on.
                if bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [0, 0] {
                    return Err(PolicyError::Invalid {
                        digest8,
                        detail: "this is a core WebAssembly module, not a component: build the plugin for \
                                 wasm32-wasip2 (`cargo build --release --target wasm32-wasip2`), which makes a component"
                            .into(),
                    });
                }
                let c = Component::new(&self.engine, bytes)
                    .map_err(|e| PolicyError::Invalid { digest8: digest8.clone(), detail: format!("{e:#}") })?;
                self.compiled.fetch_add(1, Ordering::Relaxed);
                c
            }
        };
        let ty = component.component_type();
        let imports: Vec<String> = ty.imports(&self.engine).map(|(n, _)| n.to_owned()).collect();
        let exports: Vec<String> = ty.exports(&self.engine).map(|(n, _)| n.to_owned()).collect();
        // A plugin of another contract version is told so, and how to rebuild, before
        // anything else: its imports would otherwise read as merely "forbidden".
        if let Some(built) = foreign_version(&imports) {
            return Err(PolicyError::WrongVersion { digest8, built });
        }
        let forbidden: Vec<String> = imports.iter().filter(|n| !allowed_import(n)).cloned().collect();
        if !forbidden.is_empty() {
            return Err(PolicyError::ForbiddenImports { digest8, forbidden, imports });
        }
        // Cache only what passed the import check: the cache never holds a refused plugin.
        if let (false, true, Some(cache)) = (from_cache, persist, &self.cache) {
            cache.put(digest, &component);
        }
        Ok((component, PluginInfo { digest: digest.to_owned(), imports, exports }, from_cache))
    }

    /// Reports a component's digest, imports and exports; refuses what `load`
    /// refuses. Nothing is written to the disk cache: a check is not an
    /// install, and a tenant's token may check any bytes it likes.
    pub fn check(&self, bytes: &[u8]) -> Result<PluginInfo, PolicyError> {
        let digest = sha256_hex(bytes);
        let (component, info, _) = self.component(&digest, bytes, false)?;
        self.prepare(&digest, &component)?;
        Ok(info)
    }

    /// Links the component and checks its exports' types, once: a decision then calls
    /// them unchecked.
    fn prepare(&self, digest: &str, component: &Component) -> Result<(PolicyPre<HostState>, Exports), PolicyError> {
        let not_policy = |e: wasmtime::Error| PolicyError::NotAPolicy { digest8: digest[..8].to_owned(), detail: format!("{e:#}") };
        let pre = self.linker.instantiate_pre(component).map_err(not_policy)?;
        let pre = PolicyPre::new(pre).map_err(not_policy)?;
        let index = |name: &str| {
            component
                .get_export_index(None, name)
                .ok_or_else(|| PolicyError::NotAPolicy { digest8: digest[..8].to_owned(), detail: format!("no export {name}") })
        };
        let exports =
            Exports { issuance: index("decide-issuance")?, renewal: index("decide-renewal")?, distribution: index("decide-distribution")? };
        // The bindings' own instantiation type-checks all three exports against the
        // world. It runs no export, but may run a start function: under the limits.
        let mut store = self.store(Arc::new(NoRegistry), "", Arc::from(&digest[..8]));
        if let Err(e) = pre.instantiate(&mut store) {
            let why = self.explain(&store, true, &e);
            return Err(PolicyError::NotAPolicy { digest8: digest[..8].to_owned(), detail: why });
        }
        Ok((pre, exports))
    }

    /// A fresh store with this host's limits.
    fn store(&self, registry: Arc<dyn RegistryView>, tenant: &str, digest8: Arc<str>) -> Store<HostState> {
        let state = HostState {
            tenant: tenant.to_owned(),
            registry,
            digest8,
            limiter: MemoryLimiter { memory_bytes: self.limits.memory_bytes, hit: false },
            log_lines: 0,
            last_error: None,
            started: Instant::now(),
            host_time: Duration::ZERO,
            registry_calls: 0,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        if self.limits.fuel > 0 {
            // Fails only when fuel is not enabled in the config, and it is.
            let _ = store.set_fuel(self.limits.fuel);
        }
        // +1: the current epoch may end at once.
        let ticks = self.limits.deadline.as_nanos().div_ceil(self.tick.as_nanos().max(1)) as u64 + 1;
        store.set_epoch_deadline(ticks);
        // At the deadline, count only the plugin's own time: registry calls may
        // have waited on the database.
        let (deadline, tick) = (self.limits.deadline, self.tick);
        store.epoch_deadline_callback(move |ctx| {
            let state = ctx.data();
            let own = state.started.elapsed().saturating_sub(state.host_time);
            // (A plugin that only calls the registry is bounded by the call cap.)
            if own >= deadline {
                return Ok(wasmtime::UpdateDeadline::Interrupt);
            }
            let left = (deadline - own).as_nanos().div_ceil(tick.as_nanos().max(1)) as u64;
            Ok(wasmtime::UpdateDeadline::Continue(left.max(1)))
        });
        store
    }

    /// Loads a plugin: once per distinct bytes (by SHA-256), from the disk cache when it
    /// has them. Refuses a component importing anything outside the `policy` world, or
    /// not exporting its three functions.
    pub fn load(&self, bytes: &[u8]) -> Result<Arc<Plugin>, PolicyError> {
        self.load_as(bytes, true)
    }

    /// [`PolicyHost::load`] for a candidate that is evaluated, not installed:
    /// compiled without writing the disk cache.
    pub fn load_candidate(&self, bytes: &[u8]) -> Result<Arc<Plugin>, PolicyError> {
        self.load_as(bytes, false)
    }

    fn load_as(&self, bytes: &[u8], persist: bool) -> Result<Arc<Plugin>, PolicyError> {
        let digest = sha256_hex(bytes);
        if let Some(p) = self.loaded_plugin(&digest) {
            return Ok(p);
        }
        let (component, info, from_disk_cache) = self.component(&digest, bytes, persist)?;
        let (pre, exports) = self.prepare(&digest, &component)?;
        let plugin = Arc::new(Plugin { digest8: digest[..8].into(), digest: digest.clone(), info, from_disk_cache, pre, exports });
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        loaded.retain(|_, w| w.strong_count() > 0);
        loaded.insert(digest, Arc::downgrade(&plugin));
        Ok(plugin)
    }

    fn loaded_plugin(&self, digest: &str) -> Option<Arc<Plugin>> {
        let loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        loaded.get(digest).and_then(Weak::upgrade)
    }

    /// Asks one plugin's `decide-issuance`. Never fails: a fault is a denial.
    pub fn decide_issuance(&self, plugin: &Plugin, registry: Arc<dyn RegistryView>, tenant: &str, req: &IssuanceRequest) -> Verdict {
        let asked = Asked::Names(&req.identifiers, req.requested_lifetime_seconds);
        self.decide_with(plugin, registry, tenant, &req.tenant, req.check(), asked, |store, instance| {
            let f = export(store, instance, &plugin.exports.issuance)?;
            // SAFETY: `prepare` type-checked this export of this component.
            let f = unsafe { TypedFunc::<(&w::IssuanceRequest,), (w::Decision,)>::new_unchecked(f) };
            Ok(f.call(store, (&host_state::issuance_in(req),))?.0)
        })
    }

    /// Asks one plugin's `decide-renewal`. Never fails: a fault is a denial.
    pub fn decide_renewal(&self, plugin: &Plugin, registry: Arc<dyn RegistryView>, tenant: &str, req: &RenewalRequest) -> Verdict {
        let asked = Asked::Names(&req.identifiers, req.requested_lifetime_seconds);
        self.decide_with(plugin, registry, tenant, &req.tenant, req.check(), asked, |store, instance| {
            let f = export(store, instance, &plugin.exports.renewal)?;
            // SAFETY: `prepare` type-checked this export of this component.
            let f = unsafe { TypedFunc::<(&w::RenewalRequest,), (w::Decision,)>::new_unchecked(f) };
            Ok(f.call(store, (&host_state::renewal_in(req),))?.0)
        })
    }

    /// Asks one plugin's `decide-distribution`. Never fails: a fault is a denial.
    pub fn decide_distribution(
        &self,
        plugin: &Plugin,
        registry: Arc<dyn RegistryView>,
        tenant: &str,
        req: &DistributionRequest,
    ) -> Verdict {
        self.decide_with(plugin, registry, tenant, &req.tenant, Ok(()), Asked::Distribution, |store, instance| {
            let f = export(store, instance, &plugin.exports.distribution)?;
            // SAFETY: `prepare` type-checked this export of this component.
            let f = unsafe { TypedFunc::<(&w::DistributionRequest,), (w::Decision,)>::new_unchecked(f) };
            Ok(f.call(store, (&host_state::distribution_in(req),))?.0)
        })
    }

    /// Asks one plugin the hook `req` is for.
    pub fn decide(&self, plugin: &Plugin, registry: Arc<dyn RegistryView>, tenant: &str, req: &HookRequest) -> Verdict {
        match req {
            HookRequest::Issuance(r) => self.decide_issuance(plugin, registry, tenant, r),
            HookRequest::Renewal(r) => self.decide_renewal(plugin, registry, tenant, r),
            HookRequest::Distribution(r) => self.decide_distribution(plugin, registry, tenant, r),
        }
    }

    /// Runs every plugin of the chain (in order) on the hook `req` is for, and chains
    /// their verdicts.
    pub fn chain(&self, plugins: &[Arc<Plugin>], registry: Arc<dyn RegistryView>, tenant: &str, req: &HookRequest) -> Chained {
        chained(plugins, |p| self.decide(p, Arc::clone(&registry), tenant, req))
    }

    /// Runs every plugin of the chain (in order) and chains their verdicts.
    pub fn chain_issuance(&self, plugins: &[Arc<Plugin>], registry: Arc<dyn RegistryView>, tenant: &str, req: &IssuanceRequest) -> Chained {
        chained(plugins, |p| self.decide_issuance(p, Arc::clone(&registry), tenant, req))
    }

    /// As `chain_issuance`, for `decide-renewal`.
    pub fn chain_renewal(&self, plugins: &[Arc<Plugin>], registry: Arc<dyn RegistryView>, tenant: &str, req: &RenewalRequest) -> Chained {
        chained(plugins, |p| self.decide_renewal(p, Arc::clone(&registry), tenant, req))
    }

    /// As `chain_issuance`, for `decide-distribution`.
    pub fn chain_distribution(
        &self,
        plugins: &[Arc<Plugin>],
        registry: Arc<dyn RegistryView>,
        tenant: &str,
        req: &DistributionRequest,
    ) -> Chained {
        chained(plugins, |p| self.decide_distribution(p, Arc::clone(&registry), tenant, req))
    }

    #[allow(clippy::too_many_arguments)]
    fn decide_with(
        &self,
        plugin: &Plugin,
        registry: Arc<dyn RegistryView>,
        tenant: &str,
        req_tenant: &str,
        well_formed: Result<(), String>,
        asked: Asked<'_>,
        call: impl FnOnce(&mut Store<HostState>, &Instance) -> wasmtime::Result<w::Decision>,
    ) -> Verdict {
        let started = Instant::now();
        let outcome = if tenant != req_tenant {
            // A caller bug, but the registry is scoped by `tenant`: fail closed.
            Err(format!("request for tenant {req_tenant:?} decided for tenant {tenant:?}"))
        } else if let Err(e) = well_formed {
            // A caller bug too: the plugin would be asked something the WIT rules out.
            Err(format!("the host built an invalid request, not asked: {e}"))
        } else {
            self.run(plugin, registry, tenant, call).and_then(|d| validate(d, asked, self.limits.max_answer_bytes))
        };
        let decision = match outcome {
            Ok(Decision::Deny(reason)) => Decision::Deny(format!("plugin {}: {reason}", plugin.digest8)),
            Ok(allow) => allow,
            Err(why) => Decision::Deny(format!("plugin {}: {why}", plugin.digest8)),
        };
        Verdict { decision, plugin_digest: plugin.digest.clone(), duration: started.elapsed() }
    }

    /// One fresh instance, one call. `Err` is why the plugin gave no usable answer.
    fn run(
        &self,
        plugin: &Plugin,
        registry: Arc<dyn RegistryView>,
        tenant: &str,
        call: impl FnOnce(&mut Store<HostState>, &Instance) -> wasmtime::Result<w::Decision>,
    ) -> Result<Decision, String> {
        let mut store = self.store(registry, tenant, Arc::clone(&plugin.digest8));
        // Straight from the InstancePre: the bindings' `instantiate` would type-check
        // every export again, on every decision.
        let result = plugin
            .pre
            .instance_pre()
            .instantiate(&mut store)
            .map_err(|e| (true, e))
            .and_then(|instance| call(&mut store, &instance).map_err(|e| (false, e)));
        let calls = store.data().registry_calls;
        if calls > host_state::MAX_REGISTRY_CALLS {
            return Err(format!("made {calls} registry calls; at most {} are allowed", host_state::MAX_REGISTRY_CALLS));
        }
        match result {
            Ok(d) => Ok(host_state::decision_out(d)),
            Err((instantiating, e)) => Err(self.explain(&store, instantiating, &e)),
        }
    }

    fn explain(&self, store: &Store<HostState>, instantiating: bool, e: &wasmtime::Error) -> String {
        let state = store.data();
        let said = state.last_error.as_deref().map(|m| format!(" ({m})")).unwrap_or_default();
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => format!(
                "exceeded its deadline of {:?} (wall time {:?}, of which {:?} in registry calls)",
                self.limits.deadline,
                state.started.elapsed(),
                state.host_time
            ),
            Some(Trap::OutOfFuel) => format!("ran out of fuel ({} units)", self.limits.fuel),
            Some(_) if state.limiter.hit => format!("exceeded its memory limit of {} bytes{said}", self.limits.memory_bytes),
            Some(Trap::StackOverflow) => "overflowed its stack".to_owned(),
            Some(trap) => format!("trapped: {trap}{said}"),
            None if instantiating => format!("could not be instantiated: {e:#}"),
            None => format!("gave a malformed answer: {e:#}"),
        }
    }
}

/// Every plugin's verdict, in chain order, and the chained decision.
fn chained(plugins: &[Arc<Plugin>], decide: impl Fn(&Plugin) -> Verdict) -> Chained {
    let verdicts: Vec<Verdict> = plugins.iter().map(|p| decide(p)).collect();
    Chained { decision: chain(&verdicts), verdicts }
}
