//! Storage for the certificate lifecycle: bindings to resources, the renewal
//! queue, deliveries (an outbox) and CRLs. PostgreSQL: see
//! `../sqlite/lifecycle.rs`, whose meaning this file keeps; the queues are
//! claimed with `FOR UPDATE SKIP LOCKED`, so several servers share them.

use super::hsm::record_key;
use super::*;

const CERT_COLUMNS: &str =
    "serial, account_id, order_id, tenant, issuer_id, der, identifiers, not_before, not_after, revoked_at, revocation_reason,
     profile, renewal, renew_at, renewal_note, predecessor, successor, policy, trigger, generation, key_source";

/// How long `due_certificates` holds the certificates it returns from other
/// sweeping servers (seconds).
const DUE_LEASE: i64 = 120;

/// A certificate and its lifecycle from the columns of [`CERT_COLUMNS`], its
/// bound resources not yet filled in (they take another query).
fn certificate_with_life(r: &Row) -> Result<(Certificate, CertificateLifecycle)> {
    let cert = certificate_row(r)?;
    let renewal: String = get(r, 12)?;
    let life = CertificateLifecycle {
        profile: get(r, 11)?,
        resources: Vec::new(),
        renewal: RenewalState::parse(&renewal).ok_or_else(|| Error::internal(format!("stored renewal state {renewal:?} is unknown")))?,
        renew_at: get(r, 13)?,
        note: get(r, 14)?,
        predecessor: get(r, 15)?,
        successor: get(r, 16)?,
        policy: get(r, 17)?,
        trigger: {
            let t: String = get(r, 18)?;
            Trigger::parse(&t).ok_or_else(|| Error::internal(format!("stored trigger {t:?} is unknown")))?
        },
        generation: get(r, 19)?,
        key_source: {
            let k: String = get(r, 20)?;
            KeySource::parse(&k).ok_or_else(|| Error::internal(format!("stored key source {k:?} is unknown")))?
        },
    };
    Ok((cert, life))
}

fn bound_resources<C: Db>(c: &mut C, serial: &str) -> Result<Vec<String>> {
    ids(c, "SELECT resource_id FROM certificate_resources WHERE serial = $1 ORDER BY resource_id", &[&serial])
}

/// The certificates (with their lifecycles) that `condition` selects.
pub(super) fn query_certificates_with<C: Db>(
    c: &mut C,
    condition: &str,
    params: &Params<'_>,
) -> Result<Vec<(Certificate, CertificateLifecycle)>> {
    query_certificates(c, &format!("SELECT {CERT_COLUMNS} FROM certificates WHERE {condition}"), params)
}

/// The certificates a query of [`CERT_COLUMNS`] yields, with their bound resources.
fn query_certificates<C: Db>(c: &mut C, sql: &str, params: &Params<'_>) -> Result<Vec<(Certificate, CertificateLifecycle)>> {
    let mut found = rows(c, sql, params, certificate_with_life)?;
    for (cert, life) in &mut found {
        life.resources = bound_resources(c, &cert.serial)?;
    }
    Ok(found)
}

/// Runs `f` in one READ COMMITTED transaction: a claim of queued work is one
/// statement locking its rows `FOR UPDATE SKIP LOCKED`, so concurrent
/// claimers take disjoint rows without waiting; under SERIALIZABLE they would
/// abort each other instead (each read the range the other wrote).
pub(super) fn claim<T>(store: &PgStore, f: impl FnOnce(&mut Tx<'_>) -> Result<T>) -> Result<T> {
    store.read(|c| {
        let mut tx = c.begin(IsolationLevel::ReadCommitted)?;
        let out = f(&mut tx)?;
        tx.commit()?;
        Ok(out)
    })
}

/// Inserts a certificate with its lifecycle columns and bindings.
pub(super) fn insert_certificate(tx: &mut Tx<'_>, cert: &Certificate, life: &CertificateLifecycle, at: UnixTime) -> Result<()> {
    tx.execute(
        "INSERT INTO certificates (serial, account_id, order_id, tenant, issuer_id, der, identifiers, not_before, not_after,
            revoked_at, revocation_reason, created_at, profile, renewal, renew_at, renewal_note, predecessor, successor, policy, trigger,
            generation, key_source)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)",
        &[
            &cert.serial,
            &cert.account_id,
            &cert.order_id,
            &cert.tenant,
            &cert.issuer_id,
            &cert.der,
            &json(&cert.identifiers),
            &cert.not_before,
            &cert.not_after,
            &at,
            &life.profile,
            &life.renewal.as_str(),
            &life.renew_at,
            &life.note,
            &life.predecessor,
            &life.successor,
            &life.policy,
            &life.trigger.as_str(),
            &life.generation.max(1),
            &life.key_source.as_str(),
        ],
    )?;
    for r in &life.resources {
        tx.execute("INSERT INTO certificate_resources (serial, resource_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", &[&cert.serial, r])?;
    }
    Ok(())
}

