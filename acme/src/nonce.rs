//! Anti-replay nonces (RFC 8555 §6.5): random, single-use, expiring.
//!
//! Kept in memory: a restart invalidates outstanding nonces, which clients
//! handle by retrying on `badNonce` as the RFC requires.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};

/// Nonces issued and not yet redeemed, each usable once before it expires.
pub struct NonceStore {
    inner: Mutex<Inner>,
    rng: SystemRandom,
    lifetime: Duration,
    capacity: usize,
}

struct Inner {
    live: HashMap<[u8; 16], Instant>,
    /// Issue order, so the oldest nonces go first when the store is full.
    order: VecDeque<([u8; 16], Instant)>,
}

impl NonceStore {
    /// A store whose nonces live `lifetime`, holding at most `capacity` (oldest dropped first).
    pub fn new(lifetime: Duration, capacity: usize) -> Self {
        NonceStore {
            inner: Mutex::new(Inner { live: HashMap::new(), order: VecDeque::new() }),
            rng: SystemRandom::new(),
            lifetime,
            capacity,
        }
    }

    /// A fresh nonce, base64url.
    pub fn issue(&self) -> String {
        let mut raw = [0u8; 16];
        if self.rng.fill(&mut raw).is_err() {
            // Without randomness no nonce is safe; an unusable nonce makes the client retry.
            return String::from("unavailable");
        }
        let now = Instant::now();
        if let Ok(mut inner) = self.inner.lock() {
            while inner.order.len() >= self.capacity || inner.order.front().is_some_and(|(_, t)| now.duration_since(*t) > self.lifetime) {
                let Some((old, _)) = inner.order.pop_front() else { break };
                inner.live.remove(&old);
            }
            inner.live.insert(raw, now);
            inner.order.push_back((raw, now));
        }
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Consumes a nonce; true only the first time a live nonce is presented.
    pub fn redeem(&self, nonce: &str) -> bool {
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(nonce) else { return false };
        let Ok(raw) = <[u8; 16]>::try_from(bytes.as_slice()) else { return false };
        let Ok(mut inner) = self.inner.lock() else { return false };
        match inner.live.remove(&raw) {
            Some(issued) => issued.elapsed() <= self.lifetime,
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_single_use() {
        let s = NonceStore::new(Duration::from_secs(60), 10);
        let n = s.issue();
        assert!(s.redeem(&n));
        assert!(!s.redeem(&n));
        assert!(!s.redeem("not-a-nonce"));
    }

    #[test]
    fn nonces_expire() {
        let s = NonceStore::new(Duration::from_millis(1), 10);
        let n = s.issue();
        std::thread::sleep(Duration::from_millis(5));
        assert!(!s.redeem(&n));
    }

    #[test]
    fn oldest_nonces_are_dropped_when_full() {
        let s = NonceStore::new(Duration::from_secs(60), 2);
        let a = s.issue();
        let b = s.issue();
        let c = s.issue();
        assert!(!s.redeem(&a));
        assert!(s.redeem(&b));
        assert!(s.redeem(&c));
    }
}
