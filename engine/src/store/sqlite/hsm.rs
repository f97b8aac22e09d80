//! HSM custody: pooled tokens, their keys, and the custody log. Each method is
//! one state change (one transaction) or one read.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::registry::append_audit;
use super::{SqliteStore, Tx};
use crate::error::{Error, Result};
use crate::hsm::{HsmKey, HsmSlot, KeyState, SlotState};
use crate::model::now;
use crate::store::*;

const SLOT_COLUMNS: &str =
    "id, module, token_label, so_pin, user_pin, state, tenant, resource_id, pin_handed_over_at, release_after, created_at";
const KEY_COLUMNS: &str = "id, slot_id, cka_id, label, resource_id, spki, cert_der, cert_serial, cert_not_after, state, \
     retire_after, replaces, origin, source_key, created_at";

impl CustodyStore for SqliteStore {
    fn insert_hsm_slot(&self, id: &str, module: &str, label: &str, so_pin_sealed: &[u8]) -> Result<HsmSlot> {
        self.tx(|tx| {
            let dup: Option<String> = tx
                .query_row("SELECT id FROM hsm_slots WHERE module = ?1 AND token_label = ?2", params![module, label], |r| r.get(0))
                .optional()?;
            if let Some(dup) = dup {
                return Err(Error::conflict(crate::Conflict::Custody, format!("token {label:?} of {module} is in the pool already as {dup}")));
            }
            let t = now();
            tx.execute(
                "INSERT INTO hsm_slots (id, module, token_label, so_pin, state, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, 'free', ?5, ?5)",
                params![id, module, label, so_pin_sealed, t],
            )?;
            hsm_event(tx, id, None, "pooled", serde_json::json!({ "module": module, "token": label }))?;
            slot_by_id(tx, id)?.ok_or_else(|| Error::internal("slot vanished"))
        })
    }

    fn hsm_slot(&self, id: &str) -> Result<Option<HsmSlot>> {
        self.with(|c| slot_by_id(c, id))
    }

    /// The slot allocated as registry resource `resource_id`.
    fn hsm_slot_by_resource(&self, resource_id: &str) -> Result<Option<HsmSlot>> {
        self.with(|c| {
            let sql = format!("SELECT {SLOT_COLUMNS} FROM hsm_slots WHERE resource_id = ?1");
            c.query_row(&sql, [resource_id], slot_row).optional()?.transpose()
        })
    }

    fn hsm_slots(&self) -> Result<Vec<HsmSlot>> {
        self.with(|c| {
            let mut st = c.prepare(&format!("SELECT {SLOT_COLUMNS} FROM hsm_slots ORDER BY created_at, rowid"))?;
            st.query_map([], slot_row)?.map(|r| r?).collect()
        })
    }

    /// Claims a free slot for `tenant` (state `allocating`), or None if the pool is empty.
    fn claim_free_hsm_slot(&self, tenant: &str) -> Result<Option<HsmSlot>> {
        self.tx(|tx| {
            let id: Option<String> = tx
                .query_row("SELECT id FROM hsm_slots WHERE state = 'free' ORDER BY created_at, rowid LIMIT 1", [], |r| r.get(0))
                .optional()?;
            let Some(id) = id else { return Ok(None) };
            tx.execute(
                "UPDATE hsm_slots SET state = 'allocating', tenant = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, tenant, now()],
            )?;
            slot_by_id(tx, &id)
        })
    }