/// Settles the claim and, if it holds, stores the certificate, its bindings,
/// its audit record and its deliveries. Returns false (having written
/// nothing) when the claim no longer holds.
pub(super) fn record_issued(tx: &mut Tx<'_>, issued: &IssuedRecord, at: UnixTime) -> Result<bool> {
    let serial = &issued.cert.serial;
    match &issued.claim {
        Claim::Order { order_id } => {
            // An order's names are the client's: its issuer must still be the
            // tenant's (see the SQLite store; SERIALIZABLE makes a concurrent
            // swap abort one of the two).
            let current = tx
                .query_opt("SELECT issuer_id, removed_at FROM tenants WHERE name = $1", &[&issued.cert.tenant])?
                .map(|r| Ok::<_, Error>((get::<i64>(&r, 0)?, get::<Option<i64>>(&r, 1)?)))
                .transpose()?;
            if current != Some((issued.cert.issuer_id, None)) {
                return Ok(false);
            }
            // The certificate row goes first: the order points at it.
            insert_certificate(tx, &issued.cert, &issued.life, at)?;
            let n =
                tx.execute("UPDATE orders SET status = 'valid', certificate = $2 WHERE id = $1 AND status = 'ready'", &[order_id, serial])?;
            if n != 1 {
                return Ok(false);
            }
            if let Some(replaced) = &issued.life.predecessor {
                tx.execute(
                    "UPDATE certificates SET renewal = 'replaced', successor = $2
                     WHERE serial = $1 AND renewal IN ('client', 'scheduled', 'lapsed')",
                    &[replaced, serial],
                )?;
            }
        }
        Claim::Renewal { predecessor } => {
            let claimed = tx.execute(
                "UPDATE certificates SET renewal = 'renewed', successor = $2
                 WHERE serial = $1 AND renewal = 'scheduled' AND revoked_at IS NULL",
                &[predecessor, serial],
            )?;
            if claimed != 1 {
                // Revoked while scheduled (nothing else leaves it so): stop it.
                tx.execute(
                    "UPDATE certificates SET renewal = 'stopped', renewal_note = 'revoked'
                     WHERE serial = $1 AND renewal = 'scheduled' AND revoked_at IS NOT NULL",
                    &[predecessor],
                )?;
                return Ok(false);
            }
            insert_certificate(tx, &issued.cert, &issued.life, at)?;
        }
        Claim::HsmKey { key, retire_after, provisioning } => {
            if let Some(request) = provisioning
                && !super::provisioning::settle(tx, request)?
            {
                return Ok(false);
            }
            insert_certificate(tx, &issued.cert, &issued.life, at)?;
            if !record_key(tx, key, *retire_after)? {
                return Ok(false);
            }
            // The previous key's certificate is succeeded by this one.
            if let Some(previous) = &issued.life.predecessor {
                tx.execute(
                    "UPDATE certificates SET renewal = 'renewed', successor = $2
                     WHERE serial = $1 AND renewal IN ('client', 'scheduled', 'lapsed')",
                    &[previous, serial],
                )?;
            }
        }
        Claim::Provisioning(request) => {
            if !super::provisioning::settle(tx, request)? {
                return Ok(false);
            }
            insert_certificate(tx, &issued.cert, &issued.life, at)?;
            // The resource's earlier certificate gives way to this one (its key,
            // names or lifetime changed); it stays valid until it expires.
            if let Some(previous) = &issued.life.predecessor {
                tx.execute(
                    "UPDATE certificates SET renewal = 'replaced', successor = $2
                     WHERE serial = $1 AND renewal IN ('client', 'scheduled', 'lapsed')",
                    &[previous, serial],
                )?;
            }
        }
    }
    append_audit(tx, &issued.audit)?;
    for (resource, kind, target) in &issued.deliveries {
        tx.execute(
            "INSERT INTO deliveries (event, serial, resource_id, kind, target, state, attempts, next_attempt, created_at, key_age)
             VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6, $7)",
            &[&issued.event, serial, resource, &kind.as_str(), target, &at, &issued.key_age],
        )?;
    }
    Ok(true)
}

/// Stops renewal of every certificate bound to a resource and revokes the
/// unexpired ones, inside the transaction that releases or transfers it.
/// Returns how many were revoked.
pub(super) fn stop_certificates_of_resource(tx: &mut Tx<'_>, resource_id: &str, reason: u8, note: &str) -> Result<usize> {
    let at = now();
    super::provisioning::notify_certificates_of(
        tx,
        crate::lifecycle::events::REVOKED,
        resource_id,
        &format!("c.revoked_at IS NULL AND c.not_after > {at}"),
        note,
    )?;
    let revoked = tx.execute(
        "UPDATE certificates SET revoked_at = $2, revocation_reason = $3
         WHERE serial IN (SELECT serial FROM certificate_resources WHERE resource_id = $1)
           AND revoked_at IS NULL AND not_after > $2",
        &[&resource_id, &at, &i64::from(reason)],
    )?;
    tx.execute(
        "UPDATE certificates SET renewal = 'stopped', renewal_note = $2
         WHERE serial IN (SELECT serial FROM certificate_resources WHERE resource_id = $1)
           AND renewal IN ('client', 'scheduled')",
        &[&resource_id, &note],
    )?;
    // A successor not yet delivered is revoked now: nothing to deliver.
    tx.execute(
        "UPDATE deliveries SET state = 'failed', last_error = $2, key_age = NULL
         WHERE state = 'pending' AND payload IS NULL
           AND serial IN (SELECT serial FROM certificate_resources WHERE resource_id = $1)",
        &[&resource_id, &note],
    )?;
    Ok(count(revoked))
}

impl CertificateStore for PgStore {
    fn certificate(&self, serial: &str) -> Result<Option<Certificate>> {
        self.read(|c| row(c, &format!("SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE serial = $1"), &[&serial], certificate_row))
    }

    /// Revokes unless already revoked; returns false if it was.
    /// A revoked certificate is not renewed either: both in one transaction.
    fn revoke_certificate(&self, serial: &str, reason: u8) -> Result<bool> {
        self.tx(|tx| {
            let revoked = tx.execute(
                "UPDATE certificates SET revoked_at = $2, revocation_reason = $3 WHERE serial = $1 AND revoked_at IS NULL",
                &[&serial, &now(), &i64::from(reason)],
            )? == 1;
            if revoked {
                tx.execute(
                    "UPDATE certificates SET renewal = 'stopped', renewal_note = 'revoked'
                     WHERE serial = $1 AND renewal IN ('client', 'scheduled')",
                    &[&serial],
                )?;
                let payload = serde_json::json!({ "serial": serial, "reason": reason });
                super::provisioning::notify_certificate(tx, crate::lifecycle::events::REVOKED, serial, &payload)?;
            }
            Ok(revoked)
        })
    }

