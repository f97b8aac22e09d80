//! `tenure bench seed`: fills a data directory's registry with many tenants
//! and resources, as a platform's would look after years, so the ACME path and
//! the renewal sweep can be measured against a large registry (issue 17;
//! `examples/bench/registry-scale.sh`).
//!
//! Everything goes through the engine's own registry service, as `tenant add`
//! and `resource add` do: tenant `seed-<i>` is made with its intermediate and
//! EAB key, permitted `t<i>.<domain>` and the address block `10.x.y.z/26`;
//! resource `k` belongs to tenant `k mod T` and holds `r<k>.t<i>.<domain>`,
//! every fourth one an address of its tenant's block as well, every
//! `--zone-every`-th one (if set) the zone `z<k>.t<i>.<domain>` instead of a
//! name. No resource asks for a certificate, so nothing is queued for
//! provisioning. Seed once, then copy the directory (`cp -a`) for each run.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use tenure_engine::registry::{NewResource, PermitOverlap};
use tenure_engine::{Engine, Registry};

/// The most tenants one seed makes (their address blocks are /26s of 10.0.0.0/8).
const MAX_TENANTS: usize = 262_144;
/// Tenants stored per transaction.
const TENANT_BATCH: usize = 500;
/// The most resources one seed makes.
const MAX_RESOURCES: usize = 20_000_000;

#[derive(Args)]
pub struct SeedArgs {
    #[command(flatten)]
    pub data: crate::DataDir,
    /// How many tenants to make (`seed-0` … ), each with its own permitted zone.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=MAX_TENANTS as u64))]
    pub tenants: u64,
    /// How many resources to add, spread evenly over the tenants.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(0..=MAX_RESOURCES as u64))]
    pub resources: u64,
    /// The domain the tenants' zones are under: tenant i is permitted `t<i>.<DOMAIN>`.
    #[arg(long, default_value = "seed.example")]
    pub domain: String,
    /// Every N-th resource holds a zone instead of a name (0: none). Adding a zone
    /// looks for names under it (BENCHMARKS.md, issue 17), so zones seed slower.
    #[arg(long, default_value_t = 0)]
    pub zone_every: u64,
    /// Threads adding in parallel (writes still go one at a time through the store).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub threads: u64,
    /// Print the result as one JSON object as well.
    #[arg(long)]
    pub json: bool,
}

/// Progress on standard error, at most every few seconds: the rate of the
/// last stretch, so a rate that falls as the registry grows shows.
struct Progress {
    what: &'static str,
    total: usize,
    done: AtomicUsize,
    started: Instant,
    last: Mutex<(Instant, usize)>,
}

impl Progress {
    fn new(what: &'static str, total: usize) -> Progress {
        let now = Instant::now();
        Progress { what, total, done: AtomicUsize::new(0), started: now, last: Mutex::new((now, 0)) }
    }

    fn add(&self, n: usize) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        let Ok(mut last) = self.last.try_lock() else { return };
        let now = Instant::now();
        if now.duration_since(last.0) < Duration::from_secs(5) && done != self.total {
            return;
        }
        let stretch = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-9);
        eprintln!(
            "seed: {} {done}/{} ({:.0}/s now, {:.0}/s overall, {:.0} s)",
            self.what,
            self.total,
            stretch,
            done as f64 / self.started.elapsed().as_secs_f64().max(1e-9),
            self.started.elapsed().as_secs_f64()
        );
        *last = (now, done);
    }
}

fn tenant_name(i: usize) -> String {
    format!("seed-{i}")
}

/// Tenant i's address block: the i-th /26 of 10.0.0.0/8.
fn tenant_block(i: usize) -> [u8; 4] {
    let base = (i as u32) << 6;
    [10, (base >> 16) as u8, (base >> 8) as u8, base as u8]
}

fn tenant_permits(i: usize, domain: &str) -> Vec<String> {
    let [a, b, c, d] = tenant_block(i);
    vec![format!("t{i}.{domain}"), format!("{a}.{b}.{c}.{d}/26")]
}

fn resource(k: usize, tenants: usize, domain: &str, zone_every: usize) -> NewResource {
    let i = k % tenants;
    let kinds = ["vm", "lb", "service"];
    let mut r = NewResource {
        tenant: tenant_name(i),
        kind: kinds[k % kinds.len()].to_string(),
        attributes: [("team".to_string(), format!("team-{}", k % 97)), ("seed".to_string(), "1".to_string())].into(),
        ..NewResource::default()
    };
    if zone_every > 0 && k.is_multiple_of(zone_every) {
        r.zones = vec![format!("z{k}.t{i}.{domain}")];
    } else {
        r.names = vec![format!("r{k}.t{i}.{domain}")];
    }
    if k.is_multiple_of(4) {
        // The n-th resource of the tenant gets host (n/4 mod 62) + 1 of its block.
        let [a, b, c, d] = tenant_block(i);
        let host = ((k / tenants / 4) % 62) as u8 + 1;
        r.addresses = vec![format!("{a}.{b}.{c}.{}", d + host)];
    }
    r
}

