//! `tenure bench issue`: a load generator for any ACME server (tenure, Pebble,
//! Boulder). It drives N complete issuances, C at a time, over A accounts with
//! instant-acme, and reports issuances per second and latency percentiles.
//!
//! What is measured is the server: accounts are created and the TLS
//! connections opened before the clock starts, connections are kept alive and
//! shared by the accounts, and certificate keys are generated up front (CSRs
//! are signed per issuance, as a real client does).
//!
//! One issuance, timed from new-order to certificate download:
//! new-nonce, new-order, one POST-as-GET per authorization; for each pending
//! authorization (when the server wants proof) a challenge POST, then order
//! polls until ready; finalize; order polls while processing; download.
//! With `--challenge none` the client serves no challenge response: it is for
//! servers that need none (tenure with names the tenant holds: authorizations
//! are valid at once) or accept any (Pebble with `PEBBLE_VA_ALWAYS_VALID=1`,
//! which still wants the challenge POST). With `--challenge http-01` the
//! client answers on `--http01-listen`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AuthorizationStatus, BodyWrapper, ChallengeType, ExternalAccountKey, Identifier, NewAccount, NewOrder, OrderStatus,
};
use rcgen::{CertificateParams, DistinguishedName, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Drive N complete issuances against an ACME server and report the rate and latency.
    Issue(IssueArgs),
    /// Add a burst of N resources with certificate=auto through tenure's admin API and time
    /// until every one is provisioned.
    Provision(crate::provision_bench::ProvisionArgs),
    /// Fill a data directory's registry with many tenants and resources (each tenant with
    /// its own permitted zone), to measure the ACME path and the sweep against it.
    Seed(crate::bench_seed::SeedArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ChallengeMode {
    /// Answer no challenge: authorizations are valid at once, or the server validates anything.
    None,
    /// Serve http-01 key authorizations on --http01-listen.
    #[value(name = "http-01")]
    Http01,
}

#[derive(Args)]
pub struct IssueArgs {
    /// The server's directory URL. Repeat it for servers sharing one database:
    /// the accounts are spread over them in turn (account i on server i mod k),
    /// so the load alternates between the servers.
    #[arg(long, required = true)]
    pub directory: Vec<String>,
    /// A PEM file with the root that the server's TLS certificate chains to.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// External Account Binding key id (binds the accounts to a tenant).
    #[arg(long, requires = "eab_hmac")]
    pub eab_kid: Option<String>,
    /// External Account Binding HMAC key, base64url (which may begin with `-`).
    #[arg(long, requires = "eab_kid", allow_hyphen_values = true)]
    pub eab_hmac: Option<String>,
    /// How many issuances in all.
    #[arg(long, default_value_t = 1000)]
    pub n: usize,
    /// How many issuances in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// How many ACME accounts share the load (default: the concurrency).
    #[arg(long)]
    pub accounts: Option<usize>,
    /// How many TLS connections the accounts share (HTTP/2 multiplexes each).
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// How the client answers the authorizations the server leaves pending.
    #[arg(long, value_enum, default_value_t = ChallengeMode::None)]
    pub challenge: ChallengeMode,
    /// Where the http-01 responder listens (with --challenge http-01).
    #[arg(long, default_value = "127.0.0.1:5002")]
    pub http01_listen: SocketAddr,
    /// Names are `<run>-<i>.<domain>`; for tenure, a zone the tenant holds.
    #[arg(long, default_value = "bench.example.com")]
    pub domain: String,
    /// Delay between polls of an order that is pending or processing.
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    pub poll: Duration,
    /// An issuance taking longer than this counts as failed (a server that hangs ends the run).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Start issuances at this many per second at most (each still waits for a free slot
    /// of --concurrency): a steady load whose latency shows what other work costs it,
    /// where an unpaced run saturates the machine by itself.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Keep starting issuances after one fails (by default the run winds down:
    /// a server that has stopped answering would otherwise cost N × --timeout).
    #[arg(long)]
    pub keep_going: bool,
    /// Print the result as one JSON object as well.
    #[arg(long)]
    pub json: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.find(|c: char| !c.is_ascii_digit()).map(|i| s.split_at(i)).unwrap_or((s, "ms"));
    let n: u64 = n.parse().map_err(|_| format!("{s:?} is not a duration like 10ms or 1s"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        _ => Err(format!("{s:?}: the unit must be ms or s")),
    }
}

pub fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Issue(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let report = runtime.block_on(issue(&args))?;
            report.print(&args);
            if report.failed > 0 {
                bail!(
                    "{} of {} issuances failed ({} not started); first error: {}",
                    report.failed,
                    args.n,
                    report.not_started,
                    report.first_error.unwrap_or_default()
                );
            }
            Ok(())
        }
        BenchCommand::Provision(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(crate::provision_bench::provision(&args))
        }
        BenchCommand::Seed(args) => crate::bench_seed::seed(&args),
    }
}

/// What one run measured.
pub struct Report {
    pub completed: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    /// Issuances never started because an earlier one failed (see `--keep-going`).
    pub not_started: usize,
    pub elapsed: Duration,
    /// From the start to the last completed issuance: when a server stalls,
    /// `completed / live` is its rate while it still answered.
    pub live: Duration,
    /// Latencies of the completed issuances, sorted.
    pub latencies: Vec<Duration>,
}

impl Report {
    pub fn rate(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The rate up to the last completed issuance (equals `rate` when nothing failed).
    pub fn live_rate(&self) -> f64 {
        self.completed as f64 / self.live.as_secs_f64().max(1e-9)
    }

    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len()) - 1;
        self.latencies[i]
    }

    fn print(&self, args: &IssueArgs) {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{} issuances ({} failed) in {:.2} s at concurrency {}: {:.1} issuances/s; latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms",
            self.completed,
            self.failed,
            self.elapsed.as_secs_f64(),
            args.concurrency,
            self.rate(),
            ms(self.percentile(0.50)),
            ms(self.percentile(0.90)),
            ms(self.percentile(0.99)),
        );
        if self.failed > 0 {
            println!(
                "  {} failed, {} not started; {} completed in the first {:.2} s: {:.1} issuances/s while the server answered",
                self.failed,
                self.not_started,
                self.completed,
                self.live.as_secs_f64(),
                self.live_rate()
            );
        }
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "completed": self.completed,
                    "failed": self.failed,
                    "not_started": self.not_started,
                    "seconds": self.elapsed.as_secs_f64(),
                    "live_seconds": self.live.as_secs_f64(),
                    "live_rate": self.live_rate(),
                    "concurrency": args.concurrency,
                    "rate": self.rate(),
                    "p50_ms": ms(self.percentile(0.50)),
                    "p90_ms": ms(self.percentile(0.90)),
                    "p99_ms": ms(self.percentile(0.99)),
                })
            );
        }
    }
}

