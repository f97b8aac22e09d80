//! Policies: the plugins installed per scope (the [`Policies`] service), which
//! of them decide for a tenant (the chain), the registry as plugins see it,
//! and the audit record of each decision. `policy` is the wasmtime host;
//! this is where the engine meets it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use ring::digest::{SHA256, digest};

use crate::PUBLIC_TENANT;
use crate::audit::AuditRecord;
use crate::core::Core;
use crate::error::{Error, Result};
use crate::issuance;
use crate::model::now;
use crate::observe;
use crate::policy::{
    self, Chained, Decision, DistributionRequest, HookRequest, IssuanceRequest, Plugin, PluginInfo, PolicyHost, RegistryView,
    RenewalRequest, Trigger,
};
use crate::registry::{Resource, ResourceState};
use crate::store::Storage;

/// Keys of the built-in defaults among the loaded plugins (no installed scope
/// looks like these: installed ones are `operator` or `tenant:<name>`).
const BUILTIN_PUBLIC: &str = "builtin:public-challenge";
const BUILTIN_TENANT: &str = "builtin:control-or-challenge";

/// The scope of an installed plugin: every tenant, or one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginScope {
    Operator,
    Tenant(String),
}

impl PluginScope {
    pub fn key(&self) -> String {
        match self {
            PluginScope::Operator => "operator".into(),
            PluginScope::Tenant(t) => format!("tenant:{t}"),
        }
    }
}

/// Installed plugins: install, remove, list, check, evaluate. Installs and
/// removals bump the store's plugin generation, which every server checks
/// before each decision, so they take effect at once everywhere.
#[derive(Clone)]
pub struct Policies {
    pub(crate) core: Arc<Core>,
}

/// Loaded plugins, reloaded whenever the store's plugin generation moves
/// (an install by the CLI or the admin API), so changes take effect at once.
/// In-flight decisions keep the `Arc`s they started with.
pub(crate) struct LoadedPlugins {
    host: OnceLock<std::result::Result<PolicyHost, String>>,
    /// (store generation, plugins by scope key).
    loaded: Mutex<(i64, Arc<HashMap<String, Loaded>>)>,
    cache_dir: std::path::PathBuf,
    limits: policy::Limits,
}

/// A plugin as loaded, or why it does not load.
type Loaded = std::result::Result<Arc<Plugin>, String>;

impl LoadedPlugins {
    pub(crate) fn new(cache_dir: std::path::PathBuf, limits: policy::Limits) -> Self {
        LoadedPlugins { host: OnceLock::new(), loaded: Mutex::new((-1, Arc::new(HashMap::new()))), cache_dir, limits }
    }
}

/// The registry as a plugin sees it: the store, scoped to the calling tenant.
struct StoreView(Arc<dyn Storage>);

fn to_policy(r: Resource) -> policy::Resource {
    policy::Resource {
        id: r.id,
        tenant: r.tenant,
        kind: r.kind,
        names: r.names,
        zones: r.zones,
        addresses: r.addresses,
        state: match r.state {
            ResourceState::Active => policy::ResourceState::Active,
            ResourceState::Suspended => policy::ResourceState::Suspended,
            ResourceState::Released => policy::ResourceState::Released,
        },
        attributes: r.attributes.into_iter().collect(),
        anchor: r.anchor,
    }
}