/// Runs `f(i)` for every i in `0..n` on `threads` threads; `f` says how many items it made.
fn parallel(n: usize, threads: usize, progress: &Progress, f: &(dyn Fn(usize) -> Result<usize> + Sync)) -> Result<()> {
    let next = AtomicUsize::new(0);
    let failed: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n || failed.lock().map(|f| f.is_some()).unwrap_or(true) {
                        return;
                    }
                    match f(i) {
                        Ok(made) => progress.add(made),
                        Err(e) => {
                            if let Ok(mut f) = failed.lock() {
                                f.get_or_insert(e);
                            }
                            return;
                        }
                    }
                }
            });
        }
    });
    match failed.into_inner() {
        Ok(Some(e)) => Err(e),
        Ok(None) => Ok(()),
        Err(_) => bail!("a seeding thread panicked"),
    }
}

fn database_bytes(dir: &Path) -> u64 {
    ["tenure.db", "tenure.db-wal"].iter().filter_map(|f| std::fs::metadata(dir.join(f)).ok()).map(|m| m.len()).sum()
}

pub fn seed(args: &SeedArgs) -> Result<()> {
    let tenants = args.tenants as usize;
    let resources = args.resources as usize;
    let threads = args.threads as usize;
    let zone_every = args.zone_every as usize;
    let domain =
        tenure_engine::identifier::normalize_dns(&args.domain).map_err(|e| anyhow::anyhow!("--domain {:?}: {}", args.domain, e.detail))?;
    let engine = Engine::open(&args.data.dir, args.data.config())
        .with_context(|| format!("opening or making the data directory {}", args.data.dir.display()))?;
    let registry: &Registry = &engine.registry;
    if registry.tenant(&tenant_name(0))?.is_some() {
        bail!("{} is seeded already (tenant {} exists): seed a new directory, or copy this one", args.data.dir.display(), tenant_name(0));
    }

    let started = Instant::now();
    let progress = Progress::new("tenants", tenants);
    // Made in batches through the registry (each tenant with its intermediate
    // and EAB key, as `tenant add` makes it), stored a batch per transaction:
    // one by one, each tenant's permit rule reads every tenant before it
    // (BENCHMARKS.md, issue 17), which makes 100,000 take hours.
    parallel(tenants.div_ceil(TENANT_BATCH), threads, &progress, &|b| {
        let range = b * TENANT_BATCH..((b + 1) * TENANT_BATCH).min(tenants);
        let names: Vec<(String, Vec<String>)> = range.map(|i| (tenant_name(i), tenant_permits(i, &domain))).collect();
        let batch: Vec<(&str, Option<&[String]>)> = names.iter().map(|(n, p)| (n.as_str(), Some(p.as_slice()))).collect();
        // Allow: the seed's permits are disjoint by construction, and the
        // refusal rule's parse of every other tenant's permits is not what is measured.
        let made = registry
            .create_tenants_with(&batch, PermitOverlap::Allow)
            .with_context(|| format!("creating tenants {}..", names.first().map_or("", |(n, _)| n.as_str())))?;
        Ok(made.len())
    })?;
    let tenants_took = started.elapsed();

    let progress = Progress::new("resources", resources);
    let resources_started = Instant::now();
    parallel(resources, threads, &progress, &|k| {
        registry.add_resource(resource(k, tenants, &domain, zone_every)).with_context(|| format!("adding resource {k}"))?;
        Ok(1)
    })?;
    let resources_took = resources_started.elapsed();
    drop(engine);

    let bytes = database_bytes(&args.data.dir);
    let rate = |n: usize, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
    println!(
        "seeded {tenants} tenants in {:.1} s ({:.0}/s) and {resources} resources in {:.1} s ({:.0}/s), {threads} threads; database {:.0} MB",
        tenants_took.as_secs_f64(),
        rate(tenants, tenants_took),
        resources_took.as_secs_f64(),
        rate(resources, resources_took),
        bytes as f64 / 1e6,
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "tenants": tenants,
                "resources": resources,
                "tenants_seconds": tenants_took.as_secs_f64(),
                "resources_seconds": resources_took.as_secs_f64(),
                "threads": threads,
                "database_bytes": bytes,
            })
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_identifiers_lie_in_their_tenants_permits() {
        assert_eq!(tenant_permits(0, "seed.example"), ["t0.seed.example", "10.0.0.0/26"]);
        assert_eq!(tenant_permits(262_143, "seed.example"), ["t262143.seed.example", "10.255.255.192/26"]);
        let r = resource(8, 3, "seed.example", 0);
        assert_eq!((r.tenant.as_str(), r.names.as_slice()), ("seed-2", &["r8.t2.seed.example".to_string()][..]));
        assert_eq!(r.addresses, ["10.0.0.129"]);
        assert_eq!(resource(6, 3, "seed.example", 3).zones, ["z6.t0.seed.example"]);
    }
}
