//! Test plugin: implements `decide-issuance` only. Names must be held (active) by the
//! tenant, at most 1 h; a denial names the trigger it was asked for. Renewal keeps the
//! SDK's default, which asks `decide_issuance`: the host's tests check that a renewal
//! is then decided by these same rules, not denied or allowed blindly.
#![no_std]

use tenure_policy_sdk::prelude::*;

struct IssuanceOnly;

impl Policy for IssuanceOnly {
    fn decide_issuance(req: IssuanceRequest) -> Result<Decision, String> {
        let mut unheld = Vec::new();
        for id in &req.identifiers {
            if registry::holder(id)?.filter(|h| h.state == ResourceState::Active).is_none() {
                unheld.push(id.value.as_str());
            }
        }
        if !unheld.is_empty() {
            return Ok(deny(format!("{}: not held: {}", req.trigger.as_str(), unheld.join(", "))));
        }
        Ok(allow_by_control(req.identifiers, req.requested_lifetime_seconds.min(3600)))
    }
}

tenure_policy_sdk::policy!(IssuanceOnly);
