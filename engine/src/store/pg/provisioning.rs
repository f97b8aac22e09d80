//! PostgreSQL: see `../sqlite/provisioning.rs`, whose meaning this file keeps.


use super::*;
#[allow(unused_imports)]
use crate::registry::*;
#[allow(unused_imports)]
use crate::hsm::{HsmKey, HsmSlot};

fn pending<T>() -> Result<T> {
    Err(Error::internal("not yet implemented on PostgreSQL"))
}

impl ProvisioningStore for PgStore {
    #[allow(unused_variables)]
    fn claim_provisioning(&self, at: UnixTime, limit: i64, lease: i64) -> Result<Vec<ProvisioningRequest>> {
        pending()
    }

    #[allow(unused_variables)]
    fn settle_provisioning(&self, request: &ProvisioningRequest, audit: Option<&AuditRecord>) -> Result<bool> {
        pending()
    }

    #[allow(unused_variables)]
    fn record_provisionings(&self, outcomes: &[ProvisioningOutcome]) -> Result<ProvisioningTally> {
        pending()
    }

    #[allow(unused_variables)]
    fn retry_provisioning(&self, request: &ProvisioningRequest, at: UnixTime, error: &str) -> Result<()> {
        pending()
    }

    #[allow(unused_variables)]
    fn release_provisioning_claims(&self) -> Result<usize> {
        pending()
    }

    #[allow(unused_variables)]
    fn provisioning_request(&self, resource_id: &str) -> Result<Option<ProvisioningRequest>> {
        pending()
    }

    #[allow(unused_variables)]
    fn provisioning_backlog(&self) -> Result<i64> {
        pending()
    }

    #[allow(unused_variables)]
    fn provisioned_certificate_of(&self, resource_id: &str) -> Result<Option<(Certificate, CertificateLifecycle)>> {
        pending()
    }

}

/// See `sqlite::provisioning::enqueue`.
#[allow(unused_variables)]
pub(super) fn enqueue(tx: &mut Tx<'_>, resource_id: &str, reason: &str) -> Result<()> {
    pending()
}

/// See `sqlite::provisioning::enqueue_if`.
pub(super) fn enqueue_if(tx: &mut Tx<'_>, resource: &Resource, reason: &str, rule: ProvisionRule<'_>) -> Result<()> {
    if rule(resource) { enqueue(tx, &resource.id, reason) } else { Ok(()) }
}

/// See `sqlite::provisioning::settle`.
#[allow(unused_variables)]
pub(super) fn settle(tx: &mut Tx<'_>, request: &ProvisioningRequest) -> Result<bool> {
    pending()
}

/// See `sqlite::provisioning::notify_certificate`.
#[allow(unused_variables)]
pub(super) fn notify_certificate(tx: &mut Tx<'_>, event: &str, serial: &str, payload: &serde_json::Value) -> Result<usize> {
    pending()
}

/// See `sqlite::provisioning::notify_certificates_of` (`filter_sql` is a
/// condition on `c`, the certificates table, in PostgreSQL's dialect).
#[allow(unused_variables)]
pub(super) fn notify_certificates_of(tx: &mut Tx<'_>, event: &str, resource_id: &str, filter_sql: &str, note: &str) -> Result<usize> {
    pending()
}

/// See `sqlite::provisioning::notify_resource`.
#[allow(unused_variables)]
pub(super) fn notify_resource(tx: &mut Tx<'_>, event: &str, resource_id: &str, payload: &serde_json::Value) -> Result<usize> {
    pending()
}
