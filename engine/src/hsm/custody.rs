//! Where the CA's own keys live: sealed software keys (the embedded default)
//! or non-extractable keys in an HSM token (`serve --hsm-module ...`).
//!
//! The HSM configuration is kept in the database (setting `ca-hsm`: module,
//! token label, PIN file path — never the PIN), so every process working on
//! the data directory (the server, `tenure tenant add`) signs with the same
//! token. Issuer rows hold either a sealed PKCS#8 or a reference to the key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cryptoki::object::{ObjectClass, ObjectHandle};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::session::{self, Exportability, Token, hex, unhex};
use crate::ca::{CaKey, RemoteKey};
use crate::error::{Error, ErrorKind, Result};
use crate::sealing::{Kek, is_sealed};
use crate::store::SettingsStore;

/// The setting that holds the CA's HSM configuration.
pub const CA_HSM_SETTING: &str = "ca-hsm";
/// Issuer key blobs that reference a key in an HSM start with this.
const HSM_REF_MAGIC: &[u8; 4] = b"HSM1";
/// Associated data of sealed issuer keys.
const ISSUER_KEY_CONTEXT: &str = "issuer key";
const EAB_KEY_CONTEXT: &str = "eab hmac key";

/// Where the CA keys go: a PKCS#11 module, a token label, and a file holding the user PIN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaHsmConfig {
    pub module: PathBuf,
    pub token: String,
    pub pin_file: PathBuf,
}

/// Records (replacing) the CA's HSM configuration in the data directory, after
/// checking the token opens with the PIN. Call before `Engine::open`.
pub fn configure_ca_hsm(data_dir: &Path, database: Option<&crate::config::DatabaseUrl>, config: &CaHsmConfig) -> Result<()> {
    let config = CaHsmConfig {
        module: config.module.clone(),
        token: config.token.clone(),
        // Other processes (the CLI) may run from another directory.
        pin_file: std::path::absolute(&config.pin_file).unwrap_or_else(|_| config.pin_file.clone()),
    };
    CaHsm::open(&config)?;
    // Opened as `Engine::open` opens it, with the same refusals.
    let (store, _) = crate::core::open_store(data_dir, database, true)?;
    let json = serde_json::to_vec(&config).map_err(|e| Error::internal(e.to_string()))?;
    store.set_setting(CA_HSM_SETTING, &json)
}

pub(crate) fn read_pin_file(path: &Path) -> Result<String> {
    let pin = std::fs::read_to_string(path).map_err(|e| Error::malformed(format!("reading the PIN file {}: {e}", path.display())))?;
    let pin = pin.trim_end_matches(['\n', '\r']).to_string();
    if pin.is_empty() {
        return Err(Error::malformed(format!("the PIN file {} is empty", path.display())));
    }
    Ok(pin)
}

struct CaHsm {
    config: CaHsmConfig,
    token: Arc<Token>,
    pin: String,
}

impl CaHsm {
    fn open(config: &CaHsmConfig) -> Result<CaHsm> {
        let pin = read_pin_file(&config.pin_file)?;
        let token = Token::open(&config.module, &config.token)?;
        // Fail at start, not at the first signature.
        let s = token.user_session(&pin)?;
        token.give_back(s);
        Ok(CaHsm { config: config.clone(), token, pin })
    }
}

/// The CA's key custody: the key-encryption key, and the CA token if configured.
pub struct CaCustody {
    kek: Arc<Kek>,
    hsm: Option<CaHsm>,
}

#[derive(Serialize, Deserialize)]
struct KeyRef {
    module: PathBuf,
    token: String,
    id: String,
}

impl CaCustody {
    pub fn open(data_dir: &Path, store: &dyn SettingsStore) -> Result<CaCustody> {
        let kek = Arc::new(Kek::load_or_create(data_dir)?);
        let hsm = match store.setting(CA_HSM_SETTING)? {
            Some(raw) => {
                let config: CaHsmConfig =
                    serde_json::from_slice(&raw).map_err(|e| Error::internal(format!("stored CA HSM configuration: {e}")).caused_by(e))?;
                Some(
                    CaHsm::open(&config)
                        .map_err(|e| Error::new(e.kind, format!("the CA keys are configured to live in {}: {}", config.token, e.detail)))?,
                )
            }
            None => None,
        };
        Ok(CaCustody { kek, hsm })
    }

