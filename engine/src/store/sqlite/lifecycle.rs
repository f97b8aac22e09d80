//! Storage for the certificate lifecycle: bindings to resources, the renewal
//! queue, deliveries (an outbox) and CRLs.

use rusqlite::{Connection, OptionalExtension, params};

use super::hsm::record_key;
use super::registry::append_audit;
use super::{SqliteStore, Tx, certificate_row, json};
use crate::error::{Error, ErrorKind, Result};
use crate::model::*;
use crate::store::*;

const CERT_COLUMNS: &str =
    "serial, account_id, order_id, tenant, issuer_id, der, identifiers, not_before, not_after, revoked_at, revocation_reason,
     profile, renewal, renew_at, renewal_note, predecessor, successor, policy, trigger, generation, key_source";

fn certificate_with_life(c: &Connection, r: &rusqlite::Row<'_>) -> Result<(Certificate, CertificateLifecycle)> {
    let cert = certificate_row(r)??;
    let renewal: String = r.get(12)?;
    let life = CertificateLifecycle {
        profile: r.get(11)?,
        resources: bound_resources(c, &cert.serial)?,
        renewal: RenewalState::parse(&renewal).ok_or_else(|| Error::internal(format!("stored renewal state {renewal:?} is unknown")))?,
        renew_at: r.get(13)?,
        note: r.get(14)?,
        predecessor: r.get(15)?,
        successor: r.get(16)?,
        policy: r.get(17)?,
        trigger: {
            let t: String = r.get(18)?;
            Trigger::parse(&t).ok_or_else(|| Error::internal(format!("stored trigger {t:?} is unknown")))?
        },
        generation: r.get(19)?,
        key_source: {
            let k: String = r.get(20)?;
            KeySource::parse(&k).ok_or_else(|| Error::internal(format!("stored key source {k:?} is unknown")))?
        },
    };
    Ok((cert, life))
}

fn bound_resources(c: &Connection, serial: &str) -> Result<Vec<String>> {
    let mut st = c.prepare_cached("SELECT resource_id FROM certificate_resources WHERE serial = ?1 ORDER BY resource_id")?;
    let ids = st.query_map([serial], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(ids)
}

/// The certificates (with their lifecycles) that `condition` selects.
pub(super) fn query_certificates_with(
    c: &Connection,
    condition: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<(Certificate, CertificateLifecycle)>> {
    query_certificates(c, &format!("SELECT {CERT_COLUMNS} FROM certificates WHERE {condition}"), args)
}

fn query_certificates(c: &Connection, sql: &str, args: impl rusqlite::Params) -> Result<Vec<(Certificate, CertificateLifecycle)>> {
    let mut st = c.prepare_cached(sql)?;
    let mut rows = st.query(args)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(certificate_with_life(c, r)?);
    }
    Ok(out)
}

/// Inserts a certificate with its lifecycle columns and bindings.
pub(super) fn insert_certificate(tx: &Tx<'_>, cert: &Certificate, life: &CertificateLifecycle, at: UnixTime) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO certificates (serial, account_id, order_id, tenant, issuer_id, der, identifiers, not_before, not_after,
            revoked_at, revocation_reason, created_at, profile, renewal, renew_at, renewal_note, predecessor, successor, policy, trigger,
            generation, key_source)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, NULL, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
    )?
    .execute(params![
        cert.serial,
        cert.account_id,
        cert.order_id,
        cert.tenant,
        cert.issuer_id,
        cert.der,
        json(&cert.identifiers),
        cert.not_before,
        cert.not_after,
        at,
        life.profile,
        life.renewal.as_str(),
        life.renew_at,
        life.note,
        life.predecessor,
        life.successor,
        life.policy,
        life.trigger.as_str(),
        life.generation.max(1),
        life.key_source.as_str(),
    ])?;
    let mut bind = tx.prepare_cached("INSERT OR IGNORE INTO certificate_resources (serial, resource_id) VALUES (?1, ?2)")?;
    for r in &life.resources {
        bind.execute(params![cert.serial, r])?;
    }
    Ok(())
}

