//! `tenure tenant key …`, `tenure plugin signatures`, and the signed parts of
//! `tenure plugin install` and `list`: tenants' plugin signing keys from the
//! command line.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Subcommand;
use tenure_engine::audit::AuditRecord;
use tenure_engine::plugin_signing::{MAX_PUBLIC_KEY_PEM, MAX_SIGNATURE, TenantKey};
use tenure_engine::policies::PluginScope;

use crate::output::{self, Table};
use crate::{DEFAULT_PLUGINS, DataDir, open_existing, read_component};

/// `tenure tenant key …`.
#[derive(Subcommand)]
pub enum TenantKeyCommand {
    /// Register a public key that signs the tenant's plugins; prints its id.
    ///
    /// The key is a PEM PUBLIC KEY (SubjectPublicKeyInfo), Ed25519 or ECDSA
    /// P-256 (`openssl pkey -in key.pem -pubout -out key.pub`). Its id is
    /// `sha256:` and the first 32 hex digits of the SHA-256 of its DER form:
    /// `openssl pkey -pubin -in key.pub -outform DER | sha256sum | cut -c1-32`.
    Add {
        /// The tenant.
        name: String,
        /// The public key file (PEM PUBLIC KEY, at most 16 KiB).
        #[arg(long, value_name = "FILE")]
        public_key: PathBuf,
        #[command(flatten)]
        data: DataDir,
        /// Print the result as one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the keys that sign the tenant's plugins (id, algorithm, when added).
    List {
        /// The tenant.
        name: String,
        #[command(flatten)]
        data: DataDir,
        /// Print JSON Lines: one object per line, with the PEM (nothing when the list is empty).
        #[arg(long)]
        json: bool,
    },
    /// Remove one of the tenant's keys. Plugins it signed stay installed (and
    /// are still shown as signed by it): a signature is verified when the
    /// plugin is installed, not at each decision. Install them again, signed
    /// by another key, to replace them.
    Remove {
        /// The tenant.
        name: String,
        /// The key's id, as `tenant key list` shows it (sha256:…).
        key_id: String,
        #[command(flatten)]
        data: DataDir,
    },
}

/// Runs `tenure tenant key …`.
pub fn tenant_key(command: TenantKeyCommand) -> Result<()> {
    match command {
        TenantKeyCommand::Add { name, public_key, data, json } => {
            let pem = read_bounded(&public_key, MAX_PUBLIC_KEY_PEM, "a public key file")?;
            let pem = String::from_utf8(pem).map_err(|_| anyhow::anyhow!("{}: not a PEM text file", public_key.display()))?;
            let key = open_existing(&data)?.policies.add_tenant_key(&name, &pem)?;
            if json {
                println!("{}", serde_json::to_string(&key)?);
            } else {
                println!("{}", key.key_id);
            }
        }
        TenantKeyCommand::List { name, data, json } => {
            let keys = open_existing(&data)?.policies.tenant_keys(&name)?;
            if json {
                for k in &keys {
                    println!("{}", serde_json::to_string(k)?);
                }
                return Ok(());
            }
            let mut table = Table::new(&["KEY ID", "ALGORITHM", "ADDED"]);
            for TenantKey { key_id, algorithm, created_at, .. } in keys {
                table.row(vec![key_id, algorithm.as_str().to_string(), output::rfc3339(created_at)]);
            }
            table.print_or(&format!("no plugin signing keys for tenant {name}"));
        }
        TenantKeyCommand::Remove { name, key_id, data } => {
            if !open_existing(&data)?.policies.remove_tenant_key(&name, &key_id)? {
                anyhow::bail!("tenant {name} has no key {key_id}");
            }
            println!("removed {key_id} (plugins it signed stay installed)");
        }
    }
    Ok(())
}

/// `tenure plugin install`: with `--signature`, the detached signature is
/// verified under the tenant's keys; prints the digest (and the signer).
pub fn install(file: &PathBuf, scope: PluginScope, signature: Option<&Path>, data: &DataDir) -> Result<()> {
    let wasm = read_component(file)?;
    let signature = signature.map(|s| read_bounded(s, MAX_SIGNATURE, "a signature file")).transpose()?;
    let installed = open_existing(data)?.policies.install_signed_plugin(scope, &wasm, signature.as_deref())?;
    match installed.signed_by {
        Some(key) => println!("{} (signed by {key})", installed.digest),
        None => println!("{}", installed.digest),
    }
    Ok(())
}

/// `tenure plugin signatures`: sets or prints whether tenant plugins must be signed.
pub fn signatures(require: bool, optional: bool, data: &DataDir, json: bool) -> Result<()> {
    let policies = open_existing(data)?.policies;
    if require || optional {
        policies.set_tenant_plugin_signatures(require)?;
    }
    let required = policies.tenant_plugin_signatures_required()?;
    if json {
        println!("{}", serde_json::json!({ "required": required }));
    } else if required {
        println!("required: a tenant plugin is installed only with a signature that verifies under one of its tenant's keys");
    } else {
        println!("optional: tenant plugins may be installed unsigned; a signature given must verify");
    }
    Ok(())
}

/// `tenure plugin list`: scope, digest, signer, when installed.
pub fn list(data: &DataDir, json: bool) -> Result<()> {
    let plugins = open_existing(data)?.policies.installed_plugins()?;
    if json {
        for p in &plugins {
            println!("{}", serde_json::to_string(p)?);
        }
        return Ok(());
    }
    let operator = plugins.iter().any(|p| p.scope == "operator");
    let mut table = Table::new(&["SCOPE", "DIGEST", "SIGNED BY", "INSTALLED"]);
    for p in plugins {
        table.row(vec![p.scope, p.digest, p.signed_by.unwrap_or_else(|| "-".into()), output::rfc3339(p.installed_at)]);
    }
    table.print_or(&format!("no plugins installed; defaults: {DEFAULT_PLUGINS}"));
    if !operator && !table.is_empty() {
        println!("no operator plugin: every chain starts with the default ({DEFAULT_PLUGINS})");
    }
    Ok(())
}

/// An audit record's plugins for the screen: each digest's first 12 hex
/// digits, and the key that signed it, if one did (`--json` has them whole).
pub fn audit_plugins(r: &AuditRecord) -> String {
    r.plugins
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let short = &d[..d.len().min(12)];
            match r.signers.get(i).and_then(Option::as_deref) {
                Some(key) => format!("{short} (signed by {key})"),
                None => short.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Reads a small file whole, refusing one larger than `max` bytes.
fn read_bounded(path: &Path, max: usize, what: &str) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(max as u64 + 1).read_to_end(&mut bytes).with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() > max {
        anyhow::bail!("{}: too large for {what} (at most {max} bytes)", path.display());
    }
    Ok(bytes)
}
