//! What signs for a CA: a software key (PKCS#8, held in memory only while the
//! CA is loaded) or a key that never leaves an HSM, reached through
//! `RemoteKey`. Both become an rcgen `SigningKey`, so certificates and CRLs
//! are built the same way whichever holds the key.

use std::sync::Arc;

use rcgen::{KeyPair, PublicKeyData, SignatureAlgorithm, SigningKey};

use super::util::rcgen_err;
use crate::error::{Error, Result};

/// A private key held elsewhere (an HSM), which signs on request.
pub trait RemoteKey: Send + Sync {
    /// The raw public key as rcgen wants it (for ECDSA, the uncompressed point).
    fn public_key_raw(&self) -> &[u8];
    fn algorithm(&self) -> &'static SignatureAlgorithm;
    /// Signs `msg` (the whole message, not a digest) in the encoding X.509
    /// wants for `algorithm` (for ECDSA, a DER ECDSA-Sig-Value).
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>>;
    /// Where the key lives, for messages.
    fn describe(&self) -> String;
    /// A stable reference the key's custodian can load it back from (stored
    /// with the issuer).
    fn reference(&self) -> String;
}

#[derive(Clone)]
pub enum CaKey {
    /// PKCS#8 DER. Sealed at rest by `hsm::CaCustody`; plain only in memory.
    Software(Vec<u8>),
    Remote(Arc<dyn RemoteKey>),
}

impl CaKey {
    /// A fresh software ECDSA P-256 key.
    pub fn generate_software() -> Result<CaKey> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(rcgen_err("CA key"))?;
        Ok(CaKey::Software(key.serialize_der()))
    }

    /// The key in a form rcgen signs with.
    pub fn signing_key(&self) -> Result<CaSigningKey> {
        match self {
            CaKey::Software(pkcs8) => parsed_software_key(pkcs8).map(CaSigningKey::Software),
            CaKey::Remote(r) => Ok(CaSigningKey::Remote(r.clone())),
        }
    }

    pub fn is_remote(&self) -> bool {
        matches!(self, CaKey::Remote(_))
    }
}

impl std::fmt::Debug for CaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CaKey::Software(_) => f.write_str("CaKey::Software([elided])"),
            CaKey::Remote(r) => write!(f, "CaKey::Remote({})", r.describe()),
        }
    }
}

/// Parsing a PKCS#8 key checks its public point (a scalar multiplication, as
/// dear as a signature), so each CA key is parsed once per process. Keyed by
/// the key bytes' digest: a handful of CAs, never evicted.
fn parsed_software_key(pkcs8: &[u8]) -> Result<Arc<KeyPair>> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static PARSED: OnceLock<Mutex<HashMap<[u8; 32], Arc<KeyPair>>>> = OnceLock::new();
    let mut id = [0u8; 32];
    id.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, pkcs8).as_ref());
    let cache = PARSED.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(k) = cache.lock().ok().and_then(|c| c.get(&id).cloned()) {
        return Ok(k);
    }
    let key = Arc::new(KeyPair::try_from(pkcs8).map_err(|e| Error::internal(format!("issuing CA material: private key: {e}")))?);
    if let Ok(mut c) = cache.lock() {
        c.insert(id, key.clone());
    }
    Ok(key)
}

/// A CA key ready to sign, as an rcgen `SigningKey`.
pub enum CaSigningKey {
    Software(Arc<KeyPair>),
    Remote(Arc<dyn RemoteKey>),
}

impl PublicKeyData for CaSigningKey {
    fn der_bytes(&self) -> &[u8] {
        match self {
            CaSigningKey::Software(k) => k.der_bytes(),
            CaSigningKey::Remote(r) => r.public_key_raw(),
        }
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        match self {
            CaSigningKey::Software(k) => PublicKeyData::algorithm(k.as_ref()),
            CaSigningKey::Remote(r) => r.algorithm(),
        }
    }
}

impl SigningKey for CaSigningKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        match self {
            CaSigningKey::Software(k) => k.sign(msg),
            CaSigningKey::Remote(r) => r.sign(msg).map_err(|e| {
                // rcgen's error has no room for a reason; keep it in the log.
                tracing::error!(key = %r.describe(), error = %e, "HSM signing failed");
                rcgen::Error::RemoteKeyError
            }),
        }
    }
}
