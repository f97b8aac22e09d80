//! HSM custody: pooled tokens, their keys, and the custody log. Each method is
//! one state change (one transaction) or one read. PostgreSQL: see
//! `../sqlite/hsm.rs`, whose meaning this file keeps.

use super::*;
use crate::hsm::{HsmKey, HsmSlot, KeyState, SlotState};

const SLOT_COLUMNS: &str =
    "id, module, token_label, so_pin, user_pin, state, tenant, resource_id, pin_handed_over_at, release_after, created_at";
const KEY_COLUMNS: &str = "id, slot_id, cka_id, label, resource_id, spki, cert_der, cert_serial, cert_not_after, state, \
     retire_after, replaces, origin, source_key, created_at";

impl CustodyStore for PgStore {
    fn insert_hsm_slot(&self, id: &str, module: &str, label: &str, so_pin_sealed: &[u8]) -> Result<HsmSlot> {
        self.tx(|tx| {
            let dup: Option<String> =
                value(tx, "SELECT id FROM hsm_slots WHERE module = $1 AND token_label = $2", &[&module, &label])?;
            if let Some(dup) = dup {
                return Err(Error::conflict(crate::Conflict::Custody, format!("token {label:?} of {module} is in the pool already as {dup}")));
            }
            let t = now();
            tx.execute(
                "INSERT INTO hsm_slots (id, module, token_label, so_pin, state, created_at, updated_at) VALUES ($1, $2, $3, $4, 'free', $5, $5)",
                &[&id, &module, &label, &so_pin_sealed, &t],
            )?;
            hsm_event(tx, id, None, "pooled", serde_json::json!({ "module": module, "token": label }))?;
            slot_by_id(tx, id)?.ok_or_else(|| Error::internal("slot vanished"))
        })
    }

    fn hsm_slot(&self, id: &str) -> Result<Option<HsmSlot>> {
        self.read(|c| slot_by_id(c, id))
    }

    /// The slot allocated as registry resource `resource_id`.
    fn hsm_slot_by_resource(&self, resource_id: &str) -> Result<Option<HsmSlot>> {
        self.read(|c| row(c, &format!("SELECT {SLOT_COLUMNS} FROM hsm_slots WHERE resource_id = $1"), &[&resource_id], slot_row))
    }

    fn hsm_slots(&self) -> Result<Vec<HsmSlot>> {
        self.read(|c| rows(c, &format!("SELECT {SLOT_COLUMNS} FROM hsm_slots ORDER BY created_at, seq"), &[], slot_row))
    }

    /// Claims a free slot for `tenant` (state `allocating`), or None if the pool is empty.
    ///
    /// SQLite's single writer made "pick the first free slot, mark it" safe;
    /// here servers share the pool, so the pick locks its row and skips those
    /// other claims hold (each takes a different slot instead of waiting), and
    /// the update is guarded on the slot still being free.
    fn claim_free_hsm_slot(&self, tenant: &str) -> Result<Option<HsmSlot>> {
        self.tx(|tx| {
            let id: Option<String> =
                value(tx, "SELECT id FROM hsm_slots WHERE state = 'free' ORDER BY created_at, seq LIMIT 1 FOR UPDATE SKIP LOCKED", &[])?;
            let Some(id) = id else { return Ok(None) };
            let n = tx.execute(
                "UPDATE hsm_slots SET state = 'allocating', tenant = $2, updated_at = $3 WHERE id = $1 AND state = 'free'",
                &[&id, &tenant, &now()],
            )?;
            if n != 1 {
                // Cannot happen under the row lock; refuse rather than hand out a slot twice.
                return Err(Error::conflict(crate::Conflict::Custody, format!("slot {id} was claimed concurrently")));
            }
            slot_by_id(tx, &id)
        })
    }

    /// A claimed slot goes back to the pool untouched (a failed allocation).
    fn abort_hsm_allocation(&self, id: &str) -> Result<()> {
        self.tx(|tx| {
            tx.execute(
                "UPDATE hsm_slots SET state = 'free', tenant = NULL, resource_id = NULL, user_pin = NULL, updated_at = $2 \
                 WHERE id = $1 AND state = 'allocating'",
                &[&id, &now()],
            )?;
            Ok(())
        })
    }

