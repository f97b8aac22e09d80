//! The HSM pool: tokens the operator contributes, allocated exclusively to a
//! tenant (a registry resource of kind `hsm`), released by zeroizing; and the
//! keys tenure generates in them for a resource (rekey in place).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;

use super::session::{self, Exportability, ObjectInfo, Token};
use super::{HsmKey, HsmSlot, KEY_ATTRIBUTE, KeyState, RESOURCE_KIND, SlotState, so_pin_context, user_pin_context};
use crate::authority::{Authority, MAX_CERT_LIFETIME, PUBLIC_TENANT};
use crate::ca::{self, LeafRequest};
use crate::error::{Error, ErrorKind, Result};
use crate::identifier::Identifier;
use crate::model::now;
use crate::policy::Grant;
use crate::registry::{NewResource, Resource, ResourceState};

/// What `tenure hsm keys` shows: tenure's records and the token's public objects.
#[derive(Debug, Clone, Serialize)]
pub struct HsmKeyInfo {
    pub slot: HsmSlot,
    pub keys: Vec<HsmKey>,
    /// Public objects (public keys, certificates) as the token lists them
    /// without a login: the operator never logs in as the tenant's user.
    pub objects: Vec<ObjectInfo>,
}

/// A rekey's result: the new key and certificate, and the key it replaces.
#[derive(Debug, Clone, Serialize)]
pub struct RekeyOutcome {
    pub key: HsmKey,
    #[serde(skip)]
    pub certificate_der: Vec<u8>,
    pub replaced: Option<String>,
    /// When the replaced key is destroyed (`retire_expired_hsm_keys`).
    pub replaced_retires_at: Option<i64>,
}

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

impl Authority {
    /// Puts an initialized token in the pool. Its SO PIN is checked and kept
    /// sealed; tenure will re-initialize the token whenever it allocates it.
    pub fn hsm_pool_add(&self, module: &Path, token_label: &str, so_pin: &str) -> Result<HsmSlot> {
        let token = Token::open(module, token_label)?;
        token.check_so_pin(so_pin)?;
        let id = format!("hsm_{}", self.random_id(9));
        let sealed = self.custody.kek().seal(so_pin.as_bytes(), &so_pin_context(&id))?;
        let module = std::path::absolute(module).unwrap_or_else(|_| module.to_path_buf());
        self.store.insert_hsm_slot(&id, &module.to_string_lossy(), token_label, &sealed)
    }

    pub fn hsm_slots(&self) -> Result<Vec<HsmSlot>> {
        self.store.hsm_slots()
    }

    /// A slot by its id (`hsm_…`) or by the id of its registry resource (`res_…`).
    pub fn hsm_slot(&self, id: &str) -> Result<HsmSlot> {
        if let Some(s) = self.store.hsm_slot(id)? {
            return Ok(s);
        }
        self.store.hsm_slot_by_resource(id)?.ok_or_else(|| Error::not_found(format!("no HSM slot or hsm resource {id}")))
    }

    /// Allocates a free token to `tenant` exclusively: re-initializes it (every
    /// object destroyed), sets a fresh user PIN, registers it as the tenant's
    /// resource of kind `hsm`, and returns the PIN — the only time it is shown.
    /// With `tenant_only`, tenure keeps no copy of the PIN at all (no rekey or
    /// distribution by tenure for this token). A failure leaves the slot free.
    pub fn hsm_allocate(&self, tenant: &str, tenant_only: bool) -> Result<(HsmSlot, String)> {
        if tenant == PUBLIC_TENANT {
            return Err(Error::malformed("the public tenant holds no resources; allocate to a tenant"));
        }
        self.store.tenant(tenant)?.ok_or_else(|| Error::not_found(format!("no tenant {tenant:?}")))?;
        let slot = self
            .store
            .claim_free_hsm_slot(tenant)?
            .ok_or_else(|| Error::new(ErrorKind::Conflict, "the HSM pool has no free token; add one with `tenure hsm pool add`"))?;
        let outcome = self.allocate_claimed(&slot, tenant, tenant_only);
        if outcome.is_err() {
            self.store.abort_hsm_allocation(&slot.id)?;
        }
        outcome
    }

