//! Tenants' intermediates as they change (`tenant update`, `tenant rotate`,
//! the automatic rotation): the new issuer, the tenant's permits and the
//! revocations the change implies, in one compare-and-swap transaction.

use rusqlite::{OptionalExtension, params};

use super::*;

/// RFC 5280 reason 9, privilegeWithdrawn: the tenant may no longer have
/// certificates for the name.
const PRIVILEGE_WITHDRAWN: u8 = 9;

impl IntermediateStore for SqliteStore {
    fn swap_intermediate(&self, swap: &IntermediateSwap<'_>) -> Result<IntermediateSwapped> {
        self.tx(|tx| {
            let current: Option<(i64, Option<i64>)> = tx
                .query_row("SELECT issuer_id, removed_at FROM tenants WHERE name = ?1", [swap.tenant], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            match current {
                None => return Err(Error::not_found(format!("no tenant {}", swap.tenant))),
                Some((_, Some(_))) => return Err(removed(swap.tenant)),
                Some((issuer, None)) if issuer != swap.expected_issuer => return Err(changed(swap.tenant)),
                Some(_) => {}
            }
            (swap.tenants_rule)(&all_tenants(tx)?)?;
            (swap.held_rule)(&held_identifiers(tx, swap.tenant)?)?;
            let at = now();
            tx.execute(
                "INSERT INTO issuers (role, tenant, cert_der, key_pkcs8, created_at, not_after) VALUES ('intermediate', ?1, ?2, ?3, ?4, ?5)",
                params![swap.tenant, swap.cert_der, swap.key, at, swap.not_after],
            )?;
            let issuer_id = tx.last_insert_rowid();
            let swapped = tx.execute(
                "UPDATE tenants SET permits = ?2, issuer_id = ?3 WHERE name = ?1 AND issuer_id = ?4 AND removed_at IS NULL",
                params![swap.tenant, json(&swap.permits), issuer_id, swap.expected_issuer],
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
            let mut st = c.prepare_cached(
                "SELECT t.name, i.id, i.cert_der, i.not_after FROM tenants t JOIN issuers i ON i.id = t.issuer_id
                 WHERE t.removed_at IS NULL AND (i.not_after IS NULL OR i.not_after <= ?1) ORDER BY t.name",
            )?;
            let rows = st
                .query_map([before], |r| {
                    Ok(TenantIntermediate { tenant: r.get(0)?, issuer_id: r.get(1)?, cert_der: r.get(2)?, not_after: r.get(3)? })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    fn set_issuer_not_after(&self, issuer_id: i64, not_after: UnixTime) -> Result<()> {
        self.tx(|tx| {
            tx.execute("UPDATE issuers SET not_after = ?2 WHERE id = ?1 AND not_after IS NULL", params![issuer_id, not_after])?;
            Ok(())
        })
    }

    fn intermediate_count(&self, tenant: &str) -> Result<i64> {
        self.read(|c| {
            Ok(c.prepare_cached("SELECT COUNT(*) FROM issuers WHERE role = 'intermediate' AND tenant = ?1")?
                .query_row([tenant], |r| r.get(0))?)
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
fn held_identifiers(tx: &Tx<'_>, tenant: &str) -> Result<Vec<(String, Vec<Identifier>)>> {
    let mut st =
        tx.prepare_cached("SELECT id, names, zones, addresses FROM resources WHERE tenant = ?1 AND state <> 'released' ORDER BY id")?;
    let rows = st
        .query_map([tenant], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|(id, names, zones, addresses)| {
            let mut ids: Vec<Identifier> =
                from_json::<Vec<String>>(&names)?.iter().chain(&from_json::<Vec<String>>(&zones)?).map(|n| Identifier::dns(n)).collect();
            ids.extend(from_json::<Vec<String>>(&addresses)?.iter().filter_map(|a| a.parse().ok()).map(Identifier::ip));
            Ok((id, ids))
        })
        .collect()
}

/// Revokes (privilegeWithdrawn) the tenant's unexpired, unrevoked
/// certificates `withdrawn` selects, whatever their issuer, as a release
/// revokes a resource's: renewal stopped, a notice to each bound resource's
/// webhook, an undelivered successor not delivered. The CRLs' revocation mark
/// is the count of revoked certificates, so they regenerate at the next fetch.
fn revoke_withdrawn(tx: &Tx<'_>, swap: &IntermediateSwap<'_>, at: UnixTime) -> Result<(Vec<String>, usize)> {
    let live: Vec<(String, String)> = {
        let mut st =
            tx.prepare_cached("SELECT serial, identifiers FROM certificates WHERE tenant = ?1 AND revoked_at IS NULL AND not_after > ?2")?;
        st.query_map(params![swap.tenant, at], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?
    };
    let mut revoked = Vec::new();
    let mut notices = 0;
    for (serial, identifiers) in live {
        if !(swap.withdrawn)(&from_json::<Vec<Identifier>>(&identifiers)?) {
            continue;
        }
        tx.execute(
            "UPDATE certificates SET revoked_at = ?2, revocation_reason = ?3 WHERE serial = ?1 AND revoked_at IS NULL",
            params![serial, at, PRIVILEGE_WITHDRAWN],
        )?;
        tx.execute(
            "UPDATE certificates SET renewal = 'stopped', renewal_note = ?2 WHERE serial = ?1 AND renewal IN ('client', 'scheduled')",
            params![serial, swap.note],
        )?;
        tx.execute(
            "UPDATE deliveries SET state = 'failed', last_error = ?2, key_age = NULL
             WHERE state = 'pending' AND payload IS NULL AND serial = ?1",
            params![serial, swap.note],
        )?;
        let payload = serde_json::json!({ "serial": serial, "tenant": swap.tenant, "note": swap.note });
        notices += super::provisioning::notify_certificate(tx, crate::lifecycle::events::REVOKED, &serial, &payload)?;
        revoked.push(serial);
    }
    Ok((revoked, notices))
}