    pub fn kek(&self) -> &Arc<Kek> {
        &self.kek
    }

    pub fn hsm_config(&self) -> Option<&CaHsmConfig> {
        self.hsm.as_ref().map(|h| &h.config)
    }

    /// A new CA key: in the CA token (non-extractable, sensitive) when one is
    /// configured, else in software.
    pub fn new_ca_key(&self, label: &str) -> Result<CaKey> {
        let Some(hsm) = &self.hsm else { return CaKey::generate_software() };
        let mut id = vec![0u8; 16];
        SystemRandom::new().fill(&mut id).map_err(|_| Error::internal("no randomness"))?;
        let s = hsm.token.user_session(&hsm.pin)?;
        let pair = session::generate_p256(&s, &id, label, Exportability::Never)?;
        hsm.token.give_back(s);
        Ok(CaKey::Remote(Arc::new(HsmCaKey {
            token: hsm.token.clone(),
            pin: hsm.pin.clone(),
            handle: pair.private,
            id,
            point: pair.point,
        })))
    }

    /// How a CA key is stored: sealed PKCS#8, or a reference into the token.
    pub fn key_blob(&self, key: &CaKey) -> Result<Vec<u8>> {
        match key {
            CaKey::Software(pkcs8) => self.kek.seal(pkcs8, ISSUER_KEY_CONTEXT),
            CaKey::Remote(r) => {
                let mut out = HSM_REF_MAGIC.to_vec();
                out.extend_from_slice(r.reference().as_bytes());
                Ok(out)
            }
        }
    }

    /// The stored key back, ready to sign.
    pub fn load_key(&self, blob: &[u8]) -> Result<CaKey> {
        if let Some(reference) = blob.strip_prefix(HSM_REF_MAGIC.as_slice()) {
            let r: KeyRef =
                serde_json::from_slice(reference).map_err(|e| Error::internal(format!("stored HSM key reference: {e}")).caused_by(e))?;
            let hsm = self.hsm.as_ref().filter(|h| h.config.token == r.token).ok_or_else(|| {
                Error::new(
                    ErrorKind::Internal,
                    format!("a CA key lives in HSM token {:?} ({}), which is not configured for this process", r.token, r.module.display()),
                )
            })?;
            let id = unhex(&r.id)?;
            let s = hsm.token.user_session(&hsm.pin)?;
            let found = (|| {
                let private = session::find_by_id(&s, ObjectClass::PRIVATE_KEY, &id)?;
                let public = session::find_by_id(&s, ObjectClass::PUBLIC_KEY, &id)?;
                match (private, public) {
                    (Some(private), Some(public)) => Ok((private, session::read_point(&s, public)?)),
                    _ => Err(Error::internal(format!("CA key {} is missing from {}", r.id, hsm.token.describe()))),
                }
            })();
            hsm.token.give_back(s);
            let (handle, point) = found?;
            return Ok(CaKey::Remote(Arc::new(HsmCaKey { token: hsm.token.clone(), pin: hsm.pin.clone(), handle, id, point })));
        }
        if is_sealed(blob) {
            return Ok(CaKey::Software(self.kek.open(blob, ISSUER_KEY_CONTEXT)?));
        }
        // A data directory from before sealing: plain PKCS#8 (a DER SEQUENCE).
        if blob.first() == Some(&0x30) {
            return Ok(CaKey::Software(blob.to_vec()));
        }
        Err(Error::internal("stored CA key is in no known form"))
    }

    /// An EAB HMAC key as stored: sealed, so a copy of the database alone
    /// lets nobody register accounts as a tenant.
    pub fn seal_eab_key(&self, hmac_key: &[u8]) -> Result<Vec<u8>> {
        self.kek.seal(hmac_key, EAB_KEY_CONTEXT)
    }

