//! The embedded store: SQLite in WAL mode, implementing every store trait.
//! One writer connection (`writer`: `tx` runs a write transaction, committed
//! together with those queued behind it, rolled back alone on error);
//! hot reads on a pool of read-only connections (`read`) that never wait for
//! the writer; WAL checkpoints on a thread of their own (`checkpoint`).

mod checkpoint;
mod hsm;
mod intermediates;
mod lifecycle;
mod provisioning;
mod registry;
mod removal;
mod schema;
mod tenant_keys;
mod tokens;
mod writer;

use lifecycle::stop_certificates_of_resource;
use registry::append_audit;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::*;
use crate::error::{Error, Result};
use crate::identifier::Identifier;
use crate::model::*;

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::internal(format!("storage: {e}")).caused_by(e)
    }
}

/// The SQLite store of one data directory.
pub struct SqliteStore {
    /// The one connection that writes (and serves `with`), with group commit.
    writer: Arc<writer::Writer>,
    /// Idle read-only connections for the hot reads (`read`). WAL readers
    /// never wait for the writer, so reads no longer queue behind commits and
    /// checkpoints. The pool grows to the number of concurrent readers.
    readers: Mutex<Vec<Connection>>,
    /// The database file; `None` in memory, where reads share `conn`.
    path: Option<PathBuf>,
    /// Checkpoints the WAL off the request path (on disk only).
    #[allow(dead_code)] // held for its Drop, which stops the thread
    checkpointer: Option<checkpoint::Checkpointer>,
}

/// An open write transaction on the writer connection: what `SqliteStore::tx`
/// hands its closure. It reads and writes as the connection does; `tx`
/// commits it when the closure succeeds and rolls it back otherwise.
pub(crate) struct Tx<'c>(&'c Connection);

impl std::ops::Deref for Tx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.0
    }
}

/// Rolls back whatever transaction is still open when dropped: after a
/// failed closure, a failed COMMIT, or a panic.
struct RollbackGuard<'c>(&'c Connection);

impl Drop for RollbackGuard<'_> {
    fn drop(&mut self) {
        if !self.0.is_autocommit() {
            let _ = self.0.prepare_cached("ROLLBACK").and_then(|mut st| st.execute([]));
        }
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| Error::internal(format!("stored JSON is corrupt: {e}")).caused_by(e))
}

fn bad_status(what: &str, s: &str) -> Error {
    Error::internal(format!("stored {what} status {s:?} is unknown"))
}

impl SqliteStore {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let conn = Connection::open(path)?;
        Self::configure(conn, Some(path.to_path_buf()))
    }
    /// An in-memory store, for unit tests.
    pub fn open_in_memory() -> Result<SqliteStore> {
        Self::configure(Connection::open_in_memory()?, None)
    }
    fn configure(mut conn: Connection, path: Option<PathBuf>) -> Result<SqliteStore> {
        // WAL with synchronous=NORMAL survives a process crash (the OS has the
        // log); the CLI writes while the server runs, hence the busy timeout.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        tune(&conn)?;
        migrate(&mut conn)?;
        // Checkpoints run on their own thread, never inside a request's
        // commit (see `checkpoint`). In memory there is no WAL.
        if path.is_some() {
            conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        }
        let writer = Arc::new(writer::Writer::new(conn));
        let checkpointer = match &path {
            Some(p) => Some(checkpoint::Checkpointer::start(p, writer.clone())?),
            None => None,
        };
        Ok(SqliteStore { writer, readers: Mutex::new(Vec::new()), path, checkpointer })
    }
    /// Runs a read on a pooled read-only connection (the writer's, in memory),
    /// in one read transaction: every statement of `f` sees the same, latest
    /// commit. One transaction instead of one per statement also saves the
    /// WAL read lock's system calls and, after another connection's commit,
    /// re-reading the pages of each statement (a connection's page cache is
    /// dropped when it starts a read transaction on a changed database): a
    /// registry lookup runs a statement per enclosing zone and per resource.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let f = |c: &Connection| {
            c.prepare_cached("BEGIN")?.execute([])?;
            let _rollback = RollbackGuard(c);
            let out = f(c)?;
            c.prepare_cached("COMMIT")?.execute([])?;
            Ok(out)
        };
        let Some(path) = &self.path else { return self.with(|c| f(c)) };
        let pooled = self.readers.lock().map_err(|_| Error::internal("storage lock poisoned"))?.pop();
        let conn = match pooled {
            Some(c) => c,
            None => {
                let c = Connection::open(path)?;
                tune(&c)?;
                // A write through a reader would bypass the writer's lock; make it fail loudly.
                c.pragma_update(None, "query_only", true)?;
                c
            }
        };
        let out = f(&conn);
        if let Ok(mut idle) = self.readers.lock() {
            idle.push(conn);
        }
        out
    }
    /// Runs `f` on the writer connection outside any transaction (a group
    /// of write transactions still open is committed first).
    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let mut conn = self.writer.lock_idle()?;
        f(&mut conn)
    }
    /// Runs `f` in one write transaction, committed before this returns,
    /// possibly together with other requests' (see `writer`).
    fn tx<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        self.writer.transaction(|conn| f(&Tx(conn)))
    }
}
impl SettingsStore for SqliteStore {
    fn setting(&self, key: &str) -> Result<Option<Vec<u8>>> {
        // A reader: newOrder reads the tenant's limits here, and the writer
        // would make it wait for (and end) the group of commits in flight.
        self.read(|c| Ok(c.prepare_cached("SELECT value FROM settings WHERE key = ?1")?.query_row([key], |r| r.get(0)).optional()?))
    }

    /// Sets `key` only if it is not set yet; returns the value that holds afterwards.
    fn set_setting(&self, key: &str, value: &[u8]) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )?;
            Ok(())
        })
    }

    fn setting_or_insert(&self, key: &str, value: &[u8]) -> Result<Vec<u8>> {
        self.tx(|tx| {
            tx.execute("INSERT OR IGNORE INTO settings (key, value) VALUES (?1, ?2)", params![key, value])?;
            Ok(tx.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| r.get(0))?)
        })
    }

    fn probe_write(&self, bound: Duration) -> Result<()> {
        // Queue for the writer like any request: polling `try_lock` lost the
        // lock to waiting writers for the whole bound under write load, and a
        // busy server is not an unready one. A writer stuck in this process
        // leaves the probe waiting; the readiness check's own deadline (on
        // the probe's thread) reports that.
        let conn = self.writer.lock_idle()?;
        // Another process holding the write lock fails the probe within the
        // bound, not the requests' busy timeout.
        conn.busy_timeout(bound.max(Duration::from_millis(1)))?;
        let probed = (|| -> Result<()> {
            conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
            let _rollback = RollbackGuard(&conn);
            conn.prepare_cached(
                "INSERT INTO settings (key, value) VALUES ('readiness-probe', ?1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute([now().to_string().into_bytes()])?;
            conn.prepare_cached("COMMIT")?.execute([])?;
            Ok(())
        })();
        conn.busy_timeout(BUSY_TIMEOUT)?;
        probed
    }
}