    /// A claimed slot goes back to the pool untouched (a failed allocation).
    fn abort_hsm_allocation(&self, id: &str) -> Result<()> {
        self.tx(|tx| {
            tx.execute(
                "UPDATE hsm_slots SET state = 'free', tenant = NULL, resource_id = NULL, user_pin = NULL, updated_at = ?2 \
                 WHERE id = ?1 AND state = 'allocating'",
                params![id, now()],
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
                "UPDATE hsm_slots SET state = ?2, resource_id = ?3, user_pin = ?4, pin_handed_over_at = ?5, updated_at = ?5 \
                 WHERE id = ?1 AND state = 'allocating'",
                params![id, state.as_str(), resource_id, user_pin_sealed, t],
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
                "UPDATE hsm_slots SET state = ?2, release_after = ?3, user_pin = NULL, updated_at = ?4 WHERE id = ?1"
            } else {
                "UPDATE hsm_slots SET state = ?2, release_after = ?3, updated_at = ?4 WHERE id = ?1"
            };
            if tx.execute(sql, params![id, state.as_str(), release_after, now()])? != 1 {
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
                 pin_handed_over_at = NULL, release_after = NULL, updated_at = ?2 WHERE id = ?1",
                params![id, t],
            )?;
            tx.execute("UPDATE hsm_keys SET state = 'retired', updated_at = ?2 WHERE slot_id = ?1 AND state != 'retired'", params![id, t])?;
            hsm_event(tx, id, None, "zeroized", serde_json::json!({}))?;
            slot_by_id(tx, id)?.ok_or_else(|| Error::internal("slot vanished"))
        })
    }

