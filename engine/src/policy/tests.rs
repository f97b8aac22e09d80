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
    /// A store that cannot be read: every call fails with this.
    failure: Option<String>,
}

fn under(name: &str, zone: &str) -> bool {
    name == zone || name.strip_suffix(zone).is_some_and(|p| p.ends_with('.'))
}

impl MemRegistry {
    fn find(&self, tenant: &str, f: impl Fn(&Resource) -> bool) -> Result<Option<Resource>, String> {
        if let Some(why) = &self.failure {
            return Err(why.clone());
        }
        Ok(self.resources.iter().find(|r| (self.unscoped || r.tenant == tenant) && f(r)).cloned())
    }
}

impl RegistryView for MemRegistry {
    fn resource_by_name(&self, tenant: &str, name: &str) -> Result<Option<Resource>, String> {
        match self.find(tenant, |r| r.names.iter().any(|n| n == name))? {
            Some(r) => Ok(Some(r)),
            None => self.find(tenant, |r| r.zones.iter().any(|z| under(name, z))),
        }
    }
    fn resource_by_address(&self, tenant: &str, addr: &str) -> Result<Option<Resource>, String> {
        self.find(tenant, |r| r.addresses.iter().any(|a| a == addr))
    }
    fn resource_by_id(&self, tenant: &str, id: &str) -> Result<Option<Resource>, String> {
        self.find(tenant, |r| r.id == id)
    }
    fn resources(&self, tenant: &str) -> Result<Vec<Resource>, String> {
        Ok(self.resources.iter().filter(|r| self.unscoped || r.tenant == tenant).cloned().collect())
    }
    fn tenant(&self, tenant: &str) -> Result<Option<TenantInfo>, String> {
        Ok(Some(TenantInfo { name: tenant.to_owned(), permits: vec!["acme.test".to_owned()] }))
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
    Arc::new(MemRegistry { resources: vec![vm, lb, old, theirs, hsm1, hsm2, hsm9], ..MemRegistry::default() })
}

fn dns(name: &str) -> Identifier {
    Identifier::dns(name)
}

/// The profile's lifetime in these tests' requests, when a test does not choose one.
const PROFILE_LIFETIME: u64 = 7 * 86_400;

/// A finalize request (`lifetime` 0: the profile's).
fn issuance(tenant: &str, names: &[&str], lifetime: u64) -> IssuanceRequest {
    IssuanceRequest {
        tenant: tenant.into(),
        account: Some("acct-1".into()),
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
        requested_lifetime_seconds: if lifetime == 0 { PROFILE_LIFETIME } else { lifetime },
        resource: None,
    }
}

fn renewal(tenant: &str, names: &[&str], resources: &[&str]) -> RenewalRequest {
    let resources: Vec<String> = resources.iter().map(|s| s.to_string()).collect();
    RenewalRequest {
        tenant: tenant.into(),
        trigger: Trigger::Renewal,
        identifiers: names.iter().map(|n| dns(n)).collect(),
        resources: resources.clone(),
        profile: "default".into(),
        requested_lifetime_seconds: PROFILE_LIFETIME,
        certificate: Some(CertificateInfo {
            serial: "01".into(),
            identifiers: names.iter().map(|n| dns(n)).collect(),
            not_before: 1_700_000_000,
            not_after: 1_700_086_400,
            resources,
        }),
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
    for name in BUILT_PLUGINS.iter().filter(|n| !["uses-fs", "legacy-v0-1"].contains(n)) {
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

#[test]
fn distribute_by_attribute_allows_only_within_a_key_group() {
    let p = plugin("distribute-by-attribute");
    let hsm = |id: &str, group: Option<&str>| {
        let mut r = resource(id, "acme", "hsm");
        r.attributes = group.map(|g| vec![("key-group".into(), g.into())]).unwrap_or_default();
        r
    };
    let registry: Arc<dyn RegistryView> = Arc::new(MemRegistry {
        resources: vec![hsm("hsm-1", Some("g1")), hsm("hsm-2", Some("g1")), hsm("hsm-3", Some("g2")), hsm("hsm-4", None)],
        ..MemRegistry::default()
    });
    let decide = |to: &str| host().decide_distribution(&p, Arc::clone(&registry), "acme", &distribution("acme", "hsm-1", to));
    let v = decide("hsm-2");
    assert!(v.decision.is_allow(), "{:?}", v.decision);
    let v = decide("hsm-3");
    assert!(reason(&v).contains(r#"key-group differs: hsm-1 is in "g1", hsm-3 in "g2""#), "{}", reason(&v));
    assert!(reason(&decide("hsm-4")).contains("hsm-4 has no key-group attribute"));
    assert!(reason(&decide("hsm-9")).contains("hsm-9 is not in the registry"));
    // Issuance is the SDK default: denied.
    let v = host().decide_issuance(&p, registry, "acme", &issuance("acme", &["www.acme.test"], 0));
    assert!(reason(&v).contains("does not allow issuance"));
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
    // Renewal keeps the SDK default, which asks issuance: denied by the same rule.
    let v = host().decide_renewal(&p, registry(), "acme", &renewal("acme", &["www.acme.test"], &["vm-1"]));
    assert!(reason(&v).contains("does not allow issuance"));
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
    let hook = chain::Asked::Names(&req, 600);
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
    assert!(chain::validate(allow(vec![dns("a.test")], vec![], 1), chain::Asked::Distribution, 1024).is_err());
    // Control characters in a reason are neutralized.
    let d = chain::validate(Decision::Deny("bad\nline".into()), hook, 1024).unwrap();
    assert_eq!(d.deny_reason(), Some("bad line"));
    // Found by fuzz/ (plugin_answer): a reason of control characters alone was let
    // through as a blank reason instead of "denied without a reason".
    for reason in ["\u{1}", " \t\u{7f}\r\n ", ""] {
        let d = chain::validate(Decision::Deny(reason.into()), hook, 1024).unwrap();
        assert_eq!(d.deny_reason(), Some("denied without a reason"), "{reason:?}");
    }
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
        r#"{"account":"a","tenant":"acme","trigger":"acme-finalize","identifiers":[{"type":"dns","value":"www.acme.test"}],
            "key":{"key-type":"ecdsa-p256","bits":256},"profile":"default","requested-lifetime-seconds":3600}"#,
    )
    .unwrap();
    assert_eq!(req.key, Some(KeyInfo { key_type: KeyType::EcdsaP256, bits: 256 }));
    assert_eq!((req.trigger, req.resource.as_deref()), (Trigger::AcmeFinalize, None));
    let json = serde_json::to_string(&req).unwrap();
    assert!(json.contains(r#""requested-lifetime-seconds":3600"#) && json.contains(r#""trigger":"acme-finalize""#), "{json}");
    assert_eq!(serde_json::from_str::<IssuanceRequest>(&json).unwrap(), req);
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
    fn resource_by_name(&self, tenant: &str, name: &str) -> Result<Option<Resource>, String> {
        std::thread::sleep(self.delay);
        self.inner.resource_by_name(tenant, name)
    }
    fn resource_by_address(&self, tenant: &str, addr: &str) -> Result<Option<Resource>, String> {
        std::thread::sleep(self.delay);
        self.inner.resource_by_address(tenant, addr)
    }
    fn resource_by_id(&self, tenant: &str, id: &str) -> Result<Option<Resource>, String> {
        self.inner.resource_by_id(tenant, id)
    }
    fn resources(&self, tenant: &str) -> Result<Vec<Resource>, String> {
        self.inner.resources(tenant)
    }
    fn tenant(&self, tenant: &str) -> Result<Option<TenantInfo>, String> {
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

// ---- 0.2.0: registry errors, triggers, the renewal default, versions, JSON ----

#[test]
fn a_registry_failure_reaches_the_plugin_as_an_error_and_denies() {
    let broken: Arc<dyn RegistryView> = Arc::new(MemRegistry { failure: Some("database is locked".into()), ..MemRegistry::default() });
    for (name, v) in [
        (
            "registry-control",
            host().decide_issuance(&plugin("registry-control"), Arc::clone(&broken), "acme", &issuance("acme", &["www.acme.test"], 0)),
        ),
        (
            "control-or-challenge",
            host().decide_issuance(&plugin("control-or-challenge"), Arc::clone(&broken), "acme", &issuance("acme", &["www.acme.test"], 0)),
        ),
        (
            "registry-control renewal",
            host().decide_renewal(
                &plugin("registry-control"),
                Arc::clone(&broken),
                "acme",
                &renewal("acme", &["www.acme.test"], &["vm-1"]),
            ),
        ),
    ] {
        // Not "not held" (which control-or-challenge would turn into an allow with a challenge).
        let r = reason(&v);
        assert!(r.contains("could not decide: registry unavailable: database is locked"), "{name}: {r}");
    }
}

#[test]
fn an_issuance_only_plugin_renews_by_its_issuance_rules() {
    let p = plugin("issuance-only");
    let v = host().decide_issuance(&p, registry(), "acme", &issuance("acme", &["www.acme.test"], 0));
    assert_eq!(grant(&v).lifetime_seconds, 3600);
    // The SDK default: decide_renewal asks decide_issuance, so a held name renews...
    let v = host().decide_renewal(&p, registry(), "acme", &renewal("acme", &["www.acme.test", "x.apps.acme.test"], &["vm-1", "lb-1"]));
    let g = grant(&v);
    assert_eq!(g.identifiers, vec![dns("www.acme.test"), dns("x.apps.acme.test")]);
    assert_eq!(g.authorize_by_control.len(), 2);
    assert_eq!(g.lifetime_seconds, 3600);
    // ...and one no longer held does not, by the same rule, with the trigger carried over.
    let mut req = renewal("acme", &["old.acme.test"], &["vm-2"]);
    req.trigger = Trigger::Rekey;
    req.certificate = None;
    let v = host().decide_renewal(&p, registry(), "acme", &req);
    assert!(reason(&v).ends_with("rekey: not held: old.acme.test"), "{}", reason(&v));
}

#[test]
fn the_trigger_reaches_the_plugin() {
    let p = plugin("issuance-only");
    for (trigger, account, resource, key) in [
        (Trigger::AcmeOrder, Some("acct-1".to_owned()), None, None),
        (Trigger::AcmeFinalize, Some("acct-1".to_owned()), None, Some(KeyInfo { key_type: KeyType::Rsa, bits: 3072 })),
        (Trigger::Provisioning, None, Some("vm-9".to_owned()), None),
    ] {
        let req = IssuanceRequest { trigger, resource, key, account, ..issuance("acme", &["evil.test"], 0) };
        let v = host().decide_issuance(&p, registry(), "acme", &req);
        assert!(reason(&v).ends_with(&format!("{}: not held: evil.test", trigger.as_str())), "{}", reason(&v));
    }
}

#[test]
fn renewal_grants_are_capped_at_the_requested_lifetime() {
    let mut req = renewal("acme", &["www.acme.test"], &["vm-1"]);
    req.requested_lifetime_seconds = 900;
    let v = host().decide_renewal(&plugin("registry-control"), registry(), "acme", &req);
    assert_eq!(grant(&v).lifetime_seconds, 900, "vm-1 allows 3600, the profile 900");
}

#[test]
fn the_host_does_not_ask_what_the_wit_rules_out() {
    let p = plugin("public-challenge");
    let mut req = issuance("acme", &["www.acme.test"], 0);
    req.profile.clear();
    let v = host().decide_issuance(&p, registry(), "acme", &req);
    assert!(reason(&v).contains("invalid request") && reason(&v).contains("`profile`"), "{}", reason(&v));
    let mut req = issuance("acme", &["www.acme.test"], 0);
    req.requested_lifetime_seconds = 0;
    let v = host().decide_issuance(&p, registry(), "acme", &req);
    assert!(reason(&v).contains("`requested-lifetime-seconds`"), "{}", reason(&v));
    let mut req = renewal("acme", &["www.acme.test"], &["vm-1"]);
    req.trigger = Trigger::AcmeOrder;
    let v = host().decide_renewal(&plugin("registry-control"), registry(), "acme", &req);
    assert!(reason(&v).contains("`trigger`"), "{}", reason(&v));
    // Each trigger's promises: what is known, and what is not.
    let base = issuance("acme", &["www.acme.test"], 0);
    for (req, field) in [
        (IssuanceRequest { trigger: Trigger::Renewal, ..base.clone() }, "`trigger` is `renewal`"),
        (IssuanceRequest { account: None, ..base.clone() }, "`account` is missing"),
        (IssuanceRequest { trigger: Trigger::AcmeOrder, ..base.clone() }, "`key` is set for trigger `acme-order`"),
        (IssuanceRequest { key: None, ..base.clone() }, "`key` is missing"),
        (IssuanceRequest { resource: Some("vm-1".into()), ..base.clone() }, "`resource` is set for trigger `acme-finalize`"),
        (IssuanceRequest { trigger: Trigger::Provisioning, account: None, ..base.clone() }, "`resource` is missing"),
    ] {
        let v = host().decide_issuance(&p, registry(), "acme", &req);
        assert!(reason(&v).contains(field), "{field}: {}", reason(&v));
    }
    let req = RenewalRequest { certificate: None, ..renewal("acme", &["www.acme.test"], &["vm-1"]) };
    let v = host().decide_renewal(&plugin("registry-control"), registry(), "acme", &req);
    assert!(reason(&v).contains("`certificate` is missing"), "{}", reason(&v));
    assert!(
        host()
            .decide_renewal(&plugin("registry-control"), registry(), "acme", &RenewalRequest { trigger: Trigger::Rekey, ..req })
            .decision
            .is_allow()
    );
}

#[test]
fn a_plugin_built_against_0_1_0_is_refused_with_how_to_rebuild() {
    let b = bytes("legacy-v0-1");
    for result in [host().check(&b).map(|_| ()), host().load(&b).map(|_| ())] {
        let e = result.expect_err("a 0.1.0 plugin must be refused");
        assert!(matches!(&e, PolicyError::WrongVersion { built, .. } if built == "0.1.0"), "{e:?}");
        let m = e.to_string();
        assert!(m.contains("was built against tenure:policy@0.1.0; this server speaks tenure:policy@0.2.0"), "{m}");
        assert!(m.contains("tenure-policy-sdk") && m.contains("cargo build --release --target wasm32-wasip2"), "{m}");
    }
    // The fixture is a real 0.1.0 plugin: it imports the 0.1.0 interfaces and nothing else.
    let dir = tempfile::tempdir().unwrap();
    let h = PolicyHost::new(test_limits(), Some(dir.path().to_owned())).unwrap();
    let Err(PolicyError::WrongVersion { .. }) = h.load(&b) else { panic!("refused") };
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "a refused plugin is not cached");
    assert_eq!(foreign_version(&["tenure:policy/registry@0.1.0".into(), "tenure:policy/types@0.1.0".into()]).as_deref(), Some("0.1.0"));
    assert_eq!(foreign_version(&["tenure:policy/registry@0.2.3".into(), "wasi:cli/stdin@0.2.0".into()]), None);
    assert!(rebuild_hint("0.3.0").contains("upgrade this server"));
}

#[test]
fn hook_names_parse_and_print() {
    for h in Hook::ALL {
        assert_eq!(h.as_str().parse::<Hook>(), Ok(h));
        assert_eq!(h.to_string(), h.as_str());
    }
    assert!("issue".parse::<Hook>().unwrap_err().contains("issuance"));
}

#[test]
fn hook_requests_from_json_name_the_offending_field() {
    let good = r#"{"tenant":"acme","account":"acct-1","trigger":"acme-order","identifiers":[{"type":"dns","value":"www.acme.test"}],
                   "profile":"default","requested-lifetime-seconds":3600}"#;
    let HookRequest::Issuance(req) = HookRequest::from_json(Hook::Issuance, good).unwrap() else { panic!("issuance") };
    assert_eq!((req.account.as_deref(), req.key, req.resource), (Some("acct-1"), None, None), "optional fields may be left out");
    let e = HookRequest::from_json(Hook::Issuance, &good.replace(r#""account":"acct-1","#, "")).unwrap_err();
    assert!(e.contains("`account` is missing"), "{e}");
    // The misspelling of issue 11: rejected by name, with the right spelling offered.
    let e = HookRequest::from_json(Hook::Issuance, &good.replace("requested-lifetime-seconds", "requestedLifetime")).unwrap_err();
    assert!(e.contains("unknown field `requestedLifetime`") && e.contains("`requested-lifetime-seconds`"), "{e}");
    let e = HookRequest::from_json(Hook::Issuance, &good.replace(r#""profile":"default","#, "")).unwrap_err();
    assert!(e.contains("missing field `profile`"), "{e}");
    let e = HookRequest::from_json(Hook::Issuance, &good.replace("acme-order", "acme_order")).unwrap_err();
    assert!(e.contains("acme_order") && e.contains("acme-finalize"), "{e}");
    let e = HookRequest::from_json(Hook::Issuance, &good.replace("3600", "0")).unwrap_err();
    assert!(e.contains("`requested-lifetime-seconds` is 0"), "{e}");
    // Nested records too.
    let renewal = r#"{"tenant":"acme","trigger":"renewal","identifiers":[],"resources":[],"profile":"p","requested-lifetime-seconds":1,
                      "certificate":{"serial":"01","identifiers":[],"not_before":1,"not-after":2}}"#;
    let e = HookRequest::from_json(Hook::Renewal, renewal).unwrap_err();
    assert!(e.contains("unknown field `not_before`"), "{e}");
    let e = HookRequest::from_json(Hook::Distribution, r#"{"tenant":"acme","key-id":"k","source-hsm":"a"}"#).unwrap_err();
    assert!(e.contains("missing field `target-hsm`"), "{e}");
}

/// The example's sample requests are what `plugin eval` reads: they must parse as
/// their hook's request, and serialize back to the same JSON (no field dropped).
#[test]
fn the_example_sample_requests_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/tenant-plugin/requests");
    for hook in Hook::ALL {
        let path = dir.join(format!("{hook}.json"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let req = HookRequest::from_json(hook, &text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(req.hook(), hook);
        let original: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_value(&req).unwrap(), original, "{} round-trips", path.display());
        // And a plugin gets it: registry-control decides (whatever it says) without a fault.
        let v = host().decide(&plugin("registry-control"), registry(), req.tenant(), &req);
        assert!(!v.decision.deny_reason().is_some_and(|r| r.contains("invalid request")), "{:?}", v.decision);
    }
}

#[test]
fn chain_dispatches_on_the_hook() {
    let plugins = [plugin("registry-control"), plugin("allow-distribution")];
    let c = host().chain(&plugins, registry(), "acme", &distribution("acme", "hsm-1", "hsm-2").into());
    assert!(c.decision.is_allow(), "{:?}", c.decision);
    let c = host().chain(&plugins, registry(), "acme", &issuance("acme", &["www.acme.test"], 0).into());
    assert!(reason_of(&c.decision).contains("does not allow issuance"));
    let c = host().chain(&plugins, registry(), "acme", &renewal("acme", &["www.acme.test"], &["vm-1"]).into());
    assert_eq!(c.verdicts.len(), 2);
    assert!(reason_of(&c.decision).contains("does not allow issuance"), "allow-distribution renews by its (denying) issuance rule");
}

fn reason_of(d: &Decision) -> &str {
    d.deny_reason().unwrap_or_else(|| panic!("expected a denial, got {d:?}"))
}

/// examples/tenant-plugin vendors the SDK and the WIT, so a copy of it builds outside
/// this tree: the copies must be the originals, byte for byte.
#[test]
fn the_example_vendors_this_sdk_and_wit_unchanged() {
    fn files(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "target") {
                    files(root, &path, out);
                }
            } else {
                let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    let tree = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let example = tree.join("examples/tenant-plugin");
    let fix = "refresh the copies: rm -rf examples/tenant-plugin/vendor/tenure-policy-sdk && \
               cp -r plugins/sdk examples/tenant-plugin/vendor/tenure-policy-sdk && cp wit/policy.wit examples/tenant-plugin/wit/";
    for (original, copy) in [(tree.join("plugins/sdk"), example.join("vendor/tenure-policy-sdk")), (tree.join("wit"), example.join("wit"))]
    {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        files(&original, &original, &mut a);
        files(&copy, &copy, &mut b);
        a.sort();
        b.sort();
        let names = |v: &[(String, Vec<u8>)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        assert_eq!(names(&a), names(&b), "{} and {} hold different files; {fix}", original.display(), copy.display());
        for ((name, x), (_, y)) in a.iter().zip(&b) {
            assert!(x == y, "{name} differs between {} and {}; {fix}", original.display(), copy.display());
        }
    }
}

#[test]
fn a_core_module_is_refused_as_not_a_component() {
    // The smallest core module: the preamble, version 1, layer 0.
    let core = b"\0asm\x01\x00\x00\x00";
    let err = host().check(core).unwrap_err().to_string();
    assert!(err.contains("core WebAssembly module, not a component"), "{err}");
}