    fn certificate_record(&self, serial: &str) -> Result<Option<(Certificate, CertificateLifecycle)>> {
        self.read(|c| Ok(query_certificates_with(c, "serial = $1", &[&serial])?.into_iter().next()))
    }

    /// Certificates, newest first, optionally of one tenant and/or bound to one resource.
    fn certificate_records(
        &self,
        tenant: Option<&str>,
        resource: Option<&str>,
        limit: i64,
    ) -> Result<Vec<(Certificate, CertificateLifecycle)>> {
        self.read(|c| {
            let sql = format!(
                "SELECT {CERT_COLUMNS} FROM certificates
                 WHERE ($1::text IS NULL OR tenant = $1)
                   AND ($2::text IS NULL OR serial IN (SELECT serial FROM certificate_resources WHERE resource_id = $2))
                 ORDER BY created_at DESC, generation DESC, serial LIMIT $3"
            );
            query_certificates(c, &sql, &[&tenant, &resource, &limit])
        })
    }

    /// Up to `limit` certificates whose renewal window opened before `before`,
    /// oldest due first, and claimed for [`DUE_LEASE`] seconds
    /// (`renewal_claimed_until`), so another server sweeping meanwhile skips
    /// them (and does not sign a second successor's worth of work). A
    /// certificate whose claimer died falls due again when the lease runs out,
    /// or at once when a server starts (`release_renewal_claims`);
    /// `record_renewals`' own claim (still scheduled, unrevoked) still
    /// guarantees a single successor.
    fn due_certificates(&self, before: UnixTime, limit: i64) -> Result<Vec<(Certificate, CertificateLifecycle)>> {
        claim(self, |tx| {
            let sql = format!(
                "WITH due AS (
                     SELECT {CERT_COLUMNS} FROM certificates WHERE renewal = 'scheduled' AND renew_at < $1
                       AND (renewal_claimed_until IS NULL OR renewal_claimed_until <= $4)
                     ORDER BY renew_at, serial LIMIT $2 FOR UPDATE SKIP LOCKED
                 ), claimed AS (
                     UPDATE certificates SET renewal_claimed_until = $3 WHERE serial IN (SELECT serial FROM due) RETURNING serial
                 )
                 SELECT {CERT_COLUMNS} FROM due WHERE serial IN (SELECT serial FROM claimed) ORDER BY renew_at, serial"
            );
            let at = now();
            query_certificates(tx, &sql, &[&before, &limit, &(at + DUE_LEASE), &at])
        })
    }

    fn renewals_due(&self, before: UnixTime) -> Result<i64> {
        // Counted in `certificates_due`, the partial index the sweep reads.
        self.read(|c| {
            Ok(value(c, "SELECT COUNT(*) FROM certificates WHERE renewal = 'scheduled' AND renew_at < $1", &[&before])?.unwrap_or(0))
        })
    }

    /// The scheduled certificates bound to a resource, due or not.
    fn scheduled_certificates_of_resource(&self, resource_id: &str) -> Result<Vec<(Certificate, CertificateLifecycle)>> {
        self.read(|c| {
            query_certificates_with(
                c,
                "renewal = 'scheduled' AND serial IN (SELECT serial FROM certificate_resources WHERE resource_id = $1)
                 ORDER BY renew_at, serial",
                &[&resource_id],
            )
        })
    }

    fn record_issuance(&self, issued: &IssuedRecord) -> Result<()> {
        self.tx(|tx| {
            if record_issued(tx, issued, now())? {
                return Ok(());
            }
            // Returning an error rolls back whatever was written with it.
            Err(match &issued.claim {
                Claim::Order { .. } => Error::new(
                    crate::ErrorKind::OrderNotReady,
                    "the order, or its tenant's intermediate, changed while its certificate was being signed; nothing was issued",
                ),
                Claim::Renewal { predecessor } => Error::conflict(
                    crate::Conflict::ResourceState,
                    format!("certificate {predecessor} is no longer scheduled for renewal; nothing was issued"),
                ),
                Claim::Provisioning(request) => Error::conflict(
                    crate::Conflict::ResourceState,
                    format!("resource {} changed while its certificate was being provisioned; nothing was issued", request.resource_id),
                ),
                Claim::HsmKey { key, .. } => Error::conflict(
                    crate::Conflict::Custody,
                    format!("the key of resource {} changed meanwhile; nothing was issued", key.resource_id.as_deref().unwrap_or("?")),
                ),
            })
        })
    }

    fn record_renewals(&self, outcomes: &[RenewalOutcome]) -> Result<RenewalTally> {
        self.tx(|tx| {
            let at = now();
            let mut tally = RenewalTally::default();
            for outcome in outcomes {
                match outcome {
                    // Only a renewal claim writes nothing before it is settled,
                    // so only it may be skipped inside a shared transaction.
                    RenewalOutcome::Renewed(IssuedRecord { claim: claim @ (Claim::Order { .. } | Claim::HsmKey { .. }), .. }) => {
                        return Err(Error::internal(format!("a sweep batch holds a {claim:?}; record it on its own")));
                    }
                    RenewalOutcome::Renewed(issued) => {
                        if record_issued(tx, issued, at)? {
                            tally.renewed += 1;
                        } else {
                            tally.skipped += 1;
                        }
                    }
                    RenewalOutcome::Lapsed { serial, note, audit } => {
                        let n = tx.execute(
                            "UPDATE certificates SET renewal = 'lapsed', renewal_note = $2 WHERE serial = $1 AND renewal = 'scheduled'",
                            &[serial, note],
                        )?;
                        if n != 1 {
                            tally.skipped += 1;
                            continue;
                        }
                        if let Some(a) = audit {
                            append_audit(tx, a)?;
                        }
                        let payload = serde_json::json!({ "serial": serial, "note": note });
                        super::provisioning::notify_certificate(tx, crate::lifecycle::events::LAPSED, serial, &payload)?;
                        tally.lapsed += 1;
                    }
                }
            }
            Ok(tally)
        })
    }

    /// Moves a scheduled certificate's renewal to `at` after a failure of ours.
    fn release_renewal_claims(&self) -> Result<usize> {
        self.read(|c| {
            Ok(count(c.execute(
                "UPDATE certificates SET renewal_claimed_until = NULL WHERE renewal = 'scheduled' AND renewal_claimed_until IS NOT NULL",
                &[],
            )?))
        })
    }

    fn defer_renewal(&self, serial: &str, at: UnixTime, note: &str) -> Result<()> {
        self.read(|c| {
            c.execute(
                "UPDATE certificates SET renew_at = $2, renewal_note = $3, renewal_claimed_until = NULL
                 WHERE serial = $1 AND renewal = 'scheduled'",
                &[&serial, &at, &note],
            )?;
            Ok(())
        })
    }

    /// Revoked certificates of an issuer that have not expired yet (an expired
    /// certificate may leave the CRL, RFC 5280 §3.3).
    fn revoked_certificates(&self, issuer_id: i64, at: UnixTime) -> Result<Vec<RevokedEntry>> {
        self.read(|c| {
            rows(
                c,
                "SELECT serial, revoked_at, revocation_reason FROM certificates
                 WHERE issuer_id = $1 AND revoked_at IS NOT NULL AND not_after > $2 ORDER BY revoked_at, serial",
                &[&issuer_id, &at],
                |r| Ok(RevokedEntry { serial: get(r, 0)?, revoked_at: get(r, 1)?, reason: get::<Option<i64>>(r, 2)?.unwrap_or(0) as u8 }),
            )
        })
    }

    /// How many certificates of the issuer were ever revoked: grows with every revocation.
    fn revocation_mark(&self, issuer_id: i64) -> Result<i64> {
        self.read(|c| {
            Ok(value(c, "SELECT COUNT(*) FROM certificates WHERE issuer_id = $1 AND revoked_at IS NOT NULL", &[&issuer_id])?.unwrap_or(0))
        })
    }

    fn issuers_with_crl_due(&self, made_by: UnixTime, at: UnixTime) -> Result<Vec<i64>> {
        self.read(|c| {
            rows(
                c,
                "SELECT i.id FROM issuers i LEFT JOIN crls c ON c.issuer_id = i.id
                 WHERE i.role = 'root' OR c.issuer_id IS NULL OR c.this_update <= $1 OR c.next_update <= $2
                    OR c.revocation_mark <> (SELECT COUNT(*) FROM certificates x WHERE x.issuer_id = i.id AND x.revoked_at IS NOT NULL)
                 ORDER BY i.id",
                &[&made_by, &at],
                |r| get(r, 0),
            )
        })
    }

    fn crl(&self, issuer_id: i64) -> Result<Option<StoredCrl>> {
        self.read(|c| {
            row(
                c,
                "SELECT issuer_id, number, this_update, next_update, revocation_mark, der FROM crls WHERE issuer_id = $1",
                &[&issuer_id],
                |r| {
                    Ok(StoredCrl {
                        issuer_id: get(r, 0)?,
                        number: get(r, 1)?,
                        this_update: get(r, 2)?,
                        next_update: get(r, 3)?,
                        revocation_mark: get(r, 4)?,
                        der: get(r, 5)?,
                    })
                },
            )
        })
    }

    /// Stores a CRL unless one with the same or a higher number is there (two
    /// processes regenerating at once); returns whether it was stored.
    fn put_crl(&self, crl: &StoredCrl) -> Result<bool> {
        self.read(|c| {
            Ok(c.execute(
                "INSERT INTO crls (issuer_id, number, this_update, next_update, revocation_mark, der) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (issuer_id) DO UPDATE SET number = excluded.number, this_update = excluded.this_update,
                   next_update = excluded.next_update, revocation_mark = excluded.revocation_mark, der = excluded.der
                 WHERE excluded.number > crls.number",
                &[&crl.issuer_id, &crl.number, &crl.this_update, &crl.next_update, &crl.revocation_mark, &crl.der],
            )? == 1)
        })
    }
}

