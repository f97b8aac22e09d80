//! tenure's decision core. No HTTP here: the front end (`tenure_acme`) asks,
//! the engine decides, signs and stores.
//!
//! [`Engine::open`] opens a data directory and hands out the services, each
//! with the methods its callers need, all sharing one private core:
//! - [`Ra`]: ACME accounts, orders, authorizations, finalize, revocation, ARI, CRLs (the front end's);
//! - [`Registry`]: tenants, the resources they hold, and the audit log (the admin API's);
//! - [`Policies`]: installed plugins, checks and evaluations (the admin API's);
//! - [`Lifecycle`]: renewal sweeps, deliveries, certificate records (the scheduler's);
//! - [`Custody`]: the HSM pool, tenant tokens, rekey and distribution (the CLI's).
//!
//! Every leaf certificate comes out of one path, [`issuance`]: decide (the
//! tenant's plugin chain) → sign → record, the record in one transaction.

pub mod audit;
pub mod ca;
pub mod config;
mod core;
pub mod error;
pub mod hsm;
pub mod identifier;
mod issuance;
pub mod lifecycle;
pub mod model;
pub mod observe;
pub mod plugin_signing;
pub mod policies;
pub mod policy;
pub mod ra;
pub mod readiness;
pub mod registry;
pub mod sealing;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use config::{Config, MAX_CERT_LIFETIME, MAX_IDENTIFIERS, PUBLIC_TENANT, Profile};
pub use core::write_file_atomically;
pub use error::{Conflict, Error, ErrorKind, Result};
pub use hsm::Custody;
pub use identifier::{Identifier, IdentifierKind};
pub use lifecycle::Lifecycle;
pub use policies::Policies;
pub use ra::Ra;
pub use registry::Registry;

use crate::core::Core;

/// An opened data directory: the services over one private core.
#[derive(Clone)]
pub struct Engine {
    /// The registration authority: what the ACME front end calls.
    pub ra: Ra,
    /// Tenants, resources and the audit log.
    pub registry: Registry,
    /// Installed policy plugins.
    pub policies: Policies,
    /// Renewal, delivery, certificate records.
    pub lifecycle: Lifecycle,
    /// HSM custody.
    pub custody: Custody,
    core: Arc<Core>,
}

impl Engine {
    /// Opens the data directory, initializing it on first use: the directory
    /// (0700), the database (0600), the root CA (written to `root.pem`), the
    /// admin token and the public tenant. A directory that holds a CA but
    /// not its database is refused, never re-initialized.
    pub fn open(data_dir: &Path, config: Config) -> Result<Engine> {
        Engine::open_with(data_dir, config, true)
    }

    /// Opens a data directory that exists already; one without a database is
    /// refused (for commands that only read: run from the wrong directory,
    /// they must not make a CA there).
    pub fn open_existing(data_dir: &Path, config: Config) -> Result<Engine> {
        Engine::open_with(data_dir, config, false)
    }

