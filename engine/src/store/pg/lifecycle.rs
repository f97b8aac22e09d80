//! PostgreSQL: see `../sqlite/lifecycle.rs`, whose meaning this file keeps.


use super::*;
#[allow(unused_imports)]
use crate::registry::*;
#[allow(unused_imports)]
use crate::hsm::{HsmKey, HsmSlot};

fn pending<T>() -> Result<T> {
    Err(Error::internal("not yet implemented on PostgreSQL"))
}

impl CertificateStore for PgStore {
    #[allow(unused_variables)]
    fn certificate(&self, serial: &str) -> Result<Option<Certificate>> {
        pending()
    }

    #[allow(unused_variables)]
    fn revoke_certificate(&self, serial: &str, reason: u8) -> Result<bool> {
        pending()
    }

    #[allow(unused_variables)]
    fn certificate_record(&self, serial: &str) -> Result<Option<(Certificate, CertificateLifecycle)>> {
        pending()
    }

    #[allow(unused_variables)]
    fn certificate_records(
        &self,
        tenant: Option<&str>,
        resource: Option<&str>,
        limit: i64,
    ) -> Result<Vec<(Certificate, CertificateLifecycle)>> {
        pending()
    }

    #[allow(unused_variables)]
    fn due_certificates(&self, before: UnixTime, limit: i64) -> Result<Vec<(Certificate, CertificateLifecycle)>> {
        pending()
    }

    #[allow(unused_variables)]
    fn scheduled_certificates_of_resource(&self, resource_id: &str) -> Result<Vec<(Certificate, CertificateLifecycle)>> {
        pending()
    }

    #[allow(unused_variables)]
    fn record_issuance(&self, issued: &IssuedRecord) -> Result<()> {
        pending()
    }

    #[allow(unused_variables)]
    fn record_renewals(&self, outcomes: &[RenewalOutcome]) -> Result<RenewalTally> {
        pending()
    }

    #[allow(unused_variables)]
    fn defer_renewal(&self, serial: &str, at: UnixTime, note: &str) -> Result<()> {
        pending()
    }

    #[allow(unused_variables)]
    fn revoked_certificates(&self, issuer_id: i64, at: UnixTime) -> Result<Vec<RevokedEntry>> {
        pending()
    }

    #[allow(unused_variables)]
    fn revocation_mark(&self, issuer_id: i64) -> Result<i64> {
        pending()
    }

    #[allow(unused_variables)]
    fn crl(&self, issuer_id: i64) -> Result<Option<StoredCrl>> {
        pending()
    }

    #[allow(unused_variables)]
    fn put_crl(&self, crl: &StoredCrl) -> Result<bool> {
        pending()
    }

}

impl DeliveryStore for PgStore {
    #[allow(unused_variables)]
    fn claim_deliveries(&self, at: UnixTime, limit: i64, lease: i64) -> Result<Vec<Delivery>> {
        pending()
    }

    #[allow(unused_variables)]
    fn finish_delivery(&self, id: i64, outcome: std::result::Result<(), String>, retry_at: Option<UnixTime>) -> Result<()> {
        pending()
    }

    #[allow(unused_variables)]
    fn deliveries_of(&self, serial: &str) -> Result<Vec<Delivery>> {
        pending()
    }

    #[allow(unused_variables)]
    fn deliveries_of_resource(&self, resource_id: &str, limit: i64) -> Result<Vec<Delivery>> {
        pending()
    }

    #[allow(unused_variables)]
    fn record_denial_notice(&self, audit: &AuditRecord, resource_id: &str, event: &str, payload: &serde_json::Value) -> Result<()> {
        pending()
    }

}

/// See `sqlite::lifecycle::stop_certificates_of_resource`.
#[allow(unused_variables)]
pub(super) fn stop_certificates_of_resource(tx: &mut Tx<'_>, resource_id: &str, reason: u8, note: &str) -> Result<usize> {
    pending()
}
