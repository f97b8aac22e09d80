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
use crate::error::{Error, ErrorKind, Result};
use crate::issuance;
use crate::model::now;
use crate::observe;
use crate::plugin_signing::{self, SigningKey, TenantKey};
use crate::policy::{
    self, Chained, Decision, DistributionRequest, HookRequest, IssuanceRequest, Plugin, PluginInfo, PolicyHost, RegistryView,
    RenewalRequest, Trigger,
};
use crate::registry::{Resource, ResourceState};
use crate::store::{InstallGuard, Storage};

/// The setting (shared by every server) that says whether tenant plugins
/// must be signed: `required` or `optional` (unset: optional).
const SIGNATURES_SETTING: &str = "tenant-plugin-signatures";

/// What the stored signature setting means: unset is optional, and a value
/// this version does not know counts as required (fail closed).
fn signatures_required(stored: Option<&[u8]>) -> bool {
    stored.is_some_and(|v| v != b"optional")
}

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

/// A plugin as loaded with the id of the key that signed it, or why it does not load.
type Loaded = std::result::Result<(Arc<Plugin>, Option<String>), String>;

/// A tenant's chain as loaded at one moment: its plugins in order, each with
/// the id of the tenant key that signed it (None: built-in, operator's, or
/// unsigned). The signers travel with the plugins, so the audit record of a
/// decision names the signers of exactly the bytes that decided, even if
/// the plugin is replaced meanwhile. Derefs to the plugins.
#[derive(Clone)]
pub(crate) struct PluginChain {
    plugins: Vec<Arc<Plugin>>,
    signers: Vec<Option<String>>,
}

impl PluginChain {
    fn push(&mut self, (plugin, signer): (Arc<Plugin>, Option<String>)) {
        self.plugins.push(plugin);
        self.signers.push(signer);
    }

    /// The signer beside each verdict (verdicts are one per plugin, in order).
    fn signers_of(&self, verdicts: &[policy::Verdict]) -> Vec<Option<String>> {
        (0..verdicts.len()).map(|i| self.signers.get(i).cloned().flatten()).collect()
    }
}