    /// Slots whose grace period is over.
    fn hsm_slots_due_release(&self, at: i64) -> Result<Vec<HsmSlot>> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {SLOT_COLUMNS} FROM hsm_slots WHERE state = 'releasing' AND release_after <= ?1 ORDER BY release_after"
            ))?;
            st.query_map([at], slot_row)?.map(|r| r?).collect()
        })
    }

    fn hsm_key(&self, id: &str) -> Result<Option<HsmKey>> {
        self.with(|c| key_by_id(c, id))
    }

    fn hsm_keys_of_slot(&self, slot_id: &str) -> Result<Vec<HsmKey>> {
        self.with(|c| {
            let mut st = c.prepare(&format!("SELECT {KEY_COLUMNS} FROM hsm_keys WHERE slot_id = ?1 ORDER BY created_at, rowid"))?;
            st.query_map([slot_id], key_row)?.map(|r| r?).collect()
        })
    }

    /// The active key generated for a resource in a slot, if any.
    fn active_hsm_key_of_resource(&self, slot_id: &str, resource_id: &str) -> Result<Option<HsmKey>> {
        self.with(|c| {
            let sql = format!(
                "SELECT {KEY_COLUMNS} FROM hsm_keys WHERE slot_id = ?1 AND resource_id = ?2 AND state = 'active' \
                 ORDER BY created_at DESC LIMIT 1"
            );
            c.query_row(&sql, params![slot_id, resource_id], key_row).optional()?.transpose()
        })
    }

    fn hsm_key_of_certificate(&self, serial: &str) -> Result<Option<HsmKey>> {
        self.with(|c| {
            let sql = format!("SELECT {KEY_COLUMNS} FROM hsm_keys WHERE cert_serial = ?1 AND origin = 'generated' LIMIT 1");
            c.query_row(&sql, [serial], key_row).optional()?.transpose()
        })
    }

    /// Keys whose overlap is over.
    fn hsm_keys_due_retirement(&self, at: i64) -> Result<Vec<HsmKey>> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {KEY_COLUMNS} FROM hsm_keys WHERE state = 'retiring' AND retire_after <= ?1 ORDER BY retire_after"
            ))?;
            st.query_map([at], key_row)?.map(|r| r?).collect()
        })
    }

    fn mark_hsm_key_retired(&self, key: &HsmKey) -> Result<()> {
        self.tx(|tx| {
            tx.execute("UPDATE hsm_keys SET state = 'retired', updated_at = ?2 WHERE id = ?1", params![key.id, now()])?;
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
        self.with(|c| {
            let mut st = c.prepare("SELECT kind, at, key_id, detail FROM hsm_events WHERE slot_id = ?1 ORDER BY seq")?;
            let rows = st
                .query_map([slot_id], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get::<_, String>(3)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows.into_iter().map(|(k, at, key, d)| (k, at, key, serde_json::from_str(&d).unwrap_or_default())).collect())
        })
    }
}

fn hsm_event(tx: &Tx<'_>, slot_id: &str, key_id: Option<&str>, kind: &str, detail: serde_json::Value) -> Result<()> {
    tx.execute(
        "INSERT INTO hsm_events (slot_id, key_id, kind, at, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![slot_id, key_id, kind, now(), detail.to_string()],
    )?;
    Ok(())
}

/// A new key (with its certificate) becomes the active one of its resource;
/// the one it replaces starts its overlap and retires at `retire_after`.
/// Returns false, having written nothing, when the replaced key is no longer
/// the active one (or, for a first key, when another one became active):
/// another rekey won the race.
pub(super) fn record_key(tx: &Tx<'_>, key: &HsmKey, retire_after: i64) -> Result<bool> {
    let claimed = match &key.replaces {
        Some(old) => {
            tx.execute(
                "UPDATE hsm_keys SET state = 'retiring', retire_after = ?2, updated_at = ?3 WHERE id = ?1 AND state = 'active'",
                params![old, retire_after, now()],
            )? == 1
        }
        None => {
            let active: Option<String> = tx
                .query_row(
                    "SELECT id FROM hsm_keys WHERE slot_id = ?1 AND resource_id IS ?2 AND state = 'active' LIMIT 1",
                    params![key.slot_id, key.resource_id],
                    |r| r.get(0),
                )
                .optional()?;
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

fn insert_key(tx: &Tx<'_>, k: &HsmKey) -> Result<()> {
    let t = now();
    tx.execute(
        &format!("INSERT INTO hsm_keys ({KEY_COLUMNS}, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?15)"),
        params![
            k.id,
            k.slot_id,
            k.cka_id,
            k.label,
            k.resource_id,
            k.spki,
            k.cert_der,
            k.cert_serial,
            k.cert_not_after,
            k.state.as_str(),
            k.retire_after,
            k.replaces,
            k.origin,
            k.source_key,
            t
        ],
    )?;
    Ok(())
}

fn slot_by_id(c: &Connection, id: &str) -> Result<Option<HsmSlot>> {
    let sql = format!("SELECT {SLOT_COLUMNS} FROM hsm_slots WHERE id = ?1");
    c.query_row(&sql, [id], slot_row).optional()?.transpose()
}

fn key_by_id(c: &Connection, id: &str) -> Result<Option<HsmKey>> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM hsm_keys WHERE id = ?1");
    c.query_row(&sql, [id], key_row).optional()?.transpose()
}

fn slot_row(r: &Row<'_>) -> rusqlite::Result<Result<HsmSlot>> {
    let state: String = r.get(5)?;
    let Some(state) = SlotState::parse(&state) else {
        return Ok(Err(Error::internal(format!("stored HSM slot state {state:?} is unknown"))));
    };
    Ok(Ok(HsmSlot {
        id: r.get(0)?,
        module: r.get(1)?,
        token_label: r.get(2)?,
        so_pin_sealed: r.get(3)?,
        user_pin_sealed: r.get(4)?,
        state,
        tenant: r.get(6)?,
        resource_id: r.get(7)?,
        pin_handed_over_at: r.get(8)?,
        release_after: r.get(9)?,
        created_at: r.get(10)?,
    }))
}

fn key_row(r: &Row<'_>) -> rusqlite::Result<Result<HsmKey>> {
    let state: String = r.get(9)?;
    let Some(state) = KeyState::parse(&state) else {
        return Ok(Err(Error::internal(format!("stored HSM key state {state:?} is unknown"))));
    };
    Ok(Ok(HsmKey {
        id: r.get(0)?,
        slot_id: r.get(1)?,
        cka_id: r.get(2)?,
        label: r.get(3)?,
        resource_id: r.get(4)?,
        spki: r.get(5)?,
        cert_der: r.get(6)?,
        cert_serial: r.get(7)?,
        cert_not_after: r.get(8)?,
        state,
        retire_after: r.get(10)?,
        replaces: r.get(11)?,
        origin: r.get(12)?,
        source_key: r.get(13)?,
        created_at: r.get(14)?,
    }))
}
