//! The HSM pool: tokens the operator contributes, allocated exclusively to a
//! tenant (a registry resource of kind `hsm`), released by zeroizing; and the
//! keys tenure generates in them for a resource (rekey in place).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;

use super::session::{self, Exportability, ObjectInfo, Token};
use super::{Custody, DistributionAttempt};
use super::{HsmKey, HsmSlot, KEY_ATTRIBUTE, KeyState, RESOURCE_KIND, SlotState, so_pin_context, user_pin_context};
use crate::error::{Conflict, Error, ErrorKind, Result};
use crate::identifier::Identifier;
use crate::issuance::{self, Ask, Provenance, Renewing, Verdict};
use crate::model::{Trigger, now};
use crate::policy::Trigger as PolicyTrigger;
use crate::registry::{NewResource, Registry, Resource, ResourceState};
use crate::store::Claim;
use crate::{MAX_CERT_LIFETIME, PUBLIC_TENANT};

/// What `tenure hsm keys` shows: tenure's records and the token's public objects.
#[derive(Debug, Clone, Serialize)]
pub struct HsmKeyInfo {
    pub slot: HsmSlot,
    pub keys: Vec<HsmKey>,
    /// Public objects (public keys, certificates) as the token lists them
    /// without a login: the operator never logs in as the tenant's user.
    pub objects: Vec<ObjectInfo>,
    /// Each key's generation (its certificate's: 1 for a resource's first
    /// key, one more for each rekey), by key id.
    pub generations: std::collections::BTreeMap<String, i64>,
}

/// A rekey's result: the new key and certificate, and the key it replaces.
#[derive(Debug, Clone, Serialize)]
pub struct RekeyOutcome {
    pub key: HsmKey,
    /// The new certificate's serial (`tenure cert show`).
    pub serial: String,
    #[serde(skip)]
    pub certificate_der: Vec<u8>,
    pub replaced: Option<String>,
    /// When the replaced key is destroyed (`retire_expired_hsm_keys`).
    pub replaced_retires_at: Option<i64>,
}

/// A resource's next key in its tenant's HSM, as far as it is known before the decision.
struct KeyToMake {
    resource: Resource,
    slot: HsmSlot,
    token: Arc<Token>,
    pin: String,
    identifiers: Vec<Identifier>,
    tenant: crate::model::Tenant,
    previous: Option<HsmKey>,
    current: Option<crate::model::Certificate>,
    /// The new certificate's generation (the current one's plus one).
    generation: i64,
    profile: String,
    lifetime: Duration,
    binding: issuance::Binding,
}

impl KeyToMake {
    fn ask(&self, trigger: PolicyTrigger) -> Ask<'_> {
        Ask {
            tenant: &self.tenant,
            account: None,
            trigger,
            identifiers: &self.identifiers,
            profile: &self.profile,
            lifetime: self.lifetime,
        }
    }
}

/// A token just allocated to a tenant (`hsm_allocate`).
#[derive(Clone)]
pub struct HsmAllocation {
    pub slot: HsmSlot,
    /// The user PIN: shown this once, never again.
    pub user_pin: String,
    /// The keys of the tenant's other tokens its policy decided on, copied or refused.
    pub distribution: Vec<DistributionAttempt>,
    /// Why no key was offered to it at all, if so (tenant-only; a failure to run).
    pub distribution_skipped: Option<String>,
}

/// The attributes of an `hsm` resource that tenure sets itself.
const RESERVED_ATTRIBUTES: &[&str] = &["hsm-slot", "token"];

const USER_PIN_LEN: usize = 20;

fn random_pin() -> Result<String> {
    // Digits and letters without look-alikes: the tenant types it once.
    const ALPHABET: &[u8] = b"23456789abcdefghjkmnpqrstuvwxyzABCDEFGHJKMNPQRSTUVWXYZ";
    let mut raw = [0u8; USER_PIN_LEN];
    SystemRandom::new().fill(&mut raw).map_err(|_| Error::internal("no randomness"))?;
    // 256 % 54 != 0: the slight bias is irrelevant at 20 characters (> 110 bits).
    Ok(raw.iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect())
}

pub(super) fn random_cka_id() -> Result<Vec<u8>> {
    let mut id = vec![0u8; 16];
    SystemRandom::new().fill(&mut id).map_err(|_| Error::internal("no randomness"))?;
    Ok(id)
}

