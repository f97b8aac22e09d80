//! `tenure hsm ...` and the HSM flags of `tenure serve`: thin wiring over
//! `tenure_engine::hsm`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use tenure_engine::hsm::{CaHsmConfig, DistributionAttempt, SlotState, configure_ca_hsm};
use tenure_engine::registry::parse_attribute;

use super::{DataDir, Decisions, DeliveryBounds, open_existing, open_existing_with};
use crate::output::{self, Table};

/// Where `serve` keeps the CA's keys when not in software.
#[derive(Args, Clone, Default)]
pub struct ServeHsmArgs {
    /// PKCS#11 module holding the CA keys (root and intermediates); they are
    /// created non-extractable in the token and sign there. Recorded in the data
    /// directory, so `tenure tenant add` uses the same token.
    #[arg(long, env = "TENURE_HSM_MODULE", requires_all = ["hsm_token", "hsm_pin_file"])]
    pub hsm_module: Option<PathBuf>,
    /// Label of the token for the CA keys.
    #[arg(long, env = "TENURE_HSM_TOKEN", requires = "hsm_module")]
    pub hsm_token: Option<String>,
    /// A file holding the token's user PIN.
    #[arg(long, env = "TENURE_HSM_PIN_FILE", requires = "hsm_module")]
    pub hsm_pin_file: Option<PathBuf>,
}

/// Records the CA HSM configuration given to `serve` (before the engine opens).
pub fn configure_serve(data: &DataDir, args: &ServeHsmArgs) -> Result<()> {
    if let (Some(module), Some(token), Some(pin_file)) = (&args.hsm_module, &args.hsm_token, &args.hsm_pin_file) {
        let config = CaHsmConfig { module: module.clone(), token: token.clone(), pin_file: pin_file.clone() };
        configure_ca_hsm(&data.dir, data.database.as_ref(), &config).with_context(|| format!("CA keys in HSM token {token:?}"))?;
    }
    Ok(())
}

/// Runs custody maintenance (grace periods, key retirement) once a minute as
/// `tenure hsm sweep` in a child process: a fresh process sees tokens as they
/// are now even with modules that read token state once per process (SoftHSM2).
pub fn spawn_maintenance(data: &DataDir) {
    let Ok(exe) = std::env::current_exe() else { return };
    let dir = data.dir.clone();
    let database = data.database.clone();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_secs(60));
            let mut sweep = std::process::Command::new(&exe);
            sweep.args(["hsm", "sweep", "--data"]).arg(&dir);
            // Through the environment: a URL's password stays out of `ps`.
            if let Some(url) = &database {
                sweep.env("TENURE_DATABASE", url.expose());
            }
            match sweep.output() {
                Ok(out) if out.status.success() => {
                    let said = String::from_utf8_lossy(&out.stdout);
                    if !said.starts_with("0 tokens zeroized, 0 keys retired") {
                        tracing::info!(result = %said.trim(), "HSM custody maintenance");
                    }
                }
                Ok(out) => tracing::warn!(error = %String::from_utf8_lossy(&out.stderr).trim(), "HSM custody maintenance failed"),
                Err(e) => tracing::warn!(error = %e, "HSM custody maintenance did not run"),
            }
        }
    });
}