    /// The allocation is done: the slot is the tenant's, known to the registry as `resource_id`.
    fn complete_hsm_allocation(&self, id: &str, resource_id: &str, user_pin_sealed: Option<&[u8]>) -> Result<HsmSlot> {
        self.tx(|tx| {
            let state = if user_pin_sealed.is_some() { SlotState::HandedOver } else { SlotState::TenantOnly };
            let t = now();
            let n = tx.execute(
                "UPDATE hsm_slots SET state = $2, resource_id = $3, user_pin = $4, pin_handed_over_at = $5, updated_at = $5 \
                 WHERE id = $1 AND state = 'allocating'",
                &[&id, &state.as_str(), &resource_id, &user_pin_sealed, &t],
            )?;
            if n != 1 {
                return Err(Error::conflict(crate::Conflict::Custody, format!("slot {id} is no longer being allocated")));
            }
            let slot = slot_by_id(tx, id)?.ok_or_else(|| Error::internal("slot vanished"))?;
            hsm_event(
                tx,
                id,
                None,
                "allocated",
                serde_json::json!({ "tenant": slot.tenant, "resource": resource_id, "state": state.as_str() }),
            )?;
            Ok(slot)
        })
    }

    /// Changes a slot's state; `clear_user_pin` drops tenure's copy of the PIN.
    fn set_hsm_slot_state(
        &self,
        id: &str,
        state: SlotState,
        release_after: Option<i64>,
        clear_user_pin: bool,
        why: &str,
    ) -> Result<HsmSlot> {
        self.tx(|tx| {
            let sql = if clear_user_pin {
                "UPDATE hsm_slots SET state = $2, release_after = $3, user_pin = NULL, updated_at = $4 WHERE id = $1"
            } else {
                "UPDATE hsm_slots SET state = $2, release_after = $3, updated_at = $4 WHERE id = $1"
            };
            if tx.execute(sql, &[&id, &state.as_str(), &release_after, &now()])? != 1 {
                return Err(Error::not_found(format!("no HSM slot {id}")));
            }
            hsm_event(tx, id, None, state.as_str(), serde_json::json!({ "why": why, "release_after": release_after }))?;
            slot_by_id(tx, id)?.ok_or_else(|| Error::internal("slot vanished"))
        })
    }

    /// The token was zeroized: back to the pool; its keys are gone.
    fn finish_hsm_release(&self, id: &str) -> Result<HsmSlot> {
        self.tx(|tx| {
            let t = now();
            tx.execute(
                "UPDATE hsm_slots SET state = 'free', tenant = NULL, resource_id = NULL, user_pin = NULL, \
                 pin_handed_over_at = NULL, release_after = NULL, updated_at = $2 WHERE id = $1",
                &[&id, &t],
            )?;
            tx.execute("UPDATE hsm_keys SET state = 'retired', updated_at = $2 WHERE slot_id = $1 AND state != 'retired'", &[&id, &t])?;
            hsm_event(tx, id, None, "zeroized", serde_json::json!({}))?;
            slot_by_id(tx, id)?.ok_or_else(|| Error::internal("slot vanished"))
        })
    }

    /// Slots whose grace period is over.
    fn hsm_slots_due_release(&self, at: i64) -> Result<Vec<HsmSlot>> {
        self.read(|c| {
            rows(
                c,
                &format!("SELECT {SLOT_COLUMNS} FROM hsm_slots WHERE state = 'releasing' AND release_after <= $1 ORDER BY release_after"),
                &[&at],
                slot_row,
            )
        })
    }

    fn hsm_key(&self, id: &str) -> Result<Option<HsmKey>> {
        self.read(|c| key_by_id(c, id))
    }