impl RegistryView for StoreView {
    // A store error reaches the plugin as an error, never as "nobody holds it".
    fn resource_by_name(&self, tenant: &str, name: &str) -> std::result::Result<Option<policy::Resource>, String> {
        Ok(self.0.resources_holding_name(Some(tenant), name).map_err(|e| e.to_string())?.into_iter().next().map(to_policy))
    }
    fn resource_by_address(&self, tenant: &str, addr: &str) -> std::result::Result<Option<policy::Resource>, String> {
        Ok(self.0.resources_holding_address(Some(tenant), addr).map_err(|e| e.to_string())?.into_iter().next().map(to_policy))
    }
    fn resource_by_id(&self, tenant: &str, id: &str) -> std::result::Result<Option<policy::Resource>, String> {
        Ok(self.0.resource(id).map_err(|e| e.to_string())?.filter(|r| r.tenant == tenant).map(to_policy))
    }
    fn resources(&self, tenant: &str) -> std::result::Result<Vec<policy::Resource>, String> {
        Ok(self.0.resources(Some(tenant)).map_err(|e| e.to_string())?.into_iter().map(to_policy).collect())
    }
    fn tenant(&self, tenant: &str) -> std::result::Result<Option<policy::TenantInfo>, String> {
        Ok(self.0.tenant(tenant).map_err(|e| e.to_string())?.map(|t| policy::TenantInfo { name: t.name, permits: t.permits }))
    }
}

/// A chain's outcome with its audit record, ready to be stored with the state change.
pub(crate) struct Decided {
    pub decision: Decision,
    pub audit: AuditRecord,
}

impl Decided {
    /// A host rule denies whatever the plugins said; the audit record keeps
    /// the plugins' digests and says why the host overruled them.
    pub(crate) fn overrule(&mut self, reason: String) {
        let reason = match &self.decision {
            Decision::Allow(_) => format!("{reason} (the plugins allowed it; the host refuses)"),
            Decision::Deny(theirs) => format!("{reason}; the plugins also denied: {theirs}"),
        };
        self.decision = Decision::Deny(reason.clone());
        self.audit.outcome = "deny".into();
        self.audit.reason = Some(reason);
        self.audit.grant = None;
    }
}

