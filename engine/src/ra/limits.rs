//! Rate limits, in the spirit of Let's Encrypt's: new orders per account,
//! pending authorizations per account, failed validations per account and
//! identifier, and new accounts without External Account Binding per source
//! address. The server's defaults (`Config::rate_limits`) hold for every
//! tenant unless the operator sets the tenant's own ([`TenantLimits`]).
//!
//! What must survive a restart does: pending authorizations are counted in the
//! store. The hourly allowances are token buckets in this process: a restart
//! refills them, which costs at most one hour's allowance once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::RateLimits;

/// A tenant's own limits; what it leaves out follows the server's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimits {
    /// New orders per account per hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orders_per_hour: Option<u32>,
    /// Pending authorizations one account may hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_authorizations: Option<u32>,
    /// Failed validations per account and identifier per hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_validations_per_hour: Option<u32>,
}

impl TenantLimits {
    /// The limits in force: the tenant's where set, the server's otherwise.
    pub fn over(&self, defaults: &RateLimits) -> EffectiveLimits {
        EffectiveLimits {
            orders_per_hour: self.orders_per_hour.unwrap_or(defaults.orders_per_hour).max(1),
            pending_authorizations: self.pending_authorizations.map_or(defaults.pending_authorizations, |n| n as usize),
            failed_validations_per_hour: self.failed_validations_per_hour.unwrap_or(defaults.failed_validations_per_hour).max(1),
        }
    }

    /// Refuses a zero: a limit of nothing would lock the tenant out.
    pub fn validate(&self) -> crate::Result<()> {
        for (name, value) in [
            ("orders_per_hour", self.orders_per_hour),
            ("pending_authorizations", self.pending_authorizations),
            ("failed_validations_per_hour", self.failed_validations_per_hour),
        ] {
            if value == Some(0) {
                return Err(crate::Error::malformed(format!("{name} must be at least 1")));
            }
        }
        Ok(())
    }
}

/// The limits one tenant's accounts are held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EffectiveLimits {
    /// New orders per account per hour.
    pub orders_per_hour: u32,
    /// Pending authorizations one account may hold.
    pub pending_authorizations: usize,
    /// Failed validations per account and identifier per hour.
    pub failed_validations_per_hour: u32,
}

/// Hourly allowances by key (an account, an address, an account and an
/// identifier): token buckets holding up to `per_hour` tokens and refilling
/// at `per_hour` an hour, so a burst of a full hour's worth is allowed.
#[derive(Default)]
pub(crate) struct Allowances {
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant, per_hour: f64) {
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * per_hour / 3600.0).min(per_hour);
        self.at = now;
    }
}

/// Buckets kept before the full ones are forgotten (they would start full anyway).
const MAX_BUCKETS: usize = 100_000;

impl Allowances {
    /// Takes one token of `key`'s allowance, or says how long until there is one.
    pub(crate) fn take(&self, key: &str, per_hour: u32) -> Result<(), Duration> {
        let per_hour = f64::from(per_hour.max(1));
        let now = Instant::now();
        let mut all = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if all.len() > MAX_BUCKETS {
            all.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * per_hour / 3600.0 < per_hour);
        }
        let b = all.entry(key.to_string()).or_insert(Bucket { tokens: per_hour, at: now });
        b.refill(now, per_hour);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) * 3600.0 / per_hour))
        }
    }

    /// How long until `key` has a token again; None when it has one now.
    pub(crate) fn wait(&self, key: &str, per_hour: u32) -> Option<Duration> {
        let per_hour = f64::from(per_hour.max(1));
        let mut all = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = all.get_mut(key)?;
        b.refill(Instant::now(), per_hour);
        (b.tokens < 1.0).then(|| Duration::from_secs_f64((1.0 - b.tokens) * 3600.0 / per_hour))
    }

    /// Gives back a token taken for a request then refused for another
    /// reason: a refused request costs no allowance.
    pub(crate) fn give_back(&self, key: &str, per_hour: u32) {
        let per_hour = f64::from(per_hour.max(1));
        let mut all = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = all.get_mut(key) {
            b.tokens = (b.tokens + 1.0).min(per_hour);
        }
    }
}

/// Where a tenant's own limits are kept (a setting, JSON).
fn setting_key(tenant: &str) -> String {
    format!("tenant-limits/{tenant}")
}

impl crate::core::Core {
    /// The tenant's own limits (empty when the operator set none).
    pub(crate) fn tenant_limits(&self, tenant: &str) -> crate::Result<TenantLimits> {
        match self.store.setting(&setting_key(tenant))? {
            None => Ok(TenantLimits::default()),
            Some(raw) => serde_json::from_slice(&raw)
                .map_err(|e| crate::Error::internal(format!("the stored rate limits of tenant {tenant} do not parse: {e}"))),
        }
    }

    /// Replaces the tenant's own limits.
    pub(crate) fn set_tenant_limits(&self, tenant: &str, limits: &TenantLimits) -> crate::Result<()> {
        limits.validate()?;
        let raw = serde_json::to_vec(limits).map_err(|e| crate::Error::internal(format!("encoding rate limits: {e}")))?;
        self.store.set_setting(&setting_key(tenant), &raw)
    }
}

/// The bucket key of an account's failed validations of one identifier.
pub(crate) fn failure_key(account: &str, identifier: &crate::Identifier) -> String {
    format!("{account}\u{0}{}:{}", identifier.kind.as_str(), identifier.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_a_burst_then_says_how_long_to_wait() {
        let a = Allowances::default();
        for _ in 0..3 {
            a.take("k", 3).unwrap();
        }
        let wait = a.take("k", 3).unwrap_err();
        assert!(wait > Duration::from_secs(1190) && wait <= Duration::from_secs(1200), "{wait:?}");
        assert!(a.wait("k", 3).is_some());
        a.give_back("k", 3);
        assert_eq!(a.wait("k", 3), None);
        assert_eq!(a.wait("other", 3), None, "an unknown key has its whole allowance");
    }

    #[test]
    fn a_tenants_limits_override_the_servers_where_set() {
        let defaults = RateLimits::default();
        let own = TenantLimits { orders_per_hour: Some(7), ..Default::default() };
        let e = own.over(&defaults);
        assert_eq!(e.orders_per_hour, 7);
        assert_eq!(e.pending_authorizations, defaults.pending_authorizations);
        assert_eq!(e.failed_validations_per_hour, defaults.failed_validations_per_hour);
        assert!(TenantLimits { pending_authorizations: Some(0), ..Default::default() }.validate().is_err());
        assert!(serde_json::from_str::<TenantLimits>(r#"{"orders_per_hour":1,"bogus":2}"#).is_err());
    }
}