impl DeliveryStore for PgStore {
    /// Claims up to `limit` due deliveries for `lease` seconds: another worker
    /// (the CLI, a second process, another server) skips them until the lease
    /// runs out. Returns them as they were before the lease, oldest due first.
    fn claim_deliveries(&self, at: UnixTime, limit: i64, lease: i64) -> Result<Vec<Delivery>> {
        claim(self, |tx| {
            let sql = format!(
                "WITH due AS (
                     SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE state = 'pending' AND next_attempt <= $1
                     ORDER BY next_attempt, id LIMIT $2 FOR UPDATE SKIP LOCKED
                 ), claimed AS (
                     UPDATE deliveries SET next_attempt = $3 WHERE id IN (SELECT id FROM due) RETURNING id
                 )
                 SELECT {DELIVERY_COLUMNS} FROM due WHERE id IN (SELECT id FROM claimed) ORDER BY next_attempt, id"
            );
            rows(tx, &sql, &[&at, &limit, &(at + lease)], delivery_row)
        })
    }

    /// Records one attempt: delivered, retry at `retry_at`, or (None) given up.
    fn finish_delivery(&self, id: i64, outcome: std::result::Result<(), String>, retry_at: Option<UnixTime>) -> Result<()> {
        self.read(|c| {
            match (outcome, retry_at) {
                (Ok(()), _) => c.execute(
                    "UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, delivered_at = $2, last_error = NULL,
                         key_age = NULL
                     WHERE id = $1 AND state = 'pending'",
                    &[&id, &now()],
                )?,
                (Err(e), Some(at)) => c.execute(
                    "UPDATE deliveries SET attempts = attempts + 1, next_attempt = $2, last_error = $3 WHERE id = $1 AND state = 'pending'",
                    &[&id, &at, &e],
                )?,
                (Err(e), None) => c.execute(
                    "UPDATE deliveries SET state = 'failed', attempts = attempts + 1, last_error = $2, key_age = NULL
                     WHERE id = $1 AND state = 'pending'",
                    &[&id, &e],
                )?,
            };
            Ok(())
        })
    }

    fn deliveries_of(&self, serial: &str) -> Result<Vec<Delivery>> {
        self.read(|c| {
            rows(c, &format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE serial = $1 ORDER BY id"), &[&serial], delivery_row)
        })
    }

    fn deliveries_pending(&self) -> Result<i64> {
        // Counted in `deliveries_pending`, the partial index of the outbox.
        self.read(|c| Ok(value(c, "SELECT COUNT(*) FROM deliveries WHERE state = 'pending'", &[])?.unwrap_or(0)))
    }

    fn deliveries_of_resource(&self, resource_id: &str, limit: i64) -> Result<Vec<Delivery>> {
        self.read(|c| {
            let sql = format!(
                "SELECT {DELIVERY_COLUMNS} FROM (SELECT * FROM deliveries WHERE resource_id = $1 ORDER BY id DESC LIMIT $2) d ORDER BY id"
            );
            rows(c, &sql, &[&resource_id, &limit], delivery_row)
        })
    }

    fn record_denial_notice(&self, audit: &AuditRecord, resource_id: &str, event: &str, payload: &serde_json::Value) -> Result<()> {
        self.tx(|tx| {
            append_audit(tx, audit)?;
            super::provisioning::notify_resource(tx, event, resource_id, payload)?;
            Ok(())
        })
    }
}