    /// The HMAC key of a stored EAB key (plain only in directories from
    /// before sealing, which are resealed at open).
    pub fn open_eab_key(&self, stored: &[u8]) -> Result<Vec<u8>> {
        if is_sealed(stored) { self.kek.open(stored, EAB_KEY_CONTEXT) } else { Ok(stored.to_vec()) }
    }

    /// The sealed form of a plain (pre-sealing) EAB key; None when sealed already.
    pub fn reseal_eab_key(&self, stored: &[u8]) -> Result<Option<Vec<u8>>> {
        if is_sealed(stored) { Ok(None) } else { self.seal_eab_key(stored).map(Some) }
    }

    /// The sealed form of a plain (pre-sealing) key blob; None for anything else.
    pub fn reseal(&self, blob: &[u8]) -> Result<Option<Vec<u8>>> {
        if blob.first() == Some(&0x30) {
            return Ok(Some(self.kek.seal(blob, ISSUER_KEY_CONTEXT)?));
        }
        Ok(None)
    }
}

/// A CA key in the CA token: signs through PKCS#11, never leaves it.
pub struct HsmCaKey {
    token: Arc<Token>,
    pin: String,
    handle: ObjectHandle,
    id: Vec<u8>,
    point: Vec<u8>,
}

impl HsmCaKey {
    fn sign_once(&self, msg: &[u8]) -> Result<Vec<u8>> {
        let s = self.token.user_session(&self.pin)?;
        let sig = session::sign_p256_sha256(&s, self.handle, msg)?;
        self.token.give_back(s);
        Ok(sig)
    }
}

impl RemoteKey for HsmCaKey {
    fn public_key_raw(&self) -> &[u8] {
        &self.point
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>> {
        // A session can die under us (token reset, module hiccup); a failed
        // session is dropped, not returned, so one retry gets a fresh one.
        self.sign_once(msg).or_else(|_| self.sign_once(msg))
    }
    fn describe(&self) -> String {
        format!("key {} in {}", hex(&self.id), self.token.describe())
    }
    fn reference(&self) -> String {
        serde_json::json!(KeyRef { module: self.token.module.clone(), token: self.token.label.clone(), id: hex(&self.id) }).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TenantStore;
    use crate::{Config, Engine};

    #[test]
    fn software_keys_are_sealed_at_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SqliteStore::open(&dir.path().join("tenure.db")).unwrap();
        let custody = CaCustody::open(dir.path(), &store).unwrap();
        let key = custody.new_ca_key("test CA").unwrap();
        let CaKey::Software(pkcs8) = &key else { panic!("no HSM configured: a software key") };
        let blob = custody.key_blob(&key).unwrap();
        assert!(is_sealed(&blob));
        assert!(!blob.windows(pkcs8.len()).any(|w| w == pkcs8.as_slice()), "the key is not stored in clear");
        let CaKey::Software(back) = custody.load_key(&blob).unwrap() else { panic!() };
        assert_eq!(&back, pkcs8);
        assert!(custody.reseal(&blob).unwrap().is_none());
        assert!(is_sealed(&custody.reseal(pkcs8).unwrap().unwrap()));
        assert!(custody.load_key(b"junk").is_err());
    }

    #[test]
    fn plain_keys_of_an_older_data_directory_are_sealed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let root = crate::ca::new_root("old root").unwrap();
        let CaKey::Software(plain) = &root.key else { panic!() };
        crate::store::SqliteStore::open(&dir.path().join("tenure.db")).unwrap().insert_root(&root.cert_der, plain).unwrap();
        let engine = Engine::open(dir.path(), Config::default()).unwrap();
        assert_eq!(engine.root_pem(), root.cert_pem(), "the same root, now sealed");
        for issuer in crate::store::SqliteStore::open(&dir.path().join("tenure.db")).unwrap().issuers().unwrap() {
            assert!(is_sealed(&issuer.key_pkcs8), "issuer {} sealed", issuer.id);
        }
        // The public tenant's intermediate (made at open) signs with the unsealed root.
        assert_eq!(engine.registry.tenants().unwrap().len(), 1);
    }
}