type Http = HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>;

fn http_client(root: Option<&PathBuf>) -> Result<Http> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = root {
        for cert in CertificateDer::pem_file_iter(path).with_context(|| format!("reading {}", path.display()))? {
            roots.add(cert.with_context(|| format!("{} holds a malformed certificate", path.display()))?)?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Without TCP_NODELAY a request written as two TLS records waits for the
    // server's delayed ACK (40 ms) before its second half leaves: Nagle.
    let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.enforce_http(false);
    let connector =
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_only().enable_http1().enable_http2().wrap_connector(tcp);
    Ok(HyperClient::builder(TokioExecutor::new()).build(connector))
}

/// Runs one load: creates the accounts, then N issuances C at a time.
pub async fn issue(args: &IssueArgs) -> Result<Report> {
    if args.concurrency == 0 || args.n == 0 {
        bail!("--n and --concurrency must be at least 1");
    }
    let eab = match (&args.eab_kid, &args.eab_hmac) {
        (Some(kid), Some(hmac)) => {
            let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(hmac.trim_end_matches('='))
                .context("--eab-hmac is not base64url")?;
            Some(ExternalAccountKey::new(kid.clone(), &key))
        }
        _ => None,
    };
    let http01 = match args.challenge {
        ChallengeMode::Http01 => Some(Http01::start(args.http01_listen).await?),
        ChallengeMode::None => None,
    };

    // Each HTTP client is one pool, and with HTTP/2 one connection.
    let clients: Vec<Http> = (0..args.connections.max(1)).map(|_| http_client(args.root.as_ref())).collect::<Result<_>>()?;
    let n_accounts = args.accounts.unwrap_or(args.concurrency).max(1);
    let mut accounts = Vec::with_capacity(n_accounts);
    for i in 0..n_accounts {
        let client = clients[i % clients.len()].clone();
        let (account, _) = Account::builder_with_http(Box::new(client))
            .create(
                &NewAccount { contact: &[], terms_of_service_agreed: true, only_return_existing: false },
                args.directory[i % args.directory.len()].clone(),
                eab.as_ref(),
            )
            .await
            .with_context(|| format!("creating account {} of {n_accounts} at {}", i + 1, args.directory[i % args.directory.len()]))?;
        accounts.push(account);
    }
    // Certificate keys: P-256, generated before the clock starts and reused.
    let keys: Vec<KeyPair> = (0..args.concurrency.min(64)).map(|_| KeyPair::generate()).collect::<Result<_, _>>()?;
    let keys = Arc::new(keys);
    let run = format!("{:08x}", rand_u32());

    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // Issuances done so far and their rate, on a terminal only (the report is on stdout).
    let progress = crate::output::Progress::start(Some(args.n as u64), "{bar:30} {pos}/{len} issuances  {per_sec}  {msg}{elapsed}");
    let failures = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::with_capacity(args.concurrency);
    for w in 0..args.concurrency {
        let (next, stop, keys, accounts) = (next.clone(), stop.clone(), keys.clone(), accounts.clone());
        let (bar, failures) = (progress.bar().clone(), failures.clone());
        let keep_going = args.keep_going;
        let (n, domain, run, poll, http01) = (args.n, args.domain.clone(), run.clone(), args.poll, http01.clone());
        let timeout = args.timeout;
        let pace = args.rate.filter(|r| r.is_finite() && *r > 0.0);
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = Vec::new();
            let mut last_done = Duration::ZERO;
            loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                if let Some(rate) = pace {
                    // Issuance i starts no earlier than i / rate after the start.
                    tokio::time::sleep_until((started + Duration::from_secs_f64(i as f64 / rate)).into()).await;
                }
                let account = &accounts[i % accounts.len()];
                let name = format!("{run}-{i}.{domain}");
                let t = Instant::now();
                let one = issue_one(account, &name, &keys[w % keys.len()], poll, http01.as_ref());
                let errors_before = errors.len();
                match tokio::time::timeout(timeout, one).await {
                    Ok(Ok(_)) => {
                        latencies.push(t.elapsed());
                        last_done = started.elapsed();
                    }
                    Ok(Err(e)) => errors.push(format!("{name}: {e:#}")),
                    Err(_) => errors.push(format!("{name}: no certificate within {timeout:?}")),
                }
                bar.inc(1);
                if errors.len() > errors_before {
                    let failed = failures.fetch_add(1, Ordering::Relaxed) + 1;
                    bar.set_message(format!("{failed} failed  "));
                }
                if !errors.is_empty() && !keep_going {
                    stop.store(true, Ordering::Relaxed);
                }
            }
            (latencies, errors, last_done)
        }));
    }
    let mut latencies = Vec::with_capacity(args.n);
    let mut errors = Vec::new();
    let mut live = Duration::ZERO;
    for w in workers {
        let (l, e, last_done) = w.await.context("a load worker panicked")?;
        latencies.extend(l);
        errors.extend(e);
        live = live.max(last_done);
    }
    let elapsed = started.elapsed();
    drop(progress);
    latencies.sort();
    let (completed, failed) = (latencies.len(), errors.len());
    Ok(Report {
        completed,
        failed,
        first_error: errors.into_iter().next(),
        not_started: args.n - completed - failed,
        elapsed,
        live,
        latencies,
    })
}