impl TenantStore for SqliteStore {
    fn root(&self) -> Result<Option<IssuerRecord>> {
        self.with(|c| {
            Ok(c.query_row("SELECT id, tenant, cert_der, key_pkcs8 FROM issuers WHERE role = 'root' ORDER BY id LIMIT 1", [], issuer_row)
                .optional()?)
        })
    }

    /// Stores the root unless another process stored one first; returns the one that holds.
    fn insert_root(&self, cert_der: &[u8], key_pkcs8: &[u8]) -> Result<IssuerRecord> {
        self.tx(|tx| {
            let existing = tx
                .query_row("SELECT id, tenant, cert_der, key_pkcs8 FROM issuers WHERE role = 'root' ORDER BY id LIMIT 1", [], issuer_row)
                .optional()?;
            if let Some(root) = existing {
                return Ok(root);
            }
            tx.execute(
                "INSERT INTO issuers (role, tenant, cert_der, key_pkcs8, created_at) VALUES ('root', NULL, ?1, ?2, ?3)",
                params![cert_der, key_pkcs8, now()],
            )?;
            Ok(IssuerRecord { id: tx.last_insert_rowid(), tenant: None, cert_der: cert_der.to_vec(), key_pkcs8: key_pkcs8.to_vec() })
        })
    }

    fn issuer(&self, id: i64) -> Result<Option<IssuerRecord>> {
        self.read(|c| {
            Ok(c.prepare_cached("SELECT id, tenant, cert_der, key_pkcs8 FROM issuers WHERE id = ?1")?
                .query_row([id], issuer_row)
                .optional()?)
        })
    }

    fn issuers(&self) -> Result<Vec<IssuerRecord>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT id, tenant, cert_der, key_pkcs8 FROM issuers ORDER BY id")?;
            let rows = st.query_map([], issuer_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// Creates a tenant with its intermediate, its sealed webhook secret and
    /// (optionally) its first EAB key, in one transaction.
    fn insert_tenant(
        &self,
        name: &str,
        permits: &[String],
        intermediate_der: &[u8],
        intermediate_key: &[u8],
        webhook_secret_sealed: &[u8],
        eab: Option<(&str, &[u8])>,
        rule: TenantRule<'_>,
    ) -> Result<Tenant> {
        let row = NewTenantRow { name, permits, intermediate_der, intermediate_key, webhook_secret_sealed, eab, rule };
        let mut made = self.insert_tenants(std::slice::from_ref(&row))?;
        made.pop().ok_or_else(|| Error::internal("no tenant made"))
    }

    /// In one transaction; every tenant is read once for the batch (the rules
    /// see the batch's earlier tenants too).
    fn insert_tenants(&self, batch: &[NewTenantRow<'_>]) -> Result<Vec<Tenant>> {
        self.tx(|tx| {
            let mut existing: Option<Vec<Tenant>> = None;
            let mut made = Vec::with_capacity(batch.len());
            for row in batch {
                let name = row.name;
                let exists: Option<String> = tx.query_row("SELECT name FROM tenants WHERE name = ?1", [name], |r| r.get(0)).optional()?;
                if exists.is_some() {
                    return Err(Error::conflict(crate::Conflict::TenantExists, format!("tenant {name:?} already exists")));
                }
                let all = match &mut existing {
                    Some(all) => all,
                    None => existing.insert(all_tenants(tx)?),
                };
                (row.rule)(all)?;
                let t = now();
                tx.execute(
                    "INSERT INTO issuers (role, tenant, cert_der, key_pkcs8, created_at) VALUES ('intermediate', ?1, ?2, ?3, ?4)",
                    params![name, row.intermediate_der, row.intermediate_key, t],
                )?;
                let issuer_id = tx.last_insert_rowid();
                tx.execute(
                    "INSERT INTO tenants (name, permits, issuer_id, created_at, webhook_secret) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![name, json(&row.permits), issuer_id, t, row.webhook_secret_sealed],
                )?;
                if let Some((kid, key)) = row.eab {
                    tx.execute(
                        "INSERT INTO eab_keys (kid, tenant, hmac_key, created_at) VALUES (?1, ?2, ?3, ?4)",
                        params![kid, name, key, t],
                    )?;
                }
                let tenant = Tenant { name: name.to_string(), permits: row.permits.to_vec(), issuer_id, removed_at: None };
                all.push(tenant.clone());
                made.push(tenant);
            }
            Ok(made)
        })
    }

    fn tenant(&self, name: &str) -> Result<Option<Tenant>> {
        self.read(|c| {
            c.prepare_cached("SELECT name, permits, issuer_id, removed_at FROM tenants WHERE name = ?1")?
                .query_row([name], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get(3)?)))
                .optional()?
                .map(|(name, permits, issuer_id, removed_at)| Ok(Tenant { name, permits: from_json(&permits)?, issuer_id, removed_at }))
                .transpose()
        })
    }

    fn tenants(&self) -> Result<Vec<Tenant>> {
        self.read(all_tenants)
    }

    /// The tenant and HMAC key behind an EAB key id.
    fn eab_key(&self, kid: &str) -> Result<Option<(String, Vec<u8>)>> {
        self.read(|c| {
            Ok(c.prepare_cached("SELECT tenant, hmac_key FROM eab_keys WHERE kid = ?1")?
                .query_row([kid], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?)
        })
    }

    fn tenant_webhook_secret(&self, tenant: &str) -> Result<Option<Vec<u8>>> {
        self.read(|c| {
            Ok(c.prepare_cached("SELECT webhook_secret FROM tenants WHERE name = ?1")?
                .query_row([tenant], |r| r.get::<_, Option<Vec<u8>>>(0))
                .optional()?
                .flatten())
        })
    }

    fn store_tenant_webhook_secret(&self, tenant: &str, sealed: &[u8], replace: bool) -> Result<Vec<u8>> {
        self.tx(|tx| {
            let sql = if replace {
                "UPDATE tenants SET webhook_secret = ?2 WHERE name = ?1"
            } else {
                "UPDATE tenants SET webhook_secret = ?2 WHERE name = ?1 AND webhook_secret IS NULL"
            };
            tx.execute(sql, params![tenant, sealed])?;
            tx.query_row("SELECT webhook_secret FROM tenants WHERE name = ?1", [tenant], |r| r.get::<_, Option<Vec<u8>>>(0))
                .optional()?
                .flatten()
                .ok_or_else(|| Error::not_found(format!("no tenant {tenant}")))
        })
    }

    /// Rewrites issuer key blobs `f` wants changed (sealing plain keys of an
    /// older data directory), all in one transaction. Returns how many changed.
    fn reseal_issuer_keys(&self, f: Reseal<'_>) -> Result<usize> {
        self.tx(|tx| reseal_rows(tx, "SELECT id, key_pkcs8 FROM issuers", "UPDATE issuers SET key_pkcs8 = ?2 WHERE id = ?1", f))
    }

    fn reseal_eab_keys(&self, f: Reseal<'_>) -> Result<usize> {
        self.tx(|tx| reseal_rows(tx, "SELECT kid, hmac_key FROM eab_keys", "UPDATE eab_keys SET hmac_key = ?2 WHERE kid = ?1", f))
    }
}

/// Rewrites the blobs `f` wants changed among the (key, blob) rows `select`
/// yields, through `update` (?1 the key, ?2 the new blob). How many changed.
fn reseal_rows(tx: &Connection, select: &str, update: &str, f: Reseal<'_>) -> Result<usize> {
    let rows: Vec<(rusqlite::types::Value, Vec<u8>)> = {
        let mut st = tx.prepare(select)?;
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?
    };
    let mut changed = 0;
    for (key, blob) in rows {
        if let Some(new) = f(&blob)? {
            tx.execute(update, params![key, new])?;
            changed += 1;
        }
    }
    Ok(changed)
}

/// Every tenant, by name.
fn all_tenants(c: &Connection) -> Result<Vec<Tenant>> {
    let mut st = c.prepare("SELECT name, permits, issuer_id, removed_at FROM tenants ORDER BY name")?;
    let rows = st
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|(name, permits, issuer_id, removed_at)| Ok(Tenant { name, permits: from_json(&permits)?, issuer_id, removed_at }))
        .collect()
}

