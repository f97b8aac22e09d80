//! The renewal sweep at scale: seeds N certificates for held names through the
//! real RA path (newOrder → finalize, plugin decisions, SQLite on disk), makes
//! them all due, and times one `sweep_renewals` that reissues every one of them
//! (decide-renewal through the plugin host, sign, store, audit). Meanwhile a
//! second thread keeps issuing through the RA, to show the sweep does not
//! stall the ACME path.
//!
//!     cargo bench -p tenure-engine --bench sweep            # N = 100000
//!     TENURE_SWEEP_N=10000 cargo bench -p tenure-engine --bench sweep
//!
//! `TENURE_SWEEP_DATA=DIR` runs it in DIR instead of an empty temporary
//! directory: a copy of a registry seeded by `tenure bench seed` (issue 17,
//! `examples/bench/registry-scale.sh`). The directory is written to.
//!
//! Target (issue 4): 100,000 due certificates in under 60 s on the 2-core machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rcgen::{CertificateParams, KeyPair};
use tenure_engine::Identifier;
use tenure_engine::model::{Account, Order};
use tenure_engine::ra::{ExternalBinding, NewAccount, NewOrder};
use tenure_engine::registry::NewResource;
use tenure_engine::{Config, Engine, Ra};

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)].as_secs_f64() * 1e3
}

/// One issuance through the RA, as the ACME front end drives it.
fn issue(ra: &Ra, account: &Account, csr: &[u8], name: &str) -> Order {
    let order =
        ra.new_order(account, NewOrder { identifiers: vec![Identifier::dns(name)], profile: None, replaces: None }).expect("new order");
    ra.finalize(account, &order, csr, b"not the certificate key").expect("finalize")
}

fn main() {
    let n: usize = std::env::var("TENURE_SWEEP_N").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = std::env::var_os("TENURE_SWEEP_DATA").map_or_else(|| dir.path().to_path_buf(), std::path::PathBuf::from);
    let mut config = Config::default();
    // Due the moment they are issued: the whole seed is one sweep's work.
    config.lifecycle.renewal_fraction = 1.0;
    // Seeding places N orders from one account within seconds: no hourly bound here.
    config.rate_limits.orders_per_hour = u32::MAX;
    let authority = Arc::new(Engine::open(&data, config).expect("open"));
    // As `serve` does: certificates carry a CRL distribution point under it.
    authority.lifecycle.set_public_url("https://ca.bench.example:14000").expect("public url");
    let tenant = authority.registry.create_tenant("bench", Some(&["bench.example".to_string()])).expect("tenant");
    let (account, _) = authority
        .ra
        .create_account(NewAccount {
            jwk: "{}".into(),
            thumbprint: "bench-account".into(),
            contact: vec![],
            tos_agreed: true,
            eab: Some(ExternalBinding::for_key(&tenant.eab_kid, &tenant.eab_hmac, "bench-account")),
            source: None,
        })
        .expect("account");
    authority
        .registry
        .add_resource(NewResource {
            tenant: "bench".into(),
            kind: "zone".into(),
            zones: vec!["bench.example".into()],
            attributes: [("lifetime-seconds".to_string(), "86400".to_string())].into(),
            ..NewResource::default()
        })
        .expect("resource");
    let key = KeyPair::generate().expect("key");
    let csr_for =
        |name: &str| CertificateParams::new(vec![name.to_string()]).expect("params").serialize_request(&key).expect("csr").der().to_vec();
    let csr = csr_for("www.bench.example");

    let started = Instant::now();
    let seeders = std::thread::available_parallelism().map_or(1, |p| p.get());
    std::thread::scope(|s| {
        for k in 0..seeders {
            let (authority, account, csr) = (&authority, &account, &csr);
            s.spawn(move || {
                for _ in (k..n).step_by(seeders) {
                    issue(&authority.ra, account, csr, "www.bench.example");
                }
            });
        }
    });
    let seeded = started.elapsed();
    println!(
        "seeded {n} certificates through newOrder+finalize in {:.1} s ({:.0} issuances/s, {seeders} threads, no HTTP)",
        seeded.as_secs_f64(),
        n as f64 / seeded.as_secs_f64()
    );

    // A sweep takes what fell due before the second it starts in.
    std::thread::sleep(Duration::from_millis(1100));

    // The ACME path keeps issuing during the sweep (a name outside the sweep's set).
    let sweeping = Arc::new(AtomicBool::new(true));
    let side = {
        let authority = authority.clone();
        let sweeping = sweeping.clone();
        let csr = csr_for("side.bench.example");
        std::thread::spawn(move || {
            let mut latencies = Vec::new();
            while sweeping.load(Ordering::Relaxed) {
                let t = Instant::now();
                issue(&authority.ra, &account, &csr, "side.bench.example");
                latencies.push(t.elapsed());
                std::thread::sleep(Duration::from_millis(5));
            }
            latencies
        })
    };
    let report = authority.lifecycle.sweep_renewals().expect("sweep");
    sweeping.store(false, Ordering::Relaxed);
    let mut latencies = side.join().expect("side thread");
    latencies.sort();
    println!(
        "sweep: {} renewed, {} lapsed, {} deferred, {} skipped in {:.1} s ({:.0} renewals/s, {} batches of {})",
        report.renewed,
        report.lapsed,
        report.deferred,
        report.skipped,
        report.elapsed.as_secs_f64(),
        report.renewed as f64 / report.elapsed.as_secs_f64(),
        report.batches,
        authority.config().lifecycle.batch,
    );
    println!(
        "concurrent issuance during the sweep: n={} p50={:.1} ms p99={:.1} ms max={:.1} ms",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    );
    assert!(report.renewed >= n, "every seeded certificate must be renewed");
}