/// Settles the claim and, if it holds, stores the certificate, its bindings,
/// its audit record and its deliveries. Returns false (having written
/// nothing) when the claim no longer holds.
pub(super) fn record_issued(tx: &Tx<'_>, issued: &IssuedRecord, at: UnixTime) -> Result<bool> {
    let serial = &issued.cert.serial;
    match &issued.claim {
        Claim::Order { order_id } => {
            // An order's names are the client's, not the registry's: if a
            // `tenant update` (names withdrawn), `rotate` or `remove` committed
            // while this certificate was being decided and signed, its issuer
            // is no longer the tenant's, and finalizing again re-checks the
            // names against the current intermediate.
            let current = tx
                .prepare_cached("SELECT issuer_id, removed_at FROM tenants WHERE name = ?1")?
                .query_row([&issued.cert.tenant], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?)))
                .optional()?;
            if current != Some((issued.cert.issuer_id, None)) {
                return Ok(false);
            }
            // The certificate row goes first: the order points at it.
            insert_certificate(tx, &issued.cert, &issued.life, at)?;
            let n = tx
                .prepare_cached("UPDATE orders SET status = 'valid', certificate = ?2 WHERE id = ?1 AND status = 'ready'")?
                .execute(params![order_id, serial])?;
            if n != 1 {
                return Ok(false);
            }
            if let Some(replaced) = &issued.life.predecessor {
                tx.prepare_cached(
                    "UPDATE certificates SET renewal = 'replaced', successor = ?2
                     WHERE serial = ?1 AND renewal IN ('client', 'scheduled', 'lapsed')",
                )?
                .execute(params![replaced, serial])?;
            }
        }
        Claim::Renewal { predecessor } => {
            let claimed = tx
                .prepare_cached(
                    "UPDATE certificates SET renewal = 'renewed', successor = ?2
                     WHERE serial = ?1 AND renewal = 'scheduled' AND revoked_at IS NULL",
                )?
                .execute(params![predecessor, serial])?;
            if claimed != 1 {
                // Revoked while scheduled (nothing else leaves it so): stop it.
                tx.prepare_cached(
                    "UPDATE certificates SET renewal = 'stopped', renewal_note = 'revoked'
                     WHERE serial = ?1 AND renewal = 'scheduled' AND revoked_at IS NOT NULL",
                )?
                .execute([predecessor])?;
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
                tx.prepare_cached(
                    "UPDATE certificates SET renewal = 'renewed', successor = ?2
                     WHERE serial = ?1 AND renewal IN ('client', 'scheduled', 'lapsed')",
                )?
                .execute(params![previous, serial])?;
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
                tx.prepare_cached(
                    "UPDATE certificates SET renewal = 'replaced', successor = ?2
                     WHERE serial = ?1 AND renewal IN ('client', 'scheduled', 'lapsed')",
                )?
                .execute(params![previous, serial])?;
            }
        }
    }
    append_audit(tx, &issued.audit)?;
    let mut outbox = tx.prepare_cached(
        "INSERT INTO deliveries (event, serial, resource_id, kind, target, state, attempts, next_attempt, created_at, key_age)
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?6, ?7)",
    )?;
    for (resource, kind, target) in &issued.deliveries {
        outbox.execute(params![issued.event, serial, resource, kind.as_str(), target, at, issued.key_age])?;
    }
    Ok(true)
}

