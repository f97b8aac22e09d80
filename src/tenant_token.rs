//! `tenure tenant token NAME [--rotate]`: issues the tenant's admin-API token
//! and prints it once (only its hash is stored, so it cannot be shown again).

use anyhow::Result;
use clap::Args;

use crate::{DataDir, open_existing};

/// `tenure tenant token`.
#[derive(Args)]
pub struct TokenArgs {
    /// The tenant.
    name: String,
    /// Replace the tenant's token: the old one stops working at once, on every server.
    #[arg(long)]
    rotate: bool,
    #[command(flatten)]
    data: DataDir,
    /// Print the result as one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Issues (or with `--rotate` replaces) the token and prints it.
pub fn run(args: TokenArgs) -> Result<()> {
    let TokenArgs { name, rotate, data, json } = args;
    let registry = open_existing(&data)?.registry;
    let token = match registry.issue_tenant_token(&name, rotate) {
        Ok(token) => token,
        Err(e) if e.kind == tenure_engine::ErrorKind::Conflict => {
            anyhow::bail!("{}: `tenure tenant token {name} --rotate` replaces it (the current one stops working)", e.detail)
        }
        Err(e) => return Err(e.into()),
    };
    if json {
        println!("{}", serde_json::json!({ "tenant": name, "token": token }));
    } else {
        println!("{token}");
        eprintln!("this token is shown only once: only its hash is kept; `--rotate` issues a new one");
    }
    Ok(())
}
