//! Tests of the policy host against the plugins built from `plugins/`, with an
//! in-memory registry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::builtin::{BUILT_PLUGINS, built_plugin_path};
use super::*;

// ---- an in-memory registry ----

#[derive(Default)]
struct MemRegistry {
    resources: Vec<Resource>,
    /// A broken view that ignores the tenant, to test the host's own scoping.
    unscoped: bool,
}

fn under(name: &str, zone: &str) -> bool {
    name == zone || name.strip_suffix(zone).is_some_and(|p| p.ends_with('.'))
}

impl MemRegistry {
    fn find(&self, tenant: &str, f: impl Fn(&Resource) -> bool) -> Option<Resource> {
        self.resources.iter().find(|r| (self.unscoped || r.tenant == tenant) && f(r)).cloned()
    }
}

impl RegistryView for MemRegistry {
    fn resource_by_name(&self, tenant: &str, name: &str) -> Option<Resource> {
        self.find(tenant, |r| r.names.iter().any(|n| n == name)).or_else(|| self.find(tenant, |r| r.zones.iter().any(|z| under(name, z))))
    }
    fn resource_by_address(&self, tenant: &str, addr: &str) -> Option<Resource> {
        self.find(tenant, |r| r.addresses.iter().any(|a| a == addr))
    }
    fn resource_by_id(&self, tenant: &str, id: &str) -> Option<Resource> {
        self.find(tenant, |r| r.id == id)
    }
    fn resources(&self, tenant: &str) -> Vec<Resource> {
        self.resources.iter().filter(|r| self.unscoped || r.tenant == tenant).cloned().collect()
    }
    fn tenant(&self, tenant: &str) -> Option<TenantInfo> {
        Some(TenantInfo { name: tenant.to_owned(), permits: vec!["acme.test".to_owned()] })
    }
}

fn resource(id: &str, tenant: &str, kind: &str) -> Resource {
    Resource { id: id.to_owned(), tenant: tenant.to_owned(), kind: kind.to_owned(), ..Resource::default() }
}

fn registry() -> Arc<dyn RegistryView> {
    let mut vm = resource("vm-1", "acme", "vm");
    vm.names = vec!["www.acme.test".into(), "acme.test".into()];
    vm.addresses = vec!["192.0.2.10".into()];
    vm.attributes = vec![("lifetime-seconds".into(), "3600".into())];
    let mut lb = resource("lb-1", "acme", "load-balancer");
    lb.zones = vec!["apps.acme.test".into()];
    lb.attributes = vec![("rekey".into(), "true".into())];
    let mut old = resource("vm-2", "acme", "vm");
    old.names = vec!["old.acme.test".into()];
    old.state = ResourceState::Suspended;
    let mut theirs = resource("vm-9", "other", "vm");
    theirs.names = vec!["www.other.test".into()];
    let hsm1 = resource("hsm-1", "acme", "hsm");
    let hsm2 = resource("hsm-2", "acme", "hsm");
    let hsm9 = resource("hsm-9", "other", "hsm");
    Arc::new(MemRegistry { resources: vec![vm, lb, old, theirs, hsm1, hsm2, hsm9], unscoped: false })
}

fn dns(name: &str) -> Identifier {
    Identifier::dns(name)
}

fn issuance(tenant: &str, names: &[&str], lifetime: u64) -> IssuanceRequest {
    IssuanceRequest {
        account: Some("acct-1".into()),
        tenant: tenant.into(),
        trigger: Trigger::AcmeFinalize,
        identifiers: names
            .iter()
            .map(|n| match n.parse() {
                Ok(ip) => Identifier::ip(ip),
                Err(_) => dns(n),
            })
            .collect(),
        key: Some(KeyInfo { key_type: KeyType::EcdsaP256, bits: 256 }),
        profile: "default".into(),
        requested_lifetime_seconds: lifetime,
        resource: None,
    }
}

fn renewal(tenant: &str, names: &[&str], resources: &[&str]) -> RenewalRequest {
    let identifiers: Vec<Identifier> = names.iter().map(|n| dns(n)).collect();
    let resources: Vec<String> = resources.iter().map(|s| s.to_string()).collect();
    RenewalRequest {
        tenant: tenant.into(),
        trigger: Trigger::Renewal,
        certificate: Some(CertificateInfo {
            serial: "01".into(),
            identifiers: identifiers.clone(),
            not_before: 1_700_000_000,
            not_after: 1_700_086_400,
            resources: resources.clone(),
        }),
        identifiers,
        resources,
        profile: "default".into(),
        requested_lifetime_seconds: 86_400,
    }
}

