//! `tenure cert …` and `tenure renew`: the certificate lifecycle from the command line.

use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use tenure_engine::lifecycle::{certificate_json, certificate_status};

use crate::output::{self, Progress, Table};
use crate::{DataDir, Decisions, DeliveryBounds, open_existing, open_existing_with};

#[derive(Subcommand)]
pub enum CertCommand {
    /// List certificates, newest first (serial, tenant, status, renewal, generation, expiry, names, resources).
    List {
        /// Only this tenant's certificates.
        #[arg(long)]
        tenant: Option<String>,
        /// Only certificates bound to this resource.
        #[arg(long)]
        resource: Option<String>,
        /// At most this many of the newest.
        #[arg(long, default_value_t = 1000)]
        limit: i64,
        #[command(flatten)]
        data: DataDir,
        /// Print JSON Lines: one object per line (nothing when the list is empty).
        #[arg(long)]
        json: bool,
    },
    /// Show one certificate: binding, renewal plan, predecessor and successor, deliveries.
    Show {
        /// The certificate's serial number in hex (colons and case do not matter).
        serial: String,
        /// Also print the PEM chain.
        #[arg(long)]
        pem: bool,
        #[command(flatten)]
        data: DataDir,
        /// Print the result as one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct RenewArgs {
    /// Accepted for scripts written when it was required; `tenure renew` alone
    /// does the same.
    #[arg(long, hide = true)]
    now: bool,
    /// Renew this resource's certificates now, even before their window opens
    /// (nothing else is provisioned or swept).
    #[arg(long)]
    resource: Option<String>,
    #[command(flatten)]
    data: DataDir,
    #[command(flatten)]
    decisions: Decisions,
    #[command(flatten)]
    delivery: DeliveryBounds,
    /// Print what was done as one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn cert(command: CertCommand) -> Result<()> {
    match command {
        CertCommand::List { tenant, resource, limit, data, json } => {
            let listed = open_existing(&data)?.lifecycle.certificates(tenant.as_deref(), resource.as_deref(), limit)?;
            if json {
                for (c, l) in &listed {
                    println!("{}", certificate_json(c, l));
                }
                return Ok(());
            }
            let mut table = Table::new(&["SERIAL", "TENANT", "STATUS", "RENEWAL", "GEN", "NOT AFTER", "NAMES", "RESOURCES"]);
            for (c, l) in &listed {
                let names: Vec<&str> = c.identifiers.iter().map(|i| i.value.as_str()).collect();
                table.row(vec![
                    c.serial.clone(),
                    c.tenant.clone(),
                    certificate_status(c).to_string(),
                    l.renewal.as_str().to_string(),
                    l.generation.to_string(),
                    output::rfc3339(c.not_after),
                    names.join(","),
                    if l.resources.is_empty() { "-".to_string() } else { l.resources.join(",") },
                ]);
            }
            let mut empty = "no certificates".to_string();
            if let Some(t) = &tenant {
                empty.push_str(&format!(" of tenant {t}"));
            }
            if let Some(r) = &resource {
                empty.push_str(&format!(" bound to {r}"));
            }
            table.print_or(&empty);
        }
        CertCommand::Show { serial, pem, data, json } => {
            let lifecycle = open_existing(&data)?.lifecycle;
            let serial = serial.to_ascii_lowercase().replace(':', "");
            let (c, l) = lifecycle.certificate_record(&serial)?.with_context(|| format!("no certificate with serial {serial}"))?;
            let deliveries = lifecycle.deliveries_of(&serial)?;
            if json {
                let mut v = certificate_json(&c, &l);
                v["deliveries"] = deliveries
                    .iter()
                    .map(|d| json!({ "event": d.event, "kind": d.kind.as_str(), "target": d.target, "state": d.state.as_str(), "attempts": d.attempts, "last_error": d.last_error }))
                    .collect();
                if pem {
                    v["pem"] = lifecycle.certificate_chain_pem(&c)?.into();
                }
                println!("{v}");
            } else {
                let v = certificate_json(&c, &l);
                if let Some(o) = v.as_object() {
                    for (k, val) in o {
                        // Times for people; --json keeps Unix seconds.
                        let text = match (TIMES.contains(&k.as_str()), val.as_i64()) {
                            (true, Some(t)) => output::rfc3339(t),
                            _ => val.to_string().trim_matches('"').to_string(),
                        };
                        if !val.is_null() {
                            println!("{k:<18} {text}");
                        }
                    }
                }
                let mut table = Table::new(&["DELIVERY", "KIND", "TARGET", "STATE", "ATTEMPTS", "LAST ERROR"]);
                for d in deliveries {
                    table.row(vec![
                        d.event,
                        d.kind.as_str().to_string(),
                        d.target,
                        d.state.as_str().to_string(),
                        d.attempts.to_string(),
                        d.last_error.unwrap_or_default(),
                    ]);
                }
                table.print_or("deliveries         none");
                if pem {
                    print!("{}", lifecycle.certificate_chain_pem(&c)?);
                }
            }
        }
    }
    Ok(())
}

/// The fields of a certificate that are times (Unix seconds in JSON).
const TIMES: &[&str] = &["not_before", "not_after", "revoked_at", "renew_at"];

pub fn renew(args: RenewArgs) -> Result<()> {
    // `--now` is what `renew` does anyway; kept so older scripts still run.
    let _ = args.now;
    let mut config = args.data.config();
    args.decisions.apply(&mut config);
    args.delivery.apply(&mut config);
    let lifecycle = open_existing_with(&args.data, config)?.lifecycle;
    // What is done so far, on a terminal: a large backlog takes a while.
    let progress = Progress::start(None, "{spinner} {msg}  {elapsed}");
    let provisioned = match &args.resource {
        Some(_) => Default::default(),
        None => lifecycle.provision_pending_observed(|p| {
            progress.bar().set_message(format!("provisioning: {} provisioned, {} denied, {} deferred", p.provisioned, p.denied, p.deferred))
        })?,
    };
    let sweep = match &args.resource {
        Some(id) => {
            progress.bar().set_message(format!("renewing the certificates of {id}"));
            lifecycle.renew_resource_now(id)?
        }
        None => lifecycle.sweep_renewals_observed(
            |wait| {
                std::thread::sleep(wait);
                true
            },
            |s| {
                progress.bar().set_message(format!(
                    "provisioned {}; renewing: {} renewed, {} lapsed, {} deferred",
                    provisioned.provisioned, s.renewed, s.lapsed, s.deferred
                ))
            },
        )?,
    };
    progress.bar().set_message(format!("renewed {}; delivering", sweep.renewed));
    // Deliver what was renewed, whether or not a server is running.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let webhooks = tenure_acme::webhook::HttpWebhooks::new(runtime.handle().clone()).map_err(anyhow::Error::msg)?;
    let delivered = lifecycle.deliver_pending(&webhooks)?;
    drop(progress);
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
