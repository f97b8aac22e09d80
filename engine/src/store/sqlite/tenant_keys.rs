//! Tenants' plugin signing keys, and plugins installed with their signer.

use rusqlite::{OptionalExtension, params};

use super::registry::bump_generation;
use super::{SqliteStore, Tx};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{UnixTime, now};
use crate::store::*;

impl TenantKeyStore for SqliteStore {
    fn insert_tenant_key(&self, tenant: &str, key_id: &str, spki_der: &[u8], max_keys: usize) -> Result<UnixTime> {
        self.tx(|tx| {
            let exists: Option<i64> = tx.query_row("SELECT 1 FROM tenants WHERE name = ?1", [tenant], |r| r.get(0)).optional()?;
            if exists.is_none() {
                return Err(Error::not_found(format!("no tenant {tenant:?}")));
            }
            let held: i64 = tx.query_row("SELECT COUNT(*) FROM tenant_keys WHERE tenant = ?1", [tenant], |r| r.get(0))?;
            if key_registered(tx, tenant, key_id)? {
                return Err(Error::new(ErrorKind::Conflict, format!("the key {key_id} is already registered for tenant {tenant}")));
            }
            if held >= max_keys as i64 {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("tenant {tenant} holds {held} plugin signing keys, the most it may; remove one first"),
                ));
            }
            let at = now();
            tx.execute(
                "INSERT INTO tenant_keys (tenant, key_id, public_key, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![tenant, key_id, spki_der, at],
            )?;
            Ok(at)
        })
    }

    fn tenant_keys(&self, tenant: &str) -> Result<Vec<StoredTenantKey>> {
        self.read(|c| {
            let mut st =
                c.prepare_cached("SELECT key_id, public_key, created_at FROM tenant_keys WHERE tenant = ?1 ORDER BY created_at, key_id")?;
            let rows = st.query_map([tenant], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    fn delete_tenant_key(&self, tenant: &str, key_id: &str) -> Result<bool> {
        self.tx(|tx| Ok(tx.execute("DELETE FROM tenant_keys WHERE tenant = ?1 AND key_id = ?2", params![tenant, key_id])? == 1))
    }

    fn install_signed_plugin(
        &self,
        scope: &str,
        digest: &str,
        wasm: &[u8],
        signer: Option<(&str, &str)>,
        guard: &InstallGuard<'_>,
    ) -> Result<()> {
        self.tx(|tx| {
            if let Some(tenant) = guard.tenant {
                let removed: Option<Option<i64>> =
                    tx.query_row("SELECT removed_at FROM tenants WHERE name = ?1", [tenant], |r| r.get(0)).optional()?;
                match removed {
                    None => return Err(Error::not_found(format!("no tenant {tenant:?}"))),
                    Some(Some(_)) => return Err(changed_meanwhile(format!("tenant {tenant} was removed"))),
                    Some(None) => {}
                }
            }
            if let Some((key, read)) = guard.setting {
                let now: Option<Vec<u8>> = tx.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| r.get(0)).optional()?;
                if now.as_deref() != read {
                    return Err(changed_meanwhile(format!("the setting {key} changed")));
                }
            }
            if let Some((tenant, key_id)) = signer
                && !key_registered(tx, tenant, key_id)?
            {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("the key {key_id} was removed from tenant {tenant} while the plugin was being installed"),
                ));
            }
            tx.execute(
                "INSERT INTO plugins (scope, digest, wasm, installed_at, signed_by) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (scope) DO UPDATE SET digest = excluded.digest, wasm = excluded.wasm,
                                                   installed_at = excluded.installed_at, signed_by = excluded.signed_by",
                params![scope, digest, wasm, now(), signer.map(|(_, k)| k)],
            )?;
            bump_generation(tx)
        })
    }

    fn signed_plugins(&self) -> Result<Vec<SignedPluginRow>> {
        self.read(|c| {
            let mut st = c.prepare_cached("SELECT scope, digest, installed_at, signed_by FROM plugins ORDER BY scope")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    fn signed_plugin_wasm(&self, scope: &str) -> Result<Option<SignedPlugin>> {
        self.read(|c| {
            Ok(c.prepare_cached("SELECT digest, wasm, signed_by FROM plugins WHERE scope = ?1")?
                .query_row([scope], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?)
        })
    }
}

fn key_registered(tx: &Tx<'_>, tenant: &str, key_id: &str) -> Result<bool> {
    let found: Option<i64> =
        tx.query_row("SELECT 1 FROM tenant_keys WHERE tenant = ?1 AND key_id = ?2", params![tenant, key_id], |r| r.get(0)).optional()?;
    Ok(found.is_some())
}

/// Refuses an install whose grounds changed before it could commit.
fn changed_meanwhile(what: String) -> Error {
    Error::new(crate::error::ErrorKind::Conflict, format!("{what} while the plugin was being installed; nothing was installed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> SqliteStore {
        let s = SqliteStore::open_in_memory().unwrap();
        s.insert_tenant("t", &[], b"der", b"key", b"secret", None, &|_| Ok(())).unwrap();
        s
    }

    #[test]
    fn keys_are_registered_listed_and_removed() {
        let s = store();
        assert!(s.insert_tenant_key("nobody", "k1", b"spki", 4).unwrap_err().detail.contains("no tenant"));
        s.insert_tenant_key("t", "k1", b"spki1", 2).unwrap();
        assert!(s.insert_tenant_key("t", "k1", b"spki1", 2).unwrap_err().detail.contains("already registered"));
        s.insert_tenant_key("t", "k2", b"spki2", 2).unwrap();
        assert!(s.insert_tenant_key("t", "k3", b"spki3", 2).unwrap_err().detail.contains("the most it may"));
        let keys = s.tenant_keys("t").unwrap();
        assert_eq!(keys.iter().map(|k| (k.0.as_str(), k.1.as_slice())).collect::<Vec<_>>(), [("k1", &b"spki1"[..]), ("k2", b"spki2")]);
        assert!(s.delete_tenant_key("t", "k1").unwrap());
        assert!(!s.delete_tenant_key("t", "k1").unwrap());
        assert_eq!(s.tenant_keys("t").unwrap().len(), 1);
    }

    #[test]
    fn plugins_are_installed_with_their_signer() {
        let s = store();
        s.insert_tenant_key("t", "k1", b"spki1", 4).unwrap();
        s.install_signed_plugin("tenant:t", "d1", b"w1", Some(("t", "k1")), &InstallGuard::default()).unwrap();
        assert_eq!(s.plugin_generation().unwrap(), 1);
        assert_eq!(s.signed_plugin_wasm("tenant:t").unwrap(), Some(("d1".into(), b"w1".to_vec(), Some("k1".into()))));
        assert_eq!(s.signed_plugins().unwrap()[0].3.as_deref(), Some("k1"));
        // A key gone by the time the install commits: nothing is installed.
        let refused = s.install_signed_plugin("tenant:t", "d2", b"w2", Some(("t", "gone")), &InstallGuard::default()).unwrap_err();
        assert!(refused.detail.contains("was removed"));
        assert_eq!(s.signed_plugin_wasm("tenant:t").unwrap().unwrap().0, "d1");
        // Removing the key leaves the plugin and its signer as installed.
        s.delete_tenant_key("t", "k1").unwrap();
        assert_eq!(s.signed_plugin_wasm("tenant:t").unwrap().unwrap().2.as_deref(), Some("k1"));
        // Replaced unsigned (either way): the signer goes with the old bytes.
        s.install_signed_plugin("tenant:t", "d3", b"w3", None, &InstallGuard::default()).unwrap();
        assert_eq!(s.signed_plugin_wasm("tenant:t").unwrap(), Some(("d3".into(), b"w3".to_vec(), None)));
        s.install_signed_plugin("operator", "d4", b"w4", None, &InstallGuard::default()).unwrap();
        s.insert_tenant_key("t", "k2", b"spki2", 4).unwrap();
        s.install_signed_plugin("tenant:t", "d5", b"w5", Some(("t", "k2")), &InstallGuard::default()).unwrap();
        s.install_plugin("tenant:t", "d6", b"w6").unwrap();
        assert_eq!(s.signed_plugin_wasm("tenant:t").unwrap().unwrap().2, None);
        assert_eq!(s.signed_plugins().unwrap().len(), 2);
    }

    #[test]
    fn audit_records_keep_their_signers() {
        let s = store();
        let mut rec = AuditRecord {
            seq: 0,
            at: 1,
            hook: "issuance".into(),
            tenant: "t".into(),
            account: None,
            plugins: vec!["p1".into(), "p2".into()],
            signers: vec![None, Some("sha256:k".into())],
            input_digest: String::new(),
            input: serde_json::json!({}),
            outcome: "allow".into(),
            reason: None,
            grant: None,
            duration_us: 1,
        };
        s.record_audit(&rec).unwrap();
        assert_eq!(s.audit(Some("t"), 10).unwrap()[0].signers, rec.signers);
        // A row from before signers were recorded reads as all unsigned, one per plugin.
        s.with(|c| Ok(c.execute("UPDATE audit SET signers = NULL", [])?)).unwrap();
        assert_eq!(s.audit(Some("t"), 10).unwrap()[0].signers, vec![None, None]);
        rec.signers = vec![];
        rec.plugins = vec![];
        s.record_audit(&rec).unwrap();
        assert!(s.audit(Some("t"), 10).unwrap()[1].signers.is_empty());
    }
}
