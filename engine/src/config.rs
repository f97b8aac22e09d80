//! What an engine is opened with, and the limits no configuration lifts.

use std::time::Duration;

/// The tenant of accounts registered without External Account Binding.
pub const PUBLIC_TENANT: &str = "public";

/// Lifetimes may never exceed this, whatever a profile or policy says.
pub const MAX_CERT_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// At most this many identifiers in one order.
pub const MAX_IDENTIFIERS: usize = 100;

/// A certificate profile advertised in the ACME directory.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Its name, as clients ask for it.
    pub name: String,
    /// What the directory says of it.
    pub description: String,
    /// How long its certificates live (capped by [`MAX_CERT_LIFETIME`]).
    pub lifetime: Duration,
}

/// The engine's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The profiles offered.
    pub profiles: Vec<Profile>,
    /// The profile of orders that name none.
    pub default_profile: String,
    /// How long a new order (and its authorizations) stays pending.
    pub order_lifetime: Duration,
    /// How long a valid authorization may be reused for revocation.
    pub authorization_lifetime: Duration,
    /// Whether a new order lists the account's valid, unexpired authorizations
    /// of earlier orders instead of making new ones (Boulder and Pebble can;
    /// RFC 8555 §7.1.6 lets orders share authorizations). Off: every order
    /// proves its names afresh.
    pub reuse_valid_authorizations: bool,
    /// Whether accounts need External Account Binding.
    pub eab_required: bool,
    /// Renewal, delivery and CRL settings.
    pub lifecycle: crate::lifecycle::LifecycleConfig,
    /// What one plugin decision may use (deadline, memory, answer size).
    pub plugin_limits: crate::policy::Limits,
    /// How much one account may ask for.
    pub rate_limits: RateLimits,
    /// The shared database (PostgreSQL) several servers work on; None: the
    /// embedded SQLite database of the data directory.
    pub database: Option<DatabaseUrl>,
}

/// A PostgreSQL connection string (`postgres://user:password@host:port/db`
/// or `host=… user=… dbname=…`). Its password never reaches a log: Debug and
/// Display show the string with the password replaced.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Checks that `url` names PostgreSQL (`postgres://`, `postgresql://`, or key=value pairs).
    pub fn parse(url: &str) -> Result<DatabaseUrl, String> {
        let url = url.trim();
        if url.is_empty() {
            return Err("the database URL is empty".into());
        }
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://") || url.contains('=')) {
            return Err(format!(
                "{:?} is not a PostgreSQL URL (postgres://user@host:port/database); without --database the SQLite database of the data directory is used",
                DatabaseUrl(url.to_string()).to_string()
            ));
        }
        crate::store::pg::driver_config(url)?;
        Ok(DatabaseUrl(url.to_string()))
    }

    /// The string itself, password included: for the driver only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match url::Url::parse(&self.0) {
            Ok(mut u) if u.password().is_some() => {
                let _ = u.set_password(Some("***"));
                f.write_str(u.as_str())
            }
            Ok(u) => f.write_str(u.as_str()),
            // key=value form: drop the password pair.
            Err(_) => {
                let shown: Vec<&str> = self.0.split_whitespace().filter(|kv| !kv.starts_with("password=")).collect();
                f.write_str(&shown.join(" "))
            }
        }
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// Per-account bounds on what ACME requests may make the server store, so one
/// account (a public one above all) cannot fill the database.
#[derive(Debug, Clone)]
pub struct RateLimits {
    /// New orders per account per hour (a token bucket: bursts up to this many).
    pub orders_per_hour: u32,
    /// Pending (unexpired, not yet validated) authorizations an account may hold.
    pub pending_authorizations: usize,
    /// Failed validations per account and identifier per hour; past it, new
    /// orders of that account for that identifier wait (Let's Encrypt: 5).
    pub failed_validations_per_hour: u32,
    /// New accounts without External Account Binding per source address per
    /// hour. Accounts bound to a tenant's EAB key are the tenant's business
    /// and are not counted.
    pub accounts_per_ip_per_hour: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        // Generous for platforms whose tenants renew often (a benchmark places
        // thousands of orders an hour per account); a flood is still bounded.
        RateLimits { orders_per_hour: 10_000, pending_authorizations: 1_000, failed_validations_per_hour: 5, accounts_per_ip_per_hour: 50 }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            profiles: vec![
                Profile { name: "default".into(), description: "24-hour certificates".into(), lifetime: Duration::from_secs(24 * 3600) },
                Profile { name: "shortlived".into(), description: "6-hour certificates".into(), lifetime: Duration::from_secs(6 * 3600) },
            ],
            default_profile: "default".into(),
            order_lifetime: Duration::from_secs(7 * 24 * 3600),
            authorization_lifetime: Duration::from_secs(30 * 24 * 3600),
            reuse_valid_authorizations: false,
            eab_required: false,
            lifecycle: crate::lifecycle::LifecycleConfig::default(),
            plugin_limits: crate::policy::Limits::default(),
            rate_limits: RateLimits::default(),
            database: None,
        }
    }
}

impl Config {
    /// The lifetime of a profile's certificates, or `InvalidProfile`.
    pub fn profile_lifetime(&self, name: &str) -> crate::Result<Duration> {
        let p = self
            .profiles
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| crate::Error::new(crate::ErrorKind::InvalidProfile, format!("unknown profile {name:?}")))?;
        Ok(p.lifetime.min(MAX_CERT_LIFETIME))
    }

    /// Whether the profile is offered.
    pub fn has_profile(&self, name: &str) -> bool {
        self.profiles.iter().any(|p| p.name == name)
    }
}
