//! The private core the engine's services share: storage, the CA hierarchy,
//! the loaded plugins, the configuration and the data directory. Nothing
//! outside the crate sees it; each service (`Ra`, `Registry`, `Policies`,
//! `Lifecycle`, `Custody`) holds an `Arc` of it and offers only the methods
//! its callers need.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};

use crate::ca::{self, CaMaterial};
use crate::config::{Config, DatabaseUrl};
use crate::error::{Conflict, Error, Result};
use crate::hsm::CaCustody;
use crate::model::Tenant;
use crate::policies::LoadedPlugins;
use crate::ra::limits::Allowances;
use crate::sealing::KEK_FILE;
use crate::store::Storage;

/// What every service shares.
pub struct Core {
    /// The storage authority.
    pub(crate) store: Arc<dyn Storage>,
    pub(crate) config: Config,
    pub(crate) data_dir: PathBuf,
    /// The root CA (its key signs intermediates, CRLs of none, and the server's TLS certificate).
    pub(crate) root: CaMaterial,
    /// Intermediates by issuer id, loaded on first use.
    issuers: RwLock<HashMap<i64, Arc<CaMaterial>>>,
    /// The policy host and the plugins loaded from the store.
    pub(crate) plugins: LoadedPlugins,
    rng: SystemRandom,
    /// Where certificates say their CRLs are (`{public_url}/crl/{issuer}`).
    pub(crate) public_url: RwLock<Option<String>>,
    /// Where CA keys live (sealed software keys or an HSM token), and the
    /// key-encryption key for everything sealed at rest.
    pub(crate) ca_keys: CaCustody,
    /// Orders being finalized by this process: one signature per order.
    pub(crate) finalizing: Mutex<HashSet<String>>,
    /// New-order allowances per account (token buckets; per process).
    pub(crate) order_allowance: Allowances,
    /// New-account allowances per source address, for accounts without EAB.
    pub(crate) account_allowance: Allowances,
    /// Failed-validation allowances per account and identifier.
    pub(crate) validation_failures: Allowances,
    /// Readiness probes that have not answered yet.
    pub(crate) probes: crate::readiness::Probes,
}

impl Core {
    /// Opens the data directory. With `create`, a new one is initialized on
    /// first use (the directory 0700, the database 0600, the root CA written
    /// to `root.pem`, the admin token); without, a directory with no database
    /// is refused. A directory that was initialized once (it has `root.pem`)
    /// but whose database is missing or empty is always refused: a new root
    /// there would silently replace every tenant, account and certificate.
    pub(crate) fn open(data_dir: &Path, config: Config, create: bool) -> Result<Core> {
        let (store, db) = open_store(data_dir, config.database.as_ref(), create)?;
        let ca_keys = CaCustody::open(data_dir, &*store)?;
        // Data directories from before sealing: seal their plain keys now.
        let resealed = store.reseal_issuer_keys(&|blob| ca_keys.reseal(blob))?;
        if resealed > 0 {
            tracing::info!(resealed, "sealed plain CA keys under the key-encryption key");
        }
        let resealed = store.reseal_eab_keys(&|blob| ca_keys.reseal_eab_key(blob))?;
        if resealed > 0 {
            tracing::info!(resealed, "sealed plain EAB keys under the key-encryption key");
        }
        let root = match store.root()? {
            Some(r) => r,
            None if data_dir.join("root.pem").exists() => {
                return Err(Error::conflict(
                    Conflict::DataDirectory,
                    format!(
                        "the database {db} has no root CA, but {} has one (root.pem); refusing to make a new one. Is this the right database?",
                        data_dir.display()
                    ),
                ));
            }
            None if !create => {
                return Err(Error::not_found(format!("the database {db} holds no CA yet (`tenure init` makes one)")));
            }
            None => {
                let fresh = ca::new_root_with("tenure root CA", ca_keys.new_ca_key("tenure root CA")?)?;
                let root = store.insert_root(&fresh.cert_der, &ca_keys.key_blob(&fresh.key)?)?;
                // The admin token is made with the CA, never later: one that
                // went missing is refused at start, not silently replaced.
                let mut raw = [0u8; 32];
                SystemRandom::new().fill(&mut raw).map_err(|_| Error::internal("no randomness"))?;
                write_file_atomically(&data_dir.join(ADMIN_TOKEN_FILE), URL_SAFE_NO_PAD.encode(raw).as_bytes(), true)?;
                root
            }
        };
        let root_key = ca_keys.load_key(&root.key_pkcs8).map_err(|e| {
            Error::conflict(
                Conflict::DataDirectory,
                format!(
                    "cannot open the root CA's key in {db} with {}: {} (servers sharing a database need the same {KEK_FILE})",
                    data_dir.join(KEK_FILE).display(),
                    e.detail
                ),
            )
            .caused_by(e)
        })?;
        let root = CaMaterial::new(root.cert_der, root_key);
        // Written when it differs only: a read-only command must work on a
        // read-only or full disk.
        let root_pem = data_dir.join("root.pem");
        if std::fs::read(&root_pem).ok().as_deref() != Some(root.cert_pem().as_bytes()) {
            write_file_atomically(&root_pem, root.cert_pem().as_bytes(), false)?;
        }
        Ok(Core {
            store,
            plugins: LoadedPlugins::new(data_dir.join("plugin-cache"), config.plugin_limits.clone()),
            config,
            data_dir: data_dir.to_path_buf(),
            root,
            issuers: RwLock::new(HashMap::new()),
            rng: SystemRandom::new(),
            public_url: RwLock::new(None),
            ca_keys,
            finalizing: Mutex::new(HashSet::new()),
            order_allowance: Allowances::default(),
            account_allowance: Allowances::default(),
            validation_failures: Allowances::default(),
            probes: crate::readiness::Probes::default(),
        })
    }

