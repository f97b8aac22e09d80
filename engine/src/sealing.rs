//! Secrets at rest: software CA keys and the PINs of pooled HSM tokens are
//! stored sealed with AES-256-GCM under a key-encryption key that lives in a
//! file of the data directory (`ca-key.kek`, mode 0600), never in the database.
//! A copy of the database alone therefore yields no key and no PIN.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::{Error, Result};

/// Marks a sealed blob (format version 1): magic, 12-octet nonce, ciphertext + tag.
pub const SEALED_MAGIC: &[u8; 4] = b"TSK1";
const KEK_LEN: usize = 32;
pub const KEK_FILE: &str = "ca-key.kek";

pub struct Kek {
    key: LessSafeKey,
    rng: SystemRandom,
    /// Authenticates replay nonces that servers sharing one database (and so
    /// one key-encryption key) accept from each other: HMAC-SHA256 under a key
    /// derived from this one, so no second secret needs distributing.
    nonce_key: ring::hmac::Key,
}

impl Kek {
    /// Reads `DIR/ca-key.kek`, creating it (0600, 32 random octets) on first use.
    /// Two processes initializing at once agree: the file is created with
    /// `create_new` and the loser reads the winner's.
    pub fn load_or_create(data_dir: &Path) -> Result<Kek> {
        let path = data_dir.join(KEK_FILE);
        let rng = SystemRandom::new();
        if !path.exists() {
            let mut raw = [0u8; KEK_LEN];
            rng.fill(&mut raw).map_err(|_| Error::internal("no randomness"))?;
            match create_private(&path) {
                Ok(mut f) => {
                    f.write_all(&raw)
                        .and_then(|_| f.sync_all())
                        .map_err(|e| Error::internal(format!("writing {}: {e}", path.display())).caused_by(e))?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::internal(format!("creating {}: {e}", path.display()))),
            }
        }
        let raw = std::fs::read(&path).map_err(|e| Error::internal(format!("reading {}: {e}", path.display())).caused_by(e))?;
        Self::from_bytes(&raw, &path)
    }

    fn from_bytes(raw: &[u8], path: &Path) -> Result<Kek> {
        if raw.len() != KEK_LEN {
            return Err(Error::internal(format!("{} must hold exactly {KEK_LEN} octets", path.display())));
        }
        let key = UnboundKey::new(&AES_256_GCM, raw).map_err(|_| Error::internal("bad key-encryption key"))?;
        let derived = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, raw), b"tenure replay nonces v1");
        let nonce_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derived.as_ref());
        Ok(Kek { key: LessSafeKey::new(key), rng: SystemRandom::new(), nonce_key })
    }

    /// The key replay nonces are authenticated with (see the field).
    pub fn nonce_key(&self) -> &ring::hmac::Key {
        &self.nonce_key
    }

    /// A throwaway key, for unit tests and benchmarks.
    pub fn ephemeral() -> Result<Kek> {
        let mut raw = [0u8; KEK_LEN];
        SystemRandom::new().fill(&mut raw).map_err(|_| Error::internal("no randomness"))?;
        Self::from_bytes(&raw, &PathBuf::from("(ephemeral)"))
    }

    /// Seals `plaintext`; `context` is bound as associated data, so a blob
    /// copied into another role (say, an SO PIN into a user PIN) fails to open.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| Error::internal("no randomness"))?;
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context.as_bytes()), &mut buf)
            .map_err(|_| Error::internal("sealing failed"))?;
        let mut out = Vec::with_capacity(4 + NONCE_LEN + buf.len());
        out.extend_from_slice(SEALED_MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(out)
    }

    pub fn open(&self, blob: &[u8], context: &str) -> Result<Vec<u8>> {
        let body = blob
            .strip_prefix(SEALED_MAGIC.as_slice())
            .filter(|b| b.len() > NONCE_LEN)
            .ok_or_else(|| Error::internal(format!("stored {context} is not a sealed blob")))?;
        let (nonce, ct) = body.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Error::internal("bad nonce"))?;
        let mut buf = ct.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buf)
            .map_err(|_| Error::internal(format!("stored {context} does not open under {KEK_FILE} (wrong key file?)")))?;
        Ok(plain.to_vec())
    }
}

pub fn is_sealed(blob: &[u8]) -> bool {
    blob.starts_with(SEALED_MAGIC)
}

fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    opts.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_context_binding() {
        let dir = tempfile::tempdir().unwrap();
        let kek = Kek::load_or_create(dir.path()).unwrap();
        let blob = kek.seal(b"secret", "so-pin").unwrap();
        assert!(is_sealed(&blob));
        assert_eq!(kek.open(&blob, "so-pin").unwrap(), b"secret");
        assert!(kek.open(&blob, "user-pin").is_err());
        // The same file yields the same key; the file is private.
        let again = Kek::load_or_create(dir.path()).unwrap();
        assert_eq!(again.open(&blob, "so-pin").unwrap(), b"secret");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(KEK_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let other = Kek::ephemeral().unwrap();
        assert!(other.open(&blob, "so-pin").is_err());
    }
}
