//! PostgreSQL: see `../sqlite/hsm.rs`, whose meaning this file keeps.


use super::*;
#[allow(unused_imports)]
use crate::registry::*;
#[allow(unused_imports)]
use crate::hsm::{HsmKey, HsmSlot};

fn pending<T>() -> Result<T> {
    Err(Error::internal("not yet implemented on PostgreSQL"))
}

impl CustodyStore for PgStore {
    #[allow(unused_variables)]
    fn insert_hsm_slot(&self, id: &str, module: &str, label: &str, so_pin_sealed: &[u8]) -> Result<HsmSlot> {
        pending()
    }

    #[allow(unused_variables)]
    fn hsm_slot(&self, id: &str) -> Result<Option<HsmSlot>> {
        pending()
    }

    #[allow(unused_variables)]
    fn hsm_slot_by_resource(&self, resource_id: &str) -> Result<Option<HsmSlot>> {
        pending()
    }

    #[allow(unused_variables)]
    fn hsm_slots(&self) -> Result<Vec<HsmSlot>> {
        pending()
    }

    #[allow(unused_variables)]
    fn claim_free_hsm_slot(&self, tenant: &str) -> Result<Option<HsmSlot>> {
        pending()
    }

    #[allow(unused_variables)]
    fn abort_hsm_allocation(&self, id: &str) -> Result<()> {
        pending()
    }

    #[allow(unused_variables)]
    fn complete_hsm_allocation(&self, id: &str, resource_id: &str, user_pin_sealed: Option<&[u8]>) -> Result<HsmSlot> {
        pending()
    }

    #[allow(unused_variables)]
    fn set_hsm_slot_state(
        &self,
        id: &str,
        state: SlotState,
        release_after: Option<i64>,
        clear_user_pin: bool,
        why: &str,
    ) -> Result<HsmSlot> {
        pending()
    }

    #[allow(unused_variables)]
    fn finish_hsm_release(&self, id: &str) -> Result<HsmSlot> {
        pending()
    }

    #[allow(unused_variables)]
    fn hsm_slots_due_release(&self, at: i64) -> Result<Vec<HsmSlot>> {
        pending()
    }

    #[allow(unused_variables)]
    fn hsm_key(&self, id: &str) -> Result<Option<HsmKey>> {
        pending()
    }

    #[allow(unused_variables)]
    fn hsm_keys_of_slot(&self, slot_id: &str) -> Result<Vec<HsmKey>> {
        pending()
    }

    #[allow(unused_variables)]
    fn active_hsm_key_of_resource(&self, slot_id: &str, resource_id: &str) -> Result<Option<HsmKey>> {
        pending()
    }

    #[allow(unused_variables)]
    fn hsm_key_of_certificate(&self, serial: &str) -> Result<Option<HsmKey>> {
        pending()
    }

    #[allow(unused_variables)]
    fn hsm_keys_due_retirement(&self, at: i64) -> Result<Vec<HsmKey>> {
        pending()
    }

    #[allow(unused_variables)]
    fn mark_hsm_key_retired(&self, key: &HsmKey) -> Result<()> {
        pending()
    }

    #[allow(unused_variables)]
    fn record_hsm_distribution(&self, copy: &HsmKey, audit: &AuditRecord) -> Result<()> {
        pending()
    }

    #[allow(unused_variables)]
    fn hsm_events(&self, slot_id: &str) -> Result<Vec<CustodyEvent>> {
        pending()
    }

}

/// See `sqlite::hsm::record_key`.
#[allow(unused_variables)]
pub(super) fn record_key(tx: &mut Tx<'_>, key: &HsmKey, retire_after: i64) -> Result<bool> {
    pending()
}