impl Core {
    pub(crate) fn policy_host(&self) -> Result<&PolicyHost> {
        self.plugins
            .host
            .get_or_init(|| {
                let _ = std::fs::create_dir_all(&self.plugins.cache_dir);
                PolicyHost::new(self.plugins.limits.clone(), Some(self.plugins.cache_dir.clone())).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| Error::internal(format!("policy host: {e}")))
    }

    /// The plugins that decide for `tenant`, in chain order: the operator's
    /// plugin (or the built-in default), then the tenant's own, if any.
    pub(crate) fn plugin_chain(&self, tenant: &str) -> Result<Vec<Arc<Plugin>>> {
        let host = self.policy_host()?;
        let generation = self.store.plugin_generation()?;
        let installed = {
            let mut loaded = self.plugins.loaded.lock().map_err(|_| Error::internal("plugin lock poisoned"))?;
            if loaded.0 != generation {
                let mut map = HashMap::new();
                // The built-in defaults are loaded here too, so a decision never
                // re-hashes their bytes to find them.
                for (key, bytes) in
                    [(BUILTIN_PUBLIC, policy::builtin::PUBLIC_CHALLENGE), (BUILTIN_TENANT, policy::builtin::CONTROL_OR_CHALLENGE)]
                {
                    map.insert(key.to_string(), Ok(host.load(bytes).map_err(|e| Error::internal(format!("built-in plugin: {e}")))?));
                }
                for (scope, _, _) in self.store.plugins()? {
                    if let Some((_, wasm)) = self.store.plugin_wasm(&scope)? {
                        // A stored plugin that no longer loads (built against an
                        // older contract, say) fails every decision of its scope,
                        // closed, never open; other tenants' chains are unaffected.
                        let plugin = host.load(&wasm).map_err(|e| format!("the installed plugin {scope} does not load: {e}"));
                        map.insert(scope, plugin);
                    }
                }
                *loaded = (generation, Arc::new(map));
            }
            loaded.1.clone()
        };
        let default = if tenant == PUBLIC_TENANT { BUILTIN_PUBLIC } else { BUILTIN_TENANT };
        let loaded = |p: &Loaded| p.clone().map_err(Error::internal);
        let first = installed
            .get(&PluginScope::Operator.key())
            .or_else(|| installed.get(default))
            .ok_or_else(|| Error::internal("built-in plugin missing"))?;
        let mut chain = vec![loaded(first)?];
        if let Some(p) = installed.get(&PluginScope::Tenant(tenant.to_string()).key()) {
            chain.push(loaded(p)?);
        }
        Ok(chain)
    }

    /// Runs one hook through a chain and makes its audit record: the one shape
    /// of every decision. Never fails open: a fault anywhere is a denial.
    fn decide_by<R: serde::Serialize>(
        &self,
        hook: &'static str,
        chain: &[Arc<Plugin>],
        tenant: &str,
        account: Option<&str>,
        req: &R,
        run: impl FnOnce(&PolicyHost, &[Arc<Plugin>], Arc<dyn RegistryView>) -> Chained,
    ) -> Result<Decided> {
        let started = Instant::now();
        let view: Arc<dyn RegistryView> = Arc::new(StoreView(self.store.clone()));
        let host = self.policy_host().inspect_err(|_| observe::undecided(hook))?;
        let Chained { decision, verdicts } = run(host, chain, view);
        let outcome = if matches!(decision, Decision::Allow(_)) { "allow" } else { "deny" };
        observe::decided(hook, outcome, started.elapsed());
        let input = serde_json::to_value(req).unwrap_or_default();
        Ok(Decided { audit: audit_record(hook, tenant, account, &input, &decision, &verdicts, started), decision })
    }

    /// The tenant's chain for a decision of `hook`; one that does not load
    /// counts as a decision that could not run.
    fn chain_for(&self, hook: &'static str, tenant: &str) -> Result<Vec<Arc<Plugin>>> {
        self.plugin_chain(tenant).inspect_err(|_| observe::undecided(hook))
    }

    /// Runs decide-issuance through the tenant's chain.
    pub(crate) fn decide_issuance(&self, tenant: &str, account: Option<&str>, req: &IssuanceRequest) -> Result<Decided> {
        self.decide_by("issuance", &self.chain_for("issuance", tenant)?, tenant, account, req, |host, chain, view| {
            host.chain_issuance(chain, view, tenant, req)
        })
    }

    /// Runs decide-renewal through `chain` (the tenant's, looked up once per
    /// sweep batch), for a certificate tenure is about to reissue on its own.
    pub(crate) fn decide_renewal_by(
        &self,
        chain: &[Arc<Plugin>],
        tenant: &str,
        account: Option<&str>,
        req: &policy::RenewalRequest,
    ) -> Result<Decided> {
        self.decide_by("renewal", chain, tenant, account, req, |host, chain, view| host.chain_renewal(chain, view, tenant, req))
    }

    /// Runs decide-distribution through the tenant's chain (the audit record is
    /// the caller's to store, with the copy it allows or alone if denied).
    pub(crate) fn decide_distribution(&self, tenant: &str, req: &DistributionRequest) -> Result<Decided> {
        self.decide_by("distribution", &self.chain_for("distribution", tenant)?, tenant, None, req, |host, chain, view| {
            host.chain_distribution(chain, view, tenant, req)
        })
    }

    /// Readiness: (plugins loaded, why each that does not load fails). The
    /// installed plugins are loaded again first if the store's generation
    /// moved; an error when the policy host, a built-in or the operator's
    /// plugin (every tenant's chain) does not load.
    pub(crate) fn plugin_faults(&self) -> Result<(usize, Vec<String>)> {
        self.plugin_chain(PUBLIC_TENANT)?;
        let installed = self.plugins.loaded.lock().map_err(|_| Error::internal("plugin lock poisoned"))?.1.clone();
        let mut faults: Vec<String> = installed.values().filter_map(|p| p.as_ref().err().cloned()).collect();
        faults.sort();
        Ok((installed.len() - faults.len(), faults))
    }

    /// The digests of the tenant's chain, comma-separated: what a certificate
    /// records as the policy that allowed it, so ARI can tell when it changed.
    pub(crate) fn policy_fingerprint(&self, tenant: &str) -> Result<String> {
        Ok(self.plugin_chain(tenant)?.iter().map(|p| p.digest.as_str()).collect::<Vec<_>>().join(","))
    }
}

impl Policies {
    /// Checks a plugin against the world without installing it.
    pub fn check_plugin(&self, wasm: &[u8]) -> Result<PluginInfo> {
        self.core.policy_host()?.check(wasm).map_err(|e| Error::malformed(e.to_string()))
    }

