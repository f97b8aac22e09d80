//! Account keys as verified `Jwk`s, so a request signed with `kid` does not
//! re-parse and re-validate the stored JWK. Validating an EC point costs an
//! ephemeral ECDH (see `jws::check_ec_point`), as much as verifying the
//! signature itself; the stored key was validated when it was registered.
//!
//! Entries are keyed by account id and hold the JWK text they were parsed
//! from: a key rollover changes the text, and the stale entry is ignored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::jws::Jwk;
use crate::problem::Problem;

/// Bounded by emptying when full: a cold miss costs one parse.
const CAPACITY: usize = 100_000;

/// A parsed key and the stored JWK text it was parsed from.
type Entry = (Arc<str>, Arc<Jwk>);

/// Parsed account keys by account id.
#[derive(Default)]
pub struct KeyCache {
    keys: Mutex<HashMap<String, Entry>>,
}

impl KeyCache {
    /// The parsed key of `account_id`, whose stored JWK is `jwk_text`.
    pub fn get(&self, account_id: &str, jwk_text: &str) -> Result<Arc<Jwk>, Problem> {
        if let Ok(keys) = self.keys.lock()
            && let Some((text, key)) = keys.get(account_id)
            && &**text == jwk_text
        {
            return Ok(key.clone());
        }
        let stored: serde_json::Value =
            serde_json::from_str(jwk_text).map_err(|_| Problem::internal("the stored account key is unreadable"))?;
        let key = Arc::new(Jwk::from_json(&stored)?);
        if let Ok(mut keys) = self.keys.lock() {
            if keys.len() >= CAPACITY {
                keys.clear();
            }
            keys.insert(account_id.to_string(), (Arc::from(jwk_text), key.clone()));
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str =
        r#"{"crv":"P-256","kty":"EC","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}"#;

    #[test]
    fn a_changed_key_text_is_parsed_again() {
        let cache = KeyCache::default();
        let a = cache.get("acct", KEY_A).unwrap();
        assert!(Arc::ptr_eq(&a, &cache.get("acct", KEY_A).unwrap()));
        assert!(cache.get("acct", r#"{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}"#).is_err());
        assert!(Arc::ptr_eq(&a, &cache.get("acct", KEY_A).unwrap()));
    }
}