    fn hsm_keys_of_slot(&self, slot_id: &str) -> Result<Vec<HsmKey>> {
        self.read(|c| {
            rows(c, &format!("SELECT {KEY_COLUMNS} FROM hsm_keys WHERE slot_id = $1 ORDER BY created_at, seq"), &[&slot_id], key_row)
        })
    }

    /// The active key generated for a resource in a slot, if any.
    fn active_hsm_key_of_resource(&self, slot_id: &str, resource_id: &str) -> Result<Option<HsmKey>> {
        self.read(|c| {
            let sql = format!(
                "SELECT {KEY_COLUMNS} FROM hsm_keys WHERE slot_id = $1 AND resource_id = $2 AND state = 'active' \
                 ORDER BY created_at DESC LIMIT 1"
            );
            row(c, &sql, &[&slot_id, &resource_id], key_row)
        })
    }

    fn hsm_key_of_certificate(&self, serial: &str) -> Result<Option<HsmKey>> {
        self.read(|c| {
            let sql = format!("SELECT {KEY_COLUMNS} FROM hsm_keys WHERE cert_serial = $1 AND origin = 'generated' LIMIT 1");
            row(c, &sql, &[&serial], key_row)
        })
    }

    /// Keys whose overlap is over.
    fn hsm_keys_due_retirement(&self, at: i64) -> Result<Vec<HsmKey>> {
        self.read(|c| {
            rows(
                c,
                &format!("SELECT {KEY_COLUMNS} FROM hsm_keys WHERE state = 'retiring' AND retire_after <= $1 ORDER BY retire_after"),
                &[&at],
                key_row,
            )
        })
    }

    fn mark_hsm_key_retired(&self, key: &HsmKey) -> Result<()> {
        self.tx(|tx| {
            tx.execute("UPDATE hsm_keys SET state = 'retired', updated_at = $2 WHERE id = $1", &[&key.id, &now()])?;
            hsm_event(tx, &key.slot_id, Some(&key.id), "retired", serde_json::json!({}))?;
            Ok(())
        })
    }

    /// A distribution that happened: the copy's record and the decision's audit record, together.
    fn record_hsm_distribution(&self, copy: &HsmKey, audit: &AuditRecord) -> Result<()> {
        self.tx(|tx| {
            insert_key(tx, copy)?;
            append_audit(tx, audit)?;
            hsm_event(
                tx,
                &copy.slot_id,
                Some(&copy.id),
                "distributed",
                serde_json::json!({ "source_key": copy.source_key, "plugins": audit.plugins }),
            )?;
            Ok(())
        })
    }

    /// The custody log of a slot, oldest first.
    fn hsm_events(&self, slot_id: &str) -> Result<Vec<CustodyEvent>> {
        self.read(|c| {
            rows(c, "SELECT kind, at, key_id, detail FROM hsm_events WHERE slot_id = $1 ORDER BY seq", &[&slot_id], |r| {
                let detail: String = get(r, 3)?;
                Ok((get(r, 0)?, get(r, 1)?, get(r, 2)?, serde_json::from_str(&detail).unwrap_or_default()))
            })
        })
    }
}

fn hsm_event(tx: &mut Tx<'_>, slot_id: &str, key_id: Option<&str>, kind: &str, detail: serde_json::Value) -> Result<()> {
    tx.execute(
        "INSERT INTO hsm_events (slot_id, key_id, kind, at, detail) VALUES ($1, $2, $3, $4, $5)",
        &[&slot_id, &key_id, &kind, &now(), &detail.to_string()],
    )?;
    Ok(())
}