/// Stops renewal of every certificate bound to a resource and revokes the
/// unexpired ones, inside the transaction that releases or transfers it.
/// Returns how many were revoked.
pub(super) fn stop_certificates_of_resource(tx: &Tx<'_>, resource_id: &str, reason: u8, note: &str) -> Result<usize> {
    let at = now();
    super::provisioning::notify_certificates_of(
        tx,
        crate::lifecycle::events::REVOKED,
        resource_id,
        &format!("c.revoked_at IS NULL AND c.not_after > {at}"),
        note,
    )?;
    let revoked = tx.execute(
        "UPDATE certificates SET revoked_at = ?2, revocation_reason = ?3
         WHERE serial IN (SELECT serial FROM certificate_resources WHERE resource_id = ?1)
           AND revoked_at IS NULL AND not_after > ?2",
        params![resource_id, at, reason],
    )?;
    tx.execute(
        "UPDATE certificates SET renewal = 'stopped', renewal_note = ?2
         WHERE serial IN (SELECT serial FROM certificate_resources WHERE resource_id = ?1)
           AND renewal IN ('client', 'scheduled')",
        params![resource_id, note],
    )?;
    // A successor not yet delivered is revoked now: nothing to deliver.
    tx.execute(
        "UPDATE deliveries SET state = 'failed', last_error = ?2, key_age = NULL
         WHERE state = 'pending' AND payload IS NULL
           AND serial IN (SELECT serial FROM certificate_resources WHERE resource_id = ?1)",
        params![resource_id, note],
    )?;
    Ok(revoked)
}

/// The renewal gauge: counted in `certificates_due`, the partial index the
/// sweep reads (a test pins the plan).
pub(super) const RENEWALS_DUE: &str = "SELECT COUNT(*) FROM certificates WHERE renewal = 'scheduled' AND renew_at < ?1";
/// The outbox gauge: counted in `deliveries_pending`, the outbox's partial index.
pub(super) const DELIVERIES_PENDING: &str = "SELECT COUNT(*) FROM deliveries WHERE state = 'pending'";

