//! The shared store: PostgreSQL, implementing every store trait, so several
//! `tenure serve` processes (on several machines) work on one database.
//!
//! - **Driver and pool.** The synchronous `postgres` client (tokio-postgres
//!   underneath) in an `r2d2` pool: the engine runs on blocking threads, never
//!   on async workers, so a blocking client is what it needs; each pooled
//!   connection drives its own socket.
//! - **Transactions.** Every write runs in one SERIALIZABLE transaction
//!   (`tx`): the guarantee SQLite gives with its single writer, here with
//!   writers on several machines. A transaction PostgreSQL aborts as a
//!   serialization failure or a deadlock is run again from the start (its
//!   closure holds no effects outside the transaction), a bounded number of
//!   times. Claims of queued work are the one exception: the due renewals,
//!   provisioning requests and deliveries are claimed in one READ COMMITTED
//!   statement (`FOR UPDATE SKIP LOCKED`, `lifecycle::claim`), so servers
//!   share the work without waiting for or aborting each other; what a claim
//!   leads to is recorded SERIALIZABLE with its own guard, as on SQLite.
//! - **Schema.** `schema.rs`, applied under an advisory lock by whichever
//!   process starts first.

mod hsm;
pub(crate) mod import;
mod intermediates;
mod lifecycle;
mod provisioning;
mod registry;
mod removal;
mod schema;
mod tenant_keys;
mod tokens;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use postgres::error::SqlState;
use postgres::types::{FromSql, ToSql};
use postgres::{GenericClient, IsolationLevel, NoTls, Row, Statement};
use registry::append_audit;

use super::*;
use crate::error::{Error, Result};
use crate::identifier::Identifier;
use crate::model::*;

/// A pooled connection and the statements prepared on it. Each SQL text is
/// parsed and planned by PostgreSQL once per connection rather than at every
/// call, and runs in one round trip instead of two.
pub(crate) struct Conn {
    client: postgres::Client,
    prepared: std::collections::HashMap<String, Statement>,
}

/// A transaction of the shared store, on a connection's prepared statements.
pub(crate) struct Tx<'a> {
    tx: postgres::Transaction<'a>,
    prepared: &'a mut std::collections::HashMap<String, Statement>,
}

/// Statements prepared per connection at most; past it the cache starts over
/// (the store has about 250 distinct statements).
const PREPARED_MAX: usize = 1024;

/// The statement for `sql` on this connection, prepared on first use.
fn prepared<C: GenericClient>(
    client: &mut C,
    cache: &mut std::collections::HashMap<String, Statement>,
    sql: &str,
) -> std::result::Result<Statement, postgres::Error> {
    if let Some(st) = cache.get(sql) {
        return Ok(st.clone());
    }
    let st = client.prepare(sql)?;
    if cache.len() >= PREPARED_MAX {
        cache.clear();
    }
    cache.insert(sql.to_string(), st.clone());
    Ok(st)
}

