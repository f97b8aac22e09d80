//! Tenants' intermediates as they change. PostgreSQL: see
//! `../sqlite/intermediates.rs`, whose meaning this file keeps. The
//! transaction is SERIALIZABLE and its closure re-runnable: two servers
//! rotating one tenant at once cannot both swap (the second sees the issuer
//! changed, or is aborted and, run again, sees it).

use super::*;

/// RFC 5280 reason 9, privilegeWithdrawn.
const PRIVILEGE_WITHDRAWN: i64 = 9;

impl IntermediateStore for PgStore {
    fn swap_intermediate(&self, swap: &IntermediateSwap<'_>) -> Result<IntermediateSwapped> {
        self.tx(|tx| {
            let current = row(tx, "SELECT issuer_id, removed_at FROM tenants WHERE name = $1", &[&swap.tenant], |r| {
                Ok((get::<i64>(r, 0)?, get::<Option<i64>>(r, 1)?))
            })?;
            match current {
                None => return Err(Error::not_found(format!("no tenant {}", swap.tenant))),
                Some((_, Some(_))) => return Err(removed(swap.tenant)),
                Some((issuer, None)) if issuer != swap.expected_issuer => return Err(changed(swap.tenant)),
                Some(_) => {}
            }
            (swap.tenants_rule)(&all_tenants(tx)?)?;
            (swap.held_rule)(&held_identifiers(tx, swap.tenant)?)?;
            let at = now();
            let issuer_id: i64 = get(
                &tx.query_one(
                    "INSERT INTO issuers (role, tenant, cert_der, key_pkcs8, created_at, not_after)
                     VALUES ('intermediate', $1, $2, $3, $4, $5) RETURNING id",
                    &[&swap.tenant, &swap.cert_der, &swap.key, &at, &swap.not_after],
                )?,
                0,
            )?;
            let swapped = tx.execute(
                "UPDATE tenants SET permits = $2, issuer_id = $3 WHERE name = $1 AND issuer_id = $4 AND removed_at IS NULL",
                &[&swap.tenant, &json(&swap.permits), &issuer_id, &swap.expected_issuer],
            )?;
            if swapped != 1 {
                return Err(changed(swap.tenant));
            }
            let (revoked, notices) = revoke_withdrawn(tx, swap, at)?;
            Ok(IntermediateSwapped { issuer_id, revoked, notices })
        })
    }

    fn current_intermediates_ending(&self, before: UnixTime) -> Result<Vec<TenantIntermediate>> {
        self.read(|c| {
            rows(
                c,
                "SELECT t.name, i.id, i.cert_der, i.not_after FROM tenants t JOIN issuers i ON i.id = t.issuer_id
                 WHERE t.removed_at IS NULL AND (i.not_after IS NULL OR i.not_after <= $1) ORDER BY t.name",
                &[&before],
                |r| Ok(TenantIntermediate { tenant: get(r, 0)?, issuer_id: get(r, 1)?, cert_der: get(r, 2)?, not_after: get(r, 3)? }),
            )
        })
    }

    fn set_issuer_not_after(&self, issuer_id: i64, not_after: UnixTime) -> Result<()> {
        self.tx(|tx| {
            tx.execute("UPDATE issuers SET not_after = $2 WHERE id = $1 AND not_after IS NULL", &[&issuer_id, &not_after])?;
            Ok(())
        })
    }

    fn intermediate_count(&self, tenant: &str) -> Result<i64> {
        self.read(|c| {
            Ok(value::<_, i64>(c, "SELECT COUNT(*) FROM issuers WHERE role = 'intermediate' AND tenant = $1", &[&tenant])?.unwrap_or(0))
        })
    }
}

fn removed(tenant: &str) -> Error {
    Error::conflict(crate::Conflict::ResourceState, format!("tenant {tenant} is removed"))
}

/// The compare-and-swap lost: another process replaced the intermediate first.
fn changed(tenant: &str) -> Error {
    Error::new(
        crate::ErrorKind::Conflict,
        format!("tenant {tenant}'s intermediate was replaced meanwhile (by another server or command); read the tenant again and retry"),
    )
}

/// Every live resource of the tenant, as (id, its names, zones and addresses).
fn held_identifiers(tx: &mut Tx<'_>, tenant: &str) -> Result<Vec<(String, Vec<Identifier>)>> {
    let raw: Vec<(String, String, String, String)> = rows(
        tx,
        "SELECT id, names, zones, addresses FROM resources WHERE tenant = $1 AND state <> 'released' ORDER BY id",
        &[&tenant],
        |r| Ok((get(r, 0)?, get(r, 1)?, get(r, 2)?, get(r, 3)?)),
    )?;
    raw.into_iter()
        .map(|(id, names, zones, addresses)| {
            let mut ids: Vec<Identifier> =
                from_json::<Vec<String>>(&names)?.iter().chain(&from_json::<Vec<String>>(&zones)?).map(|n| Identifier::dns(n)).collect();
            ids.extend(from_json::<Vec<String>>(&addresses)?.iter().filter_map(|a| a.parse().ok()).map(Identifier::ip));
            Ok((id, ids))
        })
        .collect()
}

/// Revokes (privilegeWithdrawn) the tenant's unexpired, unrevoked
/// certificates `withdrawn` selects, as a release revokes a resource's.
fn revoke_withdrawn(tx: &mut Tx<'_>, swap: &IntermediateSwap<'_>, at: UnixTime) -> Result<(Vec<String>, usize)> {
    let live: Vec<(String, String)> = rows(
        tx,
        "SELECT serial, identifiers FROM certificates WHERE tenant = $1 AND revoked_at IS NULL AND not_after > $2 ORDER BY serial",
        &[&swap.tenant, &at],
        |r| Ok((get(r, 0)?, get(r, 1)?)),
    )?;
    let mut revoked = Vec::new();
    let mut notices = 0;
    for (serial, identifiers) in live {
        if !(swap.withdrawn)(&from_json::<Vec<Identifier>>(&identifiers)?) {
            continue;
        }
        tx.execute(
            "UPDATE certificates SET revoked_at = $2, revocation_reason = $3 WHERE serial = $1 AND revoked_at IS NULL",
            &[&serial, &at, &PRIVILEGE_WITHDRAWN],
        )?;
        tx.execute(
            "UPDATE certificates SET renewal = 'stopped', renewal_note = $2 WHERE serial = $1 AND renewal IN ('client', 'scheduled')",
            &[&serial, &swap.note],
        )?;
        tx.execute(
            "UPDATE deliveries SET state = 'failed', last_error = $2, key_age = NULL
             WHERE state = 'pending' AND payload IS NULL AND serial = $1",
            &[&serial, &swap.note],
        )?;
        let payload = serde_json::json!({ "serial": serial, "tenant": swap.tenant, "note": swap.note });
        notices += super::provisioning::notify_certificate(tx, crate::lifecycle::events::REVOKED, &serial, &payload)?;
        revoked.push(serial);
    }
    Ok((revoked, notices))
}