/// One issuance for `name`; returns the PEM chain.
pub async fn issue_one(account: &Account, name: &str, key: &KeyPair, poll: Duration, http01: Option<&Http01>) -> Result<String> {
    let ids = [Identifier::Dns(name.to_string())];
    let mut order = account.new_order(&NewOrder::new(&ids)).await.context("new-order")?;
    let mut pending = false;
    {
        let mut authzs = order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = authz.context("fetching an authorization")?;
            match authz.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => bail!("authorization is {other:?}"),
            }
            pending = true;
            let mut ch = authz.challenge(ChallengeType::Http01).context("the server offers no http-01 challenge")?;
            if let Some(responder) = http01 {
                responder.set(&ch.token, ch.key_authorization().as_str());
            }
            ch.set_ready().await.context("answering the challenge")?;
        }
    }
    if pending || order.state().status == OrderStatus::Pending {
        loop {
            let state = order.refresh().await.context("polling the order")?;
            match state.status {
                OrderStatus::Ready => break,
                OrderStatus::Pending | OrderStatus::Processing => tokio::time::sleep(poll).await,
                other => bail!("order became {other:?}: {:?}", state.error),
            }
        }
    }
    let mut params = CertificateParams::new(vec![name.to_string()])?;
    params.distinguished_name = DistinguishedName::new();
    let csr = params.serialize_request(key)?;
    order.finalize_csr(csr.der()).await.context("finalize")?;
    loop {
        // `certificate` polls the order while it is processing, then downloads.
        match order.certificate().await.context("downloading the certificate")? {
            Some(chain) => return Ok(chain),
            None => tokio::time::sleep(poll).await,
        }
    }
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u32::from_le_bytes(b)
}

/// A minimal http-01 responder: serves key authorizations by token.
#[derive(Clone)]
pub struct Http01 {
    tokens: Arc<Mutex<HashMap<String, String>>>,
}

impl Http01 {
    async fn start(addr: SocketAddr) -> Result<Http01> {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding the http-01 responder on {addr}"))?;
        let tokens: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let served = tokens.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else { continue };
                let tokens = served.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]);
                    let path = req.split_whitespace().nth(1).unwrap_or("");
                    let token = path.strip_prefix("/.well-known/acme-challenge/").unwrap_or("");
                    let body = tokens.lock().ok().and_then(|t| t.get(token).cloned());
                    let resp = match body {
                        Some(b) => format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}", b.len()),
                        None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
                    };
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        Ok(Http01 { tokens })
    }

    fn set(&self, token: &str, key_authorization: &str) {
        if let Ok(mut t) = self.tokens.lock() {
            t.insert(token.to_string(), key_authorization.to_string());
        }
    }
}