impl std::ops::Deref for PluginChain {
    type Target = [Arc<Plugin>];
    fn deref(&self) -> &[Arc<Plugin>] {
        &self.plugins
    }
}

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
    pub(crate) fn plugin_chain(&self, tenant: &str) -> Result<PluginChain> {
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
                    let plugin = host.load(bytes).map_err(|e| Error::internal(format!("built-in plugin: {e}")))?;
                    map.insert(key.to_string(), Ok((plugin, None)));
                }
                for (scope, _, _) in self.store.plugins()? {
                    // The bytes and their signer are read together: the signer
                    // recorded is the one verified for exactly these bytes.
                    if let Some((_, wasm, signed_by)) = self.store.signed_plugin_wasm(&scope)? {
                        // A stored plugin that no longer loads (built against an
                        // older contract, say) fails every decision of its scope,
                        // closed, never open; other tenants' chains are unaffected.
                        let plugin = host.load(&wasm).map_err(|e| format!("the installed plugin {scope} does not load: {e}"));
                        map.insert(scope, plugin.map(|p| (p, signed_by)));
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
        let mut chain = PluginChain { plugins: Vec::with_capacity(2), signers: Vec::with_capacity(2) };
        chain.push(loaded(first)?);
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
        chain: &PluginChain,
        tenant: &str,
        account: Option<&str>,
        req: &R,
        run: impl FnOnce(&PolicyHost, &[Arc<Plugin>], Arc<dyn RegistryView>) -> Chained,
    ) -> Result<Decided> {
        let started = Instant::now();
        let view: Arc<dyn RegistryView> = Arc::new(StoreView(self.store.clone()));
        let host = self.policy_host().inspect_err(|_| observe::undecided(hook))?;
        let Chained { decision, verdicts } = run(host, &chain.plugins, view);
        let outcome = if matches!(decision, Decision::Allow(_)) { "allow" } else { "deny" };
        observe::decided(hook, outcome, started.elapsed());
        let input = serde_json::to_value(req).unwrap_or_default();
        let signers = chain.signers_of(&verdicts);
        Ok(Decided { audit: audit_record(hook, tenant, account, &input, &decision, &verdicts, signers, started), decision })
    }

    /// The tenant's chain for a decision of `hook`; one that does not load
    /// counts as a decision that could not run.
    fn chain_for(&self, hook: &'static str, tenant: &str) -> Result<PluginChain> {
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
        chain: &PluginChain,
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
        let candidate = wasm.map(|w| host.load_candidate(w).map_err(|e| Error::malformed(e.to_string()))).transpose()?;
        let plugins = match (chain, candidate) {
            (false, Some(p)) => vec![p],
            (false, None) => return Err(Error::malformed("evaluate a plugin file, or the tenant's chain")),
            (true, candidate) => {
                let mut plugins = self.core.plugin_chain(tenant)?.plugins;
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

    /// Installs (replacing) the plugin of a scope, unsigned, after checking it
    /// loads. Returns its digest. Refused for a tenant's plugin while tenant
    /// plugin signatures are required (see [`Self::install_signed_plugin`]).
    pub fn install_plugin(&self, scope: PluginScope, wasm: &[u8]) -> Result<String> {
        Ok(self.install_signed_plugin(scope, wasm, None)?.digest)
    }

    /// Installs (replacing) the plugin of a scope after checking it loads and
    /// its detached signature, if given (over exactly `wasm`: Ed25519 raw, or
    /// ECDSA P-256 SHA-256 DER), verifies under one of the tenant's keys; that
    /// key is recorded as the plugin's signer in the install's transaction.
    ///
    /// - A signature that is given must verify, whatever the setting.
    /// - While [`Self::tenant_plugin_signatures_required`], a tenant's plugin
    ///   without one is refused.
    /// - The operator's plugin takes no signature: the operator is trusted and
    ///   has no tenant keys; one given is refused rather than ignored.
    ///
    /// Verification happens here, once: removing the key later leaves the
    /// plugin installed, still recorded as signed by it.
    pub fn install_signed_plugin(&self, scope: PluginScope, wasm: &[u8], signature: Option<&[u8]>) -> Result<InstalledPlugin> {
        let tenant = match &scope {
            PluginScope::Operator => {
                if signature.is_some() {
                    return Err(Error::malformed(
                        "the operator's plugin takes no signature: plugin signatures are verified under a tenant's keys, \
                         and only tenants' plugins are signed; install it without one",
                    ));
                }
                None
            }
            PluginScope::Tenant(t) => {
                crate::registry::removal::live_tenant(&*self.core.store, t)?;
                Some(t.as_str())
            }
        };
        if let Some(sig) = signature {
            plugin_signing::check_signature_size(sig)?;
        }
        let plugin = self.core.policy_host()?.load(wasm).map_err(|e| Error::malformed(e.to_string()))?;
        // Read once: the install commits only if it is still what it was.
        let setting = self.core.store.setting(SIGNATURES_SETTING)?;
        let required = signatures_required(setting.as_deref());
        let signed_by = match tenant {
            Some(t) => self.verified_signer(t, wasm, signature, required)?,
            None => None,
        };
        let signer = tenant.zip(signed_by.as_deref());
        let guard = InstallGuard { tenant, setting: tenant.map(|_| (SIGNATURES_SETTING, setting.as_deref())) };
        self.core.store.install_signed_plugin(&scope.key(), &plugin.digest, wasm, signer, &guard)?;
        Ok(InstalledPlugin { digest: plugin.digest.clone(), signed_by })
    }

    /// The id of the tenant's key under which `signature` verifies over
    /// `wasm`; None for no signature where none is required; an error naming
    /// what is missing otherwise.
    fn verified_signer(&self, tenant: &str, wasm: &[u8], signature: Option<&[u8]>, required: bool) -> Result<Option<String>> {
        if signature.is_none() && !required {
            return Ok(None);
        }
        let keys = self.signing_keys(tenant)?;
        let refuse = |why: String| Err(Error::new(ErrorKind::Unauthorized, why));
        let Some(signature) = signature else {
            return refuse(if keys.is_empty() {
                format!(
                    "tenant plugin signatures are required and tenant {tenant} has no plugin signing key registered: \
                     register one (tenure tenant key add {tenant} --public-key FILE) and install the plugin with its signature"
                )
            } else {
                format!(
                    "tenant plugin signatures are required: the plugin comes without a signature; sign it with one of \
                     tenant {tenant}'s keys ({}) and give the signature (`--signature FILE`; on the admin API, \
                     the Tenure-Plugin-Signature header)",
                    ids(&keys)
                )
            });
        };
        if keys.is_empty() {
            return refuse(format!(
                "the plugin is signed but tenant {tenant} has no plugin signing key registered to verify it with \
                 (tenure tenant key add {tenant} --public-key FILE)"
            ));
        }
        match plugin_signing::signer_among(&keys, wasm, signature) {
            Some(id) => Ok(Some(id)),
            None => refuse(format!(
                "the plugin's signature does not verify under any of tenant {tenant}'s keys ({}): \
                 signed with another key, over other bytes, or not an Ed25519 (raw) or ECDSA P-256 (SHA-256, DER) signature",
                ids(&keys)
            )),
        }
    }

    /// The tenant's keys, parsed. A stored key that no longer parses is an
    /// internal fault, never a key that verifies.
    fn signing_keys(&self, tenant: &str) -> Result<Vec<SigningKey>> {
        self.core
            .store
            .tenant_keys(tenant)?
            .into_iter()
            .map(|(id, der, _)| {
                SigningKey::from_spki_der(&der).map_err(|e| Error::internal(format!("stored key {id} of tenant {tenant}: {}", e.detail)))
            })
            .collect()
    }

    /// Registers a public key (PEM `PUBLIC KEY`: Ed25519 or ECDSA P-256, at
    /// most 16 KiB) to verify the tenant's plugin signatures with.
    pub fn add_tenant_key(&self, tenant: &str, pem: &str) -> Result<TenantKey> {
        crate::registry::removal::live_tenant(&*self.core.store, tenant)?;
        let key = SigningKey::from_pem(pem)?;
        let key_id = key.key_id();
        let created_at = self.core.store.insert_tenant_key(tenant, &key_id, &key.spki_der, plugin_signing::MAX_KEYS_PER_TENANT)?;
        Ok(TenantKey { tenant: tenant.to_string(), key_id, algorithm: key.algorithm, created_at, public_key_pem: key.to_pem() })
    }

    /// The tenant's plugin signing keys, oldest first.
    pub fn tenant_keys(&self, tenant: &str) -> Result<Vec<TenantKey>> {
        self.core.store.tenant(tenant)?.ok_or_else(|| Error::not_found(format!("no tenant {tenant:?}")))?;
        self.core
            .store
            .tenant_keys(tenant)?
            .into_iter()
            .map(|(key_id, der, created_at)| {
                let key = SigningKey::from_spki_der(&der)
                    .map_err(|e| Error::internal(format!("stored key {key_id} of tenant {tenant}: {}", e.detail)))?;
                Ok(TenantKey { tenant: tenant.to_string(), key_id, algorithm: key.algorithm, created_at, public_key_pem: key.to_pem() })
            })
            .collect()
    }

    /// Removes one of the tenant's keys; false if it has none of that id.
    /// Plugins it signed stay installed (and recorded as signed by it):
    /// signatures are verified at install.
    pub fn remove_tenant_key(&self, tenant: &str, key_id: &str) -> Result<bool> {
        self.core.store.tenant(tenant)?.ok_or_else(|| Error::not_found(format!("no tenant {tenant:?}")))?;
        self.core.store.delete_tenant_key(tenant, key_id)
    }

    /// Requires (or no longer requires) every tenant plugin installed from
    /// now on to be signed by one of its tenant's keys. Plugins installed
    /// already stay.
    pub fn set_tenant_plugin_signatures(&self, required: bool) -> Result<()> {
        self.core.store.set_setting(SIGNATURES_SETTING, if required { b"required" } else { b"optional" })
    }

    /// Whether tenant plugins must be signed (unset: no). A value this
    /// version does not know counts as required: fail closed.
    pub fn tenant_plugin_signatures_required(&self) -> Result<bool> {
        Ok(signatures_required(self.core.store.setting(SIGNATURES_SETTING)?.as_deref()))
    }

    pub fn remove_plugin(&self, scope: PluginScope) -> Result<bool> {
        self.core.store.remove_plugin(&scope.key())
    }

    /// (scope, digest, installed at) of every installed plugin.
    pub fn plugins(&self) -> Result<Vec<(String, String, i64)>> {
        self.core.store.plugins()
    }

    /// Every installed plugin with the key that signed it, by scope.
    pub fn installed_plugins(&self) -> Result<Vec<InstalledPluginListing>> {
        Ok(self
            .core
            .store
            .signed_plugins()?
            .into_iter()
            .map(|(scope, digest, installed_at, signed_by)| InstalledPluginListing { scope, digest, installed_at, signed_by })
            .collect())
    }
}

/// The key ids of `keys`, comma-separated, for refusals.
fn ids(keys: &[SigningKey]) -> String {
    keys.iter().map(SigningKey::key_id).collect::<Vec<_>>().join(", ")
}

/// An installed plugin as listed: scope, digest, when, and who signed it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InstalledPluginListing {
    /// `operator` or `tenant:<name>`.
    pub scope: String,
    /// SHA-256 of the component, hex.
    pub digest: String,
    /// Unix seconds.
    pub installed_at: i64,
    /// The id of the tenant key whose signature was verified at install; None if unsigned.
    pub signed_by: Option<String>,
}

/// A plugin as installed: its digest, and the id of the tenant key whose
/// signature was verified at install (None for an unsigned plugin).
#[derive(Debug, Clone, serde::Serialize)]
pub struct InstalledPlugin {
    /// SHA-256 of the component, hex.
    pub digest: String,
    /// The signing key's id, if the plugin was signed.
    pub signed_by: Option<String>,
}

#[allow(clippy::too_many_arguments)]
fn audit_record(
    hook: &str,
    tenant: &str,
    account: Option<&str>,
    input: &serde_json::Value,
    decision: &Decision,
    verdicts: &[policy::Verdict],
    signers: Vec<Option<String>>,
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
        signers,
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

    /// Tenant plugins are verified at install under either setting; the
    /// signer is listed, and every decision's audit record names it beside
    /// the digest, following reinstalls at once.
    #[test]
    fn tenant_plugin_signatures_are_verified_at_install_and_audited() {
        use crate::plugin_signing::tests::{ed25519, p256};
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path(), Config::default()).unwrap();
        let account = crate::ra::tenant_account_holding_corp_example(&e);
        let wasm = std::fs::read(built_plugin_path("control-or-challenge")).unwrap();
        let p = &e.policies;
        let corp = || PluginScope::Tenant("corp".into());
        let refused = |r: crate::Result<super::InstalledPlugin>| r.unwrap_err().detail;
        let (signer, other) = (ed25519(), p256());

        // Optional (the default): unsigned is accepted; a signature given must verify.
        assert!(!p.tenant_plugin_signatures_required().unwrap());
        assert_eq!(p.install_signed_plugin(corp(), &wasm, None).unwrap().signed_by, None);
        let signature = signer.sign(&wasm);
        assert!(refused(p.install_signed_plugin(corp(), &wasm, Some(&signature))).contains("no plugin signing key registered"));
        let key = p.add_tenant_key("corp", &signer.pem).unwrap();
        let other_key = p.add_tenant_key("corp", &other.pem).unwrap();
        let mut listed = p.tenant_keys("corp").unwrap();
        listed.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        let mut both = vec![key.clone(), other_key.clone()];
        both.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        assert_eq!(listed, both);
        assert!(p.add_tenant_key("nobody", &signer.pem).unwrap_err().detail.contains("no tenant"));
        let mut tampered = wasm.clone();
        // A custom section appended: the component still loads, the signature no longer verifies.
        tampered.extend_from_slice(&[0x00, 0x04, 0x03, b'a', b'b', b'c']);
        assert!(refused(p.install_signed_plugin(corp(), &tampered, Some(&signature))).contains("does not verify"));
        let mut forged = signature.clone();
        forged[0] ^= 1;
        assert!(refused(p.install_signed_plugin(corp(), &wasm, Some(&forged))).contains("does not verify under any of tenant corp's keys"));
        assert!(refused(p.install_signed_plugin(corp(), &wasm, Some(&[0; 4096]))).contains("at most"));
        // Either algorithm: the key that verifies is the signer.
        assert_eq!(p.install_signed_plugin(corp(), &wasm, Some(&other.sign(&wasm))).unwrap().signed_by, Some(other_key.key_id.clone()));
        assert_eq!(p.install_signed_plugin(corp(), &wasm, Some(&signature)).unwrap().signed_by, Some(key.key_id.clone()));

        // Required: unsigned tenant plugins are refused, through either method.
        p.set_tenant_plugin_signatures(true).unwrap();
        assert!(p.tenant_plugin_signatures_required().unwrap());
        assert!(refused(p.install_signed_plugin(corp(), &wasm, None)).contains("comes without a signature"));
        assert!(p.install_plugin(corp(), &wasm).unwrap_err().detail.contains("comes without a signature"));
        // The operator's plugin takes none, and is not asked for one.
        assert!(refused(p.install_signed_plugin(PluginScope::Operator, &wasm, Some(&signature))).contains("takes no signature"));
        p.install_plugin(PluginScope::Operator, &wasm).unwrap();

        // A decision names the signer beside each digest.
        let order = || NewOrder { identifiers: vec![Identifier::dns("www.corp.example")], profile: None, replaces: None };
        e.ra.new_order(&account, order()).unwrap();
        let last = e.registry.audit(Some("corp"), 1).unwrap().pop().unwrap();
        assert_eq!(last.plugins.len(), 2);
        assert_eq!(last.signers, vec![None, Some(key.key_id.clone())]);
        let listed = p.installed_plugins().unwrap();
        assert_eq!(listed.iter().map(|l| l.signed_by.clone()).collect::<Vec<_>>(), vec![None, Some(key.key_id.clone())]);

        // Removing the key leaves the plugin installed, signed by it.
        assert!(p.remove_tenant_key("corp", &key.key_id).unwrap());
        assert!(!p.remove_tenant_key("corp", &key.key_id).unwrap());
        e.ra.new_order(&account, order()).unwrap();
        assert_eq!(e.registry.audit(Some("corp"), 1).unwrap()[0].signers, vec![None, Some(key.key_id.clone())]);
        // The removed key verifies nothing any more.
        assert!(refused(p.install_signed_plugin(corp(), &wasm, Some(&signature))).contains("does not verify"));
        p.remove_tenant_key("corp", &other_key.key_id).unwrap();
        assert!(refused(p.install_signed_plugin(corp(), &wasm, None)).contains("has no plugin signing key registered"));

        // The same bytes reinstalled unsigned: the next decision says so (no stale signer).
        p.set_tenant_plugin_signatures(false).unwrap();
        p.install_plugin(corp(), &wasm).unwrap();
        e.ra.new_order(&account, order()).unwrap();
        assert_eq!(e.registry.audit(Some("corp"), 1).unwrap()[0].signers, vec![None, None]);
    }
}
