//! `tenure`: the command line. Thin wiring over `tenure_engine` and `tenure_acme`.

mod bench;
mod bench_seed;
mod config_file;
mod provision_bench;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use tenure_acme::validation::{ValidationConfig, Validator};
use tenure_engine::Identifier;
use tenure_engine::ra::TenantLimits;
use tenure_engine::registry::PermitOverlap;
use tenure_engine::{Config, Engine};

#[cfg(test)]
mod cli_help_tests;
mod hsm;
mod lifecycle;
mod output;
mod plugin_signing;
mod tenant_intermediates;
mod tenant_removal;
mod tenant_token;

#[derive(Parser)]
#[command(name = "tenure", version, about = "An ACME certificate authority for platforms that already know who controls which resource")]
struct Cli {
    /// How log lines on standard error are written: text for people (coloured
    /// on a terminal only), json for log collectors (one object per line).
    #[arg(long, global = true, value_enum, env = "TENURE_LOG_FORMAT", default_value_t = LogFormat::Text, help_heading = "Global options")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// `--log-format`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per event (tracing-subscriber's JSON format).
    Json,
}

/// Where the engine's data lives, and what every command that opens it shares.
#[derive(Args, Clone)]
struct DataDir {
    /// The data directory (database, root certificate, keys); made by `tenure init`
    /// or by `tenure serve` on an empty directory, and required by every other command.
    #[arg(long = "data", default_value = "./tenure-data", env = "TENURE_DATA")]
    dir: PathBuf,
    /// A PostgreSQL database several servers share (postgres://user:password@host:port/db);
    /// without it, the SQLite database of the data directory. Every server of a
    /// deployment, and every command run against it, gives the same one, and
    /// each data directory holds the deployment's ca-key.kek.
    #[arg(long = "database", value_name = "URL", env = "TENURE_DATABASE", hide_env_values = true,
          value_parser = |s: &str| tenure_engine::config::DatabaseUrl::parse(s))]
    database: Option<tenure_engine::config::DatabaseUrl>,
}

impl DataDir {
    fn config(&self) -> Config {
        Config { database: self.database.clone(), ..Config::default() }
    }
}

/// What the commands that run plugin decisions take (serve, renew, plugin
/// eval, and the HSM commands that ask the policy).
#[derive(Args, Clone)]
struct Decisions {
    /// Wall-clock milliseconds one plugin decision may take (time spent in
    /// registry calls aside); past it the decision is a deny.
    #[arg(long, value_name = "MS", env = "TENURE_PLUGIN_DEADLINE_MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    plugin_deadline: u64,
}

impl Decisions {
    fn apply(&self, config: &mut Config) {
        config.plugin_limits.deadline = Duration::from_millis(self.plugin_deadline);
    }
}

/// The bounds of delivery targets, taken by the commands that set targets
/// (resource add and set-attr, hsm allocate) or deliver (serve, renew).
#[derive(Args, Clone)]
struct DeliveryBounds {
    /// File drops (`delivery-dir`) must lie below this directory; without it
    /// file delivery is off. Every command that sets or delivers them takes it.
    #[arg(long, value_name = "DIR", env = "TENURE_DELIVERY_ROOT", value_parser = existing_directory)]
    delivery_root: Option<PathBuf>,
    /// Webhooks may reach this host name, address or range (CIDR) although it
    /// is loopback, link-local or private; with an http:// prefix, over plain
    /// http too. Repeatable (comma-separated in the environment).
    #[arg(long = "webhook-allow", value_name = "[http://]HOST_OR_CIDR", env = "TENURE_WEBHOOK_ALLOW", value_delimiter = ',')]
    webhook_allow: Vec<tenure_engine::lifecycle::WebhookAllow>,
}

impl DeliveryBounds {
    fn apply(&self, config: &mut Config) {
        config.lifecycle.delivery_root = self.delivery_root.clone();
        config.lifecycle.webhook_allow = self.webhook_allow.clone();
    }
}

/// `--renewal-interval`: seconds, more than none and at most a day (a value
/// parser, so `tenure config check` reports it with its line).
fn sweep_interval(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err("a number of seconds above 0 and at most 86400".into()),
    }
}

/// `--renewal-fraction`: strictly between 0 and 1.
fn open_fraction(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v < 1.0 => Ok(v),
        _ => Err("a fraction strictly between 0 and 1".into()),
    }
}

/// `--renewal-rate`, `--provisioning-rate`: a positive, finite rate.
fn per_second(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1_000_000.0 => Ok(v),
        _ => Err("a number per second above 0 and at most 1000000".into()),
    }
}

/// `--delivery-root`: an existing directory, made absolute and free of links.
fn existing_directory(dir: &str) -> Result<PathBuf, String> {
    let real = std::fs::canonicalize(dir).map_err(|e| format!("{dir}: {e}"))?;
    if !real.is_dir() {
        return Err(format!("{dir} is not a directory"));
    }
    Ok(real)
}

