//! `tenure tenant update` and `tenure tenant rotate`: a tenant's intermediate
//! replaced, with new permits or a new key.

use anyhow::Result;
use clap::Args;

use crate::output;
use crate::{DataDir, PermitArgs, open_existing, overlap_hint};

/// Serials listed at most by the human output (`--json` lists them all).
const SHOWN_MAX: usize = 20;

#[derive(Args)]
pub struct UpdateArgs {
    /// The tenant.
    name: String,
    #[command(flatten)]
    permits: PermitArgs,
    #[command(flatten)]
    data: DataDir,
    /// Print the result as one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct RotateArgs {
    /// The tenant.
    name: String,
    #[command(flatten)]
    data: DataDir,
    /// Print the result as one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// `tenant update NAME --permit …`: new permits, a new intermediate
/// constrained to them, and the tenant's certificates outside them revoked.
pub fn update(args: UpdateArgs) -> Result<()> {
    let engine = open_existing(&args.data)?;
    let updated = engine.registry.update_tenant(&args.name, &args.permits.permits, args.permits.overlap()).map_err(overlap_hint)?;
    if args.json {
        println!("{}", serde_json::to_string(&updated)?);
        return Ok(());
    }
    println!("tenant:        {}", updated.tenant);
    println!("permits:       {}", updated.permits.join(", "));
    if !updated.changed {
        println!("unchanged:     the tenant has these permits already (`tenure tenant rotate` replaces its intermediate)");
        return Ok(());
    }
    println!(
        "intermediate:  issuer {} (was {}), valid until {}",
        updated.issuer_id,
        updated.previous_issuer_id,
        output::rfc3339(updated.not_after)
    );
    println!("revoked:       {} outside the new permits (privilegeWithdrawn)", output::count(updated.revoked.len(), "certificate"));
    for serial in updated.revoked.iter().take(SHOWN_MAX) {
        println!("  {serial}");
    }
    if updated.revoked.len() > SHOWN_MAX {
        println!("  … and {} more (`tenure cert list --tenant {}`)", updated.revoked.len() - SHOWN_MAX, updated.tenant);
    }
    Ok(())
}

/// `tenant rotate NAME`: a new key and intermediate with the same permits.
pub fn rotate(args: RotateArgs) -> Result<()> {
    let engine = open_existing(&args.data)?;
    let rotated = engine.registry.rotate_intermediate(&args.name).map_err(|e| anyhow::anyhow!("{}", e.detail))?;
    if args.json {
        println!("{}", serde_json::to_string(&rotated)?);
        return Ok(());
    }
    println!("tenant:        {}", rotated.tenant);
    println!("intermediate:  issuer {}, valid until {}", rotated.issuer_id, output::rfc3339(rotated.not_after));
    println!(
        "previous:      issuer {}, not revoked: its certificates stay valid until they expire and are renewed from the new one",
        rotated.previous_issuer_id
    );
    Ok(())
}
