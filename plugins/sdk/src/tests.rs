//! The SDK natively: the renewal default and the in-memory registry.
//! `cargo test -p tenure-policy-sdk --features testing` (in `plugins/`).

use alloc::string::String;
use alloc::vec;

use crate::prelude::*;
use crate::testing::{self, Registry, resource};

/// Held names only, at most 1 h; implements issuance alone.
struct HeldOnly;

impl Policy for HeldOnly {
    fn decide_issuance(req: IssuanceRequest) -> Result<Decision, String> {
        for id in &req.identifiers {
            if registry::holder(id)?.filter(|h| h.state == ResourceState::Active).is_none() {
                return Ok(deny(format!("{}: {} is not held", req.trigger.as_str(), id.value)));
            }
        }
        Ok(allow_by_control(req.identifiers, req.requested_lifetime_seconds.min(3600)))
    }
}

fn registry() -> Registry {
    Registry::new("acme")
        .permits(&["acme.test"])
        .resource(resource("vm-1", "vm").name("www.acme.test").address("192.0.2.10").attribute("lifetime-seconds", "600"))
        .resource(resource("lb-1", "load-balancer").zone("apps.acme.test"))
        .resource(resource("vm-2", "vm").name("old.acme.test").state(ResourceState::Released))
        .resource(resource("vm-9", "vm").tenant("other").name("www.other.test"))
}

#[test]
fn the_default_renewal_applies_the_issuance_rules() {
    registry().install();
    let d = HeldOnly::decide_renewal(testing::renewal("acme", &["www.acme.test"], &["vm-1"])).unwrap();
    let g = d.grant().expect("held: renewed");
    assert_eq!(g.identifiers, vec![Identifier::dns("www.acme.test")]);
    assert_eq!(g.lifetime_seconds, 3600);
    // A name no longer held: the same denial as at issuance, with the trigger carried over.
    let mut req = testing::renewal("acme", &["old.acme.test"], &["vm-2"]);
    req.trigger = Trigger::Rekey;
    let d = HeldOnly::decide_renewal(req).unwrap();
    assert_eq!(d.deny_reason(), Some("rekey: old.acme.test is not held"));
}

#[test]
fn as_issuance_carries_what_a_renewal_knows() {
    let r = testing::renewal("acme", &["a.acme.test", "192.0.2.10"], &["vm-1"]);
    let i = r.as_issuance();
    assert_eq!(i.tenant, "acme");
    assert_eq!(i.trigger, Trigger::Renewal);
    assert_eq!(i.identifiers, r.identifiers);
    assert_eq!(i.identifiers[1].kind, IdentifierKind::Ip);
    assert_eq!((i.profile.as_str(), i.requested_lifetime_seconds), ("default", 86_400));
    assert_eq!((i.account, i.key, i.resource), (None, None, None));
}

#[test]
fn a_policy_without_issuance_denies_renewals_too() {
    struct Nothing;
    impl Policy for Nothing {}
    registry().install();
    let d = Nothing::decide_renewal(testing::renewal("acme", &["www.acme.test"], &["vm-1"])).unwrap();
    assert_eq!(d.deny_reason(), Some("this policy does not allow issuance"));
}

#[test]
fn the_registry_answers_as_the_host_does() {
    registry().install();
    let held = |n: &str| registry::holder(&Identifier::dns(n)).unwrap().map(|h| h.resource_id);
    assert_eq!(held("www.acme.test").as_deref(), Some("vm-1"));
    assert_eq!(held("apps.acme.test").as_deref(), Some("lb-1"), "the zone itself");
    assert_eq!(held("x.y.apps.acme.test").as_deref(), Some("lb-1"), "under the zone");
    assert_eq!(held("*.apps.acme.test").as_deref(), Some("lb-1"), "a wildcard through the zone");
    assert_eq!(held("*.www.acme.test").as_deref(), Some("vm-1"), "a wildcard's base name");
    assert_eq!(held("notapps.acme.test"), None, "a suffix is not a zone");
    assert_eq!(held("old.acme.test"), None, "released holds nothing");
    assert_eq!(held("www.other.test"), None, "another tenant's");
    let h = registry::holder(&Identifier::ip("192.0.2.10")).unwrap().unwrap();
    assert_eq!((h.resource_id.as_str(), h.lifetime_seconds), ("vm-1", Some(600)));
    assert_eq!(registry::resource_by_id("vm-2").unwrap().map(|r| r.state), Some(ResourceState::Released));
    assert_eq!(registry::resource_by_id("vm-9").unwrap(), None);
    assert_eq!(registry::resources().unwrap().len(), 3);
    assert_eq!(registry::tenant().unwrap().permits, vec![String::from("acme.test")]);
}

#[test]
fn a_failing_registry_is_an_error_and_the_export_denies() {
    registry().failing("database is locked").install();
    let err = registry::holder(&Identifier::dns("www.acme.test")).unwrap_err();
    assert_eq!(err, "registry unavailable: database is locked");
    let d = crate::__answer(HeldOnly::decide_issuance(testing::issuance("acme", &["www.acme.test"])));
    assert_eq!(d.deny_reason(), Some("could not decide: registry unavailable: database is locked"));
}

#[test]
fn logs_and_clock_are_seen_natively() {
    registry().now(42).install();
    log::warn("careful");
    assert_eq!(now(), 42);
    assert_eq!(testing::logs(), vec![(log::Level::Warn, String::from("careful"))]);
}
