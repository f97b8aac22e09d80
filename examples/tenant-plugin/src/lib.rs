//! An example tenant policy: certificates only for names under one zone that the
//! registry shows this tenant holding (active), none containing `test`, at most 2 hours,
//! authorized by control (no ACME challenge).
//!
//! Renewals are kept: `decide_renewal` is not implemented, so the SDK's default asks
//! `decide_issuance` with the renewal's names, and a certificate is renewed exactly as
//! long as its names still pass these rules. Key distribution keeps its default: deny.
#![no_std]

use tenure_policy_sdk::prelude::*;

/// The zone every name must be in (the zone itself included).
const ZONE: &str = "corp.example";
/// The longest lifetime this policy grants, in seconds.
const MAX_LIFETIME: u64 = 2 * 3600;

/// The policy.
pub struct HeldInZone;

fn in_zone(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    name == ZONE || name.strip_suffix(ZONE).is_some_and(|rest| rest.ends_with('.'))
}

impl Policy for HeldInZone {
    fn decide_issuance(req: IssuanceRequest) -> Result<Decision, String> {
        if req.identifiers.is_empty() {
            return Ok(deny("no identifiers requested"));
        }
        for id in &req.identifiers {
            if id.kind != IdentifierKind::Dns || !in_zone(&id.value) {
                return Ok(deny(format!("{} is not a name under {ZONE}", id.value)));
            }
            if id.value.contains("test") {
                return Ok(deny(format!("{} contains \"test\"", id.value)));
            }
            // `?`: if the registry cannot answer, deny rather than guess.
            match registry::holder(id)? {
                Some(h) if h.state == ResourceState::Active => {}
                Some(h) => return Ok(deny(format!("{} is held by {}, which is not active", id.value, h.resource_id))),
                None => return Ok(deny(format!("{} is not held by tenant {}", id.value, req.tenant))),
            }
        }
        Ok(allow_by_control(req.identifiers, req.requested_lifetime_seconds.min(MAX_LIFETIME)))
    }
}

tenure_policy_sdk::policy!(HeldInZone);

#[cfg(test)]
mod tests {
    use tenure_policy_sdk::testing::{self, Registry, resource};

    use super::*;

    fn registry() -> Registry {
        Registry::new("corp")
            .resource(resource("vm-1", "vm").name("www.corp.example"))
            .resource(resource("lb-1", "load-balancer").zone("apps.corp.example"))
            .resource(resource("vm-2", "vm").name("old.corp.example").state(ResourceState::Suspended))
            .resource(resource("vm-3", "vm").name("test.corp.example"))
            .resource(resource("vm-4", "vm").name("www.elsewhere.example"))
            .resource(resource("vm-9", "vm").tenant("rival").name("rival.corp.example"))
    }

    fn issue(names: &[&str]) -> Decision {
        HeldInZone::decide_issuance(testing::issuance("corp", names)).unwrap()
    }

    #[test]
    fn held_names_in_the_zone_are_allowed_by_control_for_at_most_two_hours() {
        registry().install();
        let d = issue(&["www.corp.example", "shop.apps.corp.example"]);
        let g = d.grant().expect("allowed");
        assert_eq!(g.identifiers.len(), 2);
        assert_eq!(g.authorize_by_control, g.identifiers);
        assert_eq!(g.lifetime_seconds, MAX_LIFETIME);
        // A shorter profile lifetime is kept.
        let mut req = testing::issuance("corp", &["www.corp.example"]);
        req.requested_lifetime_seconds = 600;
        assert_eq!(HeldInZone::decide_issuance(req).unwrap().grant().map(|g| g.lifetime_seconds), Some(600));
    }

    #[test]
    fn everything_else_is_denied_with_its_reason() {
        registry().install();
        for (names, why) in [
            (&["api.corp.example"][..], "not held"),
            (&["old.corp.example"], "not active"),
            (&["test.corp.example"], "contains \"test\""),
            (&["www.elsewhere.example"], "not a name under corp.example"),
            (&["rival.corp.example"], "not held"),
            (&["192.0.2.1"], "not a name under"),
            (&["www.corp.example", "x.corp.example"], "x.corp.example is not held"),
        ] {
            let d = issue(names);
            assert!(d.deny_reason().is_some_and(|r| r.contains(why)), "{names:?}: {d:?}");
        }
    }

    #[test]
    fn renewals_are_kept_while_the_names_are_held() {
        registry().install();
        let d = HeldInZone::decide_renewal(testing::renewal("corp", &["www.corp.example"], &["vm-1"])).unwrap();
        assert_eq!(d.grant().map(|g| g.lifetime_seconds), Some(MAX_LIFETIME));
        let d = HeldInZone::decide_renewal(testing::renewal("corp", &["old.corp.example"], &["vm-2"])).unwrap();
        assert!(d.deny_reason().is_some_and(|r| r.contains("not active")), "{d:?}");
    }

    #[test]
    fn a_registry_that_cannot_answer_is_not_a_denial_by_absence() {
        registry().failing("database is locked").install();
        let err = HeldInZone::decide_issuance(testing::issuance("corp", &["www.corp.example"])).unwrap_err();
        assert!(err.contains("database is locked"), "{err}");
    }
}
