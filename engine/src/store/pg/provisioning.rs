//! Storage for provisioning (the queue of resources to give a certificate)
//! and for notices (outbox messages about an event rather than a new
//! certificate), both written inside the transactions of other state changes.
//! PostgreSQL: see `../sqlite/provisioning.rs`, whose meaning this file keeps.

use super::lifecycle::{claim, query_certificates_with};
use super::*;
use crate::registry::Resource;

/// Puts a resource (back) into the provisioning queue, due now. A request
/// already waiting is superseded: its number moves on, so a worker holding the
/// old one settles nothing.
pub(super) fn enqueue(tx: &mut Tx<'_>, resource_id: &str, reason: &str) -> Result<()> {
    tx.execute(
        "INSERT INTO provisioning (resource_id, request, reason, attempts, next_attempt, last_error, created_at)
         VALUES ($1, 1, $2, 0, $3, NULL, $3)
         ON CONFLICT (resource_id) DO UPDATE SET request = provisioning.request + 1, reason = excluded.reason, attempts = 0,
             next_attempt = excluded.next_attempt, last_error = NULL, claimed = false",
        &[&resource_id, &reason, &now()],
    )?;
    Ok(())
}

/// Enqueues `resource` if `rule` wants it.
pub(super) fn enqueue_if(tx: &mut Tx<'_>, resource: &Resource, reason: &str, rule: ProvisionRule<'_>) -> Result<()> {
    if rule(resource) { enqueue(tx, &resource.id, reason) } else { Ok(()) }
}

/// Takes `request` out of the queue if it is still the resource's latest.
pub(super) fn settle(tx: &mut Tx<'_>, request: &ProvisioningRequest) -> Result<bool> {
    Ok(tx.execute("DELETE FROM provisioning WHERE resource_id = $1 AND request = $2", &[&request.resource_id, &request.request])? == 1)
}

/// The webhook of a resource, as SQL sees its attributes.
const WEBHOOK: &str = "(r.attributes::jsonb ->> 'delivery-webhook')";

/// A notice of `event` about `serial` (if any) to the webhook of every
/// resource `which` selects (a condition on `r`, the resources table, over
/// `$2`, the serial, and `$5`, a resource id, both text). Resources without a
/// webhook get none. Returns how many notices were queued.
fn notify(tx: &mut Tx<'_>, event: &str, serial: Option<&str>, resource_id: Option<&str>, which: &str, payload: &str) -> Result<usize> {
    // Every parameter is cast: PostgreSQL must know their types, and those
    // only compared with NULL would tell it nothing.
    let sql = format!(
        "INSERT INTO deliveries (event, serial, resource_id, kind, target, state, attempts, next_attempt, created_at, payload)
         SELECT $1::text, $2::text, r.id, 'webhook', {WEBHOOK}, 'pending', 0, $3::bigint, $3::bigint, $4::text
         FROM resources r WHERE ({which}) AND {WEBHOOK} IS NOT NULL AND {WEBHOOK} <> ''"
    );
    Ok(count(tx.execute(&sql, &[&event, &serial, &now(), &payload, &resource_id])?))
}

/// A notice about one certificate to its bound resources' webhooks.
pub(super) fn notify_certificate(tx: &mut Tx<'_>, event: &str, serial: &str, payload: &serde_json::Value) -> Result<usize> {
    let which = "r.id IN (SELECT resource_id FROM certificate_resources WHERE serial = $2::text) AND $5::text IS NULL";
    notify(tx, event, Some(serial), None, which, &payload.to_string())
}

/// A notice about one certificate for each certificate bound to `resource_id`
/// that `filter_sql` (a condition on `c`, the certificates table, in
/// PostgreSQL's dialect) selects.
pub(super) fn notify_certificates_of(tx: &mut Tx<'_>, event: &str, resource_id: &str, filter_sql: &str, note: &str) -> Result<usize> {
    let sql = format!(
        "SELECT c.serial, c.tenant FROM certificates c JOIN certificate_resources b ON b.serial = c.serial
         WHERE b.resource_id = $1 AND {filter_sql} ORDER BY c.serial"
    );
    let serials: Vec<(String, String)> = rows(tx, &sql, &[&resource_id], |r| Ok((get(r, 0)?, get(r, 1)?)))?;
    let mut n = 0;
    for (serial, tenant) in serials {
        let payload = serde_json::json!({ "serial": serial, "tenant": tenant, "note": note });
        n += notify_certificate(tx, event, &serial, &payload)?;
    }
    Ok(n)
}

/// A notice about a resource to its own webhook.
pub(super) fn notify_resource(tx: &mut Tx<'_>, event: &str, resource_id: &str, payload: &serde_json::Value) -> Result<usize> {
    notify(tx, event, None, Some(resource_id), "r.id = $5::text AND $2::text IS NULL", &payload.to_string())
}

const REQUEST_COLUMNS: &str = "resource_id, request, reason, attempts, last_error";