impl ReplayStore for SqliteStore {
    fn spend_nonce(&self, nonce: &[u8], expires: UnixTime) -> Result<bool> {
        self.tx(|tx| {
            tx.prepare_cached("DELETE FROM spent_nonces WHERE expires < ?1")?.execute([now()])?;
            let n = tx
                .prepare_cached("INSERT OR IGNORE INTO spent_nonces (nonce, expires) VALUES (?1, ?2)")?
                .execute(params![nonce, expires])?;
            Ok(n == 1)
        })
    }
}

impl AccountStore for SqliteStore {
    fn account(&self, id: &str) -> Result<Option<Account>> {
        self.read(|c| account_where(c, "id = ?1", id))
    }

    fn account_by_thumbprint(&self, thumbprint: &str) -> Result<Option<Account>> {
        self.read(|c| account_where(c, "thumbprint = ?1", thumbprint))
    }

    /// Inserts the account unless its key is already registered, in which case
    /// the existing account is returned with `false`.
    fn insert_account(&self, a: &Account) -> Result<(Account, bool)> {
        self.tx(|tx| {
            if let Some(existing) = account_where(tx, "thumbprint = ?1", &a.thumbprint)? {
                return Ok((existing, false));
            }
            tx.prepare_cached(
                "INSERT INTO accounts (id, thumbprint, jwk, status, contact, tenant, eab_kid, tos_agreed, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                a.id,
                a.thumbprint,
                a.jwk,
                a.status.as_str(),
                json(&a.contact),
                a.tenant,
                a.eab_kid,
                a.tos_agreed,
                a.created_at
            ])?;
            Ok((a.clone(), true))
        })
    }

    fn update_account_contact(&self, id: &str, contact: &[String]) -> Result<()> {
        self.with(|c| {
            c.execute("UPDATE accounts SET contact = ?2 WHERE id = ?1", params![id, json(&contact)])?;
            Ok(())
        })
    }

    /// Deactivates the account and, as RFC 8555 §7.3.6 asks, its pending authorizations.
    fn deactivate_account(&self, id: &str) -> Result<()> {
        self.tx(|tx| {
            tx.execute("UPDATE accounts SET status = 'deactivated' WHERE id = ?1", [id])?;
            tx.execute("UPDATE authorizations SET status = 'deactivated' WHERE account_id = ?1 AND status IN ('pending', 'valid')", [id])?;
            tx.execute("UPDATE orders SET status = 'invalid' WHERE account_id = ?1 AND status IN ('pending', 'ready')", [id])?;
            Ok(())
        })
    }

    /// Replaces the account key; fails with Conflict (and the holder's id) if the new key is taken.
    fn change_account_key(&self, id: &str, old_thumbprint: &str, new_thumbprint: &str, new_jwk: &str) -> Result<()> {
        self.tx(|tx| {
            let holder: Option<String> =
                tx.query_row("SELECT id FROM accounts WHERE thumbprint = ?1", [new_thumbprint], |r| r.get(0)).optional()?;
            if let Some(holder) = holder {
                return Err(Error::conflict(
                    crate::Conflict::AccountKeyInUse { account: holder.clone() },
                    format!("the new key is already the key of account {holder}"),
                ));
            }
            let n = tx.execute(
                "UPDATE accounts SET thumbprint = ?3, jwk = ?4 WHERE id = ?1 AND thumbprint = ?2",
                params![id, old_thumbprint, new_thumbprint, new_jwk],
            )?;
            if n != 1 {
                return Err(Error::new(crate::ErrorKind::Unauthorized, "the account key changed concurrently"));
            }
            Ok(())
        })
    }
}

impl OrderStore for SqliteStore {
    /// Stores a new order with all its authorizations and challenges at once.
    /// The decision that allowed it is audited in the same transaction.
    fn insert_order(&self, order: &Order, authzs: &[Authorization], audit: Option<&AuditRecord>) -> Result<()> {
        self.tx(|tx| {
            tx.prepare_cached(
                "INSERT INTO orders (id, account_id, status, expires, identifiers, profile, error, certificate, replaces, created_at, lifetime_seconds)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, NULL, ?7, ?8, ?9)",
            )?
            .execute(params![order.id, order.account_id, order.status.as_str(), order.expires, json(&order.identifiers), order.profile, order.replaces, order.created_at, order.lifetime_seconds],
            )?;
            if let Some(rec) = audit {
                append_audit(tx, rec)?;
            }
            for a in authzs {
                tx.prepare_cached(
                    "INSERT INTO authorizations (id, order_id, account_id, id_type, id_value, wildcard, status, expires)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![a.id, a.order_id, a.account_id, a.identifier.kind.as_str(), a.identifier.value, a.wildcard, a.status.as_str(), a.expires],
                )?;
                for ch in &a.challenges {
                    tx.prepare_cached(
                        "INSERT INTO challenges (id, authz_id, type, token, status, validated, error) VALUES (?1, ?2, ?3, ?4, ?5, NULL, NULL)",
                    )?
                    .execute(params![ch.id, ch.authz_id, ch.kind, ch.token, ch.status.as_str()])?;
                }
            }
            let mut reuses = false;
            for (position, authz_id) in order.authorizations.iter().enumerate() {
                if authzs.iter().any(|a| a.id == *authz_id) {
                    continue;
                }
                tx.prepare_cached("INSERT INTO order_reused_authorizations (order_id, authz_id, position) VALUES (?1, ?2, ?3)")?
                    .execute(params![order.id, authz_id, position as i64])?;
                reuses = true;
            }
            if reuses {
                // A reused authorization deactivated since it was looked up
                // makes the order invalid now rather than ready.
                refresh_order_status(tx, &order.id, None)?;
            }
            Ok(())
        })
    }

    fn order(&self, id: &str) -> Result<Option<Order>> {
        self.read(|c| order_by_id(c, id))
    }