/// A new key (with its certificate) becomes the active one of its resource;
/// the one it replaces starts its overlap and retires at `retire_after`.
/// Returns false, having written nothing, when the replaced key is no longer
/// the active one (or, for a first key, when another one became active):
/// another rekey won the race. (Two first keys racing on several servers:
/// SERIALIZABLE aborts one, whose retry then finds the other's key active.)
pub(super) fn record_key(tx: &mut Tx<'_>, key: &HsmKey, retire_after: i64) -> Result<bool> {
    let claimed = match &key.replaces {
        Some(old) => {
            tx.execute(
                "UPDATE hsm_keys SET state = 'retiring', retire_after = $2, updated_at = $3 WHERE id = $1 AND state = 'active'",
                &[old, &retire_after, &now()],
            )? == 1
        }
        None => {
            let active: Option<String> = value(
                tx,
                "SELECT id FROM hsm_keys WHERE slot_id = $1 AND resource_id IS NOT DISTINCT FROM $2 AND state = 'active' LIMIT 1",
                &[&key.slot_id, &key.resource_id],
            )?;
            active.is_none()
        }
    };
    if !claimed {
        return Ok(false);
    }
    insert_key(tx, key)?;
    hsm_event(
        tx,
        &key.slot_id,
        Some(&key.id),
        if key.replaces.is_some() { "rekeyed" } else { "key-generated" },
        serde_json::json!({ "resource": key.resource_id, "replaces": key.replaces, "certificate": key.cert_serial, "retire_old_after": retire_after }),
    )?;
    Ok(true)
}

fn insert_key(tx: &mut Tx<'_>, k: &HsmKey) -> Result<()> {
    let t = now();
    tx.execute(
        &format!(
            "INSERT INTO hsm_keys ({KEY_COLUMNS}, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15)"
        ),
        &[
            &k.id,
            &k.slot_id,
            &k.cka_id,
            &k.label,
            &k.resource_id,
            &k.spki,
            &k.cert_der,
            &k.cert_serial,
            &k.cert_not_after,
            &k.state.as_str(),
            &k.retire_after,
            &k.replaces,
            &k.origin,
            &k.source_key,
            &t,
        ],
    )?;
    Ok(())
}

fn slot_by_id<C: Db>(c: &mut C, id: &str) -> Result<Option<HsmSlot>> {
    row(c, &format!("SELECT {SLOT_COLUMNS} FROM hsm_slots WHERE id = $1"), &[&id], slot_row)
}

fn key_by_id<C: Db>(c: &mut C, id: &str) -> Result<Option<HsmKey>> {
    row(c, &format!("SELECT {KEY_COLUMNS} FROM hsm_keys WHERE id = $1"), &[&id], key_row)
}

/// A slot from the columns of [`SLOT_COLUMNS`], in that order.
fn slot_row(r: &Row) -> Result<HsmSlot> {
    let state: String = get(r, 5)?;
    let state = SlotState::parse(&state).ok_or_else(|| Error::internal(format!("stored HSM slot state {state:?} is unknown")))?;
    Ok(HsmSlot {
        id: get(r, 0)?,
        module: get(r, 1)?,
        token_label: get(r, 2)?,
        so_pin_sealed: get(r, 3)?,
        user_pin_sealed: get(r, 4)?,
        state,
        tenant: get(r, 6)?,
        resource_id: get(r, 7)?,
        pin_handed_over_at: get(r, 8)?,
        release_after: get(r, 9)?,
        created_at: get(r, 10)?,
    })
}

