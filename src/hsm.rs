//! `tenure hsm ...` and the HSM flags of `tenure serve`: thin wiring over
//! `tenure_engine::hsm`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use tenure_engine::hsm::{CaHsmConfig, DistributionAttempt, SlotState, configure_ca_hsm};
use tenure_engine::registry::parse_attribute;

use super::{DataDir, open_existing};

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
        #[arg(long)]
        json: bool,
    },
    /// Zeroize a tenant's token and return it to the pool (ID: hsm_… or its res_…).
    Release {
        id: String,
        /// Keep the keys this many seconds first (the resource is suspended meanwhile).
        #[arg(long)]
        grace_seconds: Option<u64>,
        #[command(flatten)]
        data: DataDir,
        #[arg(long)]
        json: bool,
    },
    /// The keys tenure made in a token, and the token's public objects.
    Keys {
        id: String,
        #[command(flatten)]
        data: DataDir,
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
        id: String,
        #[command(flatten)]
        data: DataDir,
        #[arg(long)]
        json: bool,
    },
    /// Copy a key to another of the tenant's tokens, wrapped, if the policy allows.
    Distribute {
        key: String,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[command(flatten)]
        data: DataDir,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum PoolCommand {
    /// Add an initialized token (its SO PIN is checked and kept sealed).
    Add {
        #[arg(long)]
        module: PathBuf,
        #[arg(long)]
        token: String,
        /// A file holding the token's SO PIN.
        #[arg(long)]
        so_pin_file: PathBuf,
        #[command(flatten)]
        data: DataDir,
        #[arg(long)]
        json: bool,
    },
    /// List the pool and who holds each token.
    List {
        #[command(flatten)]
        data: DataDir,
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
            for s in open_existing(&data)?.custody.hsm_slots()? {
                emit(&s, json, |s| {
                    format!(
                        "{}\t{}\t{}\t{}\t{}",
                        s.id,
                        s.token_label,
                        s.state.as_str(),
                        s.tenant.as_deref().unwrap_or("-"),
                        s.resource_id.as_deref().unwrap_or("-")
                    )
                })?;
            }
            Ok(())
        }
        HsmCommand::Allocate { tenant, tenant_only, attrs, data, json } => {
            let attributes = attrs.iter().map(|a| parse_attribute(a)).collect::<Result<_, _>>()?;
            let done = open_existing(&data)?.custody.hsm_allocate(&tenant, tenant_only, attributes)?;
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
                Some(at) => format!("{} keeps its keys until {at} (unix time), then is zeroized", s.id),
                None => format!("{} zeroized and back in the pool", s.id),
            })
        }
        HsmCommand::Keys { id, data, json } => {
            let info = open_existing(&data)?.custody.hsm_keys(&id)?;
            emit(&info, json, |i| {
                let mut out = format!("{}\t{}\t{}\n", i.slot.id, i.slot.token_label, i.slot.state.as_str());
                for k in &i.keys {
                    out.push_str(&format!(
                        "key {}\tgen {}\t{}\t{}\tresource {}\tcertificate {}\n",
                        k.id,
                        i.generations.get(&k.id).map_or("-".to_string(), |g| g.to_string()),
                        k.state.as_str(),
                        k.origin,
                        k.resource_id.as_deref().unwrap_or("-"),
                        k.cert_serial.as_deref().unwrap_or("-")
                    ));
                }
                for o in &i.objects {
                    out.push_str(&format!("object {}\tid {}\t{}\n", o.class, o.id_hex, o.label));
                }
                out.trim_end().to_string()
            })
        }
        HsmCommand::Rekey { resource, overlap_seconds, lifetime_seconds, data, json } => {
            let lifetime = lifetime_seconds.map(Duration::from_secs);
            let out = open_existing(&data)?.custody.rekey(&resource, lifetime, Duration::from_secs(overlap_seconds))?;
            emit(&out, json, |o| {
                format!(
                    "key {} in {} with certificate {}{}",
                    o.key.id,
                    o.key.slot_id,
                    o.serial,
                    o.replaced
                        .as_ref()
                        .map(|r| format!("; {r} retires at {}", o.replaced_retires_at.unwrap_or_default()))
                        .unwrap_or_default()
                )
            })
        }
        HsmCommand::Sweep { data } => {
            let (zeroized, retired) = open_existing(&data)?.custody.hsm_maintenance()?;
            println!("{zeroized} tokens zeroized, {retired} keys retired");
            Ok(())
        }
        HsmCommand::Sync { id, data, json } => {
            let custody = open_existing(&data)?.custody;
            let attempts = custody.distribute_to_holder(&id)?;
            if json {
                println!("{}", serde_json::to_string(&attempts)?);
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
        HsmCommand::Distribute { key, from, to, data, json } => {
            let out = open_existing(&data)?.custody.distribute_hsm_key(&key, &from, &to)?;
            emit(&out, json, |o| format!("copied as {} into {} (allowed by {})", o.key.id, o.key.slot_id, o.plugins.join(", ")))
        }
    }
}