/// What the store's statements run on: a connection (each statement its own
/// transaction) or a transaction. The methods are the client's, on prepared
/// statements.
pub(crate) trait Db {
    /// Runs a statement; how many rows it changed.
    fn execute(&mut self, sql: &str, params: &Params<'_>) -> std::result::Result<u64, postgres::Error>;
    /// Every row of a query.
    fn query(&mut self, sql: &str, params: &Params<'_>) -> std::result::Result<Vec<Row>, postgres::Error>;
    /// The one row of a query.
    fn query_one(&mut self, sql: &str, params: &Params<'_>) -> std::result::Result<Row, postgres::Error>;
    /// The row of a query that yields at most one.
    fn query_opt(&mut self, sql: &str, params: &Params<'_>) -> std::result::Result<Option<Row>, postgres::Error>;
}

macro_rules! db_on_prepared {
    ($client:ident) => {
        fn execute(&mut self, sql: &str, params: &Params<'_>) -> std::result::Result<u64, postgres::Error> {
            let st = prepared(&mut self.$client, &mut self.prepared, sql)?;
            self.$client.execute(&st, params)
        }
        fn query(&mut self, sql: &str, params: &Params<'_>) -> std::result::Result<Vec<Row>, postgres::Error> {
            let st = prepared(&mut self.$client, &mut self.prepared, sql)?;
            self.$client.query(&st, params)
        }
        fn query_one(&mut self, sql: &str, params: &Params<'_>) -> std::result::Result<Row, postgres::Error> {
            let st = prepared(&mut self.$client, &mut self.prepared, sql)?;
            self.$client.query_one(&st, params)
        }
        fn query_opt(&mut self, sql: &str, params: &Params<'_>) -> std::result::Result<Option<Row>, postgres::Error> {
            let st = prepared(&mut self.$client, &mut self.prepared, sql)?;
            self.$client.query_opt(&st, params)
        }
    };
}

impl Db for Tx<'_> {
    db_on_prepared!(tx);
}

impl Db for Conn {
    db_on_prepared!(client);
}

impl Conn {
    /// Starts a transaction at `level` on this connection.
    pub(crate) fn begin(&mut self, level: IsolationLevel) -> std::result::Result<Tx<'_>, postgres::Error> {
        let tx = self.client.build_transaction().isolation_level(level).start()?;
        Ok(Tx { tx, prepared: &mut self.prepared })
    }
}

impl Tx<'_> {
    /// Commits the transaction (dropped without this, it rolls back).
    pub(crate) fn commit(self) -> std::result::Result<(), postgres::Error> {
        self.tx.commit()
    }
}

/// Makes the pool's connections (what `r2d2_postgres` does, with each
/// connection's statement cache beside it), over TLS when the URL names the
/// CA to verify the server with.
struct Manager {
    config: postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

/// The driver's configuration of a connection string, and the TLS client
/// configuration of its `sslrootcert` (libpq's name for the file of CA
/// certificates that verify the server; the driver does not read it, so it is
/// taken out here). With it, the connection is TLS, verified against exactly
/// those CAs and the host name (or address) connected to; `sslmode=require`
/// without it is refused rather than left unverified.
pub(crate) fn driver_config(url: &str) -> std::result::Result<(postgres::Config, Option<rustls::ClientConfig>), String> {
    let mut root_file = None;
    let rest = match url::Url::parse(url) {
        Ok(mut u) if u.scheme().starts_with("postgres") => {
            let pairs: Vec<(String, String)> = u.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
            u.set_query(None);
            let mut kept = Vec::new();
            for (k, v) in pairs {
                if k == "sslrootcert" { root_file = Some(v) } else { kept.push((k, v)) }
            }
            if !kept.is_empty() {
                u.query_pairs_mut().extend_pairs(kept);
            }
            u.to_string()
        }
        _ => url
            .split_whitespace()
            .filter(|kv| match kv.strip_prefix("sslrootcert=") {
                Some(v) => {
                    root_file = Some(v.trim_matches('\'').to_string());
                    false
                }
                None => true,
            })
            .collect::<Vec<_>>()
            .join(" "),
    };
    let config: postgres::Config = rest.parse().map_err(|e| format!("not a PostgreSQL connection string: {e}"))?;
    let Some(root_file) = root_file else {
        if config.get_ssl_mode() == postgres::config::SslMode::Require {
            return Err(
                "sslmode=require needs sslrootcert=FILE (the CA certificates that verify the server); tenure does not connect unverified"
                    .into(),
            );
        }
        return Ok((config, None));
    };
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(&root_file).map_err(|e| format!("sslrootcert {root_file}: {e}"))?;
    for cert in certs {
        roots.add(cert.map_err(|e| format!("sslrootcert {root_file}: {e}"))?).map_err(|e| format!("sslrootcert {root_file}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("sslrootcert {root_file} holds no certificate"));
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((config, Some(tls)))
}

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = postgres::Error;

    fn connect(&self) -> std::result::Result<Conn, postgres::Error> {
        let client = match &self.tls {
            Some(tls) => self.config.connect(tls.clone())?,
            None => self.config.connect(NoTls)?,
        };
        Ok(Conn { client, prepared: Default::default() })
    }

    fn is_valid(&self, conn: &mut Conn) -> std::result::Result<(), postgres::Error> {
        conn.client.simple_query("").map(|_| ())
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.client.is_closed()
    }
}

/// Parameters of a statement.
type Params<'a> = [&'a (dyn ToSql + Sync)];

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Self {
        Error::internal(format!("storage: {e}")).caused_by(e)
    }
}

impl From<r2d2::Error> for Error {
    fn from(e: r2d2::Error) -> Self {
        Error::internal(format!("storage: no database connection: {e}")).caused_by(e)
    }
}

/// How many times a transaction PostgreSQL aborted (a serialization failure,
/// a deadlock) is tried in all.
const TRIES: u32 = 12;

/// Connections per process: the blocking threads that talk to the database at
/// once. PostgreSQL's default `max_connections` (100) holds several servers
/// and the CLI.
const POOL_SIZE: u32 = 16;

/// The advisory lock key migrations run under ("tenure" in ASCII).
const MIGRATION_LOCK: i64 = 0x74656e757265;

/// The PostgreSQL store.
pub struct PgStore {
    pool: r2d2::Pool<Manager>,
    /// Spent nonces recorded; every so often the expired ones are dropped.
    nonces_spent: AtomicU64,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
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

/// Column `i` of a row, or an error naming it (never a panic: a schema that
/// does not match is a storage error like any other).
fn get<'a, T: FromSql<'a>>(r: &'a Row, i: usize) -> Result<T> {
    r.try_get(i).map_err(|e| Error::internal(format!("storage: column {i}: {e}")).caused_by(e))
}

/// Whether PostgreSQL aborted the transaction so that running it again may succeed.
fn retryable(e: &Error) -> bool {
    let Some(source) = &e.source else { return false };
    let Some(pg) = source.downcast_ref::<postgres::Error>() else { return false };
    matches!(pg.code(), Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED)
}

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`, or
    /// key=value pairs) and brings the schema up to date under an advisory
    /// lock, so the first of several starting servers migrates and the others
    /// wait for it.
    pub fn open(url: &str) -> Result<PgStore> {
        let (config, tls) = driver_config(url).map_err(|e| Error::malformed(format!("the database URL: {e}")))?;
        let manager = Manager { config, tls: tls.map(tokio_postgres_rustls::MakeRustlsConnect::new) };
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(1))
            // No `SELECT 1` before every use (a round trip per store call): a
            // connection the server closed fails its next statement, which
            // fails that one call, and the pool drops it.
            .test_on_check_out(false)
            .connection_timeout(Duration::from_secs(10))
            .build(manager)
            .map_err(|e| Error::internal(format!("cannot connect to the database: {e}")).caused_by(e))?;
        let store = PgStore { pool, nonces_spent: AtomicU64::new(0) };
        store.migrate()?;
        Ok(store)
    }

    fn client(&self) -> Result<r2d2::PooledConnection<Manager>> {
        Ok(self.pool.get()?)
    }

    fn migrate(&self) -> Result<()> {
        let mut pooled = self.client()?;
        let c = &mut pooled.client;
        c.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
        let outcome = (|| -> Result<()> {
            c.batch_execute("CREATE TABLE IF NOT EXISTS tenure_schema (version BIGINT NOT NULL)")?;
            let version: Option<i64> = c.query_opt("SELECT version FROM tenure_schema", &[])?.map(|r| get(&r, 0)).transpose()?;
            let version = version.unwrap_or(0);
            let known = schema::MIGRATIONS.len() as i64;
            if version > known {
                return Err(Error::internal(format!(
                    "the database is at schema version {version}, newer than this tenure ({known}); refusing to touch it"
                )));
            }
            for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(version as usize) {
                let mut tx = c.transaction()?;
                tx.batch_execute(sql)?;
                tx.execute("DELETE FROM tenure_schema", &[])?;
                tx.execute("INSERT INTO tenure_schema (version) VALUES ($1)", &[&(i as i64 + 1)])?;
                tx.commit()?;
            }
            Ok(())
        })();
        let unlocked = c.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
        outcome?;
        unlocked?;
        Ok(())
    }

    /// Runs a read on a pooled connection (each statement sees the latest commit).
    fn read<T>(&self, f: impl FnOnce(&mut Conn) -> Result<T>) -> Result<T> {
        off_the_runtime(|| {
            let mut c = self.client()?;
            f(&mut c)
        })
    }

    /// Runs `f` in one SERIALIZABLE transaction, again from the start when
    /// PostgreSQL aborts it for a concurrent one (see the module's notes).
    fn tx<T>(&self, f: impl FnMut(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        off_the_runtime(|| self.tx_here(f))
    }

    fn tx_here<T>(&self, mut f: impl FnMut(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        let mut c = self.client()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = (|| {
                let mut tx = c.begin(IsolationLevel::Serializable)?;
                let out = f(&mut tx)?;
                tx.commit()?;
                Ok(out)
            })();
            match outcome {
                Err(e) if attempt < TRIES && retryable(&e) => {
                    // Jittered, growing pauses so the transactions that
                    // collided do not collide again.
                    let pause = 1u64 << attempt.min(6);
                    let jitter = u64::from(std::process::id() ^ attempt).wrapping_mul(2654435761) % pause.max(1);
                    std::thread::sleep(Duration::from_millis(pause + jitter));
                }
                other => return other,
            }
        }
    }
}

/// Runs a database call where it may block. The engine runs on blocking
/// threads, where this costs a thread-local check; a call made on an async
/// worker of a multi-threaded runtime (serve's start-up) hands the worker's
/// other tasks away first, as the synchronous client must not block one.
fn off_the_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Rows of a query, each converted by `f`.
fn rows<C: Db, T>(c: &mut C, sql: &str, params: &Params<'_>, f: impl Fn(&Row) -> Result<T>) -> Result<Vec<T>> {
    c.query(sql, params)?.iter().map(f).collect()
}

/// The row of a query that yields at most one, converted by `f`.
fn row<C: Db, T>(c: &mut C, sql: &str, params: &Params<'_>, f: impl Fn(&Row) -> Result<T>) -> Result<Option<T>> {
    c.query_opt(sql, params)?.as_ref().map(f).transpose()
}

/// The first column of the row of a query that yields at most one.
fn value<C: Db, T: for<'a> FromSql<'a>>(c: &mut C, sql: &str, params: &Params<'_>) -> Result<Option<T>> {
    row(c, sql, params, |r| get(r, 0))
}

/// How many rows a statement changed, as the store's traits count them.
fn count(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl Storage for PgStore {}

impl SettingsStore for PgStore {
    fn setting(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.read(|c| value(c, "SELECT value FROM settings WHERE key = $1", &[&key]))
    }

    fn set_setting(&self, key: &str, value: &[u8]) -> Result<()> {
        self.read(|c| {
            c.execute(
                "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&key, &value],
            )?;
            Ok(())
        })
    }

    fn setting_or_insert(&self, key: &str, v: &[u8]) -> Result<Vec<u8>> {
        self.tx(|tx| {
            tx.execute("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING", &[&key, &v])?;
            value(tx, "SELECT value FROM settings WHERE key = $1", &[&key])?
                .ok_or_else(|| Error::internal(format!("setting {key} vanished")))
        })
    }

    fn probe_write(&self, bound: Duration) -> Result<()> {
        off_the_runtime(|| {
            let mut c = self.pool.get_timeout(bound)?;
            // Once, not retried: the probe asks whether a write commits now.
            // A lock held elsewhere fails it after `lock_timeout`, anything
            // else slow after `statement_timeout`, rather than hanging.
            let millis = bound.as_millis().clamp(1, 60_000);
            let mut tx = c.begin(IsolationLevel::ReadCommitted)?;
            tx.tx.batch_execute(&format!("SET LOCAL lock_timeout = {millis}; SET LOCAL statement_timeout = {}", millis * 2))?;
            tx.execute(
                "INSERT INTO settings (key, value) VALUES ('readiness-probe', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&now().to_string().into_bytes()],
            )?;
            tx.commit()?;
            Ok(())
        })
    }
}

const ISSUER_COLUMNS: &str = "id, tenant, cert_der, key_pkcs8";

fn issuer_row(r: &Row) -> Result<IssuerRecord> {
    Ok(IssuerRecord { id: get(r, 0)?, tenant: get(r, 1)?, cert_der: get(r, 2)?, key_pkcs8: get(r, 3)? })
}

fn tenant_row(r: &Row) -> Result<Tenant> {
    Ok(Tenant { name: get(r, 0)?, permits: from_json(&get::<String>(r, 1)?)?, issuer_id: get(r, 2)?, removed_at: get(r, 3)? })
}

/// Every tenant, by name.
fn all_tenants<C: Db>(c: &mut C) -> Result<Vec<Tenant>> {
    rows(c, "SELECT name, permits, issuer_id, removed_at FROM tenants ORDER BY name", &[], tenant_row)
}

impl TenantStore for PgStore {
    fn root(&self) -> Result<Option<IssuerRecord>> {
        self.read(|c| row(c, &format!("SELECT {ISSUER_COLUMNS} FROM issuers WHERE role = 'root' ORDER BY id LIMIT 1"), &[], issuer_row))
    }

    fn insert_root(&self, cert_der: &[u8], key_pkcs8: &[u8]) -> Result<IssuerRecord> {
        self.tx(|tx| {
            let select = format!("SELECT {ISSUER_COLUMNS} FROM issuers WHERE role = 'root' ORDER BY id LIMIT 1");
            if let Some(root) = row(tx, &select, &[], issuer_row)? {
                return Ok(root);
            }
            let id: i64 = get(
                &tx.query_one(
                    "INSERT INTO issuers (role, tenant, cert_der, key_pkcs8, created_at) VALUES ('root', NULL, $1, $2, $3) RETURNING id",
                    &[&cert_der, &key_pkcs8, &now()],
                )?,
                0,
            )?;
            Ok(IssuerRecord { id, tenant: None, cert_der: cert_der.to_vec(), key_pkcs8: key_pkcs8.to_vec() })
        })
    }

    fn issuer(&self, id: i64) -> Result<Option<IssuerRecord>> {
        self.read(|c| row(c, &format!("SELECT {ISSUER_COLUMNS} FROM issuers WHERE id = $1"), &[&id], issuer_row))
    }

    fn issuers(&self) -> Result<Vec<IssuerRecord>> {
        self.read(|c| rows(c, &format!("SELECT {ISSUER_COLUMNS} FROM issuers ORDER BY id"), &[], issuer_row))
    }

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
        self.tx(|tx| {
            if value::<_, String>(tx, "SELECT name FROM tenants WHERE name = $1", &[&name])?.is_some() {
                return Err(Error::conflict(crate::Conflict::TenantExists, format!("tenant {name:?} already exists")));
            }
            rule(&all_tenants(tx)?)?;
            let t = now();
            let issuer_id: i64 = get(
                &tx.query_one(
                    "INSERT INTO issuers (role, tenant, cert_der, key_pkcs8, created_at) VALUES ('intermediate', $1, $2, $3, $4) RETURNING id",
                    &[&name, &intermediate_der, &intermediate_key, &t],
                )?,
                0,
            )?;
            tx.execute(
                "INSERT INTO tenants (name, permits, issuer_id, created_at, webhook_secret) VALUES ($1, $2, $3, $4, $5)",
                &[&name, &json(&permits), &issuer_id, &t, &webhook_secret_sealed],
            )?;
            if let Some((kid, key)) = eab {
                tx.execute("INSERT INTO eab_keys (kid, tenant, hmac_key, created_at) VALUES ($1, $2, $3, $4)", &[&kid, &name, &key, &t])?;
            }
            Ok(Tenant { name: name.to_string(), permits: permits.to_vec(), issuer_id, removed_at: None })
        })
    }

    fn tenant(&self, name: &str) -> Result<Option<Tenant>> {
        self.read(|c| row(c, "SELECT name, permits, issuer_id, removed_at FROM tenants WHERE name = $1", &[&name], tenant_row))
    }

    fn tenants(&self) -> Result<Vec<Tenant>> {
        self.read(all_tenants)
    }

    fn eab_key(&self, kid: &str) -> Result<Option<(String, Vec<u8>)>> {
        self.read(|c| row(c, "SELECT tenant, hmac_key FROM eab_keys WHERE kid = $1", &[&kid], |r| Ok((get(r, 0)?, get(r, 1)?))))
    }

    fn tenant_webhook_secret(&self, tenant: &str) -> Result<Option<Vec<u8>>> {
        self.read(|c| Ok(value::<_, Option<Vec<u8>>>(c, "SELECT webhook_secret FROM tenants WHERE name = $1", &[&tenant])?.flatten()))
    }

    fn store_tenant_webhook_secret(&self, tenant: &str, sealed: &[u8], replace: bool) -> Result<Vec<u8>> {
        self.tx(|tx| {
            let sql = if replace {
                "UPDATE tenants SET webhook_secret = $2 WHERE name = $1"
            } else {
                "UPDATE tenants SET webhook_secret = $2 WHERE name = $1 AND webhook_secret IS NULL"
            };
            tx.execute(sql, &[&tenant, &sealed])?;
            value::<_, Option<Vec<u8>>>(tx, "SELECT webhook_secret FROM tenants WHERE name = $1", &[&tenant])?
                .flatten()
                .ok_or_else(|| Error::not_found(format!("no tenant {tenant}")))
        })
    }

    fn reseal_issuer_keys(&self, f: Reseal<'_>) -> Result<usize> {
        self.tx(|tx| {
            let found = rows(tx, "SELECT id, key_pkcs8 FROM issuers", &[], |r| Ok((get::<i64>(r, 0)?, get::<Vec<u8>>(r, 1)?)))?;
            let mut changed = 0;
            for (id, blob) in found {
                if let Some(new) = f(&blob)? {
                    tx.execute("UPDATE issuers SET key_pkcs8 = $2 WHERE id = $1", &[&id, &new])?;
                    changed += 1;
                }
            }
            Ok(changed)
        })
    }

    fn reseal_eab_keys(&self, f: Reseal<'_>) -> Result<usize> {
        self.tx(|tx| {
            let found = rows(tx, "SELECT kid, hmac_key FROM eab_keys", &[], |r| Ok((get::<String>(r, 0)?, get::<Vec<u8>>(r, 1)?)))?;
            let mut changed = 0;
            for (kid, blob) in found {
                if let Some(new) = f(&blob)? {
                    tx.execute("UPDATE eab_keys SET hmac_key = $2 WHERE kid = $1", &[&kid, &new])?;
                    changed += 1;
                }
            }
            Ok(changed)
        })
    }
}

const ACCOUNT_COLUMNS: &str = "id, thumbprint, jwk, status, contact, tenant, eab_kid, tos_agreed, created_at";

fn account_row(r: &Row) -> Result<Account> {
    let status: String = get(r, 3)?;
    Ok(Account {
        status: AccountStatus::parse(&status).ok_or_else(|| bad_status("account", &status))?,
        contact: from_json(&get::<String>(r, 4)?)?,
        id: get(r, 0)?,
        thumbprint: get(r, 1)?,
        jwk: get(r, 2)?,
        tenant: get(r, 5)?,
        eab_kid: get(r, 6)?,
        tos_agreed: get(r, 7)?,
        created_at: get(r, 8)?,
    })
}

impl AccountStore for PgStore {
    fn account(&self, id: &str) -> Result<Option<Account>> {
        self.read(|c| row(c, &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"), &[&id], account_row))
    }

    fn account_by_thumbprint(&self, thumbprint: &str) -> Result<Option<Account>> {
        self.read(|c| row(c, &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE thumbprint = $1"), &[&thumbprint], account_row))
    }

    fn insert_account(&self, a: &Account) -> Result<(Account, bool)> {
        self.tx(|tx| {
            let select = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE thumbprint = $1");
            if let Some(existing) = row(tx, &select, &[&a.thumbprint], account_row)? {
                return Ok((existing, false));
            }
            tx.execute(
                "INSERT INTO accounts (id, thumbprint, jwk, status, contact, tenant, eab_kid, tos_agreed, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[&a.id, &a.thumbprint, &a.jwk, &a.status.as_str(), &json(&a.contact), &a.tenant, &a.eab_kid, &a.tos_agreed, &a.created_at],
            )?;
            Ok((a.clone(), true))
        })
    }

    fn update_account_contact(&self, id: &str, contact: &[String]) -> Result<()> {
        self.tx(|tx| {
            tx.execute("UPDATE accounts SET contact = $2 WHERE id = $1", &[&id, &json(&contact)])?;
            Ok(())
        })
    }

    fn deactivate_account(&self, id: &str) -> Result<()> {
        self.tx(|tx| {
            tx.execute("UPDATE accounts SET status = 'deactivated' WHERE id = $1", &[&id])?;
            tx.execute(
                "UPDATE authorizations SET status = 'deactivated' WHERE account_id = $1 AND status IN ('pending', 'valid')",
                &[&id],
            )?;
            tx.execute("UPDATE orders SET status = 'invalid' WHERE account_id = $1 AND status IN ('pending', 'ready')", &[&id])?;
            Ok(())
        })
    }

    fn change_account_key(&self, id: &str, old_thumbprint: &str, new_thumbprint: &str, new_jwk: &str) -> Result<()> {
        self.tx(|tx| {
            if let Some(holder) = value::<_, String>(tx, "SELECT id FROM accounts WHERE thumbprint = $1", &[&new_thumbprint])? {
                return Err(Error::conflict(
                    crate::Conflict::AccountKeyInUse { account: holder.clone() },
                    format!("the new key is already the key of account {holder}"),
                ));
            }
            let n = tx.execute(
                "UPDATE accounts SET thumbprint = $3, jwk = $4 WHERE id = $1 AND thumbprint = $2",
                &[&id, &old_thumbprint, &new_thumbprint, &new_jwk],
            )?;
            if n != 1 {
                return Err(Error::new(crate::ErrorKind::Unauthorized, "the account key changed concurrently"));
            }
            Ok(())
        })
    }
}

/// An order's authorizations: those it made, then those of earlier orders it
/// reuses, each in the order it listed them.
const ORDER_AUTHORIZATION_IDS: &str = "SELECT id FROM (
         SELECT id, 0 AS part, seq FROM authorizations WHERE order_id = $1
         UNION ALL
         SELECT authz_id, 1, position FROM order_reused_authorizations WHERE order_id = $1
     ) o ORDER BY part, seq";

const REUSABLE_AUTHORIZATION: &str = "SELECT a.id FROM authorizations a
     WHERE a.account_id = $1 AND a.id_type = $2 AND a.id_value = $3 AND a.wildcard = $4
       AND a.status = 'valid' AND a.expires > $5
       AND EXISTS (SELECT 1 FROM challenges c WHERE c.authz_id = a.id AND c.status = 'valid')
     ORDER BY a.expires DESC LIMIT 1";

fn ids<C: Db>(c: &mut C, sql: &str, params: &Params<'_>) -> Result<Vec<String>> {
    rows(c, sql, params, |r| get(r, 0))
}

fn order_by_id<C: Db>(c: &mut C, id: &str) -> Result<Option<Order>> {
    let found = row(
        c,
        "SELECT id, account_id, status, expires, identifiers, profile, error, certificate, replaces, created_at, lifetime_seconds
         FROM orders WHERE id = $1",
        &[&id],
        |r| {
            let status: String = get(r, 2)?;
            let error: Option<String> = get(r, 6)?;
            Ok(Order {
                status: OrderStatus::parse(&status).ok_or_else(|| bad_status("order", &status))?,
                identifiers: from_json(&get::<String>(r, 4)?)?,
                error: error.as_deref().map(from_json).transpose()?,
                id: get(r, 0)?,
                account_id: get(r, 1)?,
                expires: get(r, 3)?,
                profile: get(r, 5)?,
                certificate: get(r, 7)?,
                replaces: get(r, 8)?,
                created_at: get(r, 9)?,
                authorizations: Vec::new(),
                lifetime_seconds: get(r, 10)?,
            })
        },
    )?;
    let Some(mut order) = found else { return Ok(None) };
    order.authorizations = ids(c, ORDER_AUTHORIZATION_IDS, &[&id])?;
    Ok(Some(order))
}

fn authorization_by_id<C: Db>(c: &mut C, id: &str) -> Result<Option<Authorization>> {
    let found = row(
        c,
        "SELECT id, order_id, account_id, id_type, id_value, wildcard, status, expires FROM authorizations WHERE id = $1",
        &[&id],
        |r| {
            let status: String = get(r, 6)?;
            let (id_type, id_value): (String, String) = (get(r, 3)?, get(r, 4)?);
            Ok(Authorization {
                status: AuthorizationStatus::parse(&status).ok_or_else(|| bad_status("authorization", &status))?,
                identifier: Identifier::parse(&id_type, &id_value).map_err(|e| Error::internal(format!("stored identifier: {e}")))?,
                id: get(r, 0)?,
                order_id: get(r, 1)?,
                account_id: get(r, 2)?,
                wildcard: get(r, 5)?,
                expires: get(r, 7)?,
                challenges: Vec::new(),
            })
        },
    )?;
    let Some(mut authz) = found else { return Ok(None) };
    authz.challenges = rows(
        c,
        "SELECT id, authz_id, type, token, status, validated, error FROM challenges WHERE authz_id = $1 ORDER BY seq",
        &[&id],
        |r| {
            let status: String = get(r, 4)?;
            let error: Option<String> = get(r, 6)?;
            Ok(Challenge {
                status: ChallengeStatus::parse(&status).ok_or_else(|| bad_status("challenge", &status))?,
                error: error.as_deref().map(from_json).transpose()?,
                id: get(r, 0)?,
                authz_id: get(r, 1)?,
                kind: get(r, 2)?,
                token: get(r, 3)?,
                validated: get(r, 5)?,
            })
        },
    )?;
    Ok(Some(authz))
}

/// Recomputes a pending order's status from its authorizations (RFC 8555 §7.1.6):
/// all valid → ready; any invalid/deactivated → invalid.
fn refresh_order_status(tx: &mut Tx<'_>, order_id: &str, cause: Option<RecordedError>) -> Result<()> {
    let statuses = ids(
        tx,
        "SELECT status FROM authorizations WHERE order_id = $1
         UNION ALL
         SELECT a.status FROM order_reused_authorizations r JOIN authorizations a ON a.id = r.authz_id WHERE r.order_id = $1",
        &[&order_id],
    )?;
    if statuses.iter().all(|s| s == "valid") {
        tx.execute("UPDATE orders SET status = 'ready' WHERE id = $1 AND status = 'pending'", &[&order_id])?;
    } else if statuses.iter().any(|s| s != "valid" && s != "pending") {
        let err = cause.unwrap_or(RecordedError {
            kind: "unauthorized".into(),
            detail: "an authorization of this order is no longer pending or valid".into(),
        });
        tx.execute(
            "UPDATE orders SET status = 'invalid', error = $2 WHERE id = $1 AND status IN ('pending', 'ready')",
            &[&order_id, &json(&err)],
        )?;
    }
    Ok(())
}

impl OrderStore for PgStore {
    fn insert_order(&self, order: &Order, authzs: &[Authorization], audit: Option<&AuditRecord>) -> Result<()> {
        self.tx(|tx| {
            tx.execute(
                "INSERT INTO orders (id, account_id, status, expires, identifiers, profile, error, certificate, replaces, created_at, lifetime_seconds)
                 VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL, $7, $8, $9)",
                &[
                    &order.id,
                    &order.account_id,
                    &order.status.as_str(),
                    &order.expires,
                    &json(&order.identifiers),
                    &order.profile,
                    &order.replaces,
                    &order.created_at,
                    &order.lifetime_seconds,
                ],
            )?;
            if let Some(rec) = audit {
                append_audit(tx, rec)?;
            }
            for a in authzs {
                tx.execute(
                    "INSERT INTO authorizations (id, order_id, account_id, id_type, id_value, wildcard, status, expires)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    &[
                        &a.id,
                        &a.order_id,
                        &a.account_id,
                        &a.identifier.kind.as_str(),
                        &a.identifier.value,
                        &a.wildcard,
                        &a.status.as_str(),
                        &a.expires,
                    ],
                )?;
                for ch in &a.challenges {
                    tx.execute(
                        "INSERT INTO challenges (id, authz_id, type, token, status, validated, error) VALUES ($1, $2, $3, $4, $5, NULL, NULL)",
                        &[&ch.id, &ch.authz_id, &ch.kind, &ch.token, &ch.status.as_str()],
                    )?;
                }
            }
            let mut reuses = false;
            for (position, authz_id) in order.authorizations.iter().enumerate() {
                if authzs.iter().any(|a| a.id == *authz_id) {
                    continue;
                }
                tx.execute("INSERT INTO order_reused_authorizations (order_id, authz_id, position) VALUES ($1, $2, $3)", &[
                    &order.id,
                    authz_id,
                    &(position as i64),
                ])?;
                reuses = true;
            }
            if reuses {
                refresh_order_status(tx, &order.id, None)?;
            }
            Ok(())
        })
    }

    fn order(&self, id: &str) -> Result<Option<Order>> {
        self.read(|c| order_by_id(c, id))
    }

    fn order_ids_of_account(&self, account_id: &str) -> Result<Vec<String>> {
        self.read(|c| ids(c, "SELECT id FROM orders WHERE account_id = $1 ORDER BY created_at, id", &[&account_id]))
    }

    fn authorization(&self, id: &str) -> Result<Option<Authorization>> {
        self.read(|c| authorization_by_id(c, id))
    }

    fn authorizations_of_order(&self, order_id: &str) -> Result<Vec<Authorization>> {
        self.read(|c| {
            let found = ids(c, ORDER_AUTHORIZATION_IDS, &[&order_id])?;
            found.iter().filter_map(|id| authorization_by_id(c, id).transpose()).collect()
        })
    }

    fn challenge(&self, id: &str) -> Result<Option<(Challenge, Authorization)>> {
        self.read(|c| {
            let Some(authz_id) = value::<_, String>(c, "SELECT authz_id FROM challenges WHERE id = $1", &[&id])? else { return Ok(None) };
            let Some(authz) = authorization_by_id(c, &authz_id)? else { return Ok(None) };
            let ch = authz.challenges.iter().find(|ch| ch.id == id).cloned();
            Ok(ch.map(|ch| (ch, authz)))
        })
    }

    fn begin_challenge(&self, challenge_id: &str) -> Result<bool> {
        self.tx(|tx| {
            let n = tx.execute(
                "UPDATE challenges SET status = 'processing' WHERE id = $1 AND status = 'pending'
                   AND authz_id IN (SELECT id FROM authorizations WHERE status = 'pending')
                   AND NOT EXISTS (SELECT 1 FROM challenges c2 WHERE c2.authz_id = challenges.authz_id AND c2.status = 'processing')",
                &[&challenge_id],
            )?;
            Ok(n == 1)
        })
    }

    fn finish_challenge(&self, challenge_id: &str, outcome: std::result::Result<(), RecordedError>) -> Result<()> {
        self.tx(|tx| {
            let (authz_id, order_id): (String, String) = row(
                tx,
                "SELECT a.id, a.order_id FROM challenges c JOIN authorizations a ON a.id = c.authz_id WHERE c.id = $1",
                &[&challenge_id],
                |r| Ok((get(r, 0)?, get(r, 1)?)),
            )?
            .ok_or_else(|| Error::not_found(format!("no challenge {challenge_id}")))?;
            let t = now();
            match &outcome {
                Ok(()) => {
                    tx.execute(
                        "UPDATE challenges SET status = 'valid', validated = $2, error = NULL WHERE id = $1 AND status = 'processing'",
                        &[&challenge_id, &t],
                    )?;
                    tx.execute("UPDATE authorizations SET status = 'valid' WHERE id = $1 AND status = 'pending'", &[&authz_id])?;
                }
                Err(err) => {
                    tx.execute(
                        "UPDATE challenges SET status = 'invalid', error = $2 WHERE id = $1 AND status = 'processing'",
                        &[&challenge_id, &json(err)],
                    )?;
                    tx.execute("UPDATE authorizations SET status = 'invalid' WHERE id = $1 AND status = 'pending'", &[&authz_id])?;
                }
            }
            refresh_order_status(tx, &order_id, outcome.clone().err())?;
            Ok(())
        })
    }

    fn processing_challenges(&self) -> Result<Vec<(Challenge, Authorization)>> {
        let found = self.read(|c| ids(c, "SELECT id FROM challenges WHERE status = 'processing'", &[]))?;
        let mut out = Vec::new();
        for id in found {
            if let Some(pair) = self.challenge(&id)? {
                out.push(pair);
            }
        }
        Ok(out)
    }

    fn deactivate_authorization(&self, authz_id: &str) -> Result<()> {
        self.tx(|tx| {
            let order_id: String = value(tx, "SELECT order_id FROM authorizations WHERE id = $1", &[&authz_id])?
                .ok_or_else(|| Error::not_found(format!("no authorization {authz_id}")))?;
            tx.execute("UPDATE authorizations SET status = 'deactivated' WHERE id = $1 AND status IN ('pending', 'valid')", &[&authz_id])?;
            refresh_order_status(tx, &order_id, None)?;
            for order_id in ids(tx, "SELECT order_id FROM order_reused_authorizations WHERE authz_id = $1", &[&authz_id])? {
                refresh_order_status(tx, &order_id, None)?;
            }
            Ok(())
        })
    }

    fn pending_authorizations(&self, account_id: &str, at: UnixTime) -> Result<(usize, Option<UnixTime>)> {
        self.read(|c| {
            let r = c.query_one(
                "SELECT count(*), min(expires) FROM authorizations WHERE account_id = $1 AND status = 'pending' AND expires > $2",
                &[&account_id, &at],
            )?;
            let n: i64 = get(&r, 0)?;
            Ok((n.max(0) as usize, get(&r, 1)?))
        })
    }

    fn account_holds_authorizations(&self, account_id: &str, identifiers: &[Identifier], at: UnixTime) -> Result<bool> {
        self.read(|c| {
            for id in identifiers {
                let target = id.authorization_target();
                let found: Option<i32> = value(
                    c,
                    "SELECT 1 FROM authorizations WHERE account_id = $1 AND id_type = $2 AND id_value = $3
                     AND status = 'valid' AND expires > $4 LIMIT 1",
                    &[&account_id, &target.kind.as_str(), &target.value, &at],
                )?;
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
            let id: Option<String> =
                value(c, REUSABLE_AUTHORIZATION, &[&account_id, &identifier.kind.as_str(), &identifier.value, &wildcard, &valid_at])?;
            id.map(|id| authorization_by_id(c, &id)).transpose().map(Option::flatten)
        })
    }
}

const CERTIFICATE_COLUMNS: &str =
    "serial, account_id, order_id, tenant, issuer_id, der, identifiers, not_before, not_after, revoked_at, revocation_reason";

/// A certificate from the columns of [`CERTIFICATE_COLUMNS`], in that order, starting at `at`.
fn certificate_row(r: &Row) -> Result<Certificate> {
    let reason: Option<i64> = get(r, 10)?;
    Ok(Certificate {
        serial: get(r, 0)?,
        account_id: get(r, 1)?,
        order_id: get(r, 2)?,
        tenant: get(r, 3)?,
        issuer_id: get(r, 4)?,
        der: get(r, 5)?,
        identifiers: from_json(&get::<String>(r, 6)?)?,
        not_before: get(r, 7)?,
        not_after: get(r, 8)?,
        revoked_at: get(r, 9)?,
        revocation_reason: reason.and_then(|r| u8::try_from(r).ok()),
    })
}

impl ReplayStore for PgStore {
    fn spend_nonce(&self, nonce: &[u8], expires: UnixTime) -> Result<bool> {
        let spent = self.nonces_spent.fetch_add(1, Ordering::Relaxed);
        self.read(|c| {
            if spent.is_multiple_of(1024) {
                c.execute("DELETE FROM spent_nonces WHERE expires < $1", &[&now()])?;
            }
            let n =
                c.execute("INSERT INTO spent_nonces (nonce, expires) VALUES ($1, $2) ON CONFLICT (nonce) DO NOTHING", &[&nonce, &expires])?;
            Ok(n == 1)
        })
    }
}

/// Test databases: each test gets its own, made on the cluster named by
/// `TENURE_TEST_POSTGRES` (a URL whose user may create databases).
#[cfg(test)]
pub(crate) mod testdb {
    /// A fresh, empty database's URL; None when no test cluster is configured.
    pub(crate) fn fresh() -> Option<String> {
        let Some(admin) = std::env::var("TENURE_TEST_POSTGRES").ok().filter(|u| !u.is_empty()) else {
            // scripts/test (CI) always gives a cluster: there, no test skips.
            assert!(
                std::env::var_os("TENURE_REQUIRE_POSTGRES").is_none(),
                "TENURE_REQUIRE_POSTGRES is set but TENURE_TEST_POSTGRES is not"
            );
            return None;
        };
        let name = format!("tenure_unit_{}_{}", std::process::id(), rand_suffix());
        let mut c = postgres::Client::connect(&admin, postgres::NoTls).expect("TENURE_TEST_POSTGRES must reach a cluster");
        c.batch_execute(&format!("CREATE DATABASE {name}")).expect("create a test database");
        let mut url = url::Url::parse(&admin).expect("TENURE_TEST_POSTGRES is a URL");
        url.set_path(&name);
        Some(url.to_string())
    }

    fn rand_suffix() -> String {
        let mut b = [0u8; 6];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).expect("randomness");
        hex::encode(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With `sslrootcert`, the connection is TLS and verified; a server the
    /// CA did not certify is refused; `sslmode=require` alone is refused
    /// rather than connected unverified.
    #[test]
    fn tls_connections_are_verified_against_sslrootcert() {
        let Some(url) = testdb::fresh() else { return };
        let Some(ca) = std::env::var("TENURE_TEST_POSTGRES_CA").ok().filter(|c| !c.is_empty()) else {
            assert!(
                std::env::var_os("TENURE_REQUIRE_POSTGRES").is_none(),
                "TENURE_TEST_POSTGRES_CA must name the test cluster's CA (scripts/postgres makes one)"
            );
            return;
        };
        let tls_url = format!("{url}?sslmode=require&sslrootcert={ca}");
        let store = PgStore::open(&tls_url).unwrap();
        let on_tls: bool = store.read(|c| value(c, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])).unwrap().unwrap();
        assert!(on_tls, "the connection is TLS");
        assert_eq!(store.setting_or_insert("k", b"v").unwrap(), b"v");

        let err = PgStore::open(&format!("{url}?sslmode=require")).expect_err("unverified TLS is refused");
        assert!(err.detail.contains("sslrootcert"), "{}", err.detail);

        let stranger = tempfile::tempdir().unwrap();
        let other_ca =
            rcgen::CertificateParams::new(Vec::<String>::new()).unwrap().self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().pem();
        let other = stranger.path().join("other-ca.pem");
        std::fs::write(&other, other_ca).unwrap();
        let err =
            PgStore::open(&format!("{url}?sslmode=require&sslrootcert={}", other.display())).expect_err("a server another CA certified");
        assert!(err.detail.contains("cannot connect") || err.detail.contains("certificate"), "{}", err.detail);

        let err = crate::config::DatabaseUrl::parse(&format!("{url}?sslmode=require&sslrootcert=/nonexistent/ca.pem"))
            .expect_err("a missing file");
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn migrations_run_once_and_settings_round_trip() {
        let Some(url) = testdb::fresh() else { return };
        let a = PgStore::open(&url).unwrap();
        let b = PgStore::open(&url).unwrap();
        assert_eq!(a.setting_or_insert("k", b"one").unwrap(), b"one");
        assert_eq!(b.setting_or_insert("k", b"two").unwrap(), b"one");
        assert!(a.spend_nonce(b"n1", now() + 60).unwrap());
        assert!(!b.spend_nonce(b"n1", now() + 60).unwrap());
    }
}