    /// An issuing CA by id, its key loaded once per process.
    pub(crate) fn issuer(&self, id: i64) -> Result<Arc<CaMaterial>> {
        let (material, cached) = self.issuer_once(id)?;
        if !cached && let Ok(mut m) = self.issuers.write() {
            m.insert(id, material.clone());
        }
        Ok(material)
    }

    /// [`Core::issuer`] without keeping what it loads (the hourly CRL of an
    /// issuer that signs nothing else: with 100,000 tenants, caching each
    /// one's key for its CRL alone held ~280 MB). Whether it was cached.
    pub(crate) fn issuer_once(&self, id: i64) -> Result<(Arc<CaMaterial>, bool)> {
        if let Some(found) = self.issuers.read().ok().and_then(|m| m.get(&id).cloned()) {
            return Ok((found, true));
        }
        let rec = self.store.issuer(id)?.ok_or_else(|| Error::internal(format!("issuer {id} is missing")))?;
        Ok((Arc::new(CaMaterial::new(rec.cert_der, self.ca_keys.load_key(&rec.key_pkcs8)?)), false))
    }

    /// A tenant that must exist (it is named by an account, a resource or a
    /// certificate) and is to be issued for: a removed tenant's intermediates
    /// are revoked, so nothing is ever signed for it again.
    pub(crate) fn tenant_of(&self, name: &str) -> Result<Tenant> {
        let tenant = self.store.tenant(name)?.ok_or_else(|| Error::internal(format!("tenant {name:?} is missing")))?;
        crate::registry::removal::refuse_removed(&tenant)?;
        Ok(tenant)
    }

    /// The PEM chain a client downloads: leaf, then its intermediate.
    pub(crate) fn chain_pem(&self, cert: &crate::model::Certificate) -> Result<String> {
        let issuer = self.issuer(cert.issuer_id)?;
        Ok(format!("{}{}", ca::to_pem("CERTIFICATE", &cert.der), ca::to_pem("CERTIFICATE", &issuer.cert_der)))
    }

    /// A random URL-safe id with `bytes` bytes of entropy.
    pub(crate) fn random_id(&self, bytes: usize) -> String {
        let mut buf = vec![0u8; bytes];
        // SystemRandom only fails if the OS has no randomness, where nothing is safe.
        if self.rng.fill(&mut buf).is_err() {
            panic!("the operating system's random number generator failed");
        }
        URL_SAFE_NO_PAD.encode(buf)
    }

    /// An id for a row of a hot table (orders, authorizations, challenges):
    /// `bytes` random bytes as `random_id` has them, after the time in
    /// milliseconds as 11 hex digits, so ids sort by creation. Their index
    /// entries then land at the end of the index, on pages the previous
    /// inserts already touched, instead of a random page each (which SQLite
    /// writes to the WAL whole, and PostgreSQL to its own).
    pub(crate) fn time_ordered_id(&self, bytes: usize) -> String {
        let millis = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        format!("{:011x}{}", millis & 0xfff_ffff_ffff, self.random_id(bytes))
    }

    /// Fills `buf` with random bytes.
    pub(crate) fn fill_random(&self, buf: &mut [u8]) -> Result<()> {
        self.rng.fill(buf).map_err(|_| Error::internal("no randomness"))
    }

    /// The URL certificates use to point at this server, once `serve` set it.
    pub(crate) fn public_url(&self) -> Result<Option<String>> {
        if let Some(url) = self.public_url.read().ok().and_then(|u| u.clone()) {
            return Ok(Some(url));
        }
        let stored = self.store.setting("public-url")?.and_then(|v| String::from_utf8(v).ok());
        if let (Some(url), Ok(mut cached)) = (&stored, self.public_url.write()) {
            *cached = Some(url.clone());
        }
        Ok(stored)
    }

    /// The CRL URL certificates of `issuer_id` carry, once a public URL is known.
    pub(crate) fn crl_url(&self, issuer_id: i64) -> Result<Option<String>> {
        Ok(self.public_url()?.map(|base| format!("{base}/crl/{issuer_id}")))
    }
}