const DELIVERY_COLUMNS: &str = "id, serial, resource_id, kind, target, state, attempts, next_attempt, last_error, event, payload, key_age";

fn delivery_row(r: &Row) -> Result<Delivery> {
    let id: i64 = get(r, 0)?;
    let kind: String = get(r, 3)?;
    let state: String = get(r, 5)?;
    let (Some(kind), Some(state)) = (DeliveryKind::parse(&kind), DeliveryState::parse(&state)) else {
        return Err(Error::internal(format!("stored delivery {id} has kind {kind:?}, state {state:?}")));
    };
    Ok(Delivery {
        id,
        serial: get(r, 1)?,
        resource_id: get(r, 2)?,
        kind,
        target: get(r, 4)?,
        state,
        attempts: get(r, 6)?,
        next_attempt: get(r, 7)?,
        last_error: get(r, 8)?,
        event: get(r, 9)?,
        payload: get::<Option<String>>(r, 10)?.and_then(|p| serde_json::from_str(&p).ok()),
        key_age: get(r, 11)?,
    })
}

#[cfg(test)]
pub(in crate::store::pg) mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use super::*;

    /// A store on a fresh database with tenant `t`; None without a test cluster.
    pub(in crate::store::pg) fn store() -> Option<(Arc<PgStore>, String, Tenant)> {
        let url = super::super::testdb::fresh()?;
        let store = PgStore::open(&url).unwrap();
        let tenant = store.insert_tenant("t", &[], b"der", b"key", b"secret", None, &|_| Ok(())).unwrap();
        Some((Arc::new(store), url, tenant))
    }

    /// A resource of tenant `t`, written directly (the registry is not under test).
    pub(in crate::store::pg) fn resource(store: &PgStore, id: &str, webhook: Option<&str>) {
        let attributes = match webhook {
            Some(w) => serde_json::json!({ "delivery-webhook": w }),
            None => serde_json::json!({}),
        };
        store
            .read(|c| {
                c.execute(
                    "INSERT INTO resources (id, tenant, kind, names, zones, addresses, state, attributes, anchor, created_at, updated_at)
                     VALUES ($1, 't', 'host', '[]', '[]', '[]', 'active', $2, NULL, 0, 0)",
                    &[&id, &attributes.to_string()],
                )?;
                Ok(())
            })
            .unwrap();
    }

    pub(in crate::store::pg) fn audit() -> AuditRecord {
        AuditRecord {
            seq: 0,
            at: now(),
            hook: "issuance".into(),
            tenant: "t".into(),
            account: None,
            plugins: Vec::new(),
            signers: Vec::new(),
            input_digest: "d".into(),
            input: serde_json::json!({}),
            outcome: "allow".into(),
            reason: None,
            grant: None,
            duration_us: 1,
        }
    }

    pub(in crate::store::pg) fn audit_count(store: &PgStore) -> i64 {
        store.read(|c| Ok(value(c, "SELECT COUNT(*) FROM audit", &[])?.unwrap_or(0))).unwrap()
    }

    /// A certificate of tenant `t` bound to `resources`, in `renewal` state.
    pub(in crate::store::pg) fn certificate(
        tenant: &Tenant,
        serial: &str,
        renewal: RenewalState,
        renew_at: Option<UnixTime>,
        resources: &[&str],
    ) -> (Certificate, CertificateLifecycle) {
        let cert = Certificate {
            serial: serial.into(),
            account_id: None,
            order_id: None,
            tenant: "t".into(),
            issuer_id: tenant.issuer_id,
            der: serial.as_bytes().to_vec(),
            identifiers: Vec::new(),
            not_before: now() - 10,
            not_after: now() + 86_400,
            revoked_at: None,
            revocation_reason: None,
        };
        let life = CertificateLifecycle {
            profile: "default".into(),
            resources: resources.iter().map(|r| r.to_string()).collect(),
            renewal,
            renew_at,
            note: None,
            predecessor: None,
            successor: None,
            policy: String::new(),
            trigger: Trigger::Provisioning,
            generation: 1,
            key_source: KeySource::Platform,
        };
        (cert, life)
    }

    pub(in crate::store::pg) fn insert(store: &PgStore, (cert, life): &(Certificate, CertificateLifecycle)) {
        store.tx(|tx| insert_certificate(tx, cert, life, now())).unwrap();
    }

    pub(in crate::store::pg) fn issued(cert: (Certificate, CertificateLifecycle), claim: Claim) -> IssuedRecord {
        IssuedRecord {
            cert: cert.0,
            life: cert.1,
            audit: audit(),
            deliveries: Vec::new(),
            event: crate::lifecycle::events::RENEWED,
            key_age: None,
            claim,
        }
    }

    /// Runs `claim` from two stores at once, each until the queue is empty;
    /// returns what each claimed.
    pub(in crate::store::pg) fn race<T: Send + 'static>(url: &str, claim: fn(&PgStore) -> Vec<T>) -> (Vec<T>, Vec<T>) {
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let store = PgStore::open(url).unwrap();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    let mut all = Vec::new();
                    loop {
                        let got = claim(&store);
                        if got.is_empty() {
                            return all;
                        }
                        all.extend(got);
                    }
                })
            })
            .collect();
        let mut results = workers.into_iter().map(|w| w.join().unwrap());
        (results.next().unwrap(), results.next().unwrap())
    }

    #[test]
    fn two_servers_claim_disjoint_due_certificates() {
        let Some((store, url, tenant)) = store() else { return };
        let t = now();
        for i in 0..30 {
            insert(&store, &certificate(&tenant, &format!("s{i:02}"), RenewalState::Scheduled, Some(t - 100 + i), &[]));
        }
        insert(&store, &certificate(&tenant, "later", RenewalState::Scheduled, Some(t + 3600), &[]));
        insert(&store, &certificate(&tenant, "client", RenewalState::Client, Some(t - 100), &[]));
        assert_eq!(store.renewals_due(t).unwrap(), 30, "the backlog gauge counts what is due");

        // One batch comes oldest due first, as it was before the claim.
        let first = store.due_certificates(t, 3).unwrap();
        let serials: Vec<_> = first.iter().map(|(c, _)| c.serial.as_str()).collect();
        assert_eq!(serials, ["s00", "s01", "s02"]);
        assert_eq!(first[0].1.renew_at, Some(t - 100));
        // ... and is claimed: another look skips it for the lease; its renew_at stays.
        let claimed = store.certificate_record("s00").unwrap().unwrap().1;
        assert_eq!(claimed.renew_at, Some(t - 100));
        assert_eq!(store.due_certificates(t, 1).unwrap()[0].0.serial, "s03");

        let (a, b) = race(&url, |s| s.due_certificates(now(), 4).unwrap().into_iter().map(|(c, _)| c.serial).collect());
        let (sa, sb): (HashSet<_>, HashSet<_>) = (a.iter().cloned().collect(), b.iter().cloned().collect());
        assert_eq!(sa.len(), a.len());
        assert_eq!(sb.len(), b.len());
        assert!(sa.is_disjoint(&sb), "both claimed {:?}", sa.intersection(&sb).collect::<Vec<_>>());
        let all: HashSet<_> = sa.union(&sb).cloned().collect();
        let expected: HashSet<_> = (4..30).map(|i| format!("s{i:02}")).collect();
        assert_eq!(all, expected);
        // A server starting takes over the claims of one that died.
        assert_eq!(store.release_renewal_claims().unwrap(), 30);
        assert_eq!(store.due_certificates(now(), 100).unwrap().len(), 30);
        // Claimed or not, due is due.
        assert_eq!(store.renewals_due(now()).unwrap(), 30);
    }

    #[test]
    fn two_servers_claim_disjoint_deliveries() {
        let Some((store, url, _)) = store() else { return };
        resource(&store, "r1", None);
        store
            .read(|c| {
                for i in 0..40 {
                    c.execute(
                        "INSERT INTO deliveries (event, serial, resource_id, kind, target, state, attempts, next_attempt, created_at, payload)
                         VALUES ('e', NULL, 'r1', 'webhook', 'https://hook', 'pending', 0, $1, 0, '{}')",
                        &[&(now() - 100 + i)],
                    )?;
                }
                c.execute(
                    "INSERT INTO deliveries (event, serial, resource_id, kind, target, state, attempts, next_attempt, created_at)
                     VALUES ('e', NULL, 'r1', 'file', '/x', 'delivered', 1, 0, 0)",
                    &[],
                )?;
                Ok(())
            })
            .unwrap();
        assert_eq!(store.deliveries_pending().unwrap(), 40, "the backlog gauge counts what waits");
        let (a, b) = race(&url, |s| s.claim_deliveries(now(), 3, 600).unwrap().into_iter().map(|d| d.id).collect());
        let (sa, sb): (HashSet<_>, HashSet<_>) = (a.iter().copied().collect(), b.iter().copied().collect());
        assert_eq!(sa.len() + sb.len(), 40);
        assert!(sa.is_disjoint(&sb));
        assert!(store.claim_deliveries(now(), 10, 600).unwrap().is_empty(), "all leased");
        // The lease runs out: due again, in order.
        let again = store.claim_deliveries(now() + 601, 2, 600).unwrap();
        assert_eq!(again.len(), 2);
        assert!(again[0].next_attempt <= again[1].next_attempt);
        assert_eq!(again[0].payload, Some(serde_json::json!({})));
        store.finish_delivery(again[0].id, Ok(()), None).unwrap();
        store.finish_delivery(again[1].id, Err("down".into()), None).unwrap();
        assert_eq!(store.deliveries_pending().unwrap(), 38, "one delivered, one given up");
        let recent = store.deliveries_of_resource("r1", 3).unwrap();
        assert_eq!(recent.len(), 3);
        assert!(recent.windows(2).all(|w| w[0].id < w[1].id));
        let states: Vec<_> = store
            .deliveries_of_resource("r1", 100)
            .unwrap()
            .into_iter()
            .filter(|d| d.id == again[0].id || d.id == again[1].id)
            .map(|d| (d.state, d.attempts, d.last_error))
            .collect();
        assert_eq!(states.len(), 2);
        assert!(states.contains(&(DeliveryState::Delivered, 1, None)));
        assert!(states.contains(&(DeliveryState::Failed, 1, Some("down".into()))));
    }

    #[test]
    fn a_claim_skips_rows_another_server_holds() {
        let Some((store, url, tenant)) = store() else { return };
        for i in 0..4 {
            insert(&store, &certificate(&tenant, &format!("s{i}"), RenewalState::Scheduled, Some(now() - 100 + i), &[]));
        }
        // Another server is in the middle of claiming the two oldest.
        let mut other = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let mut held = other.transaction().unwrap();
        held.execute("SELECT serial FROM certificates WHERE serial IN ('s0', 's1') FOR UPDATE", &[]).unwrap();
        let got = store.due_certificates(now(), 10).unwrap();
        assert_eq!(got.iter().map(|(c, _)| c.serial.as_str()).collect::<Vec<_>>(), ["s2", "s3"]);
        held.rollback().unwrap();
        let got = store.due_certificates(now(), 10).unwrap();
        assert_eq!(got.iter().map(|(c, _)| c.serial.as_str()).collect::<Vec<_>>(), ["s0", "s1"]);
    }

    #[test]
    fn an_order_claim_issues_once() {
        let Some((store, _, tenant)) = store() else { return };
        resource(&store, "r1", None);
        let account = Account {
            id: "acct".into(),
            thumbprint: "tp".into(),
            jwk: "{}".into(),
            status: AccountStatus::Valid,
            contact: Vec::new(),
            tenant: "t".into(),
            eab_kid: None,
            tos_agreed: true,
            created_at: now(),
        };
        store.insert_account(&account).unwrap();
        let order = Order {
            id: "o1".into(),
            account_id: "acct".into(),
            status: OrderStatus::Ready,
            expires: now() + 3600,
            identifiers: Vec::new(),
            profile: "default".into(),
            error: None,
            certificate: None,
            replaces: None,
            created_at: now(),
            authorizations: Vec::new(),
            lifetime_seconds: None,
        };
        store.insert_order(&order, &[], None).unwrap();
        let with_order = |serial: &str| {
            let (mut cert, mut life) = certificate(&tenant, serial, RenewalState::Client, None, &["r1"]);
            cert.account_id = Some("acct".into());
            cert.order_id = Some("o1".into());
            life.trigger = Trigger::AcmeFinalize;
            life.key_source = KeySource::Client;
            let mut rec = issued((cert, life), Claim::Order { order_id: "o1".into() });
            rec.deliveries = vec![("r1".into(), DeliveryKind::File, "/tmp/x".into())];
            rec
        };
        store.record_issuance(&with_order("first")).unwrap();
        let order = store.order("o1").unwrap().unwrap();
        assert_eq!(order.status, OrderStatus::Valid);
        assert_eq!(order.certificate.as_deref(), Some("first"));
        let (_, life) = store.certificate_record("first").unwrap().unwrap();
        assert_eq!(life.resources, ["r1"]);
        assert_eq!(store.deliveries_of("first").unwrap().len(), 1);
        assert_eq!(audit_count(&store), 1);

        let err = store.record_issuance(&with_order("second")).unwrap_err();
        assert!(matches!(err.kind, crate::ErrorKind::OrderNotReady), "{err:?}");
        assert!(store.certificate("second").unwrap().is_none(), "nothing of the second was kept");
        assert_eq!(audit_count(&store), 1);
        let records = store.certificate_records(Some("t"), Some("r1"), 10).unwrap();
        assert_eq!(records.len(), 1);
        assert!(store.certificate_records(Some("other"), None, 10).unwrap().is_empty());
    }

    #[test]
    fn record_renewals_skips_a_predecessor_no_longer_scheduled() {
        let Some((store, _, tenant)) = store() else { return };
        let past = Some(now() - 10);
        insert(&store, &certificate(&tenant, "a", RenewalState::Scheduled, past, &[]));
        insert(&store, &certificate(&tenant, "b", RenewalState::Scheduled, past, &[]));
        insert(&store, &certificate(&tenant, "c", RenewalState::Scheduled, past, &[]));
        // b was revoked (which stops it); c was revoked but is still scheduled.
        assert!(store.revoke_certificate("b", 4).unwrap());
        assert!(!store.revoke_certificate("b", 4).unwrap());
        store.read(|c| Ok(c.execute("UPDATE certificates SET revoked_at = 1 WHERE serial = 'c'", &[])?)).unwrap();

        let successor = |serial: &str, of: &str| {
            let (cert, mut life) = certificate(&tenant, serial, RenewalState::Scheduled, Some(now() + 1000), &[]);
            life.predecessor = Some(of.into());
            RenewalOutcome::Renewed(issued((cert, life), Claim::Renewal { predecessor: of.into() }))
        };
        let tally = store
            .record_renewals(&[
                successor("a2", "a"),
                successor("b2", "b"),
                successor("c2", "c"),
                RenewalOutcome::Lapsed { serial: "a".into(), note: "late".into(), audit: Some(audit()) },
            ])
            .unwrap();
        assert_eq!(tally, RenewalTally { renewed: 1, lapsed: 0, skipped: 3 });
        let a = store.certificate_record("a").unwrap().unwrap().1;
        assert_eq!((a.renewal, a.successor.as_deref()), (RenewalState::Renewed, Some("a2")));
        assert!(store.certificate("a2").unwrap().is_some());
        assert!(store.certificate("b2").unwrap().is_none());
        assert!(store.certificate("c2").unwrap().is_none());
        let c = store.certificate_record("c").unwrap().unwrap().1;
        assert_eq!((c.renewal, c.note.as_deref()), (RenewalState::Stopped, Some("revoked")));
        assert_eq!(audit_count(&store), 1, "only a2's audit record");

        // A renewal claim recorded on its own says why it failed.
        let err = store.record_issuance(&issued(
            certificate(&tenant, "b3", RenewalState::Scheduled, None, &[]),
            Claim::Renewal { predecessor: "b".into() },
        ));
        assert!(err.is_err());
        // Orders are not for sweep batches.
        let order = issued(certificate(&tenant, "o", RenewalState::Client, None, &[]), Claim::Order { order_id: "x".into() });
        assert!(store.record_renewals(&[RenewalOutcome::Renewed(order)]).is_err());
    }

    #[test]
    fn revocation_notifies_webhooks_and_stops_renewal() {
        let Some((store, _, tenant)) = store() else { return };
        resource(&store, "hooked", Some("https://hook.example"));
        resource(&store, "plain", None);
        insert(&store, &certificate(&tenant, "x", RenewalState::Scheduled, Some(now() + 100), &["hooked", "plain"]));
        insert(&store, &certificate(&tenant, "y", RenewalState::Scheduled, Some(now() + 50), &["hooked"]));
        let scheduled = store.scheduled_certificates_of_resource("hooked").unwrap();
        assert_eq!(scheduled.iter().map(|(c, _)| c.serial.as_str()).collect::<Vec<_>>(), ["y", "x"]);
        assert_eq!(scheduled[1].1.resources, ["hooked", "plain"]);

        assert!(store.revoke_certificate("x", 1).unwrap());
        let (cert, life) = store.certificate_record("x").unwrap().unwrap();
        assert_eq!(cert.revocation_reason, Some(1));
        assert_eq!(life.renewal, RenewalState::Stopped);
        let notices = store.deliveries_of("x").unwrap();
        assert_eq!(notices.len(), 1, "only the resource with a webhook");
        assert_eq!(notices[0].resource_id, "hooked");
        assert_eq!(notices[0].target, "https://hook.example");
        assert_eq!(notices[0].payload, Some(serde_json::json!({ "serial": "x", "reason": 1 })));
        assert_eq!(store.revocation_mark(tenant.issuer_id).unwrap(), 1);
        let revoked = store.revoked_certificates(tenant.issuer_id, now()).unwrap();
        assert_eq!(revoked.len(), 1);
        assert_eq!((revoked[0].serial.as_str(), revoked[0].reason), ("x", 1));

        // Releasing the resource revokes what is left and notifies about it.
        let n = store.tx(|tx| stop_certificates_of_resource(tx, "hooked", 5, "released")).unwrap();
        assert_eq!(n, 1);
        let (cert, life) = store.certificate_record("y").unwrap().unwrap();
        assert_eq!(cert.revocation_reason, Some(5));
        assert_eq!((life.renewal, life.note.as_deref()), (RenewalState::Stopped, Some("released")));
        let notices = store.deliveries_of("y").unwrap();
        assert_eq!(notices.len(), 1);
        assert_eq!(notices[0].payload, Some(serde_json::json!({ "serial": "y", "tenant": "t", "note": "released" })));

        store
            .record_denial_notice(&audit(), "hooked", crate::lifecycle::events::DISTRIBUTION_DENIED, &serde_json::json!({"n": 1}))
            .unwrap();
        store.record_denial_notice(&audit(), "plain", crate::lifecycle::events::DISTRIBUTION_DENIED, &serde_json::json!({"n": 2})).unwrap();
        assert_eq!(store.deliveries_of_resource("hooked", 10).unwrap().len(), 3);
        assert!(store.deliveries_of_resource("plain", 10).unwrap().is_empty());
        assert_eq!(audit_count(&store), 2);
    }

    #[test]
    fn put_crl_keeps_the_highest_number() {
        let Some((store, _, tenant)) = store() else { return };
        let crl = |number: i64| StoredCrl {
            issuer_id: tenant.issuer_id,
            number,
            this_update: now(),
            next_update: now() + 3600,
            revocation_mark: number * 10,
            der: vec![number as u8],
        };
        assert!(store.crl(tenant.issuer_id).unwrap().is_none());
        assert!(store.put_crl(&crl(2)).unwrap());
        assert!(!store.put_crl(&crl(1)).unwrap());
        assert!(!store.put_crl(&crl(2)).unwrap());
        assert_eq!(store.crl(tenant.issuer_id).unwrap().unwrap().number, 2);
        assert!(store.put_crl(&crl(3)).unwrap());
        let stored = store.crl(tenant.issuer_id).unwrap().unwrap();
        assert_eq!((stored.number, stored.revocation_mark, stored.der), (3, 30, vec![3]));
    }

    #[test]
    fn defer_renewal_moves_only_scheduled_certificates() {
        let Some((store, _, tenant)) = store() else { return };
        insert(&store, &certificate(&tenant, "s", RenewalState::Scheduled, Some(now() - 5), &[]));
        insert(&store, &certificate(&tenant, "l", RenewalState::Lapsed, Some(now() - 5), &[]));
        store.defer_renewal("s", now() + 60, "try later").unwrap();
        store.defer_renewal("l", now() + 60, "try later").unwrap();
        let s = store.certificate_record("s").unwrap().unwrap().1;
        assert_eq!(s.note.as_deref(), Some("try later"));
        assert!(store.due_certificates(now(), 10).unwrap().is_empty());
        assert_eq!(store.certificate_record("l").unwrap().unwrap().1.note, None);
    }
}