    fn open_with(data_dir: &Path, config: Config, create: bool) -> Result<Engine> {
        let core = Arc::new(Core::open(data_dir, config, create)?);
        let engine = Engine::over(core);
        if engine.core.store.tenant(PUBLIC_TENANT)?.is_none() {
            match engine.registry.create_tenant(PUBLIC_TENANT, None) {
                Ok(_) => {}
                // Another process initialized it at the same moment.
                Err(e) if e.conflict == Some(Conflict::TenantExists) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(engine)
    }

    /// Whether a shared database holds a CA already (it is made at most once,
    /// by the first `tenure init` or `serve`).
    pub fn database_holds_ca(url: &config::DatabaseUrl) -> Result<bool> {
        let store =
            store::open_postgres(url.expose()).map_err(|e| Error::new(e.kind, format!("the database {url}: {}", e.detail)).caused_by(e))?;
        Ok(store.root()?.is_some())
    }

    /// Moves a single-node deployment's SQLite database into an empty
    /// PostgreSQL database, offline (no server may run on `data_dir`
    /// meanwhile): the SQLite schema brought up to date and plain keys
    /// sealed first, then every row copied in one transaction and counted on
    /// both sides. The directory keeps its key-encryption key, admin token and
    /// `root.pem` and serves the moved deployment with `--database`; every CA
    /// key is opened from the new database before this returns.
    /// Returns (table, rows) copied.
    pub fn migrate_to_postgres(data_dir: &Path, url: &config::DatabaseUrl, config: Config) -> Result<Vec<(String, i64)>> {
        Engine::migrate_to_postgres_observed(data_dir, url, config, &mut |_| {})
    }

    /// [`Engine::migrate_to_postgres`], telling `progress` where the copy
    /// stands (`tenure migrate` shows it on a terminal).
    pub fn migrate_to_postgres_observed(
        data_dir: &Path,
        url: &config::DatabaseUrl,
        config: Config,
        progress: &mut dyn FnMut(store::CopyProgress<'_>),
    ) -> Result<Vec<(String, i64)>> {
        drop(Engine::open_existing(data_dir, Config { database: None, ..config.clone() })?);
        let copied = store::copy_sqlite_to_postgres_observed(&data_dir.join("tenure.db"), url.expose(), progress)
            .map_err(|e| Error::new(e.kind, format!("the database {url}: {}", e.detail)).caused_by(e))?;
        let moved = Engine::open_existing(data_dir, Config { database: Some(url.clone()), ..config })?;
        for issuer in moved.core.store.issuers()? {
            moved.core.issuer(issuer.id)?;
        }
        Ok(copied)
    }

    fn over(core: Arc<Core>) -> Engine {
        Engine {
            ra: Ra { core: core.clone() },
            registry: Registry { core: core.clone() },
            policies: Policies { core: core.clone() },
            lifecycle: Lifecycle { core: core.clone() },
            custody: Custody { core: core.clone() },
            core,
        }
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &Config {
        &self.core.config
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.core.data_dir
    }

    /// The root certificate, PEM.
    pub fn root_pem(&self) -> String {
        self.core.root.cert_pem()
    }

    /// Where the root certificate is written (`DIR/root.pem`).
    pub fn root_pem_path(&self) -> PathBuf {
        self.core.data_dir.join("root.pem")
    }

    /// The bearer token of the admin API (made with the CA, `DIR/admin-token`).
    /// Fails closed: a token that is missing, unreadable, empty or shorter
    /// than 16 characters is an error, so the admin API never starts with a
    /// token anyone could present.
    pub fn admin_token(&self) -> Result<String> {
        let path = self.admin_token_path();
        let token = std::fs::read_to_string(&path).map_err(|e| {
            Error::conflict(Conflict::DataDirectory, format!("cannot read the admin token {}: {e}", path.display())).caused_by(e)
        })?;
        let token = token.trim();
        if token.chars().count() < crate::core::ADMIN_TOKEN_MIN_LEN {
            let what = if token.is_empty() { "empty".to_string() } else { format!("{} characters long", token.chars().count()) };
            return Err(Error::conflict(
                Conflict::DataDirectory,
                format!(
                    "the admin token {} is {what}; it must have at least {} characters",
                    path.display(),
                    crate::core::ADMIN_TOKEN_MIN_LEN
                ),
            ));
        }
        Ok(token.to_string())
    }

    /// Where the admin token is kept.
    pub fn admin_token_path(&self) -> PathBuf {
        self.core.data_dir.join(crate::core::ADMIN_TOKEN_FILE)
    }

    /// Whether this server can do its work now: a write commits, the CA
    /// keys sign, the plugins load. Each check is bounded (a held lock or a
    /// hung token fails it within seconds); see [`readiness`].
    pub fn readiness(&self) -> readiness::Readiness {
        readiness::check(&self.core)
    }

    /// The renewal, delivery and provisioning backlogs as the store counts
    /// them now (the operator's gauges; each an indexed count).
    pub fn backlog(&self) -> Result<observe::Backlog> {
        let store = &self.core.store;
        Ok(observe::Backlog {
            renewals_due: store.renewals_due(model::now())?,
            deliveries_pending: store.deliveries_pending()?,
            provisioning_pending: store.provisioning_backlog()?,
        })
    }

    /// A TLS identity for the server itself, chaining to the root:
    /// (certificate chain DER, private key PKCS#8 DER). Not a tenant leaf: it
    /// is signed by the root, names the server, and goes through no policy.
    pub fn server_identity(&self, names: &[Identifier]) -> Result<(Vec<Vec<u8>>, Vec<u8>)> {
        let (cert, key) = ca::server_certificate(&self.core.root, names)?;
        Ok((vec![cert], key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a shared database the CA is made once; a server joins with the
    /// deployment's key-encryption key, and without it (or with another) it is
    /// refused, never given a CA of its own.
    #[test]
    fn servers_on_one_database_share_one_ca_and_need_its_key() {
        let Some(url) = store::pg::testdb::fresh() else { return };
        let url = config::DatabaseUrl::parse(&url).unwrap();
        let shared = || Config { database: Some(url.clone()), ..Config::default() };
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        assert!(!Engine::database_holds_ca(&url).unwrap());
        let first = Engine::open(&a, shared()).unwrap();
        assert!(Engine::database_holds_ca(&url).unwrap());
        let refused = Engine::open(&b, shared()).err().expect("a server without the key is refused");
        assert_eq!(refused.conflict, Some(Conflict::DataDirectory));
        assert!(refused.detail.contains("ca-key.kek"), "{}", refused.detail);
        assert!(!b.join("root.pem").exists(), "nothing was made for the refused server");
        // With another server's key (its own, made for another CA), the CA's keys do not open.
        let stranger = tmp.path().join("stranger");
        drop(Engine::open(&stranger, Config::default()).unwrap());
        std::fs::copy(stranger.join(sealing::KEK_FILE), b.join(sealing::KEK_FILE)).unwrap();
        let wrong = Engine::open(&b, shared()).err().expect("a wrong key is refused");
        assert!(wrong.detail.contains("same ca-key.kek"), "{}", wrong.detail);
        // With the deployment's key, the second server serves the same CA.
        std::fs::copy(a.join(sealing::KEK_FILE), b.join(sealing::KEK_FILE)).unwrap();
        let second = Engine::open(&b, shared()).unwrap();
        assert_eq!(second.root_pem(), first.root_pem());
        let t = first.registry.create_tenant("corp", Some(&["corp.example".to_string()])).unwrap();
        assert!(second.core.store.eab_key(&t.eab_kid).unwrap().is_some(), "a tenant made on one server is there on the other");
        // A nonce minted by one is spent once, by either.
        let n = first.ra.mint_shared_nonce(std::time::Duration::from_secs(60)).unwrap();
        assert!(second.ra.spend_shared_nonce(&n).unwrap());
        assert!(!first.ra.spend_shared_nonce(&n).unwrap());
    }

    /// EAB HMAC keys are sealed at rest; a plain one left by an older release
    /// is sealed at the next open and still verifies a binding.
    #[test]
    fn eab_keys_are_sealed_and_plain_ones_resealed_at_open() {
        let tmp = tempfile::tempdir().unwrap();
        let engine = Engine::open(tmp.path(), Config::default()).unwrap();
        let created = engine.registry.create_tenant("corp", Some(&["corp.example".to_string()])).unwrap();
        let stored = |e: &Engine| e.core.store.eab_key(&created.eab_kid).unwrap().unwrap().1;
        assert!(sealing::is_sealed(&stored(&engine)));
        drop(engine);

        let db = rusqlite::Connection::open(tmp.path().join("tenure.db")).unwrap();
        db.execute("UPDATE eab_keys SET hmac_key = ?1 WHERE kid = ?2", rusqlite::params![created.eab_hmac, created.eab_kid]).unwrap();
        drop(db);
        let engine = Engine::open_existing(tmp.path(), Config::default()).unwrap();
        let resealed = stored(&engine);
        assert!(sealing::is_sealed(&resealed) && resealed != created.eab_hmac);
        let binding = ra::ExternalBinding::for_key(&created.eab_kid, &created.eab_hmac, "tp");
        let account = ra::NewAccount {
            jwk: "{}".into(),
            thumbprint: "tp".into(),
            contact: vec![],
            tos_agreed: true,
            eab: Some(binding),
            source: None,
        };
        assert_eq!(engine.ra.create_account(account).unwrap().0.tenant, "corp");
    }

    /// A new data directory is private; one that holds a CA but lost its
    /// database is refused, never re-initialized; a read-only open makes
    /// nothing; an open rewrites nothing it has not changed.
    #[test]
    fn data_directories_are_private_and_never_silently_reinitialized() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        assert_eq!(Engine::open_existing(&dir, Config::default()).err().map(|e| e.kind), Some(ErrorKind::NotFound));
        assert!(!dir.exists(), "a read-only open makes no directory");

        let engine = Engine::open(&dir, Config::default()).unwrap();
        let root = engine.root_pem();
        drop(engine);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir), 0o700);
            assert_eq!(mode(&dir.join("tenure.db")), 0o600);
            for side in ["tenure.db-wal", "tenure.db-shm"] {
                if dir.join(side).exists() {
                    assert_eq!(mode(&dir.join(side)), 0o600, "{side}");
                }
            }
        }
        let stamp = std::fs::metadata(dir.join("root.pem")).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(Engine::open_existing(&dir, Config::default()).unwrap().root_pem(), root);
        assert_eq!(std::fs::metadata(dir.join("root.pem")).unwrap().modified().unwrap(), stamp, "root.pem not rewritten");

        // The database gone, or emptied: refused, and nothing written.
        for side in ["tenure.db-wal", "tenure.db-shm"] {
            let _ = std::fs::remove_file(dir.join(side));
        }
        std::fs::write(dir.join("tenure.db"), b"").unwrap();
        for open in [Engine::open, Engine::open_existing] {
            let err = open(&dir, Config::default()).err().expect("refused");
            assert_eq!(err.conflict, Some(Conflict::DataDirectory), "{err}");
        }
        assert_eq!(std::fs::metadata(dir.join("tenure.db")).unwrap().len(), 0, "the empty database is left as it was");
        std::fs::remove_file(dir.join("tenure.db")).unwrap();
        let err = Engine::open(&dir, Config::default()).err().expect("refused");
        assert_eq!(err.conflict, Some(Conflict::DataDirectory), "{err}");
        assert!(!dir.join("tenure.db").exists());
        assert_eq!(std::fs::read_to_string(dir.join("root.pem")).unwrap(), root, "the old root is kept");
    }
}