    /// Runs one decision against the live registry, as the server would make
    /// it now, without storing anything: `wasm` alone, or (with `chain`) the
    /// tenant's whole chain — with `wasm`, if given, in place of the tenant's
    /// own plugin, to try a plugin before installing it.
    pub fn eval(&self, wasm: Option<&[u8]>, chain: bool, request: &HookRequest) -> Result<Chained> {
        let tenant = request.tenant();
        self.core.store.tenant(tenant)?.ok_or_else(|| Error::not_found(format!("no tenant {tenant:?}")))?;
        let host = self.core.policy_host()?;
        let candidate = wasm.map(|w| host.load(w).map_err(|e| Error::malformed(e.to_string()))).transpose()?;
        let plugins = match (chain, candidate) {
            (false, Some(p)) => vec![p],
            (false, None) => return Err(Error::malformed("evaluate a plugin file, or the tenant's chain")),
            (true, candidate) => {
                let mut plugins = self.core.plugin_chain(tenant)?;
                let own = self.core.store.plugin_wasm(&PluginScope::Tenant(tenant.to_string()).key())?.is_some();
                match candidate {
                    Some(p) if own => *plugins.last_mut().ok_or_else(|| Error::internal("empty chain"))? = p,
                    Some(p) => plugins.push(p),
                    None => {}
                }
                plugins
            }
        };
        let view: Arc<dyn RegistryView> = Arc::new(StoreView(self.core.store.clone()));
        Ok(host.chain(&plugins, view, tenant, request))
    }

    /// The renewal request the sweep would make now for a certificate.
    pub fn renewal_request_for_certificate(&self, serial: &str) -> Result<RenewalRequest> {
        let core = &self.core;
        let (cert, life) = core.store.certificate_record(serial)?.ok_or_else(|| Error::not_found(format!("no certificate {serial}")))?;
        let tenant = core.tenant_of(&cert.tenant)?;
        let ask = issuance::Ask {
            tenant: &tenant,
            account: cert.account_id.as_deref(),
            trigger: if life.trigger == crate::model::Trigger::Rekey { Trigger::Rekey } else { Trigger::Renewal },
            identifiers: &cert.identifiers,
            profile: &life.profile,
            lifetime: core.config.profile_lifetime(&life.profile)?,
        };
        Ok(issuance::renewal_request(&ask, &issuance::Renewing { current: Some(&cert), resources: &life.resources }))
    }

    /// The renewal request a rekey of a resource's key in its HSM would make
    /// now (its names and addresses; its current certificate, if any).
    pub fn renewal_request_for_resource(&self, resource_id: &str) -> Result<RenewalRequest> {
        let core = &self.core;
        let r = core.store.resource(resource_id)?.ok_or_else(|| Error::not_found(format!("no resource {resource_id}")))?;
        let current = core.store.certificate_records(None, Some(resource_id), 1)?.into_iter().next();
        if let Some((cert, _)) = current.filter(|(c, _)| c.revoked_at.is_none()) {
            return self.renewal_request_for_certificate(&cert.serial);
        }
        let tenant = core.tenant_of(&r.tenant)?;
        let identifiers = crate::hsm::rekey_identifiers(&r)?;
        let profile = core.config.default_profile.clone();
        let ask = issuance::Ask {
            tenant: &tenant,
            account: None,
            trigger: Trigger::Rekey,
            identifiers: &identifiers,
            profile: &profile,
            lifetime: core.config.profile_lifetime(&profile)?,
        };
        Ok(issuance::renewal_request(&ask, &issuance::Renewing { current: None, resources: &[r.id] }))
    }