    fn order_ids_of_account(&self, account_id: &str) -> Result<Vec<String>> {
        self.read(|c| {
            let mut st = c.prepare_cached("SELECT id FROM orders WHERE account_id = ?1 ORDER BY created_at, id")?;
            let ids = st.query_map([account_id], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?;
            Ok(ids)
        })
    }

    fn authorization(&self, id: &str) -> Result<Option<Authorization>> {
        self.read(|c| authorization_by_id(c, id))
    }

    fn authorizations_of_order(&self, order_id: &str) -> Result<Vec<Authorization>> {
        self.read(|c| {
            let ids: Vec<String> = {
                let mut st = c.prepare_cached(ORDER_AUTHORIZATION_IDS)?;
                st.query_map([order_id], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?
            };
            ids.iter().filter_map(|id| authorization_by_id(c, id).transpose()).collect()
        })
    }

    /// The challenge and its authorization.
    fn challenge(&self, id: &str) -> Result<Option<(Challenge, Authorization)>> {
        self.read(|c| {
            let authz_id: Option<String> =
                c.prepare_cached("SELECT authz_id FROM challenges WHERE id = ?1")?.query_row([id], |r| r.get(0)).optional()?;
            let Some(authz_id) = authz_id else { return Ok(None) };
            let Some(authz) = authorization_by_id(c, &authz_id)? else { return Ok(None) };
            let ch = authz.challenges.iter().find(|ch| ch.id == id).cloned();
            Ok(ch.map(|ch| (ch, authz)))
        })
    }

    /// Moves a pending challenge of a pending authorization to `processing`.
    /// Returns false when another request got there first or the state forbids it.
    fn begin_challenge(&self, challenge_id: &str) -> Result<bool> {
        self.tx(|tx| {
            let n = tx
                .prepare_cached(
                    "UPDATE challenges SET status = 'processing' WHERE id = ?1 AND status = 'pending'
                   AND authz_id IN (SELECT id FROM authorizations WHERE status = 'pending')
                   AND NOT EXISTS (SELECT 1 FROM challenges c2 WHERE c2.authz_id = challenges.authz_id AND c2.status = 'processing')",
                )?
                .execute([challenge_id])?;
            Ok(n == 1)
        })
    }

    /// Records a validation outcome on the challenge, its authorization and its order, atomically.
    fn finish_challenge(&self, challenge_id: &str, outcome: std::result::Result<(), RecordedError>) -> Result<()> {
        self.tx(|tx| {
            let (authz_id, order_id): (String, String) = tx
                .prepare_cached("SELECT a.id, a.order_id FROM challenges c JOIN authorizations a ON a.id = c.authz_id WHERE c.id = ?1")?
                .query_row([challenge_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let t = now();
            match &outcome {
                Ok(()) => {
                    tx.prepare_cached(
                        "UPDATE challenges SET status = 'valid', validated = ?2, error = NULL WHERE id = ?1 AND status = 'processing'",
                    )?
                    .execute(params![challenge_id, t])?;
                    tx.prepare_cached("UPDATE authorizations SET status = 'valid' WHERE id = ?1 AND status = 'pending'")?
                        .execute([&authz_id])?;
                }
                Err(err) => {
                    tx.prepare_cached("UPDATE challenges SET status = 'invalid', error = ?2 WHERE id = ?1 AND status = 'processing'")?
                        .execute(params![challenge_id, json(err)])?;
                    tx.prepare_cached("UPDATE authorizations SET status = 'invalid' WHERE id = ?1 AND status = 'pending'")?
                        .execute([&authz_id])?;
                }
            }
            refresh_order_status(tx, &order_id, outcome.err())?;
            Ok(())
        })
    }

    /// Challenges left `processing` (e.g. by a restart), to validate again.
    fn processing_challenges(&self) -> Result<Vec<(Challenge, Authorization)>> {
        let ids: Vec<String> = self.with(|c| {
            let mut st = c.prepare("SELECT id FROM challenges WHERE status = 'processing'")?;
            let ids = st.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
            Ok(ids)
        })?;
        let mut out = Vec::new();
        for id in ids {
            if let Some(pair) = self.challenge(&id)? {
                out.push(pair);
            }
        }
        Ok(out)
    }

    fn deactivate_authorization(&self, authz_id: &str) -> Result<()> {
        self.tx(|tx| {
            let order_id: String = tx.query_row("SELECT order_id FROM authorizations WHERE id = ?1", [authz_id], |r| r.get(0))?;
            tx.execute("UPDATE authorizations SET status = 'deactivated' WHERE id = ?1 AND status IN ('pending', 'valid')", [authz_id])?;
            refresh_order_status(tx, &order_id, None)?;
            // Later orders that reuse it lose it too.
            let reusing: Vec<String> = {
                let mut st = tx.prepare_cached("SELECT order_id FROM order_reused_authorizations WHERE authz_id = ?1")?;
                st.query_map([authz_id], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?
            };
            for order_id in reusing {
                refresh_order_status(tx, &order_id, None)?;
            }
            Ok(())
        })
    }

    fn pending_authorizations(&self, account_id: &str, at: UnixTime) -> Result<(usize, Option<UnixTime>)> {
        self.read(|c| {
            let (n, first): (i64, Option<UnixTime>) = c
                .prepare_cached(
                    "SELECT count(*), min(expires) FROM authorizations WHERE account_id = ?1 AND status = 'pending' AND expires > ?2",
                )?
                .query_row(params![account_id, at], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok((n.max(0) as usize, first))
        })
    }

    /// Whether the account holds valid, unexpired authorizations for every identifier.
    fn account_holds_authorizations(&self, account_id: &str, identifiers: &[Identifier], at: UnixTime) -> Result<bool> {
        self.read(|c| {
            for id in identifiers {
                let target = id.authorization_target();
                let found: Option<i64> = c
                    .prepare_cached(
                        "SELECT 1 FROM authorizations WHERE account_id = ?1 AND id_type = ?2 AND id_value = ?3
                         AND status = 'valid' AND expires > ?4 LIMIT 1",
                    )?
                    .query_row(params![account_id, target.kind.as_str(), target.value, at], |r| r.get(0))
                    .optional()?;
                if found.is_none() {
                    return Ok(false);
                }
            }
            Ok(true)
        })
    }

    fn reusable_authorization(
        &self,
        account_id: &str,
        identifier: &Identifier,
        wildcard: bool,
        valid_at: UnixTime,
    ) -> Result<Option<Authorization>> {
        self.read(|c| {
            let id: Option<String> = c
                .prepare_cached(REUSABLE_AUTHORIZATION)?
                .query_row(params![account_id, identifier.kind.as_str(), identifier.value, wildcard, valid_at], |r| r.get(0))
                .optional()?;
            id.map(|id| authorization_by_id(c, &id)).transpose().map(Option::flatten)
        })
    }
}

/// authorizations_by_account (account_id, id_type, id_value) finds the rows;
/// `+c.status` keeps the planner on challenges_by_authz rather than scanning
/// every valid challenge through challenges_by_status.
const REUSABLE_AUTHORIZATION: &str = "SELECT a.id FROM authorizations a
     WHERE a.account_id = ?1 AND a.id_type = ?2 AND a.id_value = ?3 AND a.wildcard = ?4
       AND a.status = 'valid' AND a.expires > ?5
       AND EXISTS (SELECT 1 FROM challenges c WHERE c.authz_id = a.id AND +c.status = 'valid')
     ORDER BY a.expires DESC LIMIT 1";

/// An order's authorizations: those it made, then those of earlier orders it
/// reuses, each in the order it listed them.
const ORDER_AUTHORIZATION_IDS: &str = "SELECT id FROM (
         SELECT id, 0 AS part, rowid AS seq FROM authorizations WHERE order_id = ?1
         UNION ALL
         SELECT authz_id, 1, position FROM order_reused_authorizations WHERE order_id = ?1
     ) ORDER BY part, seq";

/// Settings every connection of the store's gets.
/// How long a statement waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

fn tune(c: &Connection) -> Result<()> {
    // The CLI writes while the server runs.
    c.busy_timeout(BUSY_TIMEOUT)?;
    // Hot statements are prepared once per connection (parsing one costs
    // as much as running it); the default cache of 16 is too small.
    c.set_prepared_statement_cache_capacity(128);
    // Without the query planner stability guarantee SQLite re-plans a cached
    // statement whenever a new value is bound to a parameter its plan looked
    // at (`x = ?1 ORDER BY rowid`, `LIMIT ?2`): a full parse per request.
    // Every lookup here is by key, so one plan per statement is right anyway.
    c.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    // Savepoints (each member of a commit group after the first runs in one)
    // keep the pages they will restore in memory: in a temporary file they
    // cost two write(2) calls per page, 9 pages an issuance at c=64 (strace).
    // A group touches at most a few hundred pages.
    c.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

/// The schema version this build writes (`PRAGMA user_version`).
pub(crate) fn schema_version() -> i64 {
    schema::MIGRATIONS.len() as i64
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let version = usize::try_from(version).map_err(|_| Error::internal("negative schema version"))?;
    if version > schema::MIGRATIONS.len() {
        return Err(Error::internal(format!(
            "the database is at schema version {version}, newer than this tenure ({}); refusing to touch it",
            schema::MIGRATIONS.len()
        )));
    }
    if version == schema::MIGRATIONS.len() {
        return Ok(());
    }
    // A migration may rebuild a table that others reference (SQLite's way to
    // change a column), which foreign keys forbid mid-way; they are switched
    // off around the migrations (only possible outside a transaction) and
    // checked in full before each commit.
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    let outcome = (|| {
        for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(version) {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)?;
            // Another process may have migrated while we waited for the lock.
            let now_at: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if now_at as usize > i {
                continue;
            }
            tx.execute_batch(sql)?;
            if i + 1 == schema::REVERSED_NAMES {
                let names: Vec<String> = tx
                    .prepare("SELECT DISTINCT name FROM resource_names")?
                    .query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                let mut fill = tx.prepare("UPDATE resource_names SET reversed = ?2 WHERE name = ?1")?;
                for name in &names {
                    fill.execute(params![name, crate::registry::reversed_labels(name)])?;
                }
            }
            let broken: Option<String> =
                tx.query_row("SELECT \"table\" FROM pragma_foreign_key_check LIMIT 1", [], |r| r.get(0)).optional()?;
            if let Some(table) = broken {
                return Err(Error::internal(format!("migration {} would break a reference from table {table}; nothing changed", i + 1)));
            }
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(())
    })();
    conn.pragma_update(None, "foreign_keys", "ON")?;
    outcome
}

fn issuer_row(r: &Row<'_>) -> rusqlite::Result<IssuerRecord> {
    Ok(IssuerRecord { id: r.get(0)?, tenant: r.get(1)?, cert_der: r.get(2)?, key_pkcs8: r.get(3)? })
}

fn account_where(c: &Connection, cond: &str, arg: &str) -> Result<Option<Account>> {
    let sql = format!("SELECT id, thumbprint, jwk, status, contact, tenant, eab_kid, tos_agreed, created_at FROM accounts WHERE {cond}");
    let row = c
        .prepare_cached(&sql)?
        .query_row([arg], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, bool>(7)?,
                r.get::<_, i64>(8)?,
            ))
        })
        .optional()?;
    row.map(|(id, thumbprint, jwk, status, contact, tenant, eab_kid, tos_agreed, created_at)| {
        Ok(Account {
            status: AccountStatus::parse(&status).ok_or_else(|| bad_status("account", &status))?,
            contact: from_json(&contact)?,
            id,
            thumbprint,
            jwk,
            tenant,
            eab_kid,
            tos_agreed,
            created_at,
        })
    })
    .transpose()
}

fn order_by_id(c: &Connection, id: &str) -> Result<Option<Order>> {
    let row = c
        .prepare_cached(
            "SELECT id, account_id, status, expires, identifiers, profile, error, certificate, replaces, created_at, lifetime_seconds FROM orders WHERE id = ?1",
        )?
        .query_row(
            [id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, Option<String>>(7)?,
                    r.get::<_, Option<String>>(8)?,
                    r.get::<_, i64>(9)?,
                    r.get::<_, Option<i64>>(10)?,
                ))
            },
        )
        .optional()?;
    let Some((id, account_id, status, expires, identifiers, profile, error, certificate, replaces, created_at, lifetime_seconds)) = row
    else {
        return Ok(None);
    };
    let authorizations = {
        let mut st = c.prepare_cached(ORDER_AUTHORIZATION_IDS)?;
        st.query_map([&id], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?
    };
    Ok(Some(Order {
        status: OrderStatus::parse(&status).ok_or_else(|| bad_status("order", &status))?,
        identifiers: from_json(&identifiers)?,
        error: error.as_deref().map(from_json).transpose()?,
        id,
        account_id,
        expires,
        profile,
        certificate,
        replaces,
        created_at,
        authorizations,
        lifetime_seconds,
    }))
}

fn authorization_by_id(c: &Connection, id: &str) -> Result<Option<Authorization>> {
    let row = c
        .prepare_cached("SELECT id, order_id, account_id, id_type, id_value, wildcard, status, expires FROM authorizations WHERE id = ?1")?
        .query_row([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, bool>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, i64>(7)?,
            ))
        })
        .optional()?;
    let Some((id, order_id, account_id, id_type, id_value, wildcard, status, expires)) = row else {
        return Ok(None);
    };
    let mut st =
        c.prepare_cached("SELECT id, authz_id, type, token, status, validated, error FROM challenges WHERE authz_id = ?1 ORDER BY rowid")?;
    let raw = st
        .query_map([&id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, Option<i64>>(5)?,
                r.get::<_, Option<String>>(6)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let challenges = raw
        .into_iter()
        .map(|(id, authz_id, kind, token, status, validated, error)| {
            Ok(Challenge {
                status: ChallengeStatus::parse(&status).ok_or_else(|| bad_status("challenge", &status))?,
                error: error.as_deref().map(from_json).transpose()?,
                id,
                authz_id,
                kind,
                token,
                validated,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let identifier = Identifier::parse(&id_type, &id_value).map_err(|e| Error::internal(format!("stored identifier: {e}")))?;
    Ok(Some(Authorization {
        status: AuthorizationStatus::parse(&status).ok_or_else(|| bad_status("authorization", &status))?,
        id,
        order_id,
        account_id,
        identifier,
        wildcard,
        expires,
        challenges,
    }))
}

/// Recomputes a pending order's status from its authorizations (RFC 8555 §7.1.6):
/// all valid → ready; any invalid/deactivated → invalid.
fn refresh_order_status(tx: &Tx<'_>, order_id: &str, cause: Option<RecordedError>) -> Result<()> {
    let statuses: Vec<String> = {
        let mut st = tx.prepare_cached(
            "SELECT status FROM authorizations WHERE order_id = ?1
             UNION ALL
             SELECT a.status FROM order_reused_authorizations r JOIN authorizations a ON a.id = r.authz_id WHERE r.order_id = ?1",
        )?;
        st.query_map([order_id], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?
    };
    if statuses.iter().all(|s| s == "valid") {
        tx.prepare_cached("UPDATE orders SET status = 'ready' WHERE id = ?1 AND status = 'pending'")?.execute([order_id])?;
    } else if statuses.iter().any(|s| s != "valid" && s != "pending") {
        let err = cause.unwrap_or(RecordedError {
            kind: "unauthorized".into(),
            detail: "an authorization of this order is no longer pending or valid".into(),
        });
        tx.prepare_cached("UPDATE orders SET status = 'invalid', error = ?2 WHERE id = ?1 AND status IN ('pending', 'ready')")?
            .execute(params![order_id, json(&err)])?;
    }
    Ok(())
}

fn certificate_row(r: &Row<'_>) -> rusqlite::Result<Result<Certificate>> {
    let identifiers: String = r.get(6)?;
    let reason: Option<i64> = r.get(10)?;
    let cert = Certificate {
        serial: r.get(0)?,
        account_id: r.get(1)?,
        order_id: r.get(2)?,
        tenant: r.get(3)?,
        issuer_id: r.get(4)?,
        der: r.get(5)?,
        identifiers: Vec::new(),
        not_before: r.get(7)?,
        not_after: r.get(8)?,
        revoked_at: r.get(9)?,
        revocation_reason: reason.and_then(|r| u8::try_from(r).ok()),
    };
    Ok(from_json(&identifiers).map(|identifiers| Certificate { identifiers, ..cert }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(s: &SqliteStore, key: &str) -> Option<Vec<u8>> {
        s.setting(key).unwrap()
    }

    /// A data directory of the previous release (schema 4), with an issued
    /// certificate, its binding and a renewal successor, and an order left
    /// `processing` by a crash: migration 5 rebuilds the certificates table
    /// keeping every row and reference, and readies the order.
    #[test]
    fn migration_5_keeps_every_certificate_and_reference() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let mut c = Connection::open(&path).unwrap();
            c.pragma_update(None, "foreign_keys", "ON").unwrap();
            let tx = c.transaction().unwrap();
            for sql in &schema::MIGRATIONS[..4] {
                tx.execute_batch(sql).unwrap();
            }
            tx.pragma_update(None, "user_version", 4).unwrap();
            tx.execute_batch(
                "INSERT INTO issuers (id, role, tenant, cert_der, key_pkcs8, created_at) VALUES (1, 'root', NULL, x'00', x'00', 1);
                 INSERT INTO tenants (name, permits, issuer_id, created_at) VALUES ('corp', '[]', 1, 1);
                 INSERT INTO accounts VALUES ('acct', 'tp', '{}', 'valid', '[]', 'corp', NULL, 1, 1);
                 INSERT INTO orders (id, account_id, status, expires, identifiers, profile, certificate, created_at)
                     VALUES ('o1', 'acct', 'valid', 9, '[]', 'default', 'aa', 1),
                            ('o2', 'acct', 'processing', 9, '[]', 'default', NULL, 1);
                 INSERT INTO resources (id, tenant, kind, names, zones, addresses, state, attributes, anchor, created_at, updated_at)
                     VALUES ('r1', 'corp', 'vm', '[]', '[]', '[]', 'active', '{}', NULL, 1, 1);
                 INSERT INTO certificates (serial, account_id, order_id, tenant, issuer_id, der, identifiers, not_before, not_after,
                     created_at, renewal, successor)
                     VALUES ('aa', 'acct', 'o1', 'corp', 1, x'30', '[]', 1, 2, 1, 'renewed', 'bb');
                 INSERT INTO certificates (serial, account_id, order_id, tenant, issuer_id, der, identifiers, not_before, not_after,
                     created_at, renewal, predecessor)
                     VALUES ('bb', 'acct', 'o1', 'corp', 1, x'30', '[]', 1, 2, 1, 'scheduled', 'aa');
                 INSERT INTO certificate_resources VALUES ('aa', 'r1'), ('bb', 'r1');",
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        let (a, life_a) = s.certificate_record("aa").unwrap().unwrap();
        let (b, life_b) = s.certificate_record("bb").unwrap().unwrap();
        assert_eq!((a.account_id.as_deref(), a.order_id.as_deref()), (Some("acct"), Some("o1")));
        assert_eq!((life_a.trigger, life_b.trigger), (Trigger::AcmeFinalize, Trigger::Renewal));
        assert_eq!((life_a.resources, life_b.resources), (vec!["r1".to_string()], vec!["r1".to_string()]));
        assert_eq!((life_a.renewal, life_b.predecessor.as_deref()), (RenewalState::Renewed, Some("aa")));
        assert_eq!(b.serial, "bb");
        assert_eq!(s.order("o2").unwrap().unwrap().status, OrderStatus::Ready);
        s.with(|c| {
            let broken: i64 = c.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get(0))?;
            assert_eq!(broken, 0);
            let on: i64 = c.pragma_query_value(None, "foreign_keys", |r| r.get(0))?;
            assert_eq!(on, 1, "foreign keys are on again after migrating");
            Ok(())
        })
        .unwrap();
    }

    /// A data directory of schema 6: its tenants get a webhook secret column,
    /// empty until first use; storing one without `replace` keeps the first
    /// one stored (two processes racing agree), with `replace` rotates it.
    #[test]
    fn migration_7_adds_a_webhook_secret_per_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let mut c = Connection::open(&path).unwrap();
            let tx = c.transaction().unwrap();
            for sql in &schema::MIGRATIONS[..6] {
                tx.execute_batch(sql).unwrap();
            }
            tx.pragma_update(None, "user_version", 6).unwrap();
            tx.execute_batch(
                "INSERT INTO issuers (id, role, tenant, cert_der, key_pkcs8, created_at) VALUES (1, 'root', NULL, x'00', x'00', 1);
                 INSERT INTO tenants (name, permits, issuer_id, created_at) VALUES ('corp', '[]', 1, 1);",
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.tenant("corp").unwrap().unwrap().name, "corp");
        assert_eq!(s.tenant_webhook_secret("corp").unwrap(), None);
        assert_eq!(s.store_tenant_webhook_secret("corp", b"first", false).unwrap(), b"first");
        assert_eq!(s.store_tenant_webhook_secret("corp", b"second", false).unwrap(), b"first");
        assert_eq!(s.store_tenant_webhook_secret("corp", b"rotated", true).unwrap(), b"rotated");
        assert_eq!(s.tenant_webhook_secret("corp").unwrap().as_deref(), Some(&b"rotated"[..]));
        assert_eq!(s.tenant_webhook_secret("nobody").unwrap(), None);
        let err = s.store_tenant_webhook_secret("nobody", b"x", true).unwrap_err();
        assert_eq!(err.kind, crate::ErrorKind::NotFound);
    }

    /// A data directory of schema 12: its names are given their reversed form,
    /// and the names under a zone are found through the new index.
    #[test]
    fn migration_13_indexes_names_under_a_zone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let mut c = Connection::open(&path).unwrap();
            let tx = c.transaction().unwrap();
            for sql in &schema::MIGRATIONS[..12] {
                tx.execute_batch(sql).unwrap();
            }
            tx.pragma_update(None, "user_version", 12).unwrap();
            tx.execute_batch(
                "INSERT INTO issuers (id, role, tenant, cert_der, key_pkcs8, created_at) VALUES (1, 'root', NULL, x'00', x'00', 1);
                 INSERT INTO tenants (name, permits, issuer_id, created_at) VALUES ('corp', '[]', 1, 1);
                 INSERT INTO resources (id, tenant, kind, names, zones, addresses, state, attributes, anchor, created_at, updated_at)
                     VALUES ('r1', 'corp', 'vm', '[\"www.corp.example\"]', '[]', '[]', 'active', '{}', NULL, 1, 1),
                            ('r2', 'corp', 'lb', '[]', '[\"dev.corp.example\"]', '[]', 'active', '{}', NULL, 1, 1),
                            ('r3', 'corp', 'vm', '[\"corp.example.org\"]', '[]', '[]', 'active', '{}', NULL, 1, 1);
                 INSERT INTO resource_names (name, zone, resource_id) VALUES ('www.corp.example', 0, 'r1'),
                     ('dev.corp.example', 1, 'r2'), ('corp.example.org', 0, 'r3');",
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        let ids = |zone: &str| s.resources_under(zone).unwrap().into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids("corp.example"), ["r1", "r2"], "rows from before the migration are found");
        assert_eq!(ids("example"), ["r1", "r2"]);
        assert_eq!(ids("www.corp.example"), Vec::<String>::new(), "strictly under, not the name itself");
        assert_eq!(ids("example.org"), ["r3"]);
        let plan: Vec<String> = s
            .read(|c| {
                let mut st = c.prepare(
                    "EXPLAIN QUERY PLAN SELECT DISTINCT resource_id FROM resource_names WHERE reversed >= 'a.' AND reversed < 'a/'",
                )?;
                Ok(st.query_map([], |r| r.get::<_, String>(3))?.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .unwrap();
        assert!(plan.iter().any(|p| p.starts_with("SEARCH") && p.contains("INDEX resource_names_reversed")), "{plan:?}");
    }

    /// A data directory of schema 8: its resources and events are kept, none
    /// has a lease, the new event kinds are accepted, and expired leases are
    /// found through the partial index (not a scan of every resource).
    #[test]
    fn migration_9_adds_leases_and_event_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let mut c = Connection::open(&path).unwrap();
            let tx = c.transaction().unwrap();
            for sql in &schema::MIGRATIONS[..8] {
                tx.execute_batch(sql).unwrap();
            }
            tx.pragma_update(None, "user_version", 8).unwrap();
            tx.execute_batch(
                "INSERT INTO issuers (id, role, tenant, cert_der, key_pkcs8, created_at) VALUES (1, 'root', NULL, x'00', x'00', 1);
                 INSERT INTO tenants (name, permits, issuer_id, created_at) VALUES ('corp', '[]', 1, 1);
                 INSERT INTO resources (id, tenant, kind, names, zones, addresses, state, attributes, anchor, created_at, updated_at)
                     VALUES ('r1', 'corp', 'vm', '[]', '[]', '[]', 'active', '{\"lease-seconds\":\"60\"}', NULL, 1, 1);
                 INSERT INTO resource_events (resource_id, tenant, kind, at, detail) VALUES ('r1', 'corp', 'created', 1, '{}'),
                     ('r1', 'corp', 'suspended', 2, '{}');",
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        let kinds: Vec<String> = s.resource_events("r1").unwrap().into_iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["created", "suspended"]);
        // A lease set before leases existed starts with the next change to it, not retroactively.
        assert_eq!(s.resource("r1").unwrap().unwrap().lease_expires, None);
        assert_eq!(s.expired_leases(i64::MAX, 10).unwrap(), Vec::<String>::new());
        let changes = crate::registry::AttributeChanges::from([("lease-seconds".to_string(), Some("30".to_string()))]);
        let r = s.set_resource_attributes("r1", &changes, &|_| false).unwrap();
        let expires = r.lease_expires.expect("a lease from the change on");
        assert_eq!(s.expired_leases(expires, 10).unwrap(), ["r1"]);
        s.confirm_resource("r1").unwrap();
        let kinds: Vec<String> = s.resource_events("r1").unwrap().into_iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["created", "suspended", "attributes-changed", "confirmed"]);
        s.with(|c| {
            let plan: Vec<String> = c
                .prepare(
                    "EXPLAIN QUERY PLAN SELECT id FROM resources WHERE state = 'active' AND lease_expires IS NOT NULL
                     AND lease_expires <= 5 ORDER BY lease_expires LIMIT 10",
                )?
                .query_map([], |r| r.get::<_, String>(3))?
                .collect::<rusqlite::Result<_>>()?;
            assert!(plan.iter().any(|p| p.contains("resources_lease_due")), "{plan:?}");
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn tx_commits_on_success_and_rolls_back_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        s.tx(|tx| {
            tx.execute("INSERT INTO settings (key, value) VALUES ('a', x'01')", [])?;
            Ok(())
        })
        .unwrap();
        assert_eq!(stored(&s, "a"), Some(vec![1]));
        let failed: Result<()> = s.tx(|tx| {
            tx.execute("INSERT INTO settings (key, value) VALUES ('b', x'02')", [])?;
            Err(Error::internal("changed my mind"))
        });
        assert!(failed.is_err());
        assert_eq!(stored(&s, "b"), None);
        // The next transaction starts cleanly (no BEGIN inside an open one).
        s.tx(|tx| {
            tx.execute("INSERT INTO settings (key, value) VALUES ('c', x'03')", [])?;
            Ok(())
        })
        .unwrap();
        assert_eq!(stored(&s, "c"), Some(vec![3]));
    }

    #[test]
    fn a_panic_inside_tx_rolls_back_and_leaves_the_store_usable() {
        let s = SqliteStore::open_in_memory().unwrap();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = s.tx(|tx| -> Result<()> {
                tx.execute("INSERT INTO settings (key, value) VALUES ('p', x'01')", [])?;
                panic!("bug in a closure");
            });
        }));
        assert!(caught.is_err());
        assert_eq!(stored(&s, "p"), None);
        s.set_setting("q", b"ok").unwrap();
        assert_eq!(stored(&s, "q"), Some(b"ok".to_vec()));
    }
}

#[cfg(test)]
mod reprepare_tests {
    use super::*;
    use rusqlite::StatementStatus;

    /// The reads reuse of authorizations adds go by index, never a scan (the
    /// tables grow with every order).
    /// SQLite's plan for `sql`, one line per step (its parameters bound to 1, 2, …).
    fn query_plan(s: &SqliteStore, sql: &str) -> Vec<String> {
        s.read(|c| {
            let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
            let n = st.parameter_count() as i64;
            let rows = st.query_map(rusqlite::params_from_iter(1..=n), |r| r.get::<_, String>(3))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .unwrap()
    }

    #[test]
    fn reuse_reads_use_indexes() {
        let s = SqliteStore::open_in_memory().unwrap();
        for sql in [REUSABLE_AUTHORIZATION, ORDER_AUTHORIZATION_IDS] {
            let plan = query_plan(&s, sql);
            let searches: Vec<&String> = plan.iter().filter(|p| p.starts_with("SEARCH")).collect();
            assert!(!searches.is_empty() && searches.iter().all(|p| !p.contains("challenges_by_status")), "{sql}: {plan:?}");
            assert!(!plan.iter().any(|p| p.starts_with("SCAN") && !p.contains("subquery")), "{sql}: {plan:?}");
        }
    }

    /// The backlog gauges count in the partial indexes the sweep and the
    /// outbox read (scraped every few seconds, never a table scan), and count
    /// what is due and pending only.
    #[test]
    fn backlog_counts_go_by_their_partial_indexes() {
        let s = SqliteStore::open_in_memory().unwrap();
        // The store's own statements, so the test follows them if they change.
        for (sql, index) in [(lifecycle::RENEWALS_DUE, "certificates_due"), (lifecycle::DELIVERIES_PENDING, "deliveries_pending")] {
            let plan = query_plan(&s, sql);
            assert!(plan.iter().all(|p| p.contains(index)), "{sql}: {plan:?}");
        }
        assert_eq!((s.renewals_due(now()).unwrap(), s.deliveries_pending().unwrap()), (0, 0));
        s.with(|c| {
            c.execute_batch(
                "INSERT INTO issuers (id, role, tenant, cert_der, key_pkcs8, created_at) VALUES (1, 'root', NULL, x'00', x'00', 1);
                 INSERT INTO tenants (name, permits, issuer_id, created_at) VALUES ('corp', '[]', 1, 1);
                 INSERT INTO resources (id, tenant, kind, names, zones, addresses, state, attributes, anchor, created_at, updated_at)
                     VALUES ('r1', 'corp', 'vm', '[]', '[]', '[]', 'active', '{}', NULL, 1, 1);
                 INSERT INTO certificates (serial, tenant, issuer_id, der, identifiers, not_before, not_after, created_at, renewal, renew_at)
                     VALUES ('due1', 'corp', 1, x'30', '[]', 1, 2, 1, 'scheduled', 5),
                            ('due2', 'corp', 1, x'30', '[]', 1, 2, 1, 'scheduled', 9),
                            ('later', 'corp', 1, x'30', '[]', 1, 2, 1, 'scheduled', 50),
                            ('client', 'corp', 1, x'30', '[]', 1, 2, 1, 'client', 5),
                            ('renewed', 'corp', 1, x'30', '[]', 1, 2, 1, 'renewed', 5);
                 INSERT INTO deliveries (event, serial, resource_id, kind, target, state, next_attempt, created_at)
                     VALUES ('e', NULL, 'r1', 'file', '/x', 'pending', 1, 1),
                            ('e', NULL, 'r1', 'file', '/x', 'pending', 99999999999, 1),
                            ('e', NULL, 'r1', 'file', '/x', 'delivered', 1, 1),
                            ('e', NULL, 'r1', 'file', '/x', 'failed', 1, 1);",
            )?;
            Ok(())
        })
        .unwrap();
        assert_eq!(s.renewals_due(10).unwrap(), 2);
        assert_eq!(s.renewals_due(100).unwrap(), 3);
        // Pending, due now or backing off.
        assert_eq!(s.deliveries_pending().unwrap(), 2);
    }

    /// The readiness probe commits its row, and a write lock another
    /// connection holds fails it within its bound, leaving the writer's own
    /// busy timeout as it was.
    #[test]
    fn the_probe_write_is_bounded_by_a_held_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let s = SqliteStore::open(&path).unwrap();
        s.probe_write(Duration::from_millis(500)).unwrap();
        assert!(s.setting("readiness-probe").unwrap().is_some());
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let t = std::time::Instant::now();
        assert!(s.probe_write(Duration::from_millis(300)).is_err());
        assert!(t.elapsed() < Duration::from_millis(1500), "took {:?}", t.elapsed());
        other.execute_batch("ROLLBACK").unwrap();
        s.probe_write(Duration::from_millis(300)).unwrap();
        let busy: i64 = s.with(|c| Ok(c.pragma_query_value(None, "busy_timeout", |r| r.get(0))?)).unwrap();
        assert_eq!(busy, BUSY_TIMEOUT.as_millis() as i64);
    }

    /// SQLite 3.54 re-plans (re-parses) `WHERE x = ?1 ORDER BY rowid` and
    /// `LIMIT ?n` on every new binding unless QPSG is on; the store's hot
    /// reads are of that shape.
    #[test]
    fn cached_statements_are_not_reprepared_on_rebind() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let sqls = [
            ORDER_AUTHORIZATION_IDS,
            "SELECT id, authz_id, type, token, status, validated, error FROM challenges WHERE authz_id = ?1 ORDER BY rowid",
            "SELECT serial FROM certificates WHERE renewal = 'scheduled' AND renew_at < ?1 ORDER BY renew_at, serial LIMIT ?2",
        ];
        for round in 0..3i64 {
            for conn in ["reader", "writer"] {
                let probe = |c: &Connection| -> Result<()> {
                    for sql in sqls {
                        let mut st = c.prepare_cached(sql)?;
                        let args: Vec<&dyn rusqlite::ToSql> = if st.parameter_count() == 2 { vec![&round, &round] } else { vec![&round] };
                        st.query_map(&args[..], |_| Ok(()))?.for_each(drop);
                        assert_eq!(st.get_status(StatementStatus::RePrepare), 0, "{conn}: {sql}");
                    }
                    Ok(())
                };
                if conn == "reader" { s.read(probe) } else { s.with(|c| probe(c)) }.unwrap();
            }
            s.set_setting("k", round.to_string().as_bytes()).unwrap();
        }
    }
}