impl Custody {
    fn registry(&self) -> Registry {
        Registry { core: self.core.clone() }
    }

    /// Puts an initialized token in the pool. Its SO PIN is checked and kept
    /// sealed; tenure will re-initialize the token whenever it allocates it.
    pub fn hsm_pool_add(&self, module: &Path, token_label: &str, so_pin: &str) -> Result<HsmSlot> {
        let token = Token::open(module, token_label)?;
        token.check_so_pin(so_pin)?;
        let id = format!("hsm_{}", self.core.random_id(9));
        let sealed = self.core.ca_keys.kek().seal(so_pin.as_bytes(), &so_pin_context(&id))?;
        let module = std::path::absolute(module).unwrap_or_else(|_| module.to_path_buf());
        self.core.store.insert_hsm_slot(&id, &module.to_string_lossy(), token_label, &sealed)
    }

    pub fn hsm_slots(&self) -> Result<Vec<HsmSlot>> {
        self.core.store.hsm_slots()
    }

    /// A slot by its id (`hsm_…`) or by the id of its registry resource (`res_…`).
    pub fn hsm_slot(&self, id: &str) -> Result<HsmSlot> {
        if let Some(s) = self.core.store.hsm_slot(id)? {
            return Ok(s);
        }
        self.core.store.hsm_slot_by_resource(id)?.ok_or_else(|| Error::not_found(format!("no HSM slot or hsm resource {id}")))
    }

    /// Allocates a free token to `tenant` exclusively: re-initializes it (every
    /// object destroyed), sets a fresh user PIN, registers it as the tenant's
    /// resource of kind `hsm` with `attributes` (beside tenure's own `hsm-slot`
    /// and `token`), and returns the PIN — the only time it is shown. With
    /// `tenant_only`, tenure keeps no copy of the PIN at all (no rekey or
    /// distribution by tenure for this token). A failure leaves the slot free.
    ///
    /// Then, for a handed-over token, the keys the tenant's policy says it
    /// should also hold are copied into it (`distribute_to_holder`); what was
    /// copied or refused is in the result. A distribution failure never undoes
    /// the allocation (the PIN must still be shown): it is logged and said in
    /// `distribution_skipped`.
    pub fn hsm_allocate(&self, tenant: &str, tenant_only: bool, attributes: BTreeMap<String, String>) -> Result<HsmAllocation> {
        if tenant == PUBLIC_TENANT {
            return Err(Error::malformed("the public tenant holds no resources; allocate to a tenant"));
        }
        if let Some(k) = attributes.keys().find(|k| RESERVED_ATTRIBUTES.contains(&k.as_str())) {
            return Err(Error::malformed(format!("attribute {k:?} of an hsm resource is tenure's own")));
        }
        crate::registry::removal::live_tenant(&*self.core.store, tenant)?;
        let slot = self
            .core
            .store
            .claim_free_hsm_slot(tenant)?
            .ok_or_else(|| Error::conflict(Conflict::PoolExhausted, "the HSM pool has no free token; add one to the pool first"))?;
        let outcome = self.allocate_claimed(&slot, tenant, tenant_only, attributes);
        if outcome.is_err() {
            self.core.store.abort_hsm_allocation(&slot.id)?;
        }
        let (slot, user_pin) = outcome?;
        let (distribution, distribution_skipped) = if tenant_only {
            (Vec::new(), Some("tenant-only: tenure holds no credential for this token, so it distributes no key to it".to_string()))
        } else {
            match self.distribute_to_holder(&slot.id) {
                Ok(attempts) => (attempts, None),
                Err(e) => {
                    tracing::warn!(slot = %slot.id, error = %e, "allocated, but no key was distributed to it");
                    (Vec::new(), Some(format!("distribution did not run: {e}")))
                }
            }
        };
        Ok(HsmAllocation { slot, user_pin, distribution, distribution_skipped })
    }