fn request_row(r: &Row) -> Result<ProvisioningRequest> {
    Ok(ProvisioningRequest {
        resource_id: get(r, 0)?,
        request: get(r, 1)?,
        reason: get(r, 2)?,
        attempts: get(r, 3)?,
        last_error: get(r, 4)?,
    })
}

fn provisioned_of<C: Db>(c: &mut C, resource_id: &str) -> Result<Option<(Certificate, CertificateLifecycle)>> {
    Ok(query_certificates_with(
        c,
        "serial = (SELECT c.serial FROM certificates c JOIN certificate_resources b ON b.serial = c.serial
                   WHERE b.resource_id = $1 AND c.key_source <> 'client' AND c.revoked_at IS NULL
                     AND c.renewal IN ('scheduled', 'lapsed')
                   ORDER BY c.created_at DESC, c.generation DESC LIMIT 1)",
        &[&resource_id],
    )?
    .into_iter()
    .next())
}

impl ProvisioningStore for PgStore {
    /// Claims up to `limit` due requests for `lease` seconds (another worker,
    /// here or on another server, skips them meanwhile), oldest first, as
    /// they were before the claim.
    fn claim_provisioning(&self, at: UnixTime, limit: i64, lease: i64) -> Result<Vec<ProvisioningRequest>> {
        claim(self, |tx| {
            let sql = format!(
                "WITH due AS (
                     SELECT {REQUEST_COLUMNS}, next_attempt, created_at FROM provisioning WHERE next_attempt <= $1
                     ORDER BY next_attempt, created_at, resource_id LIMIT $2 FOR UPDATE SKIP LOCKED
                 ), claimed AS (
                     UPDATE provisioning SET next_attempt = $3, claimed = true
                     WHERE resource_id IN (SELECT resource_id FROM due) RETURNING resource_id
                 )
                 SELECT {REQUEST_COLUMNS} FROM due WHERE resource_id IN (SELECT resource_id FROM claimed)
                 ORDER BY next_attempt, created_at, resource_id"
            );
            rows(tx, &sql, &[&at, &limit, &(at + lease)], request_row)
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
                        return Err(Error::internal(format!("a provisioning batch holds a {:?}; record it on its own", other.claim)));
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
        self.read(|c| {
            c.execute(
                "UPDATE provisioning SET attempts = attempts + 1, next_attempt = $3, last_error = $4, claimed = false
                 WHERE resource_id = $1 AND request = $2",
                &[&request.resource_id, &request.request, &at, &error],
            )?;
            Ok(())
        })
    }

    fn release_provisioning_claims(&self) -> Result<usize> {
        self.read(|c| Ok(count(c.execute("UPDATE provisioning SET next_attempt = $1, claimed = false WHERE claimed = true", &[&now()])?)))
    }

    fn provisioning_request(&self, resource_id: &str) -> Result<Option<ProvisioningRequest>> {
        self.read(|c| row(c, &format!("SELECT {REQUEST_COLUMNS} FROM provisioning WHERE resource_id = $1"), &[&resource_id], request_row))
    }

    fn provisioning_backlog(&self) -> Result<i64> {
        self.read(|c| Ok(value(c, "SELECT COUNT(*) FROM provisioning", &[])?.unwrap_or(0)))
    }

    fn provisioned_certificate_of(&self, resource_id: &str) -> Result<Option<(Certificate, CertificateLifecycle)>> {
        self.read(|c| provisioned_of(c, resource_id))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::super::lifecycle::tests::{audit, audit_count, certificate, insert, issued, race, resource, store};
    use super::*;

    fn enqueue_now(store: &PgStore, id: &str) {
        store.tx(|tx| enqueue(tx, id, "created")).unwrap();
    }

    #[test]
    fn two_servers_claim_disjoint_provisioning_requests() {
        let Some((store, url, _)) = store() else { return };
        for i in 0..30 {
            let id = format!("r{i:02}");
            resource(&store, &id, None);
            enqueue_now(&store, &id);
        }
        assert_eq!(store.provisioning_backlog().unwrap(), 30);
        let (a, b) = race(&url, |s| s.claim_provisioning(now(), 4, 600).unwrap().into_iter().map(|r| r.resource_id).collect());
        let (sa, sb): (HashSet<_>, HashSet<_>) = (a.iter().cloned().collect(), b.iter().cloned().collect());
        assert_eq!(sa.len() + sb.len(), 30, "each claimed once: {a:?} {b:?}");
        assert!(sa.is_disjoint(&sb));
        assert!(store.claim_provisioning(now(), 10, 600).unwrap().is_empty(), "all leased");
        let claimed: i64 = store.read(|c| Ok(value(c, "SELECT COUNT(*) FROM provisioning WHERE claimed", &[])?.unwrap_or(0))).unwrap();
        assert_eq!(claimed, 30);

        // A starting server takes over the claims of one that died.
        assert_eq!(store.release_provisioning_claims().unwrap(), 30);
        assert_eq!(store.release_provisioning_claims().unwrap(), 0);
        let again = store.claim_provisioning(now(), 2, 600).unwrap();
        assert_eq!(again.len(), 2);
        assert_eq!((again[0].request, again[0].reason.as_str(), again[0].attempts), (1, "created", 0));

        // A retry un-claims it and counts the attempt.
        store.retry_provisioning(&again[0], now() - 1, "hsm busy").unwrap();
        let back = store.provisioning_request(&again[0].resource_id).unwrap().unwrap();
        assert_eq!((back.attempts, back.last_error.as_deref()), (1, Some("hsm busy")));
        let next = store.claim_provisioning(now(), 1, 600).unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].resource_id, again[0].resource_id);
    }

