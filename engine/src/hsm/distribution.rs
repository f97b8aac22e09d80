//! Distribution by policy to a holder: when an `hsm` resource is allocated to
//! a tenant, or its attributes change, the keys the tenant's policy says it
//! should also hold are copied into it, wrapped, each copy decided by
//! `decide-distribution` through the one path of `wrap` (so audited the same
//! way as `tenure hsm distribute`). A denial is returned, with everything a
//! notification needs, never dropped; a token error fails only its own key.
//!
//! Which keys are offered: the *active, generated* keys of the tenant's other
//! tokens that tenure can log in to (handed over, their resource active), that
//! the target does not hold yet (no unretired key there with the same CKA_ID
//! or made from the same source key), so calling it again copies nothing twice.
//! Not retiring keys: a rekey is replacing them, and their successor is
//! offered instead. Not distributed copies: a rekey retires the original only,
//! so a copy stays marked active after its resource has moved on to a new key,
//! and offering copies would spread keys that are no longer current; the
//! original is the current key, and names where it was made (the plugins see
//! the source HSM where the key was generated). The price: once the original's
//! token is released, its surviving copies are not spread further.

use serde::Serialize;

use super::wrap::Distributed;
use super::{Custody, HsmKey, HsmSlot, KeyState, SlotState};
use crate::error::{Conflict, Error, Result};
use crate::registry::ResourceState;

/// One key's distribution to a holder, as `distribute_to_holder` tried it.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum DistributionAttempt {
    /// Copied, wrapped: `key` is the copy's record in the target (boxed: the
    /// other outcomes are a few strings).
    Copied {
        key: Box<HsmKey>,
        /// The key copied (`key.source_key`).
        source_key: String,
        /// The `hsm` resource it was copied from.
        source_hsm: String,
        /// The digests of the plugins that allowed it, in chain order.
        plugins: Vec<String>,
    },
    /// The tenant's policy (or a host rule over it) refused; the audit record is stored.
    Denied {
        tenant: String,
        key_id: String,
        /// The `hsm` resource holding the key.
        source_hsm: String,
        /// The `hsm` resource it was to be copied to.
        target_hsm: String,
        reason: String,
        /// The digests of the plugins that decided, in chain order.
        plugins: Vec<String>,
    },
    /// A token or store error (the tenant changed a PIN, a token is missing...);
    /// logged, and the other keys were still tried.
    Failed { key_id: String, source_hsm: String, target_hsm: String, error: String },
}

impl Custody {
    /// Copies into the `hsm` resource `target` (its `res_…` id or its slot's
    /// `hsm_…`) every key of its tenant's other tokens that the tenant's policy
    /// allows it to hold (see the module doc for which keys are offered), one
    /// `decide-distribution` each. Returns one attempt per key offered, in
    /// order; an empty list when there is nothing to copy, or when tenure holds
    /// no credential for the target (tenant-only, releasing: only the tenant
    /// can put keys there; logged). Fails only when `target` is not an
    /// allocated, active `hsm` resource.
    pub fn distribute_to_holder(&self, target: &str) -> Result<Vec<DistributionAttempt>> {
        let target = self.hsm_slot(target)?;
        let (Some(tenant), Some(target_res)) = (target.tenant.clone(), target.resource_id.clone()) else {
            return Err(Error::conflict(Conflict::Custody, format!("{} is not allocated to a tenant", target.id)));
        };
        self.usable_hsm_resource(&target_res, &tenant)?;
        if target.state != SlotState::HandedOver {
            tracing::info!(
                hsm = %target_res, slot = %target.id, state = target.state.as_str(),
                "no key distributed: tenure holds no credential for this token, only the tenant can put keys in it"
            );
            return Ok(Vec::new());
        }
        let held = self.core.store.hsm_keys_of_slot(&target.id)?;
        let mut sources = Vec::new();
        for slot in self.core.store.hsm_slots()? {
            if slot.id == target.id || slot.tenant.as_deref() != Some(tenant.as_str()) || slot.state != SlotState::HandedOver {
                continue;
            }
            let Some(rid) = &slot.resource_id else { continue };
            if !self.core.store.resource(rid)?.is_some_and(|r| r.state == ResourceState::Active) {
                continue;
            }
            let keys = self.core.store.hsm_keys_of_slot(&slot.id)?;
            sources.push((slot, keys));
        }
        let mut attempts = Vec::new();
        for (source, key) in keys_to_offer(&held, &sources) {
            let source_hsm = source.resource_id.clone().unwrap_or_default();
            let attempt = match self.decide_and_copy(key, source, &target) {
                Ok(Distributed::Copied(done)) => {
                    tracing::info!(key = %key.id, copy = %done.key.id, from = %source_hsm, to = %target_res, "key distributed");
                    DistributionAttempt::Copied { source_key: key.id.clone(), source_hsm, plugins: done.plugins, key: Box::new(done.key) }
                }
                Ok(Distributed::Denied { request, reason, plugins }) => {
                    tracing::warn!(key = %key.id, from = %source_hsm, to = %target_res, %reason, "key distribution denied");
                    DistributionAttempt::Denied {
                        tenant: request.tenant,
                        key_id: request.key_id,
                        source_hsm: request.source_hsm,
                        target_hsm: request.target_hsm,
                        reason,
                        plugins,
                    }
                }
                Err(e) => {
                    tracing::warn!(key = %key.id, from = %source_hsm, to = %target_res, error = %e, "key distribution failed");
                    DistributionAttempt::Failed { key_id: key.id.clone(), source_hsm, target_hsm: target_res.clone(), error: e.to_string() }
                }
            };
            attempts.push(attempt);
        }
        Ok(attempts)
    }
}