impl CertificateStore for SqliteStore {
    fn certificate(&self, serial: &str) -> Result<Option<Certificate>> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT serial, account_id, order_id, tenant, issuer_id, der, identifiers, not_before, not_after, revoked_at, revocation_reason
                 FROM certificates WHERE serial = ?1",
            )?
            .query_row([serial], certificate_row)
            .optional()?
            .transpose()
        })
    }

    /// Revokes unless already revoked; returns false if it was.
    /// A revoked certificate is not renewed either: both in one transaction.
    fn revoke_certificate(&self, serial: &str, reason: u8) -> Result<bool> {
        self.tx(|tx| {
            let revoked = tx.execute(
                "UPDATE certificates SET revoked_at = ?2, revocation_reason = ?3 WHERE serial = ?1 AND revoked_at IS NULL",
                params![serial, now(), reason],
            )? == 1;
            if revoked {
                tx.execute(
                    "UPDATE certificates SET renewal = 'stopped', renewal_note = 'revoked'
                     WHERE serial = ?1 AND renewal IN ('client', 'scheduled')",
                    [serial],
                )?;
                let payload = serde_json::json!({ "serial": serial, "reason": reason });
                super::provisioning::notify_certificate(tx, crate::lifecycle::events::REVOKED, serial, &payload)?;
            }
            Ok(revoked)
        })
    }

    fn certificate_record(&self, serial: &str) -> Result<Option<(Certificate, CertificateLifecycle)>> {
        self.read(|c| {
            let sql = format!("SELECT {CERT_COLUMNS} FROM certificates WHERE serial = ?1");
            Ok(query_certificates(c, &sql, [serial])?.into_iter().next())
        })
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
                 WHERE (?1 IS NULL OR tenant = ?1)
                   AND (?2 IS NULL OR serial IN (SELECT serial FROM certificate_resources WHERE resource_id = ?2))
                 ORDER BY created_at DESC, generation DESC, serial LIMIT ?3"
            );
            query_certificates(c, &sql, params![tenant, resource, limit])
        })
    }

    /// Up to `limit` certificates whose renewal window opened before `before`, oldest due first.
    fn due_certificates(&self, before: UnixTime, limit: i64) -> Result<Vec<(Certificate, CertificateLifecycle)>> {
        self.read(|c| {
            let sql = format!(
                "SELECT {CERT_COLUMNS} FROM certificates WHERE renewal = 'scheduled' AND renew_at < ?1 ORDER BY renew_at, serial LIMIT ?2"
            );
            query_certificates(c, &sql, params![before, limit])
        })
    }

    fn renewals_due(&self, before: UnixTime) -> Result<i64> {
        self.read(|c| Ok(c.prepare_cached(RENEWALS_DUE)?.query_row([before], |r| r.get(0))?))
    }

    /// The scheduled certificates bound to a resource, due or not.
    fn scheduled_certificates_of_resource(&self, resource_id: &str) -> Result<Vec<(Certificate, CertificateLifecycle)>> {
        self.read(|c| {
            let sql = format!(
                "SELECT {CERT_COLUMNS} FROM certificates WHERE renewal = 'scheduled'
                   AND serial IN (SELECT serial FROM certificate_resources WHERE resource_id = ?1) ORDER BY renew_at, serial"
            );
            query_certificates(c, &sql, [resource_id])
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
                    ErrorKind::OrderNotReady,
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
                        let n = tx
                            .prepare_cached(
                                "UPDATE certificates SET renewal = 'lapsed', renewal_note = ?2 WHERE serial = ?1 AND renewal = 'scheduled'",
                            )?
                            .execute(params![serial, note])?;
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
        Ok(0)
    }

    fn defer_renewal(&self, serial: &str, at: UnixTime, note: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE certificates SET renew_at = ?2, renewal_note = ?3 WHERE serial = ?1 AND renewal = 'scheduled'",
                params![serial, at, note],
            )?;
            Ok(())
        })
    }

    /// Revoked certificates of an issuer that have not expired yet (an expired
    /// certificate may leave the CRL, RFC 5280 §3.3).
    fn revoked_certificates(&self, issuer_id: i64, at: UnixTime) -> Result<Vec<RevokedEntry>> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT serial, revoked_at, revocation_reason FROM certificates
                 WHERE issuer_id = ?1 AND revoked_at IS NOT NULL AND not_after > ?2 ORDER BY revoked_at, serial",
            )?;
            let rows = st
                .query_map(params![issuer_id, at], |r| {
                    Ok(RevokedEntry { serial: r.get(0)?, revoked_at: r.get(1)?, reason: r.get::<_, Option<i64>>(2)?.unwrap_or(0) as u8 })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// How many certificates of the issuer were ever revoked: grows with every revocation.
    fn revocation_mark(&self, issuer_id: i64) -> Result<i64> {
        self.read(|c| {
            Ok(c.prepare_cached("SELECT COUNT(*) FROM certificates WHERE issuer_id = ?1 AND revoked_at IS NOT NULL")?
                .query_row([issuer_id], |r| r.get(0))?)
        })
    }

    fn issuers_with_crl_due(&self, made_by: UnixTime, at: UnixTime) -> Result<Vec<i64>> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT i.id FROM issuers i LEFT JOIN crls c ON c.issuer_id = i.id
                 WHERE i.role = 'root' OR c.issuer_id IS NULL OR c.this_update <= ?1 OR c.next_update <= ?2
                    OR c.revocation_mark <> (SELECT COUNT(*) FROM certificates x WHERE x.issuer_id = i.id AND x.revoked_at IS NOT NULL)
                 ORDER BY i.id",
            )?;
            let ids = st.query_map(params![made_by, at], |r| r.get(0))?.collect::<rusqlite::Result<Vec<i64>>>()?;
            Ok(ids)
        })
    }

    fn crl(&self, issuer_id: i64) -> Result<Option<StoredCrl>> {
        self.read(|c| {
            Ok(c.prepare_cached("SELECT issuer_id, number, this_update, next_update, revocation_mark, der FROM crls WHERE issuer_id = ?1")?
                .query_row([issuer_id], |r| {
                    Ok(StoredCrl {
                        issuer_id: r.get(0)?,
                        number: r.get(1)?,
                        this_update: r.get(2)?,
                        next_update: r.get(3)?,
                        revocation_mark: r.get(4)?,
                        der: r.get(5)?,
                    })
                })
                .optional()?)
        })
    }

    /// Stores a CRL unless one with the same or a higher number is there (two
    /// processes regenerating at once); returns whether it was stored.
    fn put_crl(&self, crl: &StoredCrl) -> Result<bool> {
        self.with(|c| {
            Ok(c.execute(
                "INSERT INTO crls (issuer_id, number, this_update, next_update, revocation_mark, der) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (issuer_id) DO UPDATE SET number = excluded.number, this_update = excluded.this_update,
                   next_update = excluded.next_update, revocation_mark = excluded.revocation_mark, der = excluded.der
                 WHERE excluded.number > crls.number",
                params![crl.issuer_id, crl.number, crl.this_update, crl.next_update, crl.revocation_mark, crl.der],
            )? == 1)
        })
    }
}