    #[test]
    fn a_superseded_request_settles_nothing() {
        let Some((store, _, tenant)) = store() else { return };
        resource(&store, "r1", Some("https://hook.example"));
        enqueue_now(&store, "r1");
        let old = store.claim_provisioning(now(), 10, 600).unwrap().remove(0);
        assert_eq!(old.request, 1);
        // The resource changed meanwhile: a newer request, due now, unclaimed.
        enqueue_now(&store, "r1");
        let current = store.provisioning_request("r1").unwrap().unwrap();
        assert_eq!((current.request, current.attempts), (2, 0));

        let provisioned = |serial: &str, request: &ProvisioningRequest| {
            let mut rec = issued(
                certificate(&tenant, serial, RenewalState::Scheduled, Some(now() + 100), &["r1"]),
                Claim::Provisioning(request.clone()),
            );
            rec.event = crate::lifecycle::events::PROVISIONED;
            rec.deliveries = vec![("r1".into(), DeliveryKind::Webhook, "https://hook.example".into())];
            rec
        };
        let tally = store
            .record_provisionings(&[
                ProvisioningOutcome::Issued(provisioned("stale", &old)),
                ProvisioningOutcome::Denied { request: old.clone(), audit: audit() },
            ])
            .unwrap();
        assert_eq!(tally, ProvisioningTally { provisioned: 0, denied: 0, superseded: 2 });
        assert!(store.certificate("stale").unwrap().is_none());
        assert!(store.deliveries_of_resource("r1", 10).unwrap().is_empty());
        assert_eq!(audit_count(&store), 0);
        assert!(!store.settle_provisioning(&old, Some(&audit())).unwrap());
        assert_eq!(audit_count(&store), 0);
        assert_eq!(store.provisioning_request("r1").unwrap().unwrap().request, 2);
        assert!(store.record_issuance(&provisioned("stale", &old)).is_err());

        // The current request settles, once.
        let tally = store.record_provisionings(&[ProvisioningOutcome::Issued(provisioned("fresh", &current))]).unwrap();
        assert_eq!(tally, ProvisioningTally { provisioned: 1, denied: 0, superseded: 0 });
        assert!(store.provisioning_request("r1").unwrap().is_none());
        assert_eq!(store.provisioning_backlog().unwrap(), 0);
        let (cert, life) = store.provisioned_certificate_of("r1").unwrap().unwrap();
        assert_eq!((cert.serial.as_str(), life.resources.as_slice()), ("fresh", ["r1".to_string()].as_slice()));
        assert_eq!(store.deliveries_of("fresh").unwrap().len(), 1);
        assert_eq!(audit_count(&store), 1);
        assert!(!store.settle_provisioning(&current, None).unwrap());

        // Settling with nothing issued (a denial, on its own).
        enqueue_now(&store, "r1");
        let third = store.provisioning_request("r1").unwrap().unwrap();
        assert_eq!(third.request, 1, "a settled request leaves the queue; the next starts over");
        assert!(store.settle_provisioning(&third, Some(&audit())).unwrap());
        assert_eq!(audit_count(&store), 2);
    }

    #[test]
    fn provisioned_certificate_is_the_latest_live_one_of_tenure() {
        let Some((store, _, tenant)) = store() else { return };
        resource(&store, "r1", None);
        assert!(store.provisioned_certificate_of("r1").unwrap().is_none());
        let mut client = certificate(&tenant, "client", RenewalState::Scheduled, None, &["r1"]);
        client.1.key_source = KeySource::Client;
        insert(&store, &client);
        insert(&store, &certificate(&tenant, "stopped", RenewalState::Stopped, None, &["r1"]));
        assert!(store.provisioned_certificate_of("r1").unwrap().is_none());
        insert(&store, &certificate(&tenant, "lapsed", RenewalState::Lapsed, None, &["r1"]));
        assert_eq!(store.provisioned_certificate_of("r1").unwrap().unwrap().0.serial, "lapsed");
        let mut newer = certificate(&tenant, "newer", RenewalState::Scheduled, None, &["r1"]);
        newer.1.generation = 2;
        insert(&store, &newer);
        assert_eq!(store.provisioned_certificate_of("r1").unwrap().unwrap().0.serial, "newer");
    }
}