    /// Installs (replacing) the plugin of a scope after checking it loads. Returns its digest.
    pub fn install_plugin(&self, scope: PluginScope, wasm: &[u8]) -> Result<String> {
        if let PluginScope::Tenant(t) = &scope {
            self.core.store.tenant(t)?.ok_or_else(|| Error::not_found(format!("no tenant {t:?}")))?;
        }
        let plugin = self.core.policy_host()?.load(wasm).map_err(|e| Error::malformed(e.to_string()))?;
        self.core.store.install_plugin(&scope.key(), &plugin.digest, wasm)?;
        Ok(plugin.digest.clone())
    }

    pub fn remove_plugin(&self, scope: PluginScope) -> Result<bool> {
        self.core.store.remove_plugin(&scope.key())
    }

    /// (scope, digest, installed at) of every installed plugin.
    pub fn plugins(&self) -> Result<Vec<(String, String, i64)>> {
        self.core.store.plugins()
    }
}

fn audit_record(
    hook: &str,
    tenant: &str,
    account: Option<&str>,
    input: &serde_json::Value,
    decision: &Decision,
    verdicts: &[policy::Verdict],
    started: Instant,
) -> AuditRecord {
    let input_text = input.to_string();
    let input_digest: String = hex::encode(digest(&SHA256, input_text.as_bytes()));
    let (outcome, reason, grant) = match decision {
        Decision::Allow(g) => ("allow", None, serde_json::to_value(g).ok()),
        Decision::Deny(r) => ("deny", Some(r.clone()), None),
    };
    AuditRecord {
        seq: 0,
        at: now(),
        hook: hook.into(),
        tenant: tenant.into(),
        account: account.map(str::to_string),
        plugins: verdicts.iter().map(|v| v.plugin_digest.clone()).collect(),
        input_digest,
        input: input.clone(),
        outcome: outcome.into(),
        reason,
        grant,
        duration_us: started.elapsed().as_micros() as i64,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use crate::policy::builtin::built_plugin_path;
    use crate::ra::NewOrder;
    use crate::{Config, Engine, Identifier};

    use super::PluginScope;

    /// Plugins are replaced while decisions run: every decision completes
    /// with one plugin or the other (in-flight ones keep the plugins they
    /// started with), none fails.
    #[test]
    fn plugins_are_replaced_while_decisions_run() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path(), Config::default()).unwrap();
        let account = crate::ra::tenant_account_holding_corp_example(&e);
        let registry_control = std::fs::read(built_plugin_path("registry-control")).unwrap();
        let control_or_challenge = std::fs::read(built_plugin_path("control-or-challenge")).unwrap();
        let (done, decided) = (AtomicBool::new(false), AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    while !done.load(Ordering::Relaxed) || decided.load(Ordering::Relaxed) < 50 {
                        let order = NewOrder { identifiers: vec![Identifier::dns("www.corp.example")], profile: None, replaces: None };
                        e.ra.new_order(&account, order).expect("every decision completes and allows");
                        decided.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            for i in 0..20 {
                let wasm = if i % 2 == 0 { &registry_control } else { &control_or_challenge };
                e.policies.install_plugin(PluginScope::Operator, wasm).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            e.policies.remove_plugin(PluginScope::Operator).unwrap();
            done.store(true, Ordering::Relaxed);
        });
        let digests: std::collections::HashSet<String> =
            e.registry.audit(Some("corp"), 10_000).unwrap().into_iter().flat_map(|r| r.plugins).collect();
        assert!(digests.len() >= 2, "decisions ran under more than one plugin: {digests:?}");
    }
}