/// Opens the store a data directory uses, and the name to give it in
/// messages: the SQLite database in it, or the shared PostgreSQL database.
///
/// With a shared database the directory keeps what stays on each server: the
/// key-encryption key (`ca-key.kek`, the same on every server: the CA keys in
/// the database are sealed under it), the admin token, `root.pem` and the
/// plugin cache. A server joining a database that holds a CA must be given
/// that key; it never makes one of its own there.
pub(crate) fn open_store(data_dir: &Path, database: Option<&DatabaseUrl>, create: bool) -> Result<(Arc<dyn Storage>, String)> {
    let Some(url) = database else {
        let db = prepare_data_dir(data_dir, create)?;
        restrict_data_dir(data_dir)?;
        return Ok((crate::store::open_sqlite(&db)?, db.display().to_string()));
    };
    if !data_dir.is_dir() {
        if !create {
            return Err(Error::not_found(format!(
                "{} is not a tenure data directory (`tenure init --database …` makes one)",
                data_dir.display()
            )));
        }
        create_private_dir(data_dir)?;
    }
    restrict_data_dir(data_dir)?;
    let store = crate::store::open_postgres(url.expose())
        .map_err(|e| Error::new(e.kind, format!("the database {url}: {}", e.detail)).caused_by(e))?;
    if store.root()?.is_some() && !data_dir.join(KEK_FILE).exists() {
        return Err(Error::conflict(
            Conflict::DataDirectory,
            format!(
                "the database {url} holds a CA whose keys are sealed under its deployment's key-encryption key, and {} has none: \
                 copy {KEK_FILE} and {ADMIN_TOKEN_FILE} from a server of this deployment into {} (mode 0600)",
                data_dir.display(),
                data_dir.display()
            ),
        ));
    }
    Ok((store, url.to_string()))
}

/// The admin API's bearer token, in the data directory (0600).
pub(crate) const ADMIN_TOKEN_FILE: &str = "admin-token";

/// The shortest admin token accepted: one a guess cannot reach. tenure makes
/// 43 characters (32 random octets, base64url).
pub(crate) const ADMIN_TOKEN_MIN_LEN: usize = 16;

/// The database of a data directory, made (with the directory: 0700, 0600)
/// when there is none and `create` allows. Refuses a directory that holds a
/// CA (`root.pem`) but whose database is missing or empty, before anything
/// is written: a new root there would silently replace every tenant,
/// account and certificate.
pub(crate) fn prepare_data_dir(data_dir: &Path, create: bool) -> Result<PathBuf> {
    let db = data_dir.join("tenure.db");
    let db_len = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
    if db_len == 0 {
        if data_dir.join("root.pem").exists() {
            return Err(Error::conflict(
                Conflict::DataDirectory,
                format!(
                    "{} holds a CA (root.pem) but its database {} is missing or empty; refusing to make a new CA over it. \
                     Restore tenure.db from a backup, or move the directory away to start afresh",
                    data_dir.display(),
                    db.display()
                ),
            ));
        }
        if !create {
            return Err(Error::not_found(format!("{} is not a tenure data directory (it has no tenure.db)", data_dir.display())));
        }
        create_private_dir(data_dir)?;
        create_private_file(&db)?;
    }
    Ok(db)
}

/// Creates a directory (and its parents) the owner alone may enter (0700).
fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| Error::internal(format!("cannot create data directory {}: {e}", dir.display())).caused_by(e))
}

/// Creates an empty file only the owner may read (0600) unless it exists.
fn create_private_file(path: &Path) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path).map(drop).map_err(|e| Error::internal(format!("creating {}: {e}", path.display())).caused_by(e))
}

/// The data directory holds the database (sealed CA and EAB keys), the key
/// that seals them and the admin token: the directory is the owner's alone
/// (0700) and so is every file in it (0600) but the public `root.pem`. Checked
/// at every open: what an older release, a restore or a careless `chmod` left
/// looser is tightened and logged; where that fails (a read-only disk), a
/// warning says so.
fn restrict_data_dir(data_dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let tighten = |path: &Path, mode: u32| {
            let Ok(meta) = std::fs::metadata(path) else { return };
            if meta.permissions().mode() & 0o077 == 0 {
                return;
            }
            match std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
                Ok(()) => {
                    tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "was open to other users; restricted to its owner")
                }
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "is open to other users and could not be restricted"),
            }
        };
        tighten(data_dir, 0o700);
        let entries = std::fs::read_dir(data_dir)
            .map_err(|e| Error::internal(format!("reading data directory {}: {e}", data_dir.display())).caused_by(e))?;
        for entry in entries.flatten() {
            let is_file = entry.file_type().is_ok_and(|t| t.is_file());
            if is_file && entry.file_name() != "root.pem" {
                tighten(&entry.path(), 0o600);
            }
        }
    }
    Ok(())
}

/// Writes a file by rename so readers never see it half-written; `secret` makes it 0600.
pub fn write_file_atomically(path: &Path, contents: &[u8], secret: bool) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let io = |e: std::io::Error| {
        // A full disk must not leave a 0-byte temporary file behind.
        let _ = std::fs::remove_file(&tmp);
        Error::internal(format!("writing {}: {e}", path.display())).caused_by(e)
    };
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if secret {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(io)?;
        f.write_all(contents).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}