#[derive(Subcommand)]
pub enum HsmCommand {
    /// The pool of tokens tenure may allocate to tenants.
    Pool {
        #[command(subcommand)]
        command: PoolCommand,
    },
    /// Allocate a free token to a tenant exclusively; prints its user PIN, once.
    Allocate {
        /// The tenant the token is allocated to.
        #[arg(long)]
        tenant: String,
        /// Keep no copy of the user PIN: tenure can then neither rekey nor distribute keys in it.
        #[arg(long)]
        tenant_only: bool,
        /// An attribute KEY=VALUE of the hsm resource (e.g. key-group=g1), set before the keys
        /// the tenant's policy allows it are copied into it.
        #[arg(long = "attr")]
        attrs: Vec<String>,
        #[command(flatten)]
        data: DataDir,
        #[command(flatten)]
        decisions: Decisions,
        #[command(flatten)]
        delivery: DeliveryBounds,
        /// Print the result as one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Zeroize a tenant's token and return it to the pool (ID: hsm_… or its res_…).
    Release {
        /// The tenant's token: its id (hsm_…) or its registry resource's (res_…).
        id: String,
        /// Keep the keys this many seconds first (the resource is suspended meanwhile).
        #[arg(long)]
        grace_seconds: Option<u64>,
        #[command(flatten)]
        data: DataDir,
        /// Print the result as one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The keys tenure made in a token, and the token's public objects.
    Keys {
        /// The tenant's token: its id (hsm_…) or its registry resource's (res_…).
        id: String,
        #[command(flatten)]
        data: DataDir,
        /// Print the result as one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Generate (or rekey) the key of a resource in its tenant's token and certify it, if the
    /// tenant's policy allows (decide-renewal, trigger rekey). The certificate is written next
    /// to the key, listed by `tenure cert list`, and revoked when the resource is released.
    Rekey {
        /// The resource: an `hsm` resource, or one with attribute hsm=<hsm resource id>.
        resource: String,
        /// Seconds the old key stays usable.
        #[arg(long, default_value_t = 3600)]
        overlap_seconds: u64,
        /// The certificate's lifetime (default: the default profile's; a policy may shorten it).
        #[arg(long)]
        lifetime_seconds: Option<u64>,
        #[command(flatten)]
        data: DataDir,
        #[command(flatten)]
        decisions: Decisions,
        /// Print the result as one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Custody maintenance now: zeroize tokens whose grace period is over, destroy keys whose overlap is over.
    Sweep {
        #[command(flatten)]
        data: DataDir,
    },
    /// Copy into a tenant's token (ID: hsm_… or its res_…) every key of the tenant's other tokens
    /// that its policy allows it to hold (decide-distribution, one decision per key), wrapped.
    /// Allocation does this too; run it again after the token's attributes change.
    Sync {
        /// The tenant's token: its id (hsm_…) or its registry resource's (res_…).
        id: String,
        #[command(flatten)]
        data: DataDir,
        #[command(flatten)]
        decisions: Decisions,
        /// Print JSON Lines: one object per distribution attempt (nothing when there was none).
        #[arg(long)]
        json: bool,
    },
    /// Copy a key to another of the tenant's tokens, wrapped, if the policy allows.
    Distribute {
        /// The key to copy (its id, as `tenure hsm keys` lists it).
        key: String,
        /// The token holding it: hsm_… or its res_….
        #[arg(long, value_name = "ID")]
        from: String,
        /// The token to copy it into: hsm_… or its res_….
        #[arg(long, value_name = "ID")]
        to: String,
        #[command(flatten)]
        data: DataDir,
        #[command(flatten)]
        decisions: Decisions,
        /// Print the result as one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum PoolCommand {
    /// Add an initialized token (its SO PIN is checked and kept sealed).
    Add {
        /// The PKCS#11 module (a shared library) that reaches the token.
        #[arg(long)]
        module: PathBuf,
        /// The token's label.
        #[arg(long)]
        token: String,
        /// A file holding the token's SO PIN.
        #[arg(long)]
        so_pin_file: PathBuf,
        #[command(flatten)]
        data: DataDir,
        /// Print the result as one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the pool and who holds each token.
    List {
        #[command(flatten)]
        data: DataDir,
        /// Print JSON Lines: one object per line (nothing when the list is empty).
        #[arg(long)]
        json: bool,
    },
}

/// Prints `value` as JSON (with --json) or its text rendering.
fn emit<T: serde::Serialize>(value: &T, json: bool, text: impl FnOnce(&T) -> String) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(value)?);
    } else {
        println!("{}", text(value));
    }
    Ok(())
}

/// One line per distribution attempt, for the human outputs.
fn attempt_line(a: &DistributionAttempt) -> String {
    match a {
        DistributionAttempt::Copied { key, source_key, source_hsm, plugins } => {
            format!("copied {source_key} from {source_hsm} as {} (allowed by {})", key.id, plugins.join(", "))
        }
        DistributionAttempt::Denied { key_id, source_hsm, reason, .. } => format!("denied {key_id} from {source_hsm}: {reason}"),
        DistributionAttempt::Failed { key_id, source_hsm, error, .. } => format!("failed {key_id} from {source_hsm}: {error}"),
    }
}

pub fn run(command: HsmCommand) -> Result<()> {
    match command {
        HsmCommand::Pool { command: PoolCommand::Add { module, token, so_pin_file, data, json } } => {
            let so_pin = std::fs::read_to_string(&so_pin_file).with_context(|| format!("reading {}", so_pin_file.display()))?;
            let so_pin = so_pin.trim_end_matches(['\n', '\r']);
            if so_pin.is_empty() {
                bail!("{} is empty", so_pin_file.display());
            }
            let slot = open_existing(&data)?.custody.hsm_pool_add(&module, &token, so_pin)?;
            emit(&slot, json, |s| format!("{}\t{}\t{}", s.id, s.token_label, s.state.as_str()))
        }
        HsmCommand::Pool { command: PoolCommand::List { data, json } } => {
            let slots = open_existing(&data)?.custody.hsm_slots()?;
            if json {
                for s in &slots {
                    println!("{}", serde_json::to_string(s)?);
                }
                return Ok(());
            }
            let mut table = Table::new(&["ID", "TOKEN", "STATE", "TENANT", "RESOURCE"]);
            for s in slots {
                table.row(vec![
                    s.id,
                    s.token_label,
                    s.state.as_str().to_string(),
                    s.tenant.unwrap_or_else(|| "-".into()),
                    s.resource_id.unwrap_or_else(|| "-".into()),
                ]);
            }
            table.print_or("the pool holds no tokens (add one with `tenure hsm pool add`)");
            Ok(())
        }
        HsmCommand::Allocate { tenant, tenant_only, attrs, data, decisions, delivery, json } => {
            let attributes = attrs.iter().map(|a| parse_attribute(a)).collect::<Result<_, _>>()?;
            let mut config = data.config();
            decisions.apply(&mut config);
            delivery.apply(&mut config);
            let done = open_existing_with(&data, config)?.custody.hsm_allocate(&tenant, tenant_only, attributes)?;
            let slot = &done.slot;
            let out = serde_json::json!({
                "id": slot.id, "resource": slot.resource_id, "token": slot.token_label,
                "module": slot.module, "state": slot.state.as_str(), "user_pin": done.user_pin,
                "distribution": done.distribution, "distribution_skipped": done.distribution_skipped,
            });
            emit(&out, json, |_| {
                let mut text = format!(
                    "allocated {} (token {:?}, resource {}) to {tenant}\nuser PIN (shown once, store it now): {}",
                    slot.id,
                    slot.token_label,
                    slot.resource_id.as_deref().unwrap_or("-"),
                    done.user_pin
                );
                if let Some(why) = &done.distribution_skipped {
                    text.push_str(&format!("\nno key distributed: {why}"));
                }
                for a in &done.distribution {
                    text.push('\n');
                    text.push_str(&attempt_line(a));
                }
                text
            })
        }
        HsmCommand::Release { id, grace_seconds, data, json } => {
            let slot = open_existing(&data)?.custody.hsm_release(&id, grace_seconds.map(Duration::from_secs))?;
            emit(&slot, json, |s| match s.release_after {
                Some(at) => format!("{} keeps its keys until {}, then is zeroized", s.id, output::rfc3339(at)),
                None => format!("{} zeroized and back in the pool", s.id),
            })
        }
        HsmCommand::Keys { id, data, json } => {
            let info = open_existing(&data)?.custody.hsm_keys(&id)?;
            emit(&info, json, |i| {
                let mut out = format!("token {} ({:?}, {})\n", i.slot.id, i.slot.token_label, i.slot.state.as_str());
                let mut keys = Table::new(&["KEY", "GEN", "STATE", "ORIGIN", "RESOURCE", "CERTIFICATE"]);
                for k in &i.keys {
                    keys.row(vec![
                        k.id.clone(),
                        i.generations.get(&k.id).map_or("-".to_string(), |g| g.to_string()),
                        k.state.as_str().to_string(),
                        k.origin.clone(),
                        k.resource_id.clone().unwrap_or_else(|| "-".into()),
                        k.cert_serial.clone().unwrap_or_else(|| "-".into()),
                    ]);
                }
                out.push_str(&if keys.is_empty() { "no keys tenure made\n".to_string() } else { keys.render() });
                let mut objects = Table::new(&["OBJECT", "ID", "LABEL"]);
                for o in &i.objects {
                    objects.row(vec![o.class.clone(), o.id_hex.clone(), o.label.clone()]);
                }
                out.push_str(&if objects.is_empty() { "no public objects\n".to_string() } else { objects.render() });
                out.trim_end().to_string()
            })
        }
        HsmCommand::Rekey { resource, overlap_seconds, lifetime_seconds, data, decisions, json } => {
            let lifetime = lifetime_seconds.map(Duration::from_secs);
            let mut config = data.config();
            decisions.apply(&mut config);
            let out = open_existing_with(&data, config)?.custody.rekey(&resource, lifetime, Duration::from_secs(overlap_seconds))?;
            emit(&out, json, |o| {
                format!(
                    "key {} in {} with certificate {}{}",
                    o.key.id,
                    o.key.slot_id,
                    o.serial,
                    o.replaced
                        .as_ref()
                        .map(|r| format!("; {r} retires at {}", output::rfc3339_or_dash(o.replaced_retires_at)))
                        .unwrap_or_default()
                )
            })
        }
        HsmCommand::Sweep { data } => {
            let (zeroized, retired) = open_existing(&data)?.custody.hsm_maintenance()?;
            println!("{zeroized} tokens zeroized, {retired} keys retired");
            Ok(())
        }
        HsmCommand::Sync { id, data, decisions, json } => {
            let mut config = data.config();
            decisions.apply(&mut config);
            let custody = open_existing_with(&data, config)?.custody;
            let attempts = custody.distribute_to_holder(&id)?;
            if json {
                for a in &attempts {
                    println!("{}", serde_json::to_string(a)?);
                }
                return Ok(());
            }
            if attempts.is_empty() {
                let slot = custody.hsm_slot(&id)?;
                match slot.state {
                    SlotState::HandedOver => println!("nothing to distribute to {}", slot.id),
                    state => println!("no key distributed to {}: tenure holds no credential for it ({})", slot.id, state.as_str()),
                }
            }
            for a in &attempts {
                println!("{}", attempt_line(a));
            }
            Ok(())
        }
        HsmCommand::Distribute { key, from, to, data, decisions, json } => {
            let mut config = data.config();
            decisions.apply(&mut config);
            let out = open_existing_with(&data, config)?.custody.distribute_hsm_key(&key, &from, &to)?;
            emit(&out, json, |o| format!("copied as {} into {} (allowed by {})", o.key.id, o.key.slot_id, o.plugins.join(", ")))
        }
    }
}