    fn allocate_claimed(
        &self,
        slot: &HsmSlot,
        tenant: &str,
        tenant_only: bool,
        mut attributes: BTreeMap<String, String>,
    ) -> Result<(HsmSlot, String)> {
        let so_pin = self.slot_so_pin(slot)?;
        let user_pin = random_pin()?;
        Token::open(Path::new(&slot.module), &slot.token_label)?.reinitialize(&so_pin, Some(&user_pin))?;
        attributes.insert("hsm-slot".to_string(), slot.id.clone());
        attributes.insert("token".to_string(), slot.token_label.clone());
        let resource = self.registry().add_resource(NewResource {
            tenant: tenant.to_string(),
            kind: RESOURCE_KIND.into(),
            attributes,
            ..Default::default()
        })?;
        let sealed = if tenant_only { None } else { Some(self.core.ca_keys.kek().seal(user_pin.as_bytes(), &user_pin_context(&slot.id))?) };
        match self.core.store.complete_hsm_allocation(&slot.id, &resource.id, sealed.as_deref()) {
            Ok(done) => Ok((done, user_pin)),
            Err(e) => {
                let _ = self.registry().release_resource(&resource.id);
                Err(e)
            }
        }
    }

    /// Releases a tenant's token: zeroizes it (re-initialization with the SO
    /// PIN destroys every object) and returns it to the pool, and releases its
    /// registry resource. With `grace`, the resource is suspended and the keys
    /// kept (unusable by tenure) until the grace period ends, when
    /// `hsm_maintenance` zeroizes it — for tenants that are suspended, not gone.
    pub fn hsm_release(&self, id: &str, grace: Option<Duration>) -> Result<HsmSlot> {
        let slot = self.hsm_slot(id)?;
        match slot.state {
            SlotState::Free => return Err(Error::conflict(Conflict::Custody, format!("{} is in the pool already", slot.id))),
            SlotState::Releasing if grace.is_some() => {
                return Err(Error::conflict(Conflict::Custody, format!("{} is being released already", slot.id)));
            }
            _ => {}
        }
        match grace {
            Some(g) if !g.is_zero() => {
                let until = now() + g.as_secs() as i64;
                if let Some(rid) = &slot.resource_id
                    && self.core.store.resource(rid)?.is_some_and(|r| r.state == ResourceState::Active)
                {
                    self.registry().suspend_resource(rid)?;
                }
                self.core.store.set_hsm_slot_state(&slot.id, SlotState::Releasing, Some(until), false, "released with a grace period")
            }
            _ => self.zeroize_and_free(&slot),
        }
    }

