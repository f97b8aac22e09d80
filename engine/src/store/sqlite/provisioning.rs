//! Storage for provisioning (the queue of resources to give a certificate)
//! and for notices (outbox messages about an event rather than a new
//! certificate), both written inside the transactions of other state changes.

use rusqlite::{Connection, OptionalExtension, params};

use super::lifecycle::query_certificates_with;
use super::registry::append_audit;
use super::{SqliteStore, Tx};
use crate::error::Result;
use crate::model::*;
use crate::registry::Resource;
use crate::store::*;

/// Puts a resource (back) into the provisioning queue, due now. A request
/// already waiting is superseded: its number moves on, so a worker holding the
/// old one settles nothing.
pub(super) fn enqueue(tx: &Tx<'_>, resource_id: &str, reason: &str) -> Result<()> {
    let at = now();
    tx.prepare_cached(
        "INSERT INTO provisioning (resource_id, request, reason, attempts, next_attempt, last_error, created_at)
         VALUES (?1, 1, ?2, 0, ?3, NULL, ?3)
         ON CONFLICT (resource_id) DO UPDATE SET request = request + 1, reason = excluded.reason, attempts = 0,
             next_attempt = excluded.next_attempt, last_error = NULL, claimed = 0",
    )?
    .execute(params![resource_id, reason, at])?;
    Ok(())
}

/// Enqueues `resource` if `rule` wants it.
pub(super) fn enqueue_if(tx: &Tx<'_>, resource: &Resource, reason: &str, rule: ProvisionRule<'_>) -> Result<()> {
    if rule(resource) { enqueue(tx, &resource.id, reason) } else { Ok(()) }
}

/// Takes `request` out of the queue if it is still the resource's latest.
pub(super) fn settle(tx: &Tx<'_>, request: &ProvisioningRequest) -> Result<bool> {
    Ok(tx
        .prepare_cached("DELETE FROM provisioning WHERE resource_id = ?1 AND request = ?2")?
        .execute(params![request.resource_id, request.request])?
        == 1)
}

/// The webhook of a resource, as SQL sees its attributes.
const WEBHOOK: &str = "json_extract(r.attributes, '$.\"delivery-webhook\"')";

/// A notice of `event` about `serial` (if any) to the webhook of every
/// resource `which` selects (a condition on `r`, the resources table, over
/// `?2`, the serial, and `?5`, a resource id). Resources without a webhook get
/// none. Returns how many notices were queued.
fn notify(tx: &Tx<'_>, event: &str, serial: Option<&str>, resource_id: Option<&str>, which: &str, payload: &str) -> Result<usize> {
    let sql = format!(
        "INSERT INTO deliveries (event, serial, resource_id, kind, target, state, attempts, next_attempt, created_at, payload)
         SELECT ?1, ?2, r.id, 'webhook', {WEBHOOK}, 'pending', 0, ?3, ?3, ?4
         FROM resources r WHERE ({which}) AND {WEBHOOK} IS NOT NULL AND {WEBHOOK} <> ''"
    );
    Ok(tx.prepare_cached(&sql)?.execute(params![event, serial, now(), payload, resource_id])?)
}

/// A notice about one certificate to its bound resources' webhooks.
pub(super) fn notify_certificate(tx: &Tx<'_>, event: &str, serial: &str, payload: &serde_json::Value) -> Result<usize> {
    let which = "r.id IN (SELECT resource_id FROM certificate_resources WHERE serial = ?2) AND ?5 IS NULL";
    notify(tx, event, Some(serial), None, which, &payload.to_string())
}

/// A notice about one certificate for each certificate bound to `resource_id`
/// that `filter_sql` (a condition on `c`, the certificates table) selects.
pub(super) fn notify_certificates_of(tx: &Tx<'_>, event: &str, resource_id: &str, filter_sql: &str, note: &str) -> Result<usize> {
    let serials: Vec<(String, String)> = {
        let sql = format!(
            "SELECT c.serial, c.tenant FROM certificates c JOIN certificate_resources b ON b.serial = c.serial
             WHERE b.resource_id = ?1 AND {filter_sql}"
        );
        let mut st = tx.prepare_cached(&sql)?;
        st.query_map([resource_id], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?
    };
    let mut n = 0;
    for (serial, tenant) in serials {
        let payload = serde_json::json!({ "serial": serial, "tenant": tenant, "note": note });
        n += notify_certificate(tx, event, &serial, &payload)?;
    }
    Ok(n)
}

/// A notice about a resource to its own webhook.
pub(super) fn notify_resource(tx: &Tx<'_>, event: &str, resource_id: &str, payload: &serde_json::Value) -> Result<usize> {
    notify(tx, event, None, Some(resource_id), "r.id = ?5 AND ?2 IS NULL", &payload.to_string())
}

fn request_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ProvisioningRequest> {
    Ok(ProvisioningRequest { resource_id: r.get(0)?, request: r.get(1)?, reason: r.get(2)?, attempts: r.get(3)?, last_error: r.get(4)? })
}

fn provisioned_of(c: &Connection, resource_id: &str) -> Result<Option<(Certificate, CertificateLifecycle)>> {
    Ok(query_certificates_with(
        c,
        "serial = (SELECT c.serial FROM certificates c JOIN certificate_resources b ON b.serial = c.serial
                   WHERE b.resource_id = ?1 AND c.key_source <> 'client' AND c.revoked_at IS NULL
                     AND c.renewal IN ('scheduled', 'lapsed')
                   ORDER BY c.created_at DESC, c.generation DESC LIMIT 1)",
        [resource_id],
    )?
    .into_iter()
    .next())
}