// Parsed once per process: boxing `serve`'s many flags would save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Make a new CA in an empty data directory: the root, the admin token, the public tenant.
    Init {
        #[command(flatten)]
        data: DataDir,
        #[command(flatten)]
        hsm: hsm::ServeHsmArgs,
        /// Print the result as one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run the CA: the ACME server over HTTPS (making the CA first in an empty data directory).
    Serve(ServeArgs),
    /// Manage tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// The resource registry: what each tenant holds.
    Resource {
        #[command(subcommand)]
        command: ResourceCommand,
    },
    /// Policy plugins (WebAssembly components built against wit/).
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Certificates: their binding, renewal and deliveries.
    Cert {
        #[command(subcommand)]
        command: lifecycle::CertCommand,
    },
    /// Provision what waits, renew what is due and deliver, now.
    ///
    /// Does what the server's schedule would, with or without a server running;
    /// with --resource, renews that resource's certificates at once, due or not.
    Renew(lifecycle::RenewArgs),
    /// HSM key custody: the token pool, tenants' tokens, their keys.
    Hsm {
        #[command(subcommand)]
        command: hsm::HsmCommand,
    },
    /// Load generators (see BENCHMARKS.md).
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    /// Move a single-node deployment (its SQLite database) into an empty PostgreSQL
    /// database, offline: stop its server first. The data directory then serves the
    /// moved deployment with --database URL.
    Migrate {
        /// The data directory whose tenure.db is moved (it keeps ca-key.kek, admin-token, root.pem).
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        /// The PostgreSQL database to move into (postgres://user:password@host:port/db); it must hold no CA.
        #[arg(long, value_name = "URL", value_parser = |s: &str| tenure_engine::config::DatabaseUrl::parse(s))]
        to: tenure_engine::config::DatabaseUrl,
        /// Print the rows copied per table as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Configuration files for `serve --config`.
    Config {
        #[command(subcommand)]
        command: config_file::ConfigCommand,
    },
    /// The decision audit log, oldest first.
    Audit {
        /// Only the decisions for this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// At most this many of the newest records.
        #[arg(long, default_value_t = 1000)]
        limit: i64,
        #[command(flatten)]
        data: DataDir,
        /// Print JSON Lines: one object per line (nothing when the list is empty).
        #[arg(long)]
        json: bool,
    },
}

/// Whose plugin: the operator's (every tenant's chain starts with it) or one tenant's.
#[derive(Args)]
struct ScopeArgs {
    /// The operator's plugin, which every tenant's chain starts with (in place
    /// of the built-in default).
    #[arg(long, conflicts_with = "tenant")]
    operator: bool,
    /// This tenant's own plugin, which its chain ends with.
    #[arg(long, value_name = "TENANT")]
    tenant: Option<String>,
}

impl ScopeArgs {
    /// The scope asked for; without one, a usage error naming both flags
    /// (clap's own would name only the first of a required pair).
    fn scope(self, command: &str) -> tenure_engine::policies::PluginScope {
        match (self.operator, self.tenant) {
            (_, Some(t)) => tenure_engine::policies::PluginScope::Tenant(t),
            (true, None) => tenure_engine::policies::PluginScope::Operator,
            (false, None) => usage_error(&["plugin", command], "say whose plugin: one of --operator or --tenant TENANT"),
        }
    }
}

/// Exits as clap does on a usage error (status 2, the subcommand's usage
/// beneath), for rules clap cannot state.
fn usage_error(path: &[&str], message: &str) -> ! {
    use clap::CommandFactory;
    let mut command = Cli::command();
    command.build();
    for name in path {
        match command.find_subcommand(name) {
            Some(found) => command = found.clone(),
            None => break,
        }
    }
    command.error(clap::error::ErrorKind::MissingRequiredArgument, message).exit()
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Install (replacing) the operator's plugin or a tenant's; prints the digest.
    Install {
        /// The plugin: a WebAssembly component built against wit/.
        file: PathBuf,
        #[command(flatten)]
        scope: ScopeArgs,
        /// A tenant plugin's detached signature over FILE's exact bytes, made with
        /// one of the tenant's keys (`tenant key add`): Ed25519 raw (`openssl pkeyutl
        /// -sign -rawin`) or ECDSA P-256 over SHA-256, DER (`openssl dgst -sha256
        /// -sign`). Verified now; the operator's plugin takes none.
        #[arg(long, value_name = "FILE")]
        signature: Option<PathBuf>,
        #[command(flatten)]
        data: DataDir,
    },
    /// Whether tenant plugins must be signed by one of their tenant's keys (`tenant
    /// key add`): set with --require or --optional, or print it. Plugins installed
    /// already stay either way; a signature given is always verified.
    Signatures {
        /// From now on, install a tenant's plugin only with a signature that verifies.
        #[arg(long, conflicts_with = "optional")]
        require: bool,
        /// From now on, accept unsigned tenant plugins too (the default).
        #[arg(long)]
        optional: bool,
        #[command(flatten)]
        data: DataDir,
        /// Print the result as one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove the operator's plugin (the built-in default decides again) or a tenant's.
    Remove {
        #[command(flatten)]
        scope: ScopeArgs,
        #[command(flatten)]
        data: DataDir,
    },
    /// List installed plugins (scope, digest, the tenant key that signed it, when installed).
    List {
        #[command(flatten)]
        data: DataDir,
        /// Print JSON Lines: one object per line (nothing when the list is empty).
        #[arg(long)]
        json: bool,
    },
    /// Validate a plugin against the world; print its digest, imports and exports.
    Check {
        /// The plugin: a WebAssembly component built against wit/.
        file: PathBuf,
        #[command(flatten)]
        data: DataDir,
    },
    /// Run one decision against the live registry and print it (nothing is stored): a plugin
    /// file alone, or with --chain the tenant's whole chain (with FILE in place of the tenant's
    /// own plugin, if given). The request is --input (its schema: plugins/README.md), or for
    /// renewal --serial or --resource, built as the server would build it now.
    Eval {
        /// The plugin to evaluate (a component built against wit/).
        file: Option<PathBuf>,
        /// The decision to run.
        #[arg(long, value_parser = ["issuance", "renewal", "distribution"])]
        hook: String,
        /// The request: a file holding its JSON, `-` to read it from standard
        /// input, or the JSON itself (text starting with `{`).
        #[arg(long, value_name = "FILE|-|JSON", required_unless_present_any = ["serial", "resource"])]
        input: Option<String>,
        /// Renewal of this certificate (--hook renewal).
        #[arg(long, conflicts_with_all = ["input", "resource"])]
        serial: Option<String>,
        /// Rekey of this resource's key in its HSM (--hook renewal).
        #[arg(long, conflicts_with = "input")]
        resource: Option<String>,
        /// Run the tenant's whole chain, as the server would.
        #[arg(long)]
        chain: bool,
        #[command(flatten)]
        data: DataDir,
        #[command(flatten)]
        decisions: Decisions,
    },
}

#[derive(Subcommand)]
enum ResourceCommand {
    /// Register a resource a tenant holds; prints its id.
    Add {
        /// The tenant that holds it.
        #[arg(long)]
        tenant: String,
        /// What the resource is to the platform (vm, lb, hsm, …): 1-64 letters, digits, '-' or '_'.
        #[arg(long)]
        kind: String,
        /// A DNS name the resource answers to.
        #[arg(long = "name")]
        names: Vec<String>,
        /// A DNS zone: every name under it is held.
        #[arg(long = "zone")]
        zones: Vec<String>,
        /// An IP address of the resource.
        #[arg(long = "address")]
        addresses: Vec<String>,
        /// An attribute KEY=VALUE (e.g. lifetime-seconds=3600).
        #[arg(long = "attr")]
        attrs: Vec<String>,
        /// The resource whose tenure this one's certificates follow.
        #[arg(long)]
        anchor: Option<String>,
        #[command(flatten)]
        data: DataDir,
        #[command(flatten)]
        delivery: DeliveryBounds,
        /// Print {"id": …} instead of the bare id.
        #[arg(long)]
        json: bool,
    },
    /// The tenant lets go of the resource: its unexpired certificates are revoked
    /// (cessationOfOperation) in the same transaction; says how many.
    Release {
        /// The resource id (res_…).
        id: String,
        #[command(flatten)]
        data: DataDir,
        /// Print the result as one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Suspend the resource: still held, but not to be certified meanwhile.
    Suspend {
        /// The resource id (res_…).
        id: String,
        #[command(flatten)]
        data: DataDir,
        /// Print the result as one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Resume a suspended resource: what lapsed meanwhile is reissued, its lease restarts.
    Resume {
        /// The resource id (res_…).
        id: String,
        #[command(flatten)]
        data: DataDir,
        /// Print the result as one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Set and remove attributes in one change (validated as at add).
    SetAttr {
        /// The resource id (res_…).
        id: String,
        /// Set an attribute KEY=VALUE (KEY= removes it).
        #[arg(long = "attr")]
        attrs: Vec<String>,
        /// Remove an attribute.
        #[arg(long = "remove", value_name = "KEY")]
        removes: Vec<String>,
        #[command(flatten)]
        data: DataDir,
        #[command(flatten)]
        delivery: DeliveryBounds,
        /// Print the result as one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Confirm a leased resource (attribute lease-seconds): its lease runs again from now.
    Confirm {
        /// The resource id (res_…).
        id: String,
        #[command(flatten)]
        data: DataDir,
        /// Print the result as one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Hand the resource to another tenant: its unexpired certificates are revoked
    /// (superseded) in the same transaction; says how many.
    Transfer {
        /// The resource id (res_…).
        id: String,
        /// The tenant that holds it from now on.
        #[arg(long, value_name = "TENANT")]
        to: String,
        #[command(flatten)]
        data: DataDir,
        /// Print the result as one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show a resource: its attributes, where its provisioning stands (a
    /// request waiting, the certificate kept current) and its latest outbox
    /// messages (certificates delivered, notices sent).
    Show {
        /// The resource id (res_…).
        id: String,
        #[command(flatten)]
        data: DataDir,
        /// Print the result as one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List resources (id, tenant, kind, state, what it holds).
    List {
        /// Only this tenant's resources.
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        data: DataDir,
        /// Print JSON Lines: one object per line (nothing when the list is empty).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// A TOML file of settings, each key a flag's long name (`listen = "0.0.0.0:14000"`,
    /// `hostname = ["a.example"]`, `eab-required = true`); flags and their TENURE_*
    /// variables override it. Check one with `tenure config check FILE`.
    #[arg(long, value_name = "FILE", env = "TENURE_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    data: DataDir,
    #[command(flatten)]
    decisions: Decisions,
    #[command(flatten)]
    delivery: DeliveryBounds,
    /// Where the ACME server listens.
    #[arg(long, default_value = "127.0.0.1:14000")]
    listen: SocketAddr,
    /// Where the admin API listens.
    #[arg(long, default_value = "127.0.0.1:14001")]
    admin_listen: SocketAddr,
    /// Where the operations listener (plain HTTP: /metrics for Prometheus, /healthz,
    /// /readyz) listens, or `off`. No TLS and no token: keep it where only your
    /// scraper and load balancer reach it.
    #[arg(long, value_name = "ADDR|off", env = "TENURE_METRICS_LISTEN", default_value = "127.0.0.1:14002")]
    metrics_listen: tenure_admin::ops::MetricsListen,
    /// The port http-01 validation connects to.
    #[arg(long, default_value_t = 80)]
    http01_port: u16,
    /// The port tls-alpn-01 validation connects to.
    #[arg(long, default_value_t = 443)]
    tlsalpn01_port: u16,
    /// A DNS server (ADDR:PORT) for every validation lookup; the system resolver if unset.
    #[arg(long)]
    dns_resolver: Option<SocketAddr>,
    /// Extra names for the server's own TLS certificate (localhost and loopback are always in it).
    #[arg(long = "hostname")]
    hostnames: Vec<String>,
    /// Refuse accounts without External Account Binding.
    #[arg(long)]
    eab_required: bool,
    /// A new order lists the account's valid authorizations (proven by a
    /// challenge, at least a day left) instead of asking it to prove the
    /// names again, as Boulder and Pebble can; a wildcard reuses only a wildcard's.
    #[arg(long)]
    reuse_valid_authorizations: bool,
    /// The URL clients reach this server at; certificates point their CRL
    /// distribution points under it. Default: https://<first --hostname or localhost>:<port>.
    #[arg(long)]
    public_url: Option<String>,
    /// Days before a tenant's intermediate expires that the scheduler replaces it
    /// (a new key, the same permits; the old one's certificates stay valid). More
    /// than the longest certificate lifetime, less than an intermediate's five years.
    #[arg(long, value_name = "DAYS", default_value_t = 90, value_parser = clap::value_parser!(u64).range(8..=1460))]
    intermediate_rotate_before: u64,
    /// Seconds between renewal sweeps (also delivery retries and CRL refreshes).
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0, value_parser = sweep_interval)]
    renewal_interval: f64,
    /// The renewal window opens when this fraction of a certificate's lifetime is left.
    #[arg(long, default_value_t = 1.0 / 3.0, value_parser = open_fraction)]
    renewal_fraction: f64,
    /// Certificates per renewal transaction.
    #[arg(long, default_value_t = 256)]
    renewal_batch: usize,
    /// At most this many certificates renewed per second, so a backlog of due
    /// certificates does not crowd out ACME traffic. Default: no limit.
    #[arg(long, value_name = "PER_SECOND", value_parser = per_second)]
    renewal_rate: Option<f64>,
    /// At most this many resources provisioned per second, so a burst of new resources
    /// does not crowd out ACME traffic. Default: no limit.
    #[arg(long, value_name = "PER_SECOND", value_parser = per_second)]
    provisioning_rate: Option<f64>,
    /// New orders one ACME account may place per hour (a token bucket, per server).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    max_orders_per_hour: u32,
    /// Pending authorizations one ACME account may hold.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_pending_authorizations: u64,
    /// Failed validations per account and identifier per hour; past it, new orders
    /// for that identifier are refused (rateLimited) until the allowance refills.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    max_failed_validations_per_hour: u32,
    /// New accounts without External Account Binding one address (an IPv6 /64)
    /// may register per hour. Behind a proxy every client shares its address.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    max_accounts_per_ip_per_hour: u32,
    /// Connections each listener (ACME, admin) serves at once; past it, new ones wait
    /// in the kernel's backlog.
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections: u64,
    /// Seconds a client may take for a TLS handshake or a request header, and an
    /// idle keep-alive connection stays open.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    header_read_timeout: u64,
    /// Concurrent streams per HTTP/2 connection.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    max_streams: u32,
    #[command(flatten)]
    hsm: hsm::ServeHsmArgs,
}

/// The names a tenant's intermediate permits, as `tenant add` and `tenant update` take them.
#[derive(Args)]
pub struct PermitArgs {
    /// A domain (permits it and every name under it) or an address range (CIDR).
    #[arg(long = "permit", required = true, num_args = 1..)]
    pub permits: Vec<String>,
    /// Accept permits that overlap another tenant's (refused by default: both
    /// intermediates could then certify the names they share).
    #[arg(long)]
    pub allow_overlap: bool,
}

impl PermitArgs {
    /// What `--allow-overlap` says.
    pub fn overlap(&self) -> PermitOverlap {
        if self.allow_overlap { PermitOverlap::Allow } else { PermitOverlap::Refuse }
    }
}

/// An engine refusal, with the flag that would accept overlapping permits when that was the reason.
pub fn overlap_hint(e: tenure_engine::Error) -> anyhow::Error {
    let hint = if matches!(e.conflict, Some(tenure_engine::Conflict::PermitsOverlap { .. })) {
        " (give --allow-overlap if both tenants should hold it)"
    } else {
        ""
    };
    anyhow::anyhow!("{}{hint}", e.detail)
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant with an intermediate CA constrained to its names, and an EAB key.
    Add {
        /// The tenant's name.
        name: String,
        #[command(flatten)]
        permits: PermitArgs,
        #[command(flatten)]
        data: DataDir,
        /// Print the result as one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show a tenant's rate limits, or set its own (what is not set follows `serve`'s).
    Limits {
        /// The tenant.
        name: String,
        /// New orders per account per hour.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        orders_per_hour: Option<u32>,
        /// Pending authorizations one account may hold.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        pending_authorizations: Option<u32>,
        /// Failed validations per account and identifier per hour.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        failed_validations_per_hour: Option<u32>,
        /// Drop the tenant's own limits: the server's apply again.
        #[arg(long, conflicts_with_all = ["orders_per_hour", "pending_authorizations", "failed_validations_per_hour"])]
        reset: bool,
        #[command(flatten)]
        data: DataDir,
        /// Print the result as one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List tenants and what they may be issued.
    List {
        #[command(flatten)]
        data: DataDir,
        /// Print JSON Lines: one object per line (nothing when the list is empty).
        #[arg(long)]
        json: bool,
    },
    /// Replace a tenant's permits: a new intermediate constrained to them, and its
    /// certificates naming what they leave out revoked. Resources outside them must
    /// be released or transferred first.
    Update(tenant_intermediates::UpdateArgs),
    /// Replace a tenant's intermediate with a new key and the same permits; the old
    /// one's certificates stay valid until they expire (renewals come from the new one).
    Rotate(tenant_intermediates::RotateArgs),
    /// Print the secret the tenant's webhooks are signed with (the HMAC-SHA256
    /// key is this text); with --rotate, replace it first.
    WebhookSecret {
        /// The tenant.
        name: String,
        /// Make a new secret; webhooks sent from now on are signed with it only.
        #[arg(long)]
        rotate: bool,
        #[command(flatten)]
        data: DataDir,
        /// Print the result as one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Issue the tenant's admin-API token (printed once; only its hash is kept); with
    /// --rotate, replace it. The tenant's API sees and changes only what is its own.
    Token(tenant_token::TokenArgs),
    /// Remove a tenant for good: resources released, certificates and intermediates
    /// revoked, accounts deactivated, HSM tokens zeroized; its history stays.
    Remove(tenant_removal::RemoveArgs),
    /// The public keys that sign a tenant's plugins (see `plugin signatures`).
    Key {
        #[command(subcommand)]
        command: plugin_signing::TenantKeyCommand,
    },
}

fn main() {
    // `serve --config FILE`: the file's settings join the command line here.
    let cli: Cli = config_file::parse();
    // A listing piped into `head` ends quietly when the reader goes, as Unix
    // tools do, instead of panicking on a broken pipe. Not for the servers,
    // whose sockets must never kill the process.
    #[cfg(unix)]
    if !matches!(cli.command, Command::Serve(_) | Command::Bench { .. }) {
        // SAFETY: called before any other thread exists; restores the default action.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    init_logging(cli.log_format);
    if let Err(e) = run(cli) {
        eprintln!("tenure: {e:#}");
        std::process::exit(1);
    }
}

/// Logs to standard error (filtered by `TENURE_LOG`, default info), in the
/// format asked for; colour only on a terminal, so files and collectors get
/// no escape codes. Lines are written around a progress bar, never through it.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("TENURE_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(output::LogWriter);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Init { data, hsm, json } => init(&data, &hsm, json),
        Command::Serve(args) => serve(args),
        Command::Tenant { command } => tenant(command),
        Command::Resource { command } => resource(command),
        Command::Plugin { command } => plugin(command),
        Command::Cert { command } => lifecycle::cert(command),
        Command::Renew(args) => lifecycle::renew(args),
        Command::Hsm { command } => hsm::run(command),
        Command::Bench { command } => bench::run(command),
        Command::Migrate { from, to, json } => {
            if !from.join("tenure.db").is_file() {
                anyhow::bail!("{} holds no tenure.db: nothing to migrate", from.display());
            }
            // Tables copied so far, on a terminal: a large database takes a while.
            let progress = output::Progress::start(Some(0), "{bar:30} {pos}/{len} tables  {msg}  {elapsed}");
            let copied = Engine::migrate_to_postgres_observed(&from, &to, Config::default(), &mut |at| {
                let bar = progress.bar();
                bar.set_length(at.tables as u64);
                bar.set_position(at.tables_done as u64);
                bar.set_message(format!("{} ({} rows)", at.table, at.rows));
            })
            .with_context(|| format!("moving {} into {to}", from.display()))?;
            drop(progress);
            if json {
                let tables: serde_json::Map<String, serde_json::Value> = copied.iter().map(|(t, n)| (t.clone(), (*n).into())).collect();
                println!("{}", serde_json::json!({ "database": to.to_string(), "tables": tables }));
            } else {
                let mut table = output::Table::new(&["TABLE", "ROWS"]);
                for (name, rows) in &copied {
                    table.row(vec![name.clone(), rows.to_string()]);
                }
                table.print_or("no tables copied");
                println!("moved into {to}; serve it with: tenure serve --data {} --database URL", from.display());
            }
            Ok(())
        }
        Command::Config { command } => config_file::run(command),
        Command::Audit { tenant, limit, data, json } => {
            let records = open_existing(&data)?.registry.audit(tenant.as_deref(), limit)?;
            if json {
                for r in &records {
                    println!("{}", serde_json::to_string(r)?);
                }
                return Ok(());
            }
            let mut table = output::Table::new(&["SEQ", "AT", "HOOK", "TENANT", "OUTCOME", "DURATION", "PLUGINS", "REASON"]);
            for r in records {
                // The first 12 hex digits name a plugin well enough on screen; --json has them whole.
                let plugins = plugin_signing::audit_plugins(&r);
                table.row(vec![
                    r.seq.to_string(),
                    output::rfc3339(r.at),
                    r.hook,
                    r.tenant,
                    r.outcome,
                    format!("{}µs", r.duration_us),
                    plugins,
                    r.reason.unwrap_or_default(),
                ]);
            }
            table.print_or(&match &tenant {
                Some(t) => format!("no audit records for tenant {t}"),
                None => "no audit records".to_string(),
            });
            Ok(())
        }
    }
}

/// `tenure init`: a new CA, in a directory that holds none. An existing one is
/// refused, never re-initialized.
fn init(data: &DataDir, hsm_args: &hsm::ServeHsmArgs, json: bool) -> Result<()> {
    if std::fs::metadata(data.dir.join("tenure.db")).is_ok_and(|m| m.len() > 0) {
        anyhow::bail!("{} is a tenure data directory already; nothing changed", data.dir.display());
    }
    if let Some(url) = &data.database
        && Engine::database_holds_ca(url)?
    {
        anyhow::bail!(
            "the database {url} holds a CA already; nothing changed (a server joins it with a data directory holding the \
             deployment's ca-key.kek and admin-token, see the README)"
        );
    }
    hsm::configure_serve(data, hsm_args)?;
    let engine = Engine::open(&data.dir, data.config()).with_context(|| format!("initializing {}", data.dir.display()))?;
    let made = serde_json::json!({
        "data": engine.data_dir(),
        "root": engine.root_pem_path(),
        "admin_token": engine.admin_token_path(),
    });
    if json {
        println!("{made}");
    } else {
        println!("a new CA in {}", engine.data_dir().display());
        println!("root certificate: {}", engine.root_pem_path().display());
        println!("admin API token: {}", engine.admin_token_path().display());
    }
    Ok(())
}

/// Opens a data directory that exists already: every command but `init` and `serve`, so
/// that one run from the wrong directory says so instead of making a new CA there.
fn open_existing(data: &DataDir) -> Result<Engine> {
    open_existing_with(data, data.config())
}

/// [`open_existing`] with a configuration the command made (its decision
/// deadline, its delivery bounds).
fn open_existing_with(data: &DataDir, config: Config) -> Result<Engine> {
    Engine::open_existing(&data.dir, config).with_context(|| {
        format!(
            "opening {} (run `tenure init --data {}` to make a new CA there, or give --data or TENURE_DATA for another directory)",
            data.dir.display(),
            data.dir.display()
        )
    })
}

fn serve(args: ServeArgs) -> Result<()> {
    if let Some(file) = &args.config {
        // Its settings were merged into `args` when the command line was parsed.
        tracing::info!(file = %file.display(), "settings from the configuration file");
    }
    let mut config =
        Config { eab_required: args.eab_required, reuse_valid_authorizations: args.reuse_valid_authorizations, ..args.data.config() };
    args.decisions.apply(&mut config);
    args.delivery.apply(&mut config);
    config.lifecycle.interval = Duration::from_secs_f64(args.renewal_interval);
    config.lifecycle.renewal_fraction = args.renewal_fraction;
    config.lifecycle.batch = args.renewal_batch.max(1);
    config.lifecycle.renewal_rate = args.renewal_rate;
    config.lifecycle.provisioning_rate = args.provisioning_rate;
    config.lifecycle.intermediate_rotate_before = Duration::from_secs(args.intermediate_rotate_before * 86_400);
    config.rate_limits = tenure_engine::config::RateLimits {
        orders_per_hour: args.max_orders_per_hour,
        pending_authorizations: usize::try_from(args.max_pending_authorizations).unwrap_or(usize::MAX),
        failed_validations_per_hour: args.max_failed_validations_per_hour,
        accounts_per_ip_per_hour: args.max_accounts_per_ip_per_hour,
    };
    hsm::configure_serve(&args.data, &args.hsm)?;
    let engine = Engine::open(&args.data.dir, config).with_context(|| format!("opening {}", args.data.dir.display()))?;
    // Fail closed before listening: no admin API with a token anyone could present.
    engine.admin_token().map_err(|e| {
        anyhow::anyhow!("{}: the admin API will not start without a token (e.g. `head -c 32 /dev/urandom | base64 > FILE`)", e.detail)
    })?;
    // One server per data directory: two would run two schedulers and two
    // HSM maintenance loops over one SQLite file. Held until the process ends
    // (the kernel releases it on any exit, SIGKILL included).
    let _serving = serve_lock(&args.data.dir)?;
    hsm::spawn_maintenance(&args.data);
    let mut names = vec![Identifier::dns("localhost"), Identifier::ip(IpAddr::from([127, 0, 0, 1])), Identifier::ip("::1".parse()?)];
    if !args.listen.ip().is_unspecified() && !args.listen.ip().is_loopback() {
        names.push(Identifier::ip(args.listen.ip()));
    }
    for h in &args.hostnames {
        names.push(Identifier::parse("dns", h).with_context(|| format!("--hostname {h}"))?);
    }
    let (chain, key) = engine.server_identity(&names)?;
    let tls = tenure_acme::server::tls_config(chain, key)?;
    let validator = Validator::new(ValidationConfig {
        http01_port: args.http01_port,
        tlsalpn01_port: args.tlsalpn01_port,
        dns_resolver: args.dns_resolver,
        timeout: Duration::from_secs(10),
    })
    .map_err(|e| anyhow::anyhow!("validation: {e}"))?;

    // Signed requests (JWS checks, SQLite, plugins, signing) run on blocking threads;
    // a few per core keep the cores busy, and more only add context switches and lock waits.
    let blocking = std::thread::available_parallelism().map_or(2, |n| n.get()) * 4;
    let runtime = tokio::runtime::Builder::new_multi_thread().max_blocking_threads(blocking).enable_all().build()?;
    // Metrics are recorded only when something renders them.
    let metrics = match args.metrics_listen {
        tenure_admin::ops::MetricsListen::At(_) => Some(tenure_admin::ops::install_recorder().context("installing the metrics recorder")?),
        tenure_admin::ops::MetricsListen::Off => None,
    };
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
        let addr = listener.local_addr()?;
        let host = if addr.ip().is_unspecified() { "localhost".to_string() } else { addr.to_string() };
        let host = if addr.ip().is_unspecified() { format!("{host}:{}", addr.port()) } else { host };
        let public_url = match &args.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("https://{}:{}", args.hostnames.first().map_or("localhost", |h| h.as_str()), addr.port()),
        };
        engine.lifecycle.set_public_url(&public_url)?;
        let admin_listener = tokio::net::TcpListener::bind(args.admin_listen)
            .await
            .with_context(|| format!("binding the admin API on {}", args.admin_listen))?;
        let ops_listener = match args.metrics_listen {
            tenure_admin::ops::MetricsListen::At(at) => {
                Some(tokio::net::TcpListener::bind(at).await.with_context(|| format!("binding the metrics listener on {at}"))?)
            }
            tenure_admin::ops::MetricsListen::Off => None,
        };
        println!("ACME directory: https://{host}/directory");
        println!("root certificate: {}", engine.root_pem_path().display());
        println!("admin API: https://{} (bearer token in {})", admin_listener.local_addr()?, engine.admin_token_path().display());
        if let Some(ops) = &ops_listener {
            println!("metrics: http://{}/metrics", ops.local_addr()?);
        }
        let ops = async {
            match (ops_listener, metrics) {
                (Some(listener), Some(metrics)) => tenure_admin::ops::serve_ops(engine.clone(), listener, metrics).await,
                _ => std::future::pending().await,
            }
        };
        let handle = tokio::runtime::Handle::current();
        let _scheduler = lifecycle::start_scheduler(engine.lifecycle.clone(), handle)?;
        let connections = tenure_acme::ConnectionLimits {
            max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
            header_read_timeout: Duration::from_secs(args.header_read_timeout),
            max_streams: args.max_streams,
        };
        let options = tenure_acme::Options { connections, ..tenure_acme::Options::default() };
        let fe = tenure_acme::FrontEnd::new(engine.ra.clone(), validator, options);
        tokio::select! {
            r = tenure_acme::serve(fe, listener, tls.clone()) => r.context("serving ACME")?,
            r = tenure_admin::serve_admin(engine.clone(), admin_listener, tls, connections) => r.context("serving the admin API")?,
            r = ops => r.context("serving metrics and health")?,
            _ = shutdown_signal() => tracing::info!("shutting down"),
        }
        Ok(())
    })
}

/// An exclusive lock on `DIR/serve.lock`, or an error naming the data directory.
fn serve_lock(dir: &std::path::Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("serve.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            anyhow::bail!("another tenure serve is running on {} (it holds {})", dir.display(), path.display())
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn tenant(command: TenantCommand) -> Result<()> {
    match command {
        TenantCommand::Add { name, permits, data, json } => {
            let authority = open_existing(&data)?;
            let created = authority.registry.create_tenant_with(&name, Some(&permits.permits), permits.overlap()).map_err(overlap_hint)?;
            let hmac = base64_url(&created.eab_hmac);
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "tenant": created.tenant.name, "eab_kid": created.eab_kid, "eab_hmac": hmac, "permits": created.tenant.permits })
                );
            } else {
                println!("tenant:   {}", created.tenant.name);
                println!("permits:  {}", created.tenant.permits.join(", "));
                println!("eab kid:  {}", created.eab_kid);
                println!("eab hmac: {hmac}");
            }
            Ok(())
        }
        TenantCommand::Limits { name, orders_per_hour, pending_authorizations, failed_validations_per_hour, reset, data, json } => {
            let engine = open_existing(&data)?;
            let asked = TenantLimits { orders_per_hour, pending_authorizations, failed_validations_per_hour };
            let own = if reset || asked != TenantLimits::default() {
                // Setting merges into what the tenant has; --reset starts from nothing.
                let (mut own, _) = engine.registry.tenant_limits(&name)?;
                if reset {
                    own = TenantLimits::default();
                }
                own.orders_per_hour = asked.orders_per_hour.or(own.orders_per_hour);
                own.pending_authorizations = asked.pending_authorizations.or(own.pending_authorizations);
                own.failed_validations_per_hour = asked.failed_validations_per_hour.or(own.failed_validations_per_hour);
                engine.registry.set_tenant_limits(&name, &own)?;
                own
            } else {
                engine.registry.tenant_limits(&name)?.0
            };
            // What the tenant leaves out follows the running server's flags, which
            // this process does not know: it names them instead of guessing.
            if json {
                println!("{}", serde_json::json!({ "tenant": name, "own": own }));
            } else {
                let show = |value: Option<u32>, flag: &str| value.map_or(format!("the server's {flag}"), |v| v.to_string());
                println!("orders per hour:              {}", show(own.orders_per_hour, "--max-orders-per-hour"));
                println!("pending authorizations:       {}", show(own.pending_authorizations, "--max-pending-authorizations"));
                println!("failed validations per hour:  {}", show(own.failed_validations_per_hour, "--max-failed-validations-per-hour"));
            }
            Ok(())
        }
        TenantCommand::List { data, json } => {
            let tenants = open_existing(&data)?.registry.tenants()?;
            if json {
                for t in &tenants {
                    println!("{}", serde_json::json!({ "tenant": t.name, "permits": t.permits, "removed_at": t.removed_at }));
                }
                return Ok(());
            }
            let mut table = output::Table::new(&["TENANT", "PERMITS", "REMOVED"]);
            for t in tenants {
                let permits = if t.permits.is_empty() { "(unconstrained, challenges required)".to_string() } else { t.permits.join(" ") };
                table.row(vec![t.name, permits, output::rfc3339_or_dash(t.removed_at)]);
            }
            table.print_or("no tenants");
            Ok(())
        }
        TenantCommand::Update(args) => tenant_intermediates::update(args),
        TenantCommand::Rotate(args) => tenant_intermediates::rotate(args),
        TenantCommand::WebhookSecret { name, rotate, data, json } => {
            let registry = open_existing(&data)?.registry;
            let secret = if rotate { registry.rotate_webhook_secret(&name)? } else { registry.webhook_secret(&name)? };
            if json {
                println!("{}", serde_json::json!({ "tenant": name, "webhook_secret": secret }));
            } else {
                println!("{secret}");
            }
            Ok(())
        }
        TenantCommand::Token(args) => tenant_token::run(args),
        TenantCommand::Remove(args) => tenant_removal::run(args),
        TenantCommand::Key { command } => plugin_signing::tenant_key(command),
    }
}

/// The resources as a table: id, tenant, kind, state and what each holds
/// (names, zones as `*.zone`, addresses).
fn resource_table<'a>(resources: impl IntoIterator<Item = &'a tenure_engine::registry::Resource>) -> output::Table {
    let mut table = output::Table::new(&["ID", "TENANT", "KIND", "STATE", "HOLDS"]);
    for r in resources {
        let mut held: Vec<String> = r.names.clone();
        held.extend(r.zones.iter().map(|z| format!("*.{z}")));
        held.extend(r.addresses.iter().cloned());
        table.row(vec![r.id.clone(), r.tenant.clone(), r.kind.clone(), r.state.as_str().to_string(), held.join(" ")]);
    }
    table
}

/// How many certificates the resource's latest `kind` event (released,
/// transferred) revoked: the store counts them in the transaction that
/// revokes them and records the count in the event.
fn revoked_by_latest(registry: &tenure_engine::Registry, id: &str, kind: &str) -> Result<u64> {
    let events = registry.resource_events(id)?;
    let latest = events.iter().filter(|e| e.kind == kind).max_by_key(|e| e.seq);
    Ok(latest.and_then(|e| e.detail["revoked_certificates"].as_u64()).unwrap_or(0))
}

fn resource(command: ResourceCommand) -> Result<()> {
    use tenure_engine::registry::{NewResource, Resource, parse_attribute, parse_attribute_changes};
    let print = |r: &Resource, json: bool| -> Result<()> {
        if json {
            println!("{}", serde_json::to_string(r)?);
        } else {
            print!("{}", resource_table([r]).render());
        }
        Ok(())
    };
    // Release and transfer: the resource, then the revocations they made.
    let print_revoking = |r: &Resource, revoked: u64, reason: &str, json: bool| -> Result<()> {
        if json {
            let mut v = serde_json::to_value(r)?;
            v["revoked_certificates"] = revoked.into();
            println!("{v}");
        } else {
            print!("{}", resource_table([r]).render());
            println!("revoked {} ({reason})", output::count(usize::try_from(revoked).unwrap_or(usize::MAX), "certificate"));
        }
        Ok(())
    };
    match command {
        ResourceCommand::Add { tenant, kind, names, zones, addresses, attrs, anchor, data, delivery, json } => {
            let attributes = attrs.iter().map(|a| parse_attribute(a)).collect::<Result<_, _>>()?;
            let mut config = data.config();
            delivery.apply(&mut config);
            let authority = open_existing_with(&data, config)?;
            let r = authority.registry.add_resource(NewResource { tenant, kind, names, zones, addresses, attributes, anchor }).map_err(
                |e| match e.kind {
                    tenure_engine::ErrorKind::Malformed if e.detail.starts_with("delivery-") => anyhow::anyhow!(
                        "{e} (the bounds are --delivery-root and --webhook-allow, or TENURE_DELIVERY_ROOT and TENURE_WEBHOOK_ALLOW, as given to serve)"
                    ),
                    tenure_engine::ErrorKind::Malformed => {
                        anyhow::anyhow!("{e} (exact names go in --name, whole subtrees in --zone, addresses in --address)")
                    }
                    _ => e.into(),
                },
            )?;
            if json {
                println!("{}", serde_json::json!({ "id": r.id }));
            } else {
                println!("{}", r.id);
            }
        }
        ResourceCommand::Release { id, data, json } => {
            let registry = open_existing(&data)?.registry;
            let r = registry.release_resource(&id)?;
            let revoked = revoked_by_latest(&registry, &id, "released")?;
            print_revoking(&r, revoked, "cessationOfOperation", json)?;
        }
        ResourceCommand::Suspend { id, data, json } => print(&open_existing(&data)?.registry.suspend_resource(&id)?, json)?,
        ResourceCommand::Resume { id, data, json } => print(&open_existing(&data)?.registry.resume_resource(&id)?, json)?,
        ResourceCommand::SetAttr { id, attrs, removes, data, delivery, json } => {
            let changes = parse_attribute_changes(&attrs, &removes)?;
            let mut config = data.config();
            delivery.apply(&mut config);
            let r = open_existing_with(&data, config)?.registry.set_attributes(&id, &changes).map_err(|e| match e.kind {
                tenure_engine::ErrorKind::Malformed if e.detail.starts_with("delivery-") => anyhow::anyhow!(
                    "{e} (the bounds are --delivery-root and --webhook-allow, or TENURE_DELIVERY_ROOT and TENURE_WEBHOOK_ALLOW, as given to serve)"
                ),
                tenure_engine::ErrorKind::Malformed if e.detail == "no attribute to set or remove" => {
                    anyhow::anyhow!("{e} (give --attr KEY=VALUE or --remove KEY)")
                }
                _ => e.into(),
            })?;
            print(&r, json)?;
        }
        ResourceCommand::Confirm { id, data, json } => print(&open_existing(&data)?.registry.confirm_resource(&id)?, json)?,
        ResourceCommand::Transfer { id, to, data, json } => {
            let registry = open_existing(&data)?.registry;
            let r = registry.transfer_resource(&id, &to)?;
            let revoked = revoked_by_latest(&registry, &id, "transferred")?;
            print_revoking(&r, revoked, "superseded", json)?;
        }
        ResourceCommand::Show { id, data, json } => {
            let engine = open_existing(&data)?;
            let r = engine.registry.resource(&id)?.with_context(|| format!("no resource {id}"))?;
            let provisioning = engine.registry.provisioning_status(&id)?;
            let outbox = engine.lifecycle.deliveries_of_resource(&id, 20)?;
            let messages: Vec<serde_json::Value> = outbox
                .iter()
                .map(|d| {
                    serde_json::json!({ "event": d.event, "serial": d.serial, "kind": d.kind.as_str(), "target": d.target,
                                        "state": d.state.as_str(), "attempts": d.attempts, "last_error": d.last_error })
                })
                .collect();
            if json {
                println!("{}", serde_json::json!({ "resource": r, "provisioning": provisioning, "outbox": messages }));
            } else {
                let mut held: Vec<String> = r.names.clone();
                held.extend(r.zones.iter().map(|z| format!("*.{z}")));
                held.extend(r.addresses.iter().cloned());
                println!("id                 {}", r.id);
                println!("tenant             {}", r.tenant);
                println!("kind               {}", r.kind);
                println!("state              {}", r.state.as_str());
                println!("holds              {}", held.join(" "));
                if let Some(anchor) = &r.anchor {
                    println!("anchor             {anchor}");
                }
                println!("created            {}", output::rfc3339(r.created_at));
                println!("updated            {}", output::rfc3339(r.updated_at));
                if let Some(at) = r.lease_expires {
                    println!("lease expires      {}", output::rfc3339(at));
                }
                for (k, v) in &r.attributes {
                    println!("attribute          {k}={v}");
                }
                match (&provisioning.certificate, provisioning.pending) {
                    (_, true) => println!(
                        "provisioning       waiting (tries {}{})",
                        provisioning.attempts,
                        provisioning.last_error.as_deref().map(|e| format!("; last: {e}")).unwrap_or_default()
                    ),
                    (Some(serial), false) => println!(
                        "provisioned        {serial} (generation {}, key {})",
                        provisioning.generation.unwrap_or(1),
                        provisioning.key_source.unwrap_or("-")
                    ),
                    (None, false) => {}
                }
                let mut table = output::Table::new(&["OUTBOX", "SERIAL", "KIND", "TARGET", "STATE", "ATTEMPTS", "LAST ERROR"]);
                for m in &outbox {
                    table.row(vec![
                        m.event.clone(),
                        m.serial.clone().unwrap_or_else(|| "-".into()),
                        m.kind.as_str().to_string(),
                        m.target.clone(),
                        m.state.as_str().to_string(),
                        m.attempts.to_string(),
                        m.last_error.clone().unwrap_or_default(),
                    ]);
                }
                table.print_or("outbox             empty (nothing delivered or notified)");
            }
        }
        ResourceCommand::List { tenant, data, json } => {
            let resources = open_existing(&data)?.registry.resources(tenant.as_deref())?;
            if json {
                for r in &resources {
                    print(r, true)?;
                }
            } else {
                resource_table(&resources).print_or(&match &tenant {
                    Some(t) => format!("tenant {t} holds no resources"),
                    None => "no resources".to_string(),
                });
            }
        }
    }
    Ok(())
}

/// The built-in defaults, as `plugin list` names them when nothing replaces them.
const DEFAULT_PLUGINS: &str = "public-challenge for the public tenant, control-or-challenge for the others";

/// A plugin file's bytes, refused in one line unless it is WebAssembly at all
/// (wasmtime's own error for, say, a text file is long and says less).
fn read_component(file: &PathBuf) -> Result<Vec<u8>> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    if !bytes.starts_with(b"\0asm") {
        anyhow::bail!("{}: not a WebAssembly component (it does not start with \\0asm)", file.display());
    }
    Ok(bytes)
}

fn plugin(command: PluginCommand) -> Result<()> {
    let read = read_component;
    match command {
        PluginCommand::Install { file, scope, signature, data } => {
            plugin_signing::install(&file, scope.scope("install"), signature.as_deref(), &data)?;
        }
        PluginCommand::Signatures { require, optional, data, json } => plugin_signing::signatures(require, optional, &data, json)?,
        PluginCommand::Remove { scope, data } => {
            let scope = scope.scope("remove");
            let key = scope.key();
            if !open_existing(&data)?.policies.remove_plugin(scope)? {
                anyhow::bail!("no plugin is installed for {key}");
            }
            println!("removed {key}");
        }
        PluginCommand::List { data, json } => plugin_signing::list(&data, json)?,
        PluginCommand::Check { file, data: _ } => {
            // Checking needs no data directory (--data is accepted, as by every
            // command, and unused): a host without a disk cache.
            let host = tenure_engine::policy::PolicyHost::new(Config::default().plugin_limits, None).map_err(anyhow::Error::msg)?;
            let info = host.check(&read(&file)?).map_err(anyhow::Error::msg)?;
            println!("digest: {}", info.digest);
            for i in &info.imports {
                println!("import: {i}");
            }
            for e in &info.exports {
                println!("export: {e}");
            }
        }
        PluginCommand::Eval { file, hook, input, serial, resource, chain, data, decisions } => {
            use tenure_engine::policy::{Hook, HookRequest};
            let hook: Hook = hook.parse().map_err(anyhow::Error::msg)?;
            let mut config = data.config();
            decisions.apply(&mut config);
            let engine = open_existing_with(&data, config)?;
            let request = match (input, serial, resource) {
                (Some(input), _, _) => {
                    let text = match input.as_str() {
                        "-" => std::io::read_to_string(std::io::stdin()).context("reading the request from standard input")?,
                        inline if inline.trim_start().starts_with('{') => inline.to_string(),
                        path => std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
                    };
                    HookRequest::from_json(hook, &text).map_err(anyhow::Error::msg)?
                }
                (None, serial, resource) if hook != Hook::Renewal => {
                    let flag = if serial.is_some() {
                        "--serial"
                    } else if resource.is_some() {
                        "--resource"
                    } else {
                        "--input"
                    };
                    anyhow::bail!("{flag} makes a renewal request; use --hook renewal, or give --input for {hook}")
                }
                (None, Some(serial), _) => HookRequest::Renewal(engine.policies.renewal_request_for_certificate(&serial)?),
                (None, None, Some(resource)) => HookRequest::Renewal(engine.policies.renewal_request_for_resource(&resource)?),
                (None, None, None) => anyhow::bail!("say --input, --serial or --resource"),
            };
            let wasm = file.as_ref().map(read).transpose()?;
            if wasm.is_none() && !chain {
                anyhow::bail!("give a plugin FILE, or --chain for the tenant's installed chain");
            }
            let outcome = engine.policies.eval(wasm.as_deref(), chain, &request)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "hook": hook.as_str(),
                    "request": request,
                    "decision": outcome.decision,
                    "verdicts": outcome.verdicts,
                }))?
            );
        }
    }
    Ok(())
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