    fn zeroize_and_free(&self, slot: &HsmSlot) -> Result<HsmSlot> {
        let so_pin = self.slot_so_pin(slot)?;
        // Zeroize first: if it fails, nothing is recorded and release can be retried.
        Token::open(Path::new(&slot.module), &slot.token_label)?.reinitialize(&so_pin, None)?;
        if let Some(rid) = &slot.resource_id {
            match self.registry().release_resource(rid) {
                Ok(_) => {}
                Err(e) if e.conflict == Some(Conflict::ResourceState) => {} // released in the registry already
                Err(e) if e.kind == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        self.core.store.finish_hsm_release(&slot.id)
    }

    /// Periodic custody work: zeroizes tokens whose grace period is over or
    /// whose registry resource was released (e.g. by `tenure resource
    /// release`), and destroys keys whose rekey overlap is over. Returns
    /// (tokens zeroized, keys retired). Safe to run from several processes.
    pub fn hsm_maintenance(&self) -> Result<(usize, usize)> {
        let mut zeroized = 0;
        for slot in self.core.store.hsm_slots_due_release(now())? {
            self.zeroize_and_free(&slot)?;
            zeroized += 1;
        }
        for slot in self.core.store.hsm_slots()? {
            let released = match (&slot.state, &slot.resource_id) {
                (SlotState::HandedOver | SlotState::TenantOnly, Some(rid)) => {
                    self.core.store.resource(rid)?.is_none_or(|r| r.state == ResourceState::Released)
                }
                _ => false,
            };
            if released {
                self.zeroize_and_free(&slot)?;
                zeroized += 1;
            }
        }
        Ok((zeroized, self.retire_expired_hsm_keys()?))
    }

    /// tenure's records of a slot's keys and the token's public objects.
    pub fn hsm_keys(&self, id: &str) -> Result<HsmKeyInfo> {
        let slot = self.hsm_slot(id)?;
        let keys = self.core.store.hsm_keys_of_slot(&slot.id)?;
        let objects = match slot.state {
            SlotState::Free => Vec::new(),
            _ => {
                let token = Token::open(Path::new(&slot.module), &slot.token_label)?;
                session::list_objects(&token.public_session()?)?
            }
        };
        let mut generations = std::collections::BTreeMap::new();
        for k in &keys {
            if let Some(serial) = &k.cert_serial
                && let Some((_, life)) = self.core.store.certificate_record(serial)?
            {
                generations.insert(k.id.clone(), life.generation);
            }
        }
        Ok(HsmKeyInfo { slot, keys, objects, generations })
    }

    /// The custody log of a slot.
    pub fn hsm_events(&self, id: &str) -> Result<Vec<crate::store::CustodyEvent>> {
        let slot = self.hsm_slot(id)?;
        self.core.store.hsm_events(&slot.id)
    }

    /// Generates (or rekeys) the key of a resource in its tenant's HSM and
    /// certifies it, through the one issuance path. The resource is an `hsm`
    /// resource itself, or names one in its `hsm` attribute.
    ///
    /// The tenant's plugin chain decides first (`decide-renewal`, trigger
    /// `rekey`, with the certificate being succeeded, if any); a denial stops
    /// here with the plugins' reason, audited, and nothing is generated. On
    /// allow: a new ECDSA P-256 key pair in the token (sensitive; it leaves
    /// only wrapped), its certificate for the resource's names and addresses
    /// (narrowed by the grant) under the tenant's intermediate, written next
    /// to the key (same CKA_ID), then recorded in one transaction with its
    /// bindings (the resource, its HSM, their anchors), the audit record, its
    /// deliveries and the key. The resource's previous key retires after
    /// `overlap` (both work meanwhile) and its certificate is succeeded.
    /// `lifetime` defaults to the default profile's.
    pub fn rekey(&self, resource_id: &str, lifetime: Option<Duration>, overlap: Duration) -> Result<RekeyOutcome> {
        let core = &self.core;
        let key = self.prepare_key(resource_id, lifetime)?;
        let chain = core.plugin_chain(&key.tenant.name)?;
        let ask = key.ask(PolicyTrigger::Rekey);
        let renewing = Renewing { current: key.current.as_ref(), resources: &key.binding.resources };
        let allowed = match issuance::decide_renewal(core, &chain, &ask, &renewing)? {
            Verdict::Allowed(a) => a,
            Verdict::Denied { reason, audit } => {
                issuance::record_denial(core, &audit)?;
                return Err(Error::new(ErrorKind::Unauthorized, format!("policy denied the rekey of {resource_id}: {reason}")));
            }
        };
        self.generate_and_record(key, allowed, overlap, None)
    }

    /// Provisioning of a resource whose key lives in its tenant's HSM
    /// (attribute `hsm`): decide-issuance with trigger `provisioning` (the
    /// key a P-256 one), then a new key in the token and its certificate as
    /// [`Self::rekey`] makes them, settling `request` in the same transaction.
    /// A denial is returned with its audit record, for the caller to settle.
    pub(crate) fn provision(
        &self,
        resource_id: &str,
        request: &crate::store::ProvisioningRequest,
        overlap: Duration,
    ) -> Result<std::result::Result<RekeyOutcome, (String, crate::audit::AuditRecord)>> {
        let key = self.prepare_key(resource_id, None)?;
        let ask = key.ask(PolicyTrigger::Provisioning);
        let p256 = crate::policy::KeyInfo { key_type: crate::policy::KeyType::EcdsaP256, bits: 256 };
        match issuance::decide_provisioning(&self.core, &ask, resource_id, Some(p256))? {
            Verdict::Allowed(allowed) => Ok(Ok(self.generate_and_record(key, allowed, overlap, Some(request.clone()))?)),
            Verdict::Denied { reason, audit } => Ok(Err((reason, audit))),
        }
    }

    /// What a new key for a resource needs before the decision: custody
    /// checked (a token tenure cannot log in to is refused without asking
    /// the plugins), the names, the binding, the key and certificate it succeeds.
    fn prepare_key(&self, resource_id: &str, lifetime: Option<Duration>) -> Result<KeyToMake> {
        let core = &self.core;
        let resource = core.store.resource(resource_id)?.ok_or_else(|| Error::not_found(format!("no resource {resource_id}")))?;
        if resource.state != ResourceState::Active {
            return Err(Error::conflict(Conflict::ResourceState, format!("resource {resource_id} is {}", resource.state.as_str())));
        }
        let hsm_resource_id = if resource.kind == RESOURCE_KIND {
            resource.id.clone()
        } else {
            resource.attributes.get(KEY_ATTRIBUTE).cloned().ok_or_else(|| {
                Error::malformed(format!("resource {resource_id} names no HSM (attribute {KEY_ATTRIBUTE}=<hsm resource id>)"))
            })?
        };
        let hsm_resource = self.usable_hsm_resource(&hsm_resource_id, &resource.tenant)?;
        let slot = self.hsm_slot(&hsm_resource.id)?;
        let (token, pin) = self.tenant_token(&slot)?;
        let identifiers = rekey_identifiers(&resource)?;
        let tenant = core.tenant_of(&resource.tenant)?;
        let previous = core.store.active_hsm_key_of_resource(&slot.id, &resource.id)?;
        let (current, generation) = match previous.as_ref().and_then(|k| k.cert_serial.as_deref()) {
            Some(serial) => match core.store.certificate_record(serial)? {
                Some((cert, life)) => (Some(cert), life.generation + 1),
                None => (None, 1),
            },
            None => (None, 1),
        };
        let profile = core.config.default_profile.clone();
        let lifetime = lifetime.unwrap_or(core.config.profile_lifetime(&profile)?).min(MAX_CERT_LIFETIME);
        // Bound to what its names came from, to the resource and to its HSM:
        // releasing any of them (the HSM is zeroized then) ends the certificate.
        let binding = issuance::binding_with(core, &tenant.name, &identifiers, &[&resource, &hsm_resource])?;
        Ok(KeyToMake { resource, slot, token, pin, identifiers, tenant, previous, current, generation, profile, lifetime, binding })
    }

    /// On allow: a new ECDSA P-256 key pair in the token (sensitive; it leaves
    /// only wrapped), its certificate written next to it (same CKA_ID), then
    /// recorded in one transaction with its bindings, the audit record, its
    /// deliveries, the key, and the provisioning request it settles, if any.
    /// The previous key retires after `overlap`. A failure leaves the token as it was.
    fn generate_and_record(
        &self,
        k: KeyToMake,
        allowed: issuance::Allowed,
        overlap: Duration,
        provisioning: Option<crate::store::ProvisioningRequest>,
    ) -> Result<RekeyOutcome> {
        let core = &self.core;
        let KeyToMake { resource, slot, token, pin, previous, current, binding, generation, .. } = k;
        let deliveries = issuance::deliveries_to(core, &binding.resources)?;
        let session = self.tenant_session(&slot, &token, &pin)?;
        let cka_id = random_cka_id()?;
        let label = format!("tenure {}", resource.id);
        let pair = session::generate_p256(&session, &cka_id, &label, Exportability::WrappedOnly)?;
        // From here on a failure must leave the token as it was.
        let issued = (|| {
            let signed = allowed.sign(core, &pair.spki_der)?;
            session::write_certificate(&session, &cka_id, &label, signed.der())?;
            let t = now();
            let key = HsmKey {
                id: format!("key_{}", core.random_id(9)),
                slot_id: slot.id.clone(),
                cka_id: cka_id.clone(),
                label: label.clone(),
                resource_id: Some(resource.id.clone()),
                spki: pair.spki_der.clone(),
                cert_der: Some(signed.der().to_vec()),
                cert_serial: Some(signed.serial().to_string()),
                cert_not_after: Some(signed.not_after()),
                state: KeyState::Active,
                retire_after: None,
                replaces: previous.as_ref().map(|k| k.id.clone()),
                origin: "generated".into(),
                source_key: None,
                created_at: t,
            };
            let retire_at = t + overlap.as_secs() as i64;
            let trigger = if provisioning.is_some() { Trigger::Provisioning } else { Trigger::Rekey };
            let from = Provenance {
                account_id: None,
                order_id: None,
                trigger,
                predecessor: current.as_ref().map(|c| c.serial.clone()),
                binding,
                deliveries,
                key_source: crate::model::KeySource::Hsm,
                key_age: None,
                generation,
            };
            let claim = Claim::HsmKey { key: key.clone(), retire_after: retire_at, provisioning };
            let certificate = signed.record(core, from, claim)?;
            Ok(RekeyOutcome {
                certificate_der: certificate.der,
                serial: certificate.serial,
                replaced: key.replaces.clone(),
                replaced_retires_at: key.replaces.as_ref().map(|_| retire_at),
                key,
            })
        })();
        if issued.is_err() {
            let _ = session::destroy_by_id(&session, &cka_id);
        }
        token.give_back(session);
        issued
    }

    /// Destroys, in their tokens, the keys whose rekey overlap is over (key
    /// pair and certificate object). A key in a token tenure can no longer
    /// log in to is left to the tenant and only marked. Returns how many retired.
    pub fn retire_expired_hsm_keys(&self) -> Result<usize> {
        let mut retired = 0;
        for key in self.core.store.hsm_keys_due_retirement(now())? {
            let Some(slot) = self.core.store.hsm_slot(&key.slot_id)? else { continue };
            if slot.state == SlotState::HandedOver {
                let (token, pin) = self.tenant_token(&slot)?;
                let session = self.tenant_session(&slot, &token, &pin)?;
                session::destroy_by_id(&session, &key.cka_id)?;
                token.give_back(session);
            } else {
                tracing::warn!(key = %key.id, slot = %slot.id, state = slot.state.as_str(), "overlap over, but tenure cannot log in to the token; the key is left to the tenant");
            }
            self.core.store.mark_hsm_key_retired(&key)?;
            retired += 1;
        }
        Ok(retired)
    }

    /// The active `hsm` resource `id` of `tenant`.
    pub(super) fn usable_hsm_resource(&self, id: &str, tenant: &str) -> Result<Resource> {
        let r = self.core.store.resource(id)?.ok_or_else(|| Error::not_found(format!("no resource {id}")))?;
        if r.kind != RESOURCE_KIND {
            return Err(Error::malformed(format!("resource {id} is a {}, not an hsm", r.kind)));
        }
        if r.tenant != tenant {
            return Err(Error::new(ErrorKind::Unauthorized, format!("hsm {id} is not tenant {tenant}'s")));
        }
        if r.state != ResourceState::Active {
            return Err(Error::conflict(Conflict::ResourceState, format!("hsm {id} is {}", r.state.as_str())));
        }
        Ok(r)
    }

    /// The token of an allocated slot and tenure's copy of its user PIN; refuses
    /// when tenure holds none (tenant-only, releasing, free).
    pub(super) fn tenant_token(&self, slot: &HsmSlot) -> Result<(Arc<Token>, String)> {
        let sealed = match (slot.state, &slot.user_pin_sealed) {
            (SlotState::HandedOver, Some(sealed)) => sealed,
            (state, _) => {
                return Err(Error::new(
                    ErrorKind::Unauthorized,
                    format!("tenure holds no credential for {} (state {}): only the tenant can use its keys", slot.id, state.as_str()),
                ));
            }
        };
        let pin = String::from_utf8(self.core.ca_keys.kek().open(sealed, &user_pin_context(&slot.id))?)
            .map_err(|_| Error::internal("stored user PIN is not text"))?;
        Ok((Token::open(Path::new(&slot.module), &slot.token_label)?, pin))
    }

    /// A user session on a tenant token. A refused PIN normally means the
    /// tenant changed it and so ended tenure's access; it is not recorded as
    /// such automatically, because a module that caches token state per process
    /// (SoftHSM2) refuses a PIN set by another process after this one loaded it.
    pub(super) fn tenant_session(&self, slot: &HsmSlot, token: &Token, pin: &str) -> Result<cryptoki::session::Session> {
        token.user_session(pin).map_err(|e| match e.kind {
            ErrorKind::Unauthorized => Error::new(
                ErrorKind::Unauthorized,
                format!("{} refuses tenure's copy of the user PIN (did the tenant change it?): {}", slot.id, e.detail),
            ),
            _ => e,
        })
    }

    fn slot_so_pin(&self, slot: &HsmSlot) -> Result<String> {
        String::from_utf8(self.core.ca_keys.kek().open(&slot.so_pin_sealed, &so_pin_context(&slot.id))?)
            .map_err(|_| Error::internal("stored SO PIN is not text"))
    }
}

/// The identifiers a rekeyed certificate names: every name and address of
/// the resource (the grant may narrow them).
pub(crate) fn rekey_identifiers(resource: &Resource) -> Result<Vec<Identifier>> {
    let mut ids: Vec<Identifier> = resource.names.iter().map(|n| Identifier::dns(n)).collect();
    for a in &resource.addresses {
        if let Ok(ip) = a.parse() {
            ids.push(Identifier::ip(ip));
        }
    }
    if ids.is_empty() {
        return Err(Error::malformed(format!("resource {} has no name or address to certify", resource.id)));
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}