    fn allocate_claimed(&self, slot: &HsmSlot, tenant: &str, tenant_only: bool) -> Result<(HsmSlot, String)> {
        let so_pin = self.slot_so_pin(slot)?;
        let user_pin = random_pin()?;
        Token::open(Path::new(&slot.module), &slot.token_label)?.reinitialize(&so_pin, Some(&user_pin))?;
        let resource = self.add_resource(NewResource {
            tenant: tenant.to_string(),
            kind: RESOURCE_KIND.into(),
            attributes: [("hsm-slot".to_string(), slot.id.clone()), ("token".to_string(), slot.token_label.clone())].into(),
            ..Default::default()
        })?;
        let sealed = if tenant_only { None } else { Some(self.custody.kek().seal(user_pin.as_bytes(), &user_pin_context(&slot.id))?) };
        match self.store.complete_hsm_allocation(&slot.id, &resource.id, sealed.as_deref()) {
            Ok(done) => Ok((done, user_pin)),
            Err(e) => {
                let _ = self.release_resource(&resource.id);
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
            SlotState::Free => return Err(Error::new(ErrorKind::Conflict, format!("{} is in the pool already", slot.id))),
            SlotState::Releasing if grace.is_some() => {
                return Err(Error::new(ErrorKind::Conflict, format!("{} is being released already", slot.id)));
            }
            _ => {}
        }
        match grace {
            Some(g) if !g.is_zero() => {
                let until = now() + g.as_secs() as i64;
                if let Some(rid) = &slot.resource_id
                    && self.store.resource(rid)?.is_some_and(|r| r.state == ResourceState::Active)
                {
                    self.suspend_resource(rid)?;
                }
                self.store.set_hsm_slot_state(&slot.id, SlotState::Releasing, Some(until), false, "released with a grace period")
            }
            _ => self.zeroize_and_free(&slot),
        }
    }

    fn zeroize_and_free(&self, slot: &HsmSlot) -> Result<HsmSlot> {
        let so_pin = self.slot_so_pin(slot)?;
        // Zeroize first: if it fails, nothing is recorded and release can be retried.
        Token::open(Path::new(&slot.module), &slot.token_label)?.reinitialize(&so_pin, None)?;
        if let Some(rid) = &slot.resource_id {
            match self.release_resource(rid) {
                Ok(_) => {}
                Err(e) if e.kind == ErrorKind::Conflict => {} // released in the registry already
                Err(e) if e.kind == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        self.store.finish_hsm_release(&slot.id)
    }

    /// Periodic custody work: zeroizes tokens whose grace period is over or
    /// whose registry resource was released (e.g. by `tenure resource
    /// release`), and destroys keys whose rekey overlap is over. Returns
    /// (tokens zeroized, keys retired). Safe to run from several processes.
    pub fn hsm_maintenance(&self) -> Result<(usize, usize)> {
        let mut zeroized = 0;
        for slot in self.store.hsm_slots_due_release(now())? {
            self.zeroize_and_free(&slot)?;
            zeroized += 1;
        }
        for slot in self.store.hsm_slots()? {
            let released = match (&slot.state, &slot.resource_id) {
                (SlotState::HandedOver | SlotState::TenantOnly, Some(rid)) => {
                    self.store.resource(rid)?.is_none_or(|r| r.state == ResourceState::Released)
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
        let keys = self.store.hsm_keys_of_slot(&slot.id)?;
        let objects = match slot.state {
            SlotState::Free => Vec::new(),
            _ => {
                let token = Token::open(Path::new(&slot.module), &slot.token_label)?;
                session::list_objects(&token.public_session()?)?
            }
        };
        Ok(HsmKeyInfo { slot, keys, objects })
    }

    /// The custody log of a slot.
    pub fn hsm_events(&self, id: &str) -> Result<Vec<crate::store::CustodyEvent>> {
        let slot = self.hsm_slot(id)?;
        self.store.hsm_events(&slot.id)
    }

    /// Rekey in place, for a renewal grant with `rekey: true` of a resource
    /// whose key lives in the tenant's HSM: the resource is an `hsm` resource
    /// itself, or names one in its `hsm` attribute. Generates a new ECDSA P-256
    /// key pair in that token (sensitive, leaves only wrapped), issues its
    /// certificate through the tenant's intermediate for the grant's
    /// identifiers (or the resource's names and addresses) and lifetime, writes
    /// the certificate object next to the key (same CKA_ID), and schedules the
    /// previous key of the resource for destruction after `overlap` (both keys
    /// work meanwhile). The first call for a resource simply generates its key.
    ///
    /// The caller (the renewal scheduler) has made the renewal decision; this
    /// checks only what custody needs: the resource is held and active, the
    /// token is the same tenant's, and tenure still holds its credential.
    pub fn rekey_in_hsm(&self, resource_id: &str, grant: &Grant, overlap: Duration) -> Result<RekeyOutcome> {
        let resource = self.store.resource(resource_id)?.ok_or_else(|| Error::not_found(format!("no resource {resource_id}")))?;
        if resource.state != ResourceState::Active {
            return Err(Error::new(ErrorKind::Conflict, format!("resource {resource_id} is {}", resource.state.as_str())));
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
        let identifiers = rekey_identifiers(&resource, grant)?;
        let lifetime = match grant.lifetime_seconds {
            0 => Duration::from_secs(24 * 3600),
            s => Duration::from_secs(s),
        }
        .min(MAX_CERT_LIFETIME);
        let tenant = self.store.tenant(&resource.tenant)?.ok_or_else(|| Error::internal("the resource's tenant is missing"))?;
        let issuer = self.issuer(tenant.issuer_id)?;

        let (token, pin) = self.tenant_token(&slot)?;
        let session = self.tenant_session(&slot, &token, &pin)?;
        let previous = self.store.active_hsm_key_of_resource(&slot.id, &resource.id)?;
        let cka_id = random_cka_id()?;
        let label = format!("tenure {}", resource.id);
        let pair = session::generate_p256(&session, &cka_id, &label, Exportability::WrappedOnly)?;
        // From here on a failure must leave the token as it was.
        let issued = (|| {
            let start = SystemTime::now();
            let leaf = ca::issue_leaf(
                &issuer,
                &LeafRequest {
                    spki_der: &pair.spki_der,
                    identifiers: &identifiers,
                    not_before: start - Duration::from_secs(60),
                    not_after: start + lifetime,
                    crl_url: None,
                },
            )?;
            session::write_certificate(&session, &cka_id, &label, &leaf.der)?;
            let t = now();
            let key = HsmKey {
                id: format!("key_{}", self.random_id(9)),
                slot_id: slot.id.clone(),
                cka_id: cka_id.clone(),
                label: label.clone(),
                resource_id: Some(resource.id.clone()),
                spki: pair.spki_der.clone(),
                cert_der: Some(leaf.der.clone()),
                cert_serial: Some(leaf.serial_hex.clone()),
                cert_not_after: leaf.not_after.duration_since(SystemTime::UNIX_EPOCH).ok().map(|d| d.as_secs() as i64),
                state: KeyState::Active,
                retire_after: None,
                replaces: previous.as_ref().map(|k| k.id.clone()),
                origin: "generated".into(),
                source_key: None,
                created_at: t,
            };
            let retire_at = t + overlap.as_secs() as i64;
            self.store.record_hsm_rekey(&key, retire_at)?;
            Ok(RekeyOutcome {
                certificate_der: leaf.der,
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
        for key in self.store.hsm_keys_due_retirement(now())? {
            let Some(slot) = self.store.hsm_slot(&key.slot_id)? else { continue };
            if slot.state == SlotState::HandedOver {
                let (token, pin) = self.tenant_token(&slot)?;
                let session = self.tenant_session(&slot, &token, &pin)?;
                session::destroy_by_id(&session, &key.cka_id)?;
                token.give_back(session);
            } else {
                tracing::warn!(key = %key.id, slot = %slot.id, state = slot.state.as_str(), "overlap over, but tenure cannot log in to the token; the key is left to the tenant");
            }
            self.store.mark_hsm_key_retired(&key)?;
            retired += 1;
        }
        Ok(retired)
    }

    /// The active `hsm` resource `id` of `tenant`.
    pub(super) fn usable_hsm_resource(&self, id: &str, tenant: &str) -> Result<Resource> {
        let r = self.store.resource(id)?.ok_or_else(|| Error::not_found(format!("no resource {id}")))?;
        if r.kind != RESOURCE_KIND {
            return Err(Error::malformed(format!("resource {id} is a {}, not an hsm", r.kind)));
        }
        if r.tenant != tenant {
            return Err(Error::new(ErrorKind::Unauthorized, format!("hsm {id} is not tenant {tenant}'s")));
        }
        if r.state != ResourceState::Active {
            return Err(Error::new(ErrorKind::Conflict, format!("hsm {id} is {}", r.state.as_str())));
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
        let pin = String::from_utf8(self.custody.kek().open(sealed, &user_pin_context(&slot.id))?)
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
        String::from_utf8(self.custody.kek().open(&slot.so_pin_sealed, &so_pin_context(&slot.id))?)
            .map_err(|_| Error::internal("stored SO PIN is not text"))
    }
}

/// The identifiers a rekeyed certificate names: the grant's, which must all be
/// the resource's, or else every name and address of the resource.
fn rekey_identifiers(resource: &Resource, grant: &Grant) -> Result<Vec<Identifier>> {
    let ids: Vec<Identifier> = if grant.identifiers.is_empty() {
        let mut ids: Vec<Identifier> = resource.names.iter().map(|n| Identifier::dns(n)).collect();
        for a in &resource.addresses {
            if let Ok(ip) = a.parse() {
                ids.push(Identifier::ip(ip));
            }
        }
        ids
    } else {
        grant.identifiers.clone()
    };
    if ids.is_empty() {
        return Err(Error::malformed(format!("resource {} has no name or address to certify", resource.id)));
    }
    if let Some(outside) = ids.iter().find(|id| !resource.covers(id)) {
        return Err(Error::new(ErrorKind::RejectedIdentifier, format!("{outside} is not held by resource {}", resource.id)));
    }
    Ok(ids)
}
