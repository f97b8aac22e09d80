//! One policy decision through the real host: a fresh instance of registry-control
//! from its template, one registry lookup (`holder`), the answer checked. Then a chain of two.
//!
//!     cargo bench -p tenure-engine --bench decision
//!
//! Target (DESIGN.md): p50 ≤ 10 µs, p99 ≤ 50 µs on a 2-core machine.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tenure_engine::policy::builtin::{PUBLIC_CHALLENGE, REGISTRY_CONTROL, built_plugin_path};
use tenure_engine::policy::{
    Holding, Identifier, IssuanceRequest, KeyInfo, KeyType, Limits, PolicyHost, RegistryView, Resource, ResourceState, TenantInfo, Trigger,
};

const N: usize = 20_000;
const WARMUP: usize = 2_000;

struct Registry {
    by_name: HashMap<String, Resource>,
    holdings: HashMap<String, Holding>,
}

impl RegistryView for Registry {
    fn resource_by_name(&self, tenant: &str, name: &str) -> Result<Option<Resource>, String> {
        Ok(self.by_name.get(name).filter(|r| r.tenant == tenant).cloned())
    }
    fn resource_by_address(&self, _: &str, _: &str) -> Result<Option<Resource>, String> {
        Ok(None)
    }
    fn resource_by_id(&self, _: &str, _: &str) -> Result<Option<Resource>, String> {
        Ok(None)
    }
    fn resources(&self, _: &str) -> Result<Vec<Resource>, String> {
        Ok(Vec::new())
    }
    fn tenant(&self, _: &str) -> Result<Option<TenantInfo>, String> {
        Ok(None)
    }
    fn holder(&self, tenant: &str, id: &Identifier) -> Result<Option<Holding>, String> {
        Ok(self.holdings.get(&id.value).filter(|h| h.tenant == tenant).cloned())
    }
}

fn report(label: &str, mut samples: Vec<Duration>) {
    // This machine's speed drifts by tens of percent over tens of milliseconds (other
    // tenants of the host): the p50 of each fifth of the run shows how much.
    let rounds: Vec<String> = samples
        .chunks(samples.len() / 5)
        .map(|c| {
            let mut c = c.to_vec();
            c.sort();
            format!("{:.1}", c[c.len() / 2].as_secs_f64() * 1e6)
        })
        .collect();
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let pct = |p: f64| us(samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)]);
    let mean = samples.iter().map(|d| us(*d)).sum::<f64>() / samples.len() as f64;
    println!(
        "{label:<44} n={} p50={:>7.2}µs p90={:>7.2}µs p99={:>7.2}µs mean={:>7.2}µs max={:>8.1}µs",
        samples.len(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        mean,
        us(*samples.last().unwrap()),
    );
    println!("{:<44} p50 by fifth of the run: {} µs", "", rounds.join(" / "));
}

fn run(label: &str, limits: Limits) {
    let host = PolicyHost::new(limits, None).expect("policy host");
    let rc = host.load(REGISTRY_CONTROL).expect("registry-control");
    let pc = host.load(PUBLIC_CHALLENGE).expect("public-challenge");
    let mut vm = Resource {
        id: "vm-1".into(),
        tenant: "acme".into(),
        kind: "vm".into(),
        names: vec!["www.acme.test".into()],
        state: ResourceState::Active,
        attributes: vec![("lifetime-seconds".into(), "3600".into())],
        ..Resource::default()
    };
    vm.addresses.push("192.0.2.10".into());
    let registry: Arc<dyn RegistryView> = Arc::new(Registry {
        holdings: HashMap::from([("www.acme.test".to_owned(), vm.holding())]),
        by_name: HashMap::from([("www.acme.test".to_owned(), vm)]),
    });
    let req = IssuanceRequest {
        tenant: "acme".into(),
        account: Some("acct-1".into()),
        trigger: Trigger::AcmeFinalize,
        identifiers: vec![Identifier::dns("www.acme.test")],
        key: Some(KeyInfo { key_type: KeyType::EcdsaP256, bits: 256 }),
        profile: "default".into(),
        requested_lifetime_seconds: 86_400,
        resource: None,
    };

    let one = || host.decide_issuance(&rc, Arc::clone(&registry), "acme", &req);
    let v = one();
    assert!(v.decision.is_allow(), "{:?}", v.decision);
    for _ in 0..WARMUP {
        black_box(one());
    }
    let mut samples = Vec::with_capacity(N);
    for _ in 0..N {
        let t = Instant::now();
        black_box(one());
        samples.push(t.elapsed());
    }
    report(&format!("{label}: decide_issuance"), samples);

    // The floor: a plugin that only denies (no registry call, nothing allocated).
    let deny_all = std::fs::read(built_plugin_path("deny-all")).expect("deny-all built");
    let da = host.load(&deny_all).expect("deny-all");
    for _ in 0..WARMUP {
        black_box(host.decide_issuance(&da, Arc::clone(&registry), "acme", &req));
    }
    let mut samples = Vec::with_capacity(N);
    for _ in 0..N {
        let t = Instant::now();
        black_box(host.decide_issuance(&da, Arc::clone(&registry), "acme", &req));
        samples.push(t.elapsed());
    }
    report(&format!("{label}: deny-all (floor)"), samples);

    let plugins = [Arc::clone(&rc), Arc::clone(&pc)];
    let two = || host.chain_issuance(&plugins, Arc::clone(&registry), "acme", &req);
    assert!(two().decision.is_allow());
    for _ in 0..WARMUP {
        black_box(two());
    }
    let mut samples = Vec::with_capacity(N);
    for _ in 0..N {
        let t = Instant::now();
        black_box(two());
        samples.push(t.elapsed());
    }
    report(&format!("{label}: chain of 2"), samples);
}

fn main() {
    println!("policy decision, registry-control with one registry lookup, fresh instance each");
    run("epoch deadline", Limits::default());
    run("epoch deadline + fuel", Limits { fuel: 10_000_000, ..Limits::default() });
}
