//! Replay nonces (RFC 8555 §6.5) for servers that share one database: a
//! nonce one server hands out is accepted once by any server, and by no
//! server twice.
//!
//! A shared nonce carries its own proof: 16 random octets, its expiry, and an
//! HMAC-SHA256 tag under a key every server derives
//! from the deployment's key-encryption key. Minting it touches nothing
//! shared; spending it checks the tag and the expiry, then records it in the
//! store's spent set, whose insert succeeds for exactly one server. A single
//! server on SQLite keeps its nonces in memory instead (the front end's own
//! store), which costs no write.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

use super::Ra;
use crate::error::Result;
use crate::model::now;

const RANDOM: usize = 16;
const EXPIRY: usize = 8;
const TAG: usize = 32;
const LEN: usize = RANDOM + EXPIRY + TAG;

impl Ra {
    /// Whether this server shares its database, and so its nonces, with others.
    pub fn shares_nonces(&self) -> bool {
        self.core.config.database.is_some()
    }

    /// A nonce any server of the deployment accepts once within `lifetime`.
    pub fn mint_shared_nonce(&self, lifetime: Duration) -> Result<String> {
        let mut raw = [0u8; LEN];
        self.core.fill_random(&mut raw[..RANDOM])?;
        let expires = now().saturating_add(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX));
        raw[RANDOM..RANDOM + EXPIRY].copy_from_slice(&expires.to_be_bytes());
        let tag = hmac::sign(self.core.ca_keys.kek().nonce_key(), &raw[..RANDOM + EXPIRY]);
        raw[RANDOM + EXPIRY..].copy_from_slice(tag.as_ref());
        Ok(URL_SAFE_NO_PAD.encode(raw))
    }

    /// Spends a shared nonce: true only for an authentic, unexpired nonce no
    /// server has spent before.
    pub fn spend_shared_nonce(&self, nonce: &str) -> Result<bool> {
        if nonce.len() != (LEN * 4).div_ceil(3) {
            return Ok(false);
        }
        let Ok(raw) = URL_SAFE_NO_PAD.decode(nonce) else { return Ok(false) };
        let Ok(raw) = <[u8; LEN]>::try_from(raw.as_slice()) else { return Ok(false) };
        let (signed, tag) = raw.split_at(RANDOM + EXPIRY);
        if hmac::verify(self.core.ca_keys.kek().nonce_key(), signed, tag).is_err() {
            return Ok(false);
        }
        let mut expiry = [0u8; EXPIRY];
        expiry.copy_from_slice(&signed[RANDOM..]);
        let expires = i64::from_be_bytes(expiry);
        if expires < now() {
            return Ok(false);
        }
        self.core.store.spend_nonce(&signed[..RANDOM], expires)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Config, Engine};
    use std::time::Duration;

    #[test]
    fn a_shared_nonce_is_spent_once_and_a_forged_one_never() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), Config::default()).unwrap();
        let ra = &engine.ra;
        let n = ra.mint_shared_nonce(Duration::from_secs(60)).unwrap();
        assert!(ra.spend_shared_nonce(&n).unwrap());
        assert!(!ra.spend_shared_nonce(&n).unwrap(), "spent twice");
        // One octet changed anywhere: the tag no longer matches.
        let mut forged: Vec<char> = ra.mint_shared_nonce(Duration::from_secs(60)).unwrap().chars().collect();
        forged[3] = if forged[3] == 'A' { 'B' } else { 'A' };
        assert!(!ra.spend_shared_nonce(&forged.into_iter().collect::<String>()).unwrap());
        let expired = ra.mint_shared_nonce(Duration::ZERO).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert!(!ra.spend_shared_nonce(&expired).unwrap());
        assert!(!ra.spend_shared_nonce("short").unwrap());
    }
}