fn distribution(tenant: &str, from: &str, to: &str) -> DistributionRequest {
    DistributionRequest { tenant: tenant.into(), key_id: "key-1".into(), source_hsm: from.into(), target_hsm: to.into() }
}

// ---- one host and one load per plugin for the whole test binary ----

/// Short enough for the infinite loop, long enough that a good decision preempted on a
/// busy 2-core CI machine still finishes.
fn test_limits() -> Limits {
    Limits { deadline: Duration::from_millis(250), ..Limits::default() }
}

fn host() -> &'static PolicyHost {
    static HOST: OnceLock<PolicyHost> = OnceLock::new();
    HOST.get_or_init(|| PolicyHost::new(test_limits(), None).expect("policy host"))
}

fn bytes(name: &str) -> Vec<u8> {
    let path = built_plugin_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn plugin(name: &'static str) -> Arc<Plugin> {
    static LOADED: OnceLock<Mutex<HashMap<&'static str, Arc<Plugin>>>> = OnceLock::new();
    let loaded = LOADED.get_or_init(Default::default);
    if let Some(p) = loaded.lock().unwrap().get(name) {
        return Arc::clone(p);
    }
    let p = host().load(&bytes(name)).unwrap_or_else(|e| panic!("loading {name}: {e}"));
    loaded.lock().unwrap().insert(name, Arc::clone(&p));
    p
}

fn reason(v: &Verdict) -> &str {
    v.decision.deny_reason().unwrap_or_else(|| panic!("expected a denial, got {:?}", v.decision))
}

fn grant(v: &Verdict) -> &Grant {
    v.decision.grant().unwrap_or_else(|| panic!("expected an allow, got {:?}", v.decision))
}

fn good_decision_works() {
    let v = host().decide_issuance(&plugin("registry-control"), registry(), "acme", &issuance("acme", &["www.acme.test"], 0));
    assert_eq!(grant(&v).identifiers, vec![dns("www.acme.test")]);
}

// ---- the built plugins ----

#[test]
fn built_plugins_are_components_importing_only_the_world() {
    for name in BUILT_PLUGINS.iter().filter(|n| **n != "uses-fs") {
        let info = host().check(&bytes(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(info.digest.len(), 64);
        for import in &info.imports {
            assert!(import.starts_with("tenure:policy/"), "{name} imports {import}");
        }
        for export in ["decide-issuance", "decide-renewal", "decide-distribution"] {
            assert!(info.exports.iter().any(|e| e == export), "{name} lacks {export}");
        }
        eprintln!("{name}: imports {:?}", info.imports);
    }
}

#[test]
fn a_component_importing_wasi_filesystem_is_refused() {
    let b = bytes("uses-fs");
    for result in [host().check(&b).map(|_| ()), host().load(&b).map(|_| ())] {
        match result {
            Err(PolicyError::ForbiddenImports { forbidden, imports, .. }) => {
                assert!(forbidden.iter().any(|i| i.starts_with("wasi:filesystem/")), "forbidden: {forbidden:?}");
                assert!(forbidden.iter().all(|i| !i.starts_with("tenure:policy/")));
                assert!(imports.len() >= forbidden.len());
            }
            other => panic!("uses-fs was not refused: {other:?}"),
        }
    }
}

#[test]
fn garbage_and_core_modules_are_refused() {
    assert!(matches!(host().load(b"not wasm"), Err(PolicyError::Invalid { .. })));
    // A core module (not a component): the magic and version 1.
    let core = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
    assert!(matches!(host().load(&core), Err(PolicyError::Invalid { .. })));
}

#[test]
fn loading_the_same_bytes_twice_gives_the_same_plugin() {
    let a = plugin("deny-all");
    let b = host().load(&bytes("deny-all")).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
}

// ---- registry-control ----

#[test]
fn registry_control_allows_a_held_name_by_control_with_its_lifetime() {
    let p = plugin("registry-control");
    let v = host().decide_issuance(&p, registry(), "acme", &issuance("acme", &["www.acme.test", "192.0.2.10"], 0));
    let g = grant(&v);
    assert_eq!(g.identifiers.len(), 2);
    assert_eq!(g.authorize_by_control, g.identifiers);
    assert_eq!(g.lifetime_seconds, 3600, "the resource's lifetime-seconds attribute");
    assert_eq!(v.plugin_digest, p.digest);
}

#[test]
fn registry_control_defaults_to_a_day_and_matches_zones() {
    let v = host().decide_issuance(&plugin("registry-control"), registry(), "acme", &issuance("acme", &["shop.apps.acme.test"], 0));
    assert_eq!(grant(&v).lifetime_seconds, 86_400);
    // A requested lifetime caps it.
    let v = host().decide_issuance(&plugin("registry-control"), registry(), "acme", &issuance("acme", &["shop.apps.acme.test"], 600));
    assert_eq!(grant(&v).lifetime_seconds, 600);
}

#[test]
fn registry_control_denies_unheld_names_naming_them() {
    let p = plugin("registry-control");
    let v = host().decide_issuance(&p, registry(), "acme", &issuance("acme", &["www.acme.test", "evil.test", "old.acme.test"], 0));
    let r = reason(&v);
    assert!(r.starts_with(&format!("plugin {}: ", &p.digest[..8])), "{r}");
    assert!(r.contains("evil.test") && r.contains("old.acme.test"), "{r}");
    assert!(!r.contains("www.acme.test"), "{r}");
}

#[test]
fn registry_answers_are_scoped_to_the_tenant() {
    // acme's name asked for by another tenant.
    let v = host().decide_issuance(&plugin("registry-control"), registry(), "other", &issuance("other", &["www.acme.test"], 0));
    assert!(reason(&v).contains("www.acme.test"));
    // Even a registry view that forgets to scope cannot leak another tenant's resource.
    let mut leaky = MemRegistry { unscoped: true, ..MemRegistry::default() };
    let mut vm = resource("vm-1", "acme", "vm");
    vm.names = vec!["www.acme.test".into()];
    leaky.resources.push(vm);
    let v = host().decide_issuance(&plugin("registry-control"), Arc::new(leaky), "other", &issuance("other", &["www.acme.test"], 0));
    assert!(!v.decision.is_allow());
}

#[test]
fn a_request_for_another_tenant_is_denied() {
    let v = host().decide_issuance(&plugin("registry-control"), registry(), "other", &issuance("acme", &["www.acme.test"], 0));
    assert!(reason(&v).contains("decided for tenant"));
}

#[test]
fn registry_control_renews_only_while_every_resource_is_held() {
    let p = plugin("registry-control");
    let v = host().decide_renewal(&p, registry(), "acme", &renewal("acme", &["www.acme.test"], &["vm-1"]));
    assert_eq!(grant(&v).lifetime_seconds, 3600);
    assert!(!grant(&v).rekey);
    let v = host().decide_renewal(&p, registry(), "acme", &renewal("acme", &["x.apps.acme.test"], &["lb-1"]));
    assert!(grant(&v).rekey, "the rekey attribute");
    let v = host().decide_renewal(&p, registry(), "acme", &renewal("acme", &["www.acme.test"], &["vm-1", "vm-2"]));
    assert!(reason(&v).contains("vm-2"), "a suspended resource");
    let v = host().decide_renewal(&p, registry(), "acme", &renewal("acme", &["www.acme.test"], &["vm-gone"]));
    assert!(reason(&v).contains("vm-gone"));
}

#[test]
fn registry_control_distributes_only_between_the_tenants_hsms() {
    let p = plugin("registry-control");
    let v = host().decide_distribution(&p, registry(), "acme", &distribution("acme", "hsm-1", "hsm-2"));
    assert!(v.decision.is_allow(), "{:?}", v.decision);
    let v = host().decide_distribution(&p, registry(), "acme", &distribution("acme", "hsm-1", "hsm-9"));
    assert!(reason(&v).contains("hsm-9"));
    let v = host().decide_distribution(&p, registry(), "acme", &distribution("acme", "hsm-1", "vm-1"));
    assert!(reason(&v).contains("not an hsm"));
}

// ---- public-challenge, deny-all ----

#[test]
fn public_challenge_allows_with_challenges() {
    let p = plugin("public-challenge");
    let v = host().decide_issuance(&p, registry(), "public", &issuance("public", &["anything.example"], 7200));
    let g = grant(&v);
    assert_eq!(g.identifiers, vec![dns("anything.example")]);
    assert!(g.authorize_by_control.is_empty());
    assert_eq!(g.lifetime_seconds, 7200);
    let v = host().decide_renewal(&p, registry(), "public", &renewal("public", &["anything.example"], &[]));
    assert!(reason(&v).contains("renewed by their ACME clients"));
    let v = host().decide_distribution(&p, registry(), "public", &distribution("public", "a", "b"));
    assert!(!v.decision.is_allow());
}

#[test]
fn deny_all_denies_everything_by_default() {
    let p = plugin("deny-all");
    let v = host().decide_issuance(&p, registry(), "acme", &issuance("acme", &["www.acme.test"], 0));
    assert!(reason(&v).contains("does not allow issuance"));
    let v = host().decide_renewal(&p, registry(), "acme", &renewal("acme", &["www.acme.test"], &["vm-1"]));
    assert!(reason(&v).contains("does not allow renewal"));
}

// ---- malicious plugins ----

#[test]
fn an_infinite_loop_is_stopped_by_the_deadline() {
    // Compiled (and the host built) before the clock starts: the bound is on the decision.
    let (host, looping) = (host(), plugin("infinite-loop"));
    let started = Instant::now();
    let v = host.decide_issuance(&looping, registry(), "acme", &issuance("acme", &["www.acme.test"], 0));
    assert!(reason(&v).contains("exceeded its deadline of 250ms"), "{}", reason(&v));
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    good_decision_works();
}

#[test]
fn an_infinite_loop_runs_out_of_fuel_when_fuel_is_metered() {
    let host = PolicyHost::new(Limits { fuel: 5_000_000, deadline: Duration::from_secs(10), ..Limits::default() }, None).unwrap();
    let p = host.load(&bytes("infinite-loop")).unwrap();
    let v = host.decide_issuance(&p, registry(), "acme", &issuance("acme", &["www.acme.test"], 0));
    assert!(reason(&v).contains("ran out of fuel"), "{}", reason(&v));
    // A normal decision fits in that budget.
    let good = host.load(&bytes("registry-control")).unwrap();
    let v = host.decide_issuance(&good, registry(), "acme", &issuance("acme", &["www.acme.test"], 0));
    assert!(v.decision.is_allow(), "{:?}", v.decision);
}

#[test]
fn a_memory_hog_hits_the_memory_cap() {
    let v = host().decide_issuance(&plugin("memory-hog"), registry(), "acme", &issuance("acme", &["www.acme.test"], 0));
    let r = reason(&v);
    assert!(r.contains(&format!("exceeded its memory limit of {} bytes", 16 << 20)), "{r}");
    good_decision_works();
}

#[test]
fn a_trap_denies_with_the_panic_message() {
    let p = plugin("trap");
    let v = host().decide_issuance(&p, registry(), "acme", &issuance("acme", &["www.acme.test"], 0));
    let r = reason(&v);
    assert!(r.contains("trapped") && r.contains("deliberate panic for acme"), "{r}");
    let v = host().decide_renewal(&p, registry(), "acme", &renewal("acme", &["www.acme.test"], &["vm-1"]));
    let r = reason(&v);
    assert!(r.contains("trapped") && r.contains("unreachable"), "{r}");
    good_decision_works();
}

#[test]
fn an_oversized_answer_denies() {
    // A host of its own with a generous deadline: this is about size, and lifting
    // megabytes in a debug build on a busy machine can take longer than 50 ms.
    let host = PolicyHost::new(Limits { deadline: Duration::from_secs(5), ..Limits::default() }, None).unwrap();
    let p = host.load(&bytes("huge-answer")).unwrap();
    let v = host.decide_issuance(&p, registry(), "acme", &issuance("acme", &["www.acme.test"], 0));
    let r = reason(&v);
    assert!(r.contains("oversized answer: a deny reason of 4194304 bytes"), "{}", &r[..r.len().min(300)]);
    assert!(r.len() < 300);
    let v = host.decide_renewal(&p, registry(), "acme", &renewal("acme", &["www.acme.test"], &["vm-1"]));
    let r = reason(&v);
    assert!(r.contains("oversized answer: a grant of 20000 identifiers"), "{}", &r[..r.len().min(300)]);
    let good = host.load(&bytes("registry-control")).unwrap();
    let v = host.decide_issuance(&good, registry(), "acme", &issuance("acme", &["www.acme.test"], 0));
    assert!(v.decision.is_allow());
    good_decision_works();
}

#[test]
fn faulty_plugins_and_good_ones_run_concurrently() {
    let bad = ["infinite-loop", "memory-hog", "trap", "huge-answer", "deny-all"];
    let failures = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..4 {
            let failures = &failures;
            s.spawn(move || {
                for i in 0..30 {
                    // Every thread alternates good decisions with faulty ones.
                    let v = if i % 3 == 0 {
                        let name = bad[(t + i) % bad.len()];
                        host().decide_issuance(&plugin(name), registry(), "acme", &issuance("acme", &["www.acme.test"], 0))
                    } else {
                        let v = host().decide_issuance(
                            &plugin("registry-control"),
                            registry(),
                            "acme",
                            &issuance("acme", &["www.acme.test"], 0),
                        );
                        if !v.decision.is_allow() {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                        v
                    };
                    if i % 3 == 0 {
                        assert!(!v.decision.is_allow());
                    }
                }
            });
        }
    });
    assert_eq!(failures.load(Ordering::Relaxed), 0);
}

// ---- answers checked against the request ----

#[test]
fn grants_are_checked_against_the_request() {
    let req = [dns("a.test"), dns("b.test")];
    let hook = chain::Hook::Issuance(&req, 600);
    let allow = |ids: Vec<Identifier>, by_control: Vec<Identifier>, lifetime| {
        Decision::Allow(Grant { identifiers: ids, lifetime_seconds: lifetime, authorize_by_control: by_control, ..Grant::default() })
    };
    // Not in the request.
    let e = chain::validate(allow(vec![dns("c.test")], vec![], 60), hook, 1024).unwrap_err();
    assert!(e.contains("names c.test, which the request does not"), "{e}");
    // Authorize-by-control outside the grant.
    let e = chain::validate(allow(vec![dns("a.test")], vec![dns("b.test")], 60), hook, 1024).unwrap_err();
    assert!(e.contains("authorize-by-control"), "{e}");
    // Nothing granted, zero lifetime.
    assert!(chain::validate(allow(vec![], vec![], 60), hook, 1024).is_err());
    assert!(chain::validate(allow(vec![dns("a.test")], vec![], 0), hook, 1024).is_err());
    // Normalized: case, duplicates, lifetime capped at the request's.
    let ok = chain::validate(allow(vec![dns("A.test"), dns("a.test")], vec![dns("a.TEST")], 86_400), hook, 1024).unwrap();
    let g = ok.grant().unwrap();
    assert_eq!(g.identifiers, vec![dns("a.test")]);
    assert_eq!(g.authorize_by_control, vec![dns("a.test")]);
    assert_eq!(g.lifetime_seconds, 600);
    // A distribution grant names nothing.
    assert!(chain::validate(allow(vec![dns("a.test")], vec![], 1), chain::Hook::Distribution, 1024).is_err());
    // Control characters in a reason are neutralized.
    let d = chain::validate(Decision::Deny("bad\nline".into()), hook, 1024).unwrap();
    assert_eq!(d.deny_reason(), Some("bad line"));
}

// ---- chains ----

fn verdict(digest: &str, decision: Decision) -> Verdict {
    Verdict { decision, plugin_digest: digest.repeat(64 / digest.len()), duration: Duration::ZERO }
}

fn allowing(ids: &[&str], by_control: &[&str], lifetime: u64, profile: Option<&str>, rekey: bool) -> Decision {
    Decision::Allow(Grant {
        identifiers: ids.iter().map(|n| dns(n)).collect(),
        lifetime_seconds: lifetime,
        profile: profile.map(str::to_owned),
        authorize_by_control: by_control.iter().map(|n| dns(n)).collect(),
        rekey,
    })
}

#[test]
fn a_chain_grants_the_narrowest() {
    let d = chain(&[
        verdict("a", allowing(&["x.test", "y.test", "z.test"], &["x.test", "y.test"], 3600, None, false)),
        verdict("b", allowing(&["y.test", "x.test"], &["y.test"], 600, Some("short"), false)),
        verdict("c", allowing(&["x.test", "y.test"], &["x.test", "y.test"], 86_400, Some("short"), true)),
    ]);
    let g = d.grant().unwrap();
    assert_eq!(g.identifiers, vec![dns("x.test"), dns("y.test")]);
    assert_eq!(g.authorize_by_control, vec![dns("y.test")]);
    assert_eq!(g.lifetime_seconds, 600);
    assert_eq!(g.profile.as_deref(), Some("short"));
    assert!(g.rekey);
}

#[test]
fn a_chain_denies_on_any_denial_disjoint_grants_or_profile_disagreement() {
    let d = chain(&[verdict("a", allowing(&["x.test"], &[], 60, None, false)), verdict("b", Decision::Deny("plugin bbbbbbbb: no".into()))]);
    assert_eq!(d.deny_reason(), Some("plugin bbbbbbbb: no"));
    let d = chain(&[verdict("a", allowing(&["x.test"], &[], 60, None, false)), verdict("b", allowing(&["y.test"], &[], 60, None, false))]);
    assert!(d.deny_reason().unwrap().contains("no identifier is allowed by every"));
    let d = chain(&[
        verdict("a", allowing(&["x.test"], &[], 60, Some("short"), false)),
        verdict("b", allowing(&["x.test"], &[], 60, None, false)),
        verdict("c", allowing(&["x.test"], &[], 60, Some("long"), false)),
    ]);
    let r = d.deny_reason().unwrap();
    assert!(r.contains("disagree on the profile") && r.contains("aaaaaaaa") && r.contains("cccccccc"), "{r}");
    assert!(!chain(&[]).is_allow());
    // Distribution grants name nothing: an empty intersection is fine there.
    let d = chain(&[verdict("a", allowing(&[], &[], 0, None, false)), verdict("b", allowing(&[], &[], 0, None, false))]);
    assert!(d.is_allow());
}

#[test]
fn a_chain_of_real_plugins_needs_challenges_when_one_plugin_wants_them() {
    let plugins = [plugin("registry-control"), plugin("public-challenge")];
    let c = host().chain_issuance(&plugins, registry(), "acme", &issuance("acme", &["www.acme.test"], 0));
    assert_eq!(c.verdicts.len(), 2);
    let g = c.decision.grant().unwrap();
    assert_eq!(g.identifiers, vec![dns("www.acme.test")]);
    assert!(g.authorize_by_control.is_empty(), "public-challenge authorizes nothing by control");
    assert_eq!(g.lifetime_seconds, 3600, "the shorter of 3600 and 86400");
    let plugins = [plugin("registry-control"), plugin("deny-all")];
    let c = host().chain_issuance(&plugins, registry(), "acme", &issuance("acme", &["www.acme.test"], 0));
    assert!(!c.decision.is_allow());
}

// ---- hot swap ----

#[test]
fn plugins_are_swapped_while_decisions_run() {
    let a = plugin("registry-control");
    let b = plugin("public-challenge");
    let set = PluginSet::new(vec![Arc::clone(&a)]);
    let done = std::sync::atomic::AtomicBool::new(false);
    let decided = AtomicUsize::new(0);
    let seen_b = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                while !done.load(Ordering::Relaxed) || decided.load(Ordering::Relaxed) < 300 {
                    let plugins = set.snapshot();
                    let c = host().chain_issuance(&plugins, registry(), "acme", &issuance("acme", &["www.acme.test"], 0));
                    assert!(c.decision.is_allow(), "{:?}", c.decision);
                    if c.verdicts[0].plugin_digest == b.digest {
                        seen_b.fetch_add(1, Ordering::Relaxed);
                    }
                    decided.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        for i in 0..50 {
            let next = if i % 2 == 0 { &b } else { &a };
            let old = set.replace(vec![Arc::clone(next)]);
            assert_eq!(old.len(), 1);
            std::thread::sleep(Duration::from_millis(2));
        }
        done.store(true, Ordering::Relaxed);
    });
    assert!(decided.load(Ordering::Relaxed) >= 300);
    assert!(seen_b.load(Ordering::Relaxed) > 0, "the swap took effect");
    assert_eq!(set.digests(), vec![a.digest.clone()]);
}

// ---- disk cache ----

#[test]
fn the_disk_cache_spares_a_second_host_the_compilation() {
    let dir = tempfile::tempdir().unwrap();
    let b = bytes("registry-control");

    let h1 = PolicyHost::new(test_limits(), Some(dir.path().to_owned())).unwrap();
    let t = Instant::now();
    let p1 = h1.load(&b).unwrap();
    let compile = t.elapsed();
    assert!(!p1.from_disk_cache);
    assert_eq!(h1.stats(), HostStats { compiled: 1, disk_cache_hits: 0 });
    drop((p1, h1));

    let h2 = PolicyHost::new(test_limits(), Some(dir.path().to_owned())).unwrap();
    let t = Instant::now();
    let p2 = h2.load(&b).unwrap();
    let cached = t.elapsed();
    assert!(p2.from_disk_cache);
    assert_eq!(h2.stats(), HostStats { compiled: 0, disk_cache_hits: 1 });
    eprintln!("registry-control load: compiled {compile:?}, from the disk cache {cached:?}");
    let v = h2.decide_issuance(&p2, registry(), "acme", &issuance("acme", &["www.acme.test"], 0));
    assert!(v.decision.is_allow());

    // A cache file anyone could have written is not trusted: recompiled.
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        assert!(path.extension().is_some_and(|e| e == "cwasm"), "{}", path.display());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    drop((p2, h2));
    let h3 = PolicyHost::new(test_limits(), Some(dir.path().to_owned())).unwrap();
    let p3 = h3.load(&b).unwrap();
    assert!(!p3.from_disk_cache);
    assert_eq!(h3.stats().compiled, 1);
}

#[test]
fn a_refused_plugin_is_not_cached() {
    let dir = tempfile::tempdir().unwrap();
    let h = PolicyHost::new(test_limits(), Some(dir.path().to_owned())).unwrap();
    assert!(h.load(&bytes("uses-fs")).is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

// ---- serde ----

#[test]
fn requests_and_verdicts_round_trip_through_json() {
    let req: IssuanceRequest = serde_json::from_str(
        r#"{"account":"a","tenant":"acme","trigger":"acme-order","identifiers":[{"type":"dns","value":"www.acme.test"}],"key":null,"profile":"default","requested_lifetime_seconds":3600,"resource":null}"#,
    )
    .unwrap();
    assert_eq!(req.identifiers, vec![dns("www.acme.test")]);
    let v = host().decide_issuance(&plugin("registry-control"), registry(), "acme", &req);
    let json = serde_json::to_string(&v).unwrap();
    assert!(json.contains(r#""allow":"#) && json.contains("duration_us"), "{json}");
    let back: Verdict = serde_json::from_str(&json).unwrap();
    assert_eq!(back.decision, v.decision);
}

/// A registry whose lookups wait, as one does behind a busy SQLite writer.
struct SlowRegistry {
    inner: Arc<dyn RegistryView>,
    delay: Duration,
}

impl RegistryView for SlowRegistry {
    fn resource_by_name(&self, tenant: &str, name: &str) -> Option<Resource> {
        std::thread::sleep(self.delay);
        self.inner.resource_by_name(tenant, name)
    }
    fn resource_by_address(&self, tenant: &str, addr: &str) -> Option<Resource> {
        std::thread::sleep(self.delay);
        self.inner.resource_by_address(tenant, addr)
    }
    fn resource_by_id(&self, tenant: &str, id: &str) -> Option<Resource> {
        self.inner.resource_by_id(tenant, id)
    }
    fn resources(&self, tenant: &str) -> Vec<Resource> {
        self.inner.resources(tenant)
    }
    fn tenant(&self, tenant: &str) -> Option<TenantInfo> {
        self.inner.tenant(tenant)
    }
}

#[test]
fn time_waiting_on_the_registry_is_not_the_plugins_deadline() {
    // Two lookups of 200 ms each: 400 ms of wall time, well past the 250 ms
    // deadline, but the plugin itself ran for microseconds.
    let slow: Arc<dyn RegistryView> = Arc::new(SlowRegistry { inner: registry(), delay: Duration::from_millis(200) });
    let v = host().decide_issuance(&plugin("registry-control"), slow, "acme", &issuance("acme", &["www.acme.test", "192.0.2.10"], 0));
    assert_eq!(grant(&v).identifiers.len(), 2, "{:?}", v.decision);
}

#[test]
fn registry_calls_per_decision_are_capped() {
    // A registry so slow that a plugin calling it in a loop would never reach
    // its own deadline: the call cap ends it.
    let slow: Arc<dyn RegistryView> = Arc::new(SlowRegistry { inner: registry(), delay: Duration::from_millis(1) });
    let names: Vec<String> = (0..host_state::MAX_REGISTRY_CALLS + 1).map(|i| format!("n{i}.acme.test")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut req = issuance("acme", &names, 0);
    req.identifiers.truncate(host_state::MAX_REGISTRY_CALLS as usize + 1);
    let v = host().decide_issuance(&plugin("registry-control"), slow, "acme", &req);
    assert!(reason(&v).contains("registry calls"), "{:?}", v.decision);
}
