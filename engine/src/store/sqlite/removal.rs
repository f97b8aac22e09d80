//! Removing a tenant (`tenure tenant remove`) in one transaction, and the
//! revoked intermediates the root's CRL lists.

use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use crate::error::{Error, Result};
use crate::model::now;
use crate::registry::EventKind;
use crate::store::*;

impl TenantRemovalStore for SqliteStore {
    fn remove_tenant(&self, name: &str, reason: u8) -> Result<TenantRemoval> {
        self.tx(|tx| {
            let at = now();
            let found: Option<(Option<i64>, bool)> = tx
                .query_row("SELECT removed_at, token_hash IS NOT NULL FROM tenants WHERE name = ?1", [name], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some((removed_before, had_token)) = found else {
                return Err(Error::not_found(format!("no tenant {name}")));
            };
            let removed_at = removed_before.unwrap_or(at);
            // First, so nothing below can see the tenant live.
            tx.execute("UPDATE tenants SET removed_at = ?2, token_hash = NULL WHERE name = ?1", params![name, removed_at])?;
            let note = format!("tenant {name} was removed");
            let mut out =
                TenantRemoval { removed_at, already_removed: removed_before.is_some(), token_cleared: had_token, ..Default::default() };

            // Its resources, each released as `resource release` releases it.
            let live: Vec<(String, String)> = {
                let mut st =
                    tx.prepare("SELECT id, state FROM resources WHERE tenant = ?1 AND state <> 'released' ORDER BY created_at, id")?;
                st.query_map([name], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?
            };
            for (id, from) in &live {
                tx.execute("UPDATE resources SET state = 'released', updated_at = ?2 WHERE id = ?1", params![id, at])?;
                let revoked = super::stop_certificates_of_resource(tx, id, reason, &format!("resource {id} was released: {note}"))?;
                let detail = serde_json::json!({ "from": from, "revoked_certificates": revoked, "reason": note });
                super::registry::event(tx, id, name, EventKind::Released, detail)?;
                out.certificates_revoked += revoked;
            }
            out.resources_released = live.len();
            out.provisioning_settled =
                tx.execute("DELETE FROM provisioning WHERE resource_id IN (SELECT id FROM resources WHERE tenant = ?1)", [name])?;

            // Its other certificates (ACME orders not bound to a resource).
            let serials: Vec<String> = {
                let mut st = tx.prepare("SELECT serial FROM certificates WHERE tenant = ?1 AND revoked_at IS NULL AND not_after > ?2")?;
                st.query_map(params![name, at], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?
            };
            for serial in &serials {
                tx.execute(
                    "UPDATE certificates SET revoked_at = ?2, revocation_reason = ?3 WHERE serial = ?1 AND revoked_at IS NULL",
                    params![serial, at, reason],
                )?;
                let payload = serde_json::json!({ "serial": serial, "tenant": name, "reason": reason, "note": note });
                super::provisioning::notify_certificate(tx, crate::lifecycle::events::REVOKED, serial, &payload)?;
            }
            out.certificates_revoked += serials.len();
            tx.execute(
                "UPDATE certificates SET renewal = 'stopped', renewal_note = ?2 WHERE tenant = ?1 AND renewal IN ('client', 'scheduled')",
                params![name, note],
            )?;
            // A successor waiting for delivery is revoked: nothing to deliver.
            tx.execute(
                "UPDATE deliveries SET state = 'failed', last_error = ?2, key_age = NULL
                 WHERE state = 'pending' AND payload IS NULL AND serial IN (SELECT serial FROM certificates WHERE tenant = ?1)",
                params![name, note],
            )?;

            // Every intermediate of the tenant (an update or rotation leaves several).
            out.intermediates_revoked = tx.execute(
                "UPDATE issuers SET revoked_at = ?2, revocation_reason = ?3
                 WHERE tenant = ?1 AND role = 'intermediate' AND revoked_at IS NULL",
                params![name, at, reason],
            )?;

            // Its accounts, as `deactivate_account` deactivates one.
            tx.execute(
                "UPDATE authorizations SET status = 'deactivated'
                 WHERE account_id IN (SELECT id FROM accounts WHERE tenant = ?1) AND status IN ('pending', 'valid')",
                [name],
            )?;
            tx.execute(
                "UPDATE orders SET status = 'invalid'
                 WHERE account_id IN (SELECT id FROM accounts WHERE tenant = ?1) AND status IN ('pending', 'ready')",
                [name],
            )?;
            out.accounts_deactivated =
                tx.execute("UPDATE accounts SET status = 'deactivated' WHERE tenant = ?1 AND status = 'valid'", [name])?;
            out.eab_keys_deleted = tx.execute("DELETE FROM eab_keys WHERE tenant = ?1", [name])?;
            out.signing_keys_deleted = tx.execute("DELETE FROM tenant_keys WHERE tenant = ?1", [name])?;

            // Its plugin; every server reloads at the next decision.
            out.plugin_removed = tx.execute("DELETE FROM plugins WHERE scope = ?1", [format!("tenant:{name}")])? == 1;
            if out.plugin_removed {
                super::registry::bump_generation(tx)?;
            }
            Ok(out)
        })
    }

    fn revoked_intermediates(&self) -> Result<Vec<RevokedIssuer>> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, cert_der, revoked_at, revocation_reason FROM issuers
                 WHERE role = 'intermediate' AND revoked_at IS NOT NULL ORDER BY revoked_at, id",
            )?;
            let rows = st
                .query_map([], |r| {
                    Ok(RevokedIssuer {
                        issuer_id: r.get(0)?,
                        cert_der: r.get(1)?,
                        revoked_at: r.get(2)?,
                        reason: r.get::<_, Option<i64>>(3)?.unwrap_or(0) as u8,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }
}
