//! `tenure bench provision`: a burst of resources that ask for a certificate,
//! added through the admin API, and the time until every one is provisioned.
//!
//! N resources (`<run>-<i>.<domain>`, attributes `certificate=auto` and a key:
//! the platform's own public key, or an age recipient with a delivery
//! directory) are POSTed C at a time; then each is polled
//! (`GET /v1/resources/{id}`) until its provisioning is no longer waiting. The
//! figure is the time from the first POST to the last resource provisioned;
//! the POSTs' latency is reported beside it (the registry's write path under
//! the burst).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use clap::Args;
use serde_json::{Value, json};

#[derive(Args)]
pub struct ProvisionArgs {
    /// The admin API's base URL, e.g. https://127.0.0.1:8444.
    #[arg(long)]
    pub admin: String,
    /// A file holding the admin bearer token (DIR/admin-token).
    #[arg(long)]
    pub token_file: PathBuf,
    /// A PEM file with the root the admin API's TLS certificate chains to (DIR/root.pem).
    #[arg(long)]
    pub root: PathBuf,
    /// The tenant the resources are added to; it must permit --domain.
    #[arg(long)]
    pub tenant: String,
    /// Names are `<run>-<i>.<domain>`.
    #[arg(long, default_value = "bench.example.com")]
    pub domain: String,
    /// How many resources in the burst.
    #[arg(long, default_value_t = 1000)]
    pub n: usize,
    /// How many POSTs (and later polls) in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Give each resource this age recipient (key-recipient: tenure generates the key and
    /// delivers it encrypted below --delivery-dir) instead of a platform public key.
    #[arg(long, requires = "delivery_dir")]
    pub recipient: Option<String>,
    /// With --recipient: each resource's delivery-dir is DIR/<name> (below the server's --delivery-root).
    #[arg(long)]
    pub delivery_dir: Option<PathBuf>,
    /// Give up waiting after this long.
    #[arg(long, default_value_t = 300)]
    pub timeout_seconds: u64,
    /// Print the result as one JSON object as well.
    #[arg(long)]
    pub json: bool,
}

fn client(root: &PathBuf) -> Result<reqwest::Client> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(root).with_context(|| format!("reading {}", root.display()))? {
        roots.add(cert.with_context(|| format!("{} holds a malformed certificate", root.display()))?)?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(reqwest::Client::builder().tls_backend_preconfigured(tls).build()?)
}

/// Runs the burst and prints what it measured.
pub async fn provision(args: &ProvisionArgs) -> Result<()> {
    if args.n == 0 || args.concurrency == 0 {
        bail!("--n and --concurrency must be at least 1");
    }
    let token = std::fs::read_to_string(&args.token_file).with_context(|| format!("reading {}", args.token_file.display()))?;
    let token = Arc::new(token.trim().to_string());
    let http = client(&args.root)?;
    let base = args.admin.trim_end_matches('/').to_string();
    // One platform key for every resource: what is measured is the server.
    let key = {
        use rcgen::PublicKeyData as _;
        base64::engine::general_purpose::STANDARD.encode(rcgen::KeyPair::generate()?.subject_public_key_info())
    };
    let run = format!("p{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() % 0xffff_ffff);
    let started = Instant::now();

    // The burst: every POST, C at a time.
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.min(args.n) {
        let (http, token, base, next, key, run) = (http.clone(), token.clone(), base.clone(), next.clone(), key.clone(), run.clone());
        let (n, tenant, domain, recipient, dir) =
            (args.n, args.tenant.clone(), args.domain.clone(), args.recipient.clone(), args.delivery_dir.clone());
        tasks.push(tokio::spawn(async move {
            let mut out: Vec<(String, Duration)> = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(out);
                }
                let name = format!("{run}-{i}.{domain}");
                let attributes = match (&recipient, &dir) {
                    (Some(r), Some(d)) => json!({ "certificate": "auto", "key-recipient": r, "delivery-dir": d.join(&name) }),
                    _ => json!({ "certificate": "auto", "public-key": key }),
                };
                let body = json!({ "tenant": tenant, "kind": "vm", "names": [name], "attributes": attributes });
                let t = Instant::now();
                let resp = http
                    .post(format!("{base}/v1/resources"))
                    .bearer_auth(&*token)
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await?;
                let status = resp.status();
                let v: Value = serde_json::from_slice(&resp.bytes().await?).unwrap_or_default();
                if !status.is_success() {
                    bail!("POST /v1/resources: {status} {v}");
                }
                let id = v["id"].as_str().context("the answer names no id")?.to_string();
                out.push((id, t.elapsed()));
            }
        }));
    }
    let mut ids = Vec::with_capacity(args.n);
    let mut post_latency = Vec::with_capacity(args.n);
    for t in tasks {
        for (id, l) in t.await?? {
            ids.push(id);
            post_latency.push(l);
        }
    }
    let added = started.elapsed();

    // Then each polled until its provisioning no longer waits.
    let deadline = started + Duration::from_secs(args.timeout_seconds);
    let ids = Arc::new(ids);
    let next = Arc::new(AtomicUsize::new(0));
    let (provisioned, denied) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    // Few pollers, each waiting 100 ms on a resource still waiting: the
    // polls must not be the load that slows the server down.
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.clamp(1, 4).min(args.n) {
        let (http, token, base, next, ids) = (http.clone(), token.clone(), base.clone(), next.clone(), ids.clone());
        let (provisioned, denied) = (provisioned.clone(), denied.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(i) else { return Ok::<_, anyhow::Error>(()) };
                loop {
                    let resp = http.get(format!("{base}/v1/resources/{id}")).bearer_auth(&*token).send().await?;
                    let v: Value = serde_json::from_slice(&resp.bytes().await?)?;
                    let p = &v["provisioning"];
                    if p["pending"] == false {
                        if p["certificate"].is_string() { &provisioned } else { &denied }.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    if Instant::now() > deadline {
                        bail!("resource {id} still waits for provisioning after the timeout");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let all = started.elapsed();
    post_latency.sort();
    let pct = |p: f64| {
        let i = ((post_latency.len() as f64 * p).ceil() as usize).clamp(1, post_latency.len()) - 1;
        post_latency[i].as_secs_f64() * 1000.0
    };
    let (provisioned, denied) = (provisioned.load(Ordering::Relaxed), denied.load(Ordering::Relaxed));
    println!(
        "{} resources added in {:.2} s (POST p50 {:.1} ms, p99 {:.1} ms); {provisioned} provisioned, {denied} not, all in {:.2} s: {:.0} resources/s",
        args.n,
        added.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        all.as_secs_f64(),
        args.n as f64 / all.as_secs_f64()
    );
    if args.json {
        println!(
            "{}",
            json!({ "n": args.n, "added_seconds": added.as_secs_f64(), "seconds": all.as_secs_f64(), "provisioned": provisioned,
                    "denied": denied, "post_p50_ms": pct(0.5), "post_p99_ms": pct(0.99) })
        );
    }
    if denied > 0 {
        bail!("{denied} of {} resources were not provisioned", args.n);
    }
    Ok(())
}