/// A key from the columns of [`KEY_COLUMNS`], in that order.
fn key_row(r: &Row) -> Result<HsmKey> {
    let state: String = get(r, 9)?;
    let state = KeyState::parse(&state).ok_or_else(|| Error::internal(format!("stored HSM key state {state:?} is unknown")))?;
    Ok(HsmKey {
        id: get(r, 0)?,
        slot_id: get(r, 1)?,
        cka_id: get(r, 2)?,
        label: get(r, 3)?,
        resource_id: get(r, 4)?,
        spki: get(r, 5)?,
        cert_der: get(r, 6)?,
        cert_serial: get(r, 7)?,
        cert_not_after: get(r, 8)?,
        state,
        retire_after: get(r, 10)?,
        replaces: get(r, 11)?,
        origin: get(r, 12)?,
        source_key: get(r, 13)?,
        created_at: get(r, 14)?,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A fresh store with tenant `a` and resource `r1`; None without a test cluster.
    fn store() -> Option<(String, PgStore)> {
        let url = super::super::testdb::fresh()?;
        let store = PgStore::open(&url).unwrap();
        store.insert_tenant("a", &[], b"der", b"key", b"secret", None, &|_| Ok(())).unwrap();
        let r = crate::registry::NewResource { tenant: "a".into(), kind: "hsm".into(), ..Default::default() };
        store.insert_resource("r1", &r, &|_| Ok(()), &|_| false).unwrap();
        Some((url, store))
    }

    fn key(id: &str, slot: &str, replaces: Option<&str>) -> HsmKey {
        HsmKey {
            id: id.into(),
            slot_id: slot.into(),
            cka_id: id.as_bytes().to_vec(),
            label: format!("label-{id}"),
            resource_id: Some("r1".into()),
            spki: b"spki".to_vec(),
            cert_der: Some(b"cert".to_vec()),
            cert_serial: Some(format!("serial-{id}")),
            cert_not_after: Some(1000),
            state: KeyState::Active,
            retire_after: None,
            replaces: replaces.map(String::from),
            origin: "generated".into(),
            source_key: None,
            created_at: now(),
        }
    }

    #[test]
    fn two_stores_claim_different_slots() {
        let Some((url, store)) = store() else { return };
        store.insert_hsm_slot("s1", "softhsm", "t1", b"so1").unwrap();
        store.insert_hsm_slot("s2", "softhsm", "t2", b"so2").unwrap();
        let dup = store.insert_hsm_slot("s3", "softhsm", "t1", b"so3").unwrap_err();
        assert_eq!(dup.conflict, Some(crate::Conflict::Custody));

        let other = Arc::new(PgStore::open(&url).unwrap());
        let store = Arc::new(store);
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let handles: Vec<_> = [store.clone(), other]
            .into_iter()
            .map(|s| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    s.claim_free_hsm_slot("a").unwrap().unwrap()
                })
            })
            .collect();
        let mut claimed: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        claimed.sort_by(|x, y| x.id.cmp(&y.id));
        assert_eq!(claimed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), vec!["s1", "s2"]);
        assert!(claimed.iter().all(|s| s.state == SlotState::Allocating && s.tenant.as_deref() == Some("a")));
        assert!(store.claim_free_hsm_slot("a").unwrap().is_none());

        // An aborted allocation returns its slot; a completed one binds it.
        store.abort_hsm_allocation("s2").unwrap();
        assert_eq!(store.hsm_slot("s2").unwrap().unwrap().state, SlotState::Free);
        assert_eq!(store.complete_hsm_allocation("s2", "r1", None).unwrap_err().conflict, Some(crate::Conflict::Custody));
        let done = store.complete_hsm_allocation("s1", "r1", Some(b"pin")).unwrap();
        assert_eq!(done.state, SlotState::HandedOver);
        assert_eq!(done.user_pin_sealed.as_deref(), Some(&b"pin"[..]));
        assert_eq!(store.hsm_slot_by_resource("r1").unwrap().unwrap().id, "s1");
        assert_eq!(store.hsm_slots().unwrap().iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), vec!["s1", "s2"]);
        let kinds: Vec<_> = store.hsm_events("s1").unwrap().into_iter().map(|e| e.0).collect();
        assert_eq!(kinds, vec!["pooled", "allocated"]);
    }

    #[test]
    fn record_key_claims_the_active_key_once() {
        let Some((_, store)) = store() else { return };
        store.insert_hsm_slot("s1", "softhsm", "t1", b"so").unwrap();
        store.claim_free_hsm_slot("a").unwrap().unwrap();
        store.complete_hsm_allocation("s1", "r1", None).unwrap();

        assert!(store.tx(|tx| record_key(tx, &key("k1", "s1", None), 100)).unwrap());
        // A second first key loses: k1 is active already.
        assert!(!store.tx(|tx| record_key(tx, &key("k1b", "s1", None), 100)).unwrap());
        assert!(store.hsm_key("k1b").unwrap().is_none());
        // A rekey claims k1; a second rekey of k1 loses.
        assert!(store.tx(|tx| record_key(tx, &key("k2", "s1", Some("k1")), 500)).unwrap());
        assert!(!store.tx(|tx| record_key(tx, &key("k3", "s1", Some("k1")), 500)).unwrap());
        assert!(store.hsm_key("k3").unwrap().is_none());
        let k1 = store.hsm_key("k1").unwrap().unwrap();
        assert_eq!((k1.state, k1.retire_after), (KeyState::Retiring, Some(500)));
        assert_eq!(store.active_hsm_key_of_resource("s1", "r1").unwrap().unwrap().id, "k2");
        assert_eq!(store.hsm_key_of_certificate("serial-k2").unwrap().unwrap().id, "k2");
        // A key without a resource is judged among keys without one.
        let mut loose = key("k4", "s1", None);
        loose.resource_id = None;
        assert!(store.tx(|tx| record_key(tx, &loose, 100)).unwrap());

        assert!(store.hsm_keys_due_retirement(499).unwrap().is_empty());
        let due = store.hsm_keys_due_retirement(500).unwrap();
        assert_eq!(due.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), vec!["k1"]);
        store.mark_hsm_key_retired(&due[0]).unwrap();
        assert_eq!(store.hsm_key("k1").unwrap().unwrap().state, KeyState::Retired);
        assert_eq!(store.hsm_keys_of_slot("s1").unwrap().iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), vec!["k1", "k2", "k4"]);
        let kinds: Vec<_> = store.hsm_events("s1").unwrap().into_iter().map(|e| e.0).collect();
        assert_eq!(kinds, vec!["pooled", "allocated", "key-generated", "rekeyed", "key-generated", "retired"]);
    }

    #[test]
    fn release_returns_the_slot_and_retires_its_keys() {
        let Some((_, store)) = store() else { return };
        store.insert_hsm_slot("s1", "softhsm", "t1", b"so").unwrap();
        store.claim_free_hsm_slot("a").unwrap().unwrap();
        store.complete_hsm_allocation("s1", "r1", Some(b"pin")).unwrap();
        assert!(store.tx(|tx| record_key(tx, &key("k1", "s1", None), 100)).unwrap());
        assert_eq!(store.set_hsm_slot_state("nope", SlotState::Releasing, None, false, "x").unwrap_err().kind, crate::ErrorKind::NotFound);
        let releasing = store.set_hsm_slot_state("s1", SlotState::Releasing, Some(200), true, "tenant left").unwrap();
        assert_eq!((releasing.state, releasing.user_pin_sealed), (SlotState::Releasing, None));
        assert!(store.hsm_slots_due_release(199).unwrap().is_empty());
        assert_eq!(store.hsm_slots_due_release(200).unwrap().len(), 1);
        let free = store.finish_hsm_release("s1").unwrap();
        assert_eq!((free.state, free.tenant, free.resource_id, free.release_after), (SlotState::Free, None, None, None));
        assert_eq!(store.hsm_key("k1").unwrap().unwrap().state, KeyState::Retired);

        // A distribution stores the copy and its audit record together.
        let mut copy = key("k2", "s1", None);
        copy.origin = "distributed".into();
        copy.source_key = Some("k1".into());
        let audit = AuditRecord {
            seq: 0,
            at: now(),
            hook: "distribution".into(),
            tenant: "a".into(),
            account: None,
            plugins: vec!["p1".into()],
            signers: vec![None],
            input_digest: "d".into(),
            input: serde_json::json!({}),
            outcome: "allow".into(),
            reason: None,
            grant: None,
            duration_us: 1,
        };
        store.record_hsm_distribution(&copy, &audit).unwrap();
        assert_eq!(store.hsm_key("k2").unwrap().unwrap().source_key.as_deref(), Some("k1"));
        assert_eq!(store.audit(Some("a"), 10).unwrap().len(), 1);
        let last = store.hsm_events("s1").unwrap().pop().unwrap();
        assert_eq!((last.0.as_str(), last.2.as_deref()), ("distributed", Some("k2")));
        assert_eq!(last.3["plugins"], serde_json::json!(["p1"]));
    }
}