impl DeliveryStore for SqliteStore {
    /// Claims up to `limit` due deliveries for `lease` seconds: another worker
    /// (the CLI, a second process) skips them until the lease runs out.
    fn claim_deliveries(&self, at: UnixTime, limit: i64, lease: i64) -> Result<Vec<Delivery>> {
        self.tx(|tx| {
            let due = {
                let mut st = tx.prepare_cached(&format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries
                     WHERE state = 'pending' AND next_attempt <= ?1 ORDER BY next_attempt, id LIMIT ?2"
                ))?;
                let rows = st.query_map(params![at, limit], delivery_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
                rows.into_iter().collect::<Result<Vec<Delivery>>>()?
            };
            let mut lease_it = tx.prepare_cached("UPDATE deliveries SET next_attempt = ?2 WHERE id = ?1")?;
            for d in &due {
                lease_it.execute(params![d.id, at + lease])?;
            }
            Ok(due)
        })
    }

    /// Records one attempt: delivered, retry at `retry_at`, or (None) given up.
    fn finish_delivery(&self, id: i64, outcome: std::result::Result<(), String>, retry_at: Option<UnixTime>) -> Result<()> {
        self.with(|c| {
            match (outcome, retry_at) {
                (Ok(()), _) => c.execute(
                    "UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, delivered_at = ?2, last_error = NULL,
                         key_age = NULL
                     WHERE id = ?1 AND state = 'pending'",
                    params![id, now()],
                )?,
                (Err(e), Some(at)) => c.execute(
                    "UPDATE deliveries SET attempts = attempts + 1, next_attempt = ?2, last_error = ?3 WHERE id = ?1 AND state = 'pending'",
                    params![id, at, e],
                )?,
                (Err(e), None) => c.execute(
                    "UPDATE deliveries SET state = 'failed', attempts = attempts + 1, last_error = ?2, key_age = NULL
                     WHERE id = ?1 AND state = 'pending'",
                    params![id, e],
                )?,
            };
            Ok(())
        })
    }

    fn deliveries_of(&self, serial: &str) -> Result<Vec<Delivery>> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE serial = ?1 ORDER BY id"))?;
            let rows = st.query_map([serial], delivery_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter().collect()
        })
    }

    fn deliveries_pending(&self) -> Result<i64> {
        self.read(|c| Ok(c.prepare_cached(DELIVERIES_PENDING)?.query_row([], |r| r.get(0))?))
    }

    fn deliveries_of_resource(&self, resource_id: &str, limit: i64) -> Result<Vec<Delivery>> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM (SELECT * FROM deliveries WHERE resource_id = ?1 ORDER BY id DESC LIMIT ?2) ORDER BY id"
            ))?;
            let rows = st.query_map(params![resource_id, limit], delivery_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter().collect()
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

fn delivery_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Delivery>> {
    let kind: String = r.get(3)?;
    let state: String = r.get(5)?;
    let d = Delivery {
        id: r.get(0)?,
        serial: r.get(1)?,
        resource_id: r.get(2)?,
        kind: DeliveryKind::File,
        target: r.get(4)?,
        state: DeliveryState::Pending,
        attempts: r.get(6)?,
        next_attempt: r.get(7)?,
        last_error: r.get(8)?,
        event: r.get(9)?,
        payload: r.get::<_, Option<String>>(10)?.and_then(|p| serde_json::from_str(&p).ok()),
        key_age: r.get(11)?,
    };
    Ok(match (DeliveryKind::parse(&kind), DeliveryState::parse(&state)) {
        (Some(kind), Some(state)) => Ok(Delivery { kind, state, ..d }),
        _ => Err(Error::internal(format!("stored delivery {} has kind {kind:?}, state {state:?}", d.id))),
    })
}
