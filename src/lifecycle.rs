//! `tenure cert …` and `tenure renew --now`: the certificate lifecycle from the command line.

use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use tenure_engine::model::{Certificate, CertificateLifecycle, now};

use crate::{DataDir, open_existing};

#[derive(Subcommand)]
pub enum CertCommand {
    /// List certificates, newest first (one JSON object per line with --json).
    List {
        #[arg(long)]
        tenant: Option<String>,
        /// Only certificates bound to this resource.
        #[arg(long)]
        resource: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: i64,
        #[command(flatten)]
        data: DataDir,
        #[arg(long)]
        json: bool,
    },
    /// Show one certificate: binding, renewal plan, predecessor and successor, deliveries.
    Show {
        serial: String,
        /// Also print the PEM chain.
        #[arg(long)]
        pem: bool,
        #[command(flatten)]
        data: DataDir,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct RenewArgs {
    /// Do now what the server's schedule would: provision the resources that
    /// wait for a certificate, run a renewal sweep, deliver.
    #[arg(long, required = true)]
    now: bool,
    /// Renew this resource's certificates now, even before their window opens.
    #[arg(long)]
    resource: Option<String>,
    #[command(flatten)]
    data: DataDir,
    #[arg(long)]
    json: bool,
}

fn status(c: &Certificate) -> &'static str {
    if c.revoked_at.is_some() {
        "revoked"
    } else if c.not_after <= now() {
        "expired"
    } else {
        "valid"
    }
}

fn to_json(c: &Certificate, l: &CertificateLifecycle) -> serde_json::Value {
    json!({
        "serial": c.serial,
        "tenant": c.tenant,
        "status": status(c),
        "identifiers": c.identifiers.iter().map(|i| i.value.as_str()).collect::<Vec<_>>(),
        "not_before": c.not_before,
        "not_after": c.not_after,
        "revoked_at": c.revoked_at,
        "revocation_reason": c.revocation_reason,
        "profile": l.profile,
        "resources": l.resources,
        "renewal": l.renewal.as_str(),
        "renew_at": l.renew_at,
        "renewal_note": l.note,
        "predecessor": l.predecessor,
        "successor": l.successor,
        "account": c.account_id,
        "order": c.order_id,
        "trigger": l.trigger.as_str(),
        "generation": l.generation,
        "key_source": l.key_source.as_str(),
        "policy": l.policy,
    })
}

pub fn cert(command: CertCommand) -> Result<()> {
    match command {
        CertCommand::List { tenant, resource, limit, data, json } => {
            for (c, l) in open_existing(&data)?.lifecycle.certificates(tenant.as_deref(), resource.as_deref(), limit)? {
                if json {
                    println!("{}", to_json(&c, &l));
                } else {
                    let names: Vec<&str> = c.identifiers.iter().map(|i| i.value.as_str()).collect();
                    println!(
                        "{}\t{}\t{}\t{}\tgen {}\t{}\t{}\t{}",
                        c.serial,
                        c.tenant,
                        status(&c),
                        l.renewal.as_str(),
                        l.generation,
                        c.not_after,
                        names.join(","),
                        l.resources.join(",")
                    );
                }
            }
        }
        CertCommand::Show { serial, pem, data, json } => {
            let lifecycle = open_existing(&data)?.lifecycle;
            let serial = serial.to_ascii_lowercase().replace(':', "");
            let (c, l) = lifecycle.certificate_record(&serial)?.with_context(|| format!("no certificate with serial {serial}"))?;
            let deliveries = lifecycle.deliveries_of(&serial)?;
            if json {
                let mut v = to_json(&c, &l);
                v["deliveries"] = deliveries
                    .iter()
                    .map(|d| json!({ "event": d.event, "kind": d.kind.as_str(), "target": d.target, "state": d.state.as_str(), "attempts": d.attempts, "last_error": d.last_error }))
                    .collect();
                if pem {
                    v["pem"] = lifecycle.certificate_chain_pem(&c)?.into();
                }
                println!("{v}");
            } else {
                let v = to_json(&c, &l);
                if let Some(o) = v.as_object() {
                    for (k, val) in o {
                        if !val.is_null() {
                            println!("{k:<18} {}", val.to_string().trim_matches('"'));
                        }
                    }
                }
                for d in deliveries {
                    println!(
                        "delivery           {} {} {} {} (attempts {}) {}",
                        d.event,
                        d.kind.as_str(),
                        d.target,
                        d.state.as_str(),
                        d.attempts,
                        d.last_error.unwrap_or_default()
                    );
                }
                if pem {
                    print!("{}", lifecycle.certificate_chain_pem(&c)?);
                }
            }
        }
    }
    Ok(())
}

pub fn renew(args: RenewArgs) -> Result<()> {
    let _ = args.now;
    let lifecycle = open_existing(&args.data)?.lifecycle;
    let provisioned = match &args.resource {
        Some(_) => Default::default(),
        None => lifecycle.provision_pending()?,
    };
    let sweep = match &args.resource {
        Some(id) => lifecycle.renew_resource_now(id)?,
        None => lifecycle.sweep_renewals()?,
    };
    // Deliver what was renewed, whether or not a server is running.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let webhooks = tenure_acme::webhook::HttpWebhooks::new(runtime.handle().clone()).map_err(anyhow::Error::msg)?;
    let delivered = lifecycle.deliver_pending(&webhooks)?;
    if args.json {
        println!(
            "{}",
            json!({
                "provisioned": provisioned.provisioned, "provisioning_denied": provisioned.denied,
                "provisioning_deferred": provisioned.deferred, "distributed": provisioned.distributed,
                "renewed": sweep.renewed, "lapsed": sweep.lapsed, "deferred": sweep.deferred, "skipped": sweep.skipped,
                "delivered": delivered.delivered, "delivery_retrying": delivered.retrying, "delivery_failed": delivered.failed,
                "ms": sweep.elapsed.as_millis() as u64,
            })
        );
    } else {
        println!(
            "provisioned {}, denied {}, deferred {}; renewed {}, lapsed {}, deferred {}, skipped {} in {} ms; delivered {}, retrying {}, failed {}",
            provisioned.provisioned,
            provisioned.denied,
            provisioned.deferred,
            sweep.renewed,
            sweep.lapsed,
            sweep.deferred,
            sweep.skipped,
            sweep.elapsed.as_millis(),
            delivered.delivered,
            delivered.retrying,
            delivered.failed
        );
    }
    Ok(())
}

/// Used by `serve`: the scheduler thread with the HTTP webhook sender.
pub fn start_scheduler(
    lifecycle: tenure_engine::Lifecycle,
    runtime: tokio::runtime::Handle,
) -> Result<tenure_engine::lifecycle::scheduler::Scheduler> {
    let webhooks = tenure_acme::webhook::HttpWebhooks::new(runtime).map_err(anyhow::Error::msg)?;
    Ok(tenure_engine::lifecycle::scheduler::Scheduler::spawn(lifecycle, Arc::new(webhooks))?)
}
