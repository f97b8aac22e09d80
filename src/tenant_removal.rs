//! `tenure tenant remove NAME --yes`: removes a tenant for good (its history
//! stays), and says what was released, revoked and deactivated.

use anyhow::Result;
use clap::Args;

use crate::{DataDir, open_existing, output};

/// `tenure tenant remove`.
#[derive(Args)]
pub struct RemoveArgs {
    /// The tenant.
    name: String,
    /// Do it: removal cannot be undone (without it, nothing is changed).
    #[arg(long)]
    yes: bool,
    #[command(flatten)]
    data: DataDir,
    /// Print the result as one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// What removal does, said before anything is done.
const WHAT_REMOVAL_DOES: &str = "removing a tenant cannot be undone: its resources are released, its certificates and \
every intermediate CA it has are revoked (the root's CRL lists the intermediates), its ACME accounts are deactivated, \
its EAB keys, plugin, plugin-signing keys and admin token are deleted, and its HSM tokens are zeroized and returned to \
the pool; the audit log and resource events keep its name, which is never given to another tenant";

/// Removes the tenant (only with `--yes`) and prints the counts.
pub fn run(args: RemoveArgs) -> Result<()> {
    let RemoveArgs { name, yes, data, json } = args;
    if !yes {
        anyhow::bail!("{WHAT_REMOVAL_DOES}.\nGive --yes to remove tenant {name}: `tenure tenant remove {name} --yes`");
    }
    let removed = open_existing(&data)?.registry.remove_tenant(&name)?;
    if json {
        println!("{}", serde_json::to_value(&removed)?);
    } else {
        let r = &removed.removal;
        if r.already_removed {
            println!("tenant {name} was removed at {}; this run finished what was left", output::rfc3339(r.removed_at));
        } else {
            println!("tenant {name} removed at {}", output::rfc3339(r.removed_at));
        }
        println!("resources released:        {}", r.resources_released);
        println!("certificates revoked:      {}", r.certificates_revoked);
        println!("intermediates revoked:     {}", r.intermediates_revoked);
        println!("accounts deactivated:      {}", r.accounts_deactivated);
        println!("EAB keys deleted:          {}", r.eab_keys_deleted);
        println!("provisioning requests:     {} settled", r.provisioning_settled);
        println!("plugin removed:            {}", if r.plugin_removed { "yes" } else { "no" });
        println!("plugin-signing keys:       {} deleted", r.signing_keys_deleted);
        println!("admin token cleared:       {}", if r.token_cleared { "yes" } else { "no" });
        println!("HSM tokens released:       {}", removed.hsm_slots_released.len());
        println!("the root's CRL, at /crl/{}, lists the revoked intermediates", removed.root_issuer);
    }
    if !removed.complete() {
        for f in &removed.hsm_slot_failures {
            eprintln!("HSM token {} was not released: {}", f.slot, f.error);
        }
        anyhow::bail!(
            "{} HSM token(s) of tenant {name} were not released; `tenure tenant remove {name} --yes` again finishes the removal",
            removed.hsm_slot_failures.len()
        );
    }
    Ok(())
}