/// The keys to offer a target that holds `held`, from `sources` (the tenant's
/// other usable tokens and their keys): active, generated there, and not in
/// the target already (an unretired key with the same CKA_ID, or copied from it).
fn keys_to_offer<'a>(held: &[HsmKey], sources: &'a [(HsmSlot, Vec<HsmKey>)]) -> Vec<(&'a HsmSlot, &'a HsmKey)> {
    let holds = |k: &HsmKey| {
        held.iter().any(|h| h.state != KeyState::Retired && (h.cka_id == k.cka_id || h.source_key.as_deref() == Some(k.id.as_str())))
    };
    sources
        .iter()
        .flat_map(|(slot, keys)| keys.iter().map(move |k| (slot, k)))
        .filter(|(_, k)| k.state == KeyState::Active && k.origin == "generated" && !holds(k))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(id: &str) -> HsmSlot {
        HsmSlot {
            id: id.into(),
            module: "/m.so".into(),
            token_label: id.into(),
            state: SlotState::HandedOver,
            tenant: Some("corp".into()),
            resource_id: Some(format!("res_{id}")),
            pin_handed_over_at: None,
            release_after: None,
            created_at: 0,
            so_pin_sealed: Vec::new(),
            user_pin_sealed: None,
        }
    }

    fn key(id: &str, slot: &str, cka: u8, state: KeyState, origin: &str, source: Option<&str>) -> HsmKey {
        HsmKey {
            id: id.into(),
            slot_id: slot.into(),
            cka_id: vec![cka; 16],
            label: format!("tenure {id}"),
            resource_id: Some("res_vm".into()),
            spki: Vec::new(),
            cert_der: None,
            cert_serial: None,
            cert_not_after: None,
            state,
            retire_after: None,
            replaces: None,
            origin: origin.into(),
            source_key: source.map(Into::into),
            created_at: 0,
        }
    }

    fn ids(offered: &[(&HsmSlot, &HsmKey)]) -> Vec<String> {
        offered.iter().map(|(s, k)| format!("{}:{}", s.id, k.id)).collect()
    }

    #[test]
    fn offers_active_generated_keys_the_target_does_not_hold() {
        let sources = vec![
            (
                slot("a"),
                vec![
                    key("k1", "a", 1, KeyState::Active, "generated", None),
                    key("k0", "a", 0, KeyState::Retiring, "generated", None),
                    key("k9", "a", 9, KeyState::Retired, "generated", None),
                ],
            ),
            // b holds a copy of k1 and a key of its own.
            (
                slot("b"),
                vec![
                    key("c1", "b", 1, KeyState::Active, "distributed", Some("k1")),
                    key("k2", "b", 2, KeyState::Active, "generated", None),
                ],
            ),
        ];
        // An empty target: each current original once, never a copy or a retiring key.
        assert_eq!(ids(&keys_to_offer(&[], &sources)), ["a:k1", "b:k2"]);
        // Called again after k1 was copied: only what is still missing.
        let held = [key("t1", "t", 1, KeyState::Active, "distributed", Some("k1"))];
        assert_eq!(ids(&keys_to_offer(&held, &sources)), ["b:k2"]);
        // A copy recognized by its source even under another CKA_ID, and by CKA_ID alone.
        let held = [key("t1", "t", 7, KeyState::Active, "distributed", Some("k1")), key("t2", "t", 2, KeyState::Active, "generated", None)];
        assert!(keys_to_offer(&held, &sources).is_empty());
        // Records retired when the target was released before (same slot, reallocated) hold nothing.
        let held = [key("t1", "t", 1, KeyState::Retired, "distributed", Some("k1"))];
        assert_eq!(ids(&keys_to_offer(&held, &sources)), ["a:k1", "b:k2"]);
    }
}
