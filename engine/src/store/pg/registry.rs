//! PostgreSQL: see `../sqlite/registry.rs`, whose meaning this file keeps.


use super::*;
#[allow(unused_imports)]
use crate::registry::*;
#[allow(unused_imports)]
use crate::hsm::{HsmKey, HsmSlot};

fn pending<T>() -> Result<T> {
    Err(Error::internal("not yet implemented on PostgreSQL"))
}

impl RegistryStore for PgStore {
    #[allow(unused_variables)]
    fn insert_resource(&self, id: &str, r: &NewResource, rule: ConflictRule<'_>, provision: ProvisionRule<'_>) -> Result<Resource> {
        pending()
    }

    #[allow(unused_variables)]
    fn resource(&self, id: &str) -> Result<Option<Resource>> {
        pending()
    }

    #[allow(unused_variables)]
    fn resources(&self, tenant: Option<&str>) -> Result<Vec<Resource>> {
        pending()
    }

    #[allow(unused_variables)]
    fn resources_holding_name(&self, tenant: Option<&str>, name: &str) -> Result<Vec<Resource>> {
        pending()
    }

    #[allow(unused_variables)]
    fn resources_holding_address(&self, tenant: Option<&str>, address: &str) -> Result<Vec<Resource>> {
        pending()
    }

    #[allow(unused_variables)]
    fn resources_holding(&self, tenant: Option<&str>, id: &crate::identifier::Identifier) -> Result<Vec<Resource>> {
        pending()
    }

    #[allow(unused_variables)]
    fn resources_under(&self, zone: &str) -> Result<Vec<Resource>> {
        pending()
    }

    #[allow(unused_variables)]
    fn set_resource_state(&self, id: &str, state: ResourceState, kind: EventKind, provision: ProvisionRule<'_>) -> Result<Resource> {
        pending()
    }

    #[allow(unused_variables)]
    fn transfer_resource(&self, id: &str, to: &str, rule: ConflictRule<'_>, provision: ProvisionRule<'_>) -> Result<Resource> {
        pending()
    }

    #[allow(unused_variables)]
    fn set_resource_attributes(&self, id: &str, changes: &AttributeChanges, provision: ProvisionRule<'_>) -> Result<Resource> {
        pending()
    }

    #[allow(unused_variables)]
    fn confirm_resource(&self, id: &str) -> Result<Resource> {
        pending()
    }

    #[allow(unused_variables)]
    fn expired_leases(&self, at: UnixTime, limit: i64) -> Result<Vec<String>> {
        pending()
    }

    #[allow(unused_variables)]
    fn suspend_expired_lease(&self, id: &str, at: UnixTime) -> Result<Option<Resource>> {
        pending()
    }

    #[allow(unused_variables)]
    fn resource_events(&self, id: &str) -> Result<Vec<Event>> {
        pending()
    }

}

impl PluginStore for PgStore {
    #[allow(unused_variables)]
    fn install_plugin(&self, scope: &str, digest: &str, wasm: &[u8]) -> Result<()> {
        pending()
    }

    #[allow(unused_variables)]
    fn remove_plugin(&self, scope: &str) -> Result<bool> {
        pending()
    }

    #[allow(unused_variables)]
    fn plugins(&self) -> Result<Vec<(String, String, i64)>> {
        pending()
    }

    #[allow(unused_variables)]
    fn plugin_wasm(&self, scope: &str) -> Result<Option<(String, Vec<u8>)>> {
        pending()
    }

    #[allow(unused_variables)]
    fn plugin_generation(&self) -> Result<i64> {
        pending()
    }

}

impl AuditStore for PgStore {
    #[allow(unused_variables)]
    fn audit(&self, tenant: Option<&str>, limit: i64) -> Result<Vec<AuditRecord>> {
        pending()
    }

    #[allow(unused_variables)]
    fn record_audit(&self, rec: &AuditRecord) -> Result<()> {
        pending()
    }

}

/// Appends an audit record inside the caller's transaction, so a decision is
/// logged exactly when the state change it allowed (or refused) is.
pub(crate) fn append_audit(tx: &mut Tx<'_>, rec: &AuditRecord) -> Result<()> {
    tx.execute(
        "INSERT INTO audit (at, hook, tenant, account, plugins, input_digest, input, outcome, reason, grant_json, duration_us)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        &[
            &rec.at,
            &rec.hook,
            &rec.tenant,
            &rec.account,
            &json(&rec.plugins),
            &rec.input_digest,
            &rec.input.to_string(),
            &rec.outcome,
            &rec.reason,
            &rec.grant.as_ref().map(|g| g.to_string()),
            &rec.duration_us,
        ],
    )?;
    Ok(())
}