impl ProvisioningStore for SqliteStore {
    fn claim_provisioning(&self, at: UnixTime, limit: i64, lease: i64) -> Result<Vec<ProvisioningRequest>> {
        self.tx(|tx| {
            let due = tx
                .prepare_cached(
                    "SELECT resource_id, request, reason, attempts, last_error FROM provisioning
                     WHERE next_attempt <= ?1 ORDER BY next_attempt, created_at LIMIT ?2",
                )?
                .query_map(params![at, limit], request_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut lease_it = tx.prepare_cached("UPDATE provisioning SET next_attempt = ?2, claimed = 1 WHERE resource_id = ?1")?;
            for r in &due {
                lease_it.execute(params![r.resource_id, at + lease])?;
            }
            Ok(due)
        })
    }

    fn settle_provisioning(&self, request: &ProvisioningRequest, audit: Option<&AuditRecord>) -> Result<bool> {
        self.tx(|tx| {
            if !settle(tx, request)? {
                return Ok(false);
            }
            if let Some(a) = audit {
                append_audit(tx, a)?;
            }
            Ok(true)
        })
    }

    fn record_provisionings(&self, outcomes: &[ProvisioningOutcome]) -> Result<ProvisioningTally> {
        self.tx(|tx| {
            let at = now();
            let mut tally = ProvisioningTally::default();
            for outcome in outcomes {
                match outcome {
                    // Settling comes first in record_issued: a superseded request writes nothing.
                    ProvisioningOutcome::Issued(issued @ IssuedRecord { claim: Claim::Provisioning(_), .. }) => {
                        if super::lifecycle::record_issued(tx, issued, at)? {
                            tally.provisioned += 1;
                        } else {
                            tally.superseded += 1;
                        }
                    }
                    ProvisioningOutcome::Issued(other) => {
                        return Err(crate::Error::internal(format!(
                            "a provisioning batch holds a {:?}; record it on its own",
                            other.claim
                        )));
                    }
                    ProvisioningOutcome::Denied { request, audit } => {
                        if settle(tx, request)? {
                            append_audit(tx, audit)?;
                            tally.denied += 1;
                        } else {
                            tally.superseded += 1;
                        }
                    }
                }
            }
            Ok(tally)
        })
    }

    fn retry_provisioning(&self, request: &ProvisioningRequest, at: UnixTime, error: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE provisioning SET attempts = attempts + 1, next_attempt = ?3, last_error = ?4, claimed = 0
                 WHERE resource_id = ?1 AND request = ?2",
                params![request.resource_id, request.request, at, error],
            )?;
            Ok(())
        })
    }

    fn release_provisioning_claims(&self) -> Result<usize> {
        self.with(|c| Ok(c.execute("UPDATE provisioning SET next_attempt = ?1, claimed = 0 WHERE claimed = 1", [now()])?))
    }

    fn provisioning_request(&self, resource_id: &str) -> Result<Option<ProvisioningRequest>> {
        self.read(|c| {
            Ok(c.prepare_cached("SELECT resource_id, request, reason, attempts, last_error FROM provisioning WHERE resource_id = ?1")?
                .query_row([resource_id], request_row)
                .optional()?)
        })
    }

    fn provisioning_backlog(&self) -> Result<i64> {
        self.read(|c| Ok(c.prepare_cached("SELECT COUNT(*) FROM provisioning")?.query_row([], |r| r.get(0))?))
    }

    fn provisioned_certificate_of(&self, resource_id: &str) -> Result<Option<(Certificate, CertificateLifecycle)>> {
        self.read(|c| provisioned_of(c, resource_id))
    }
}
