//! Registry control: allow exactly what the registry shows the tenant holding.
//!
//! Issuance: every identifier must name an active resource of the tenant (by name or
//! zone for DNS, by address for IP); then all of them are authorized by control (no
//! challenge) and the lifetime is the shortest `lifetime-seconds` attribute among those
//! resources (default 24 h), capped at the requested one. Any unheld identifier denies,
//! naming it.
//! Renewal: every resource the certificate is bound to must still be held and active
//! (or, bound to none, every name); a `rekey=true` attribute asks for a new key.
//! Distribution: both HSMs must be active HSM resources of the tenant.
//! A registry that cannot answer denies (`?`).
#![no_std]

use tenure_policy_sdk::prelude::*;

const DEFAULT_LIFETIME: u64 = 24 * 3600;

struct RegistryControl;

fn lifetime_of(resource: &Resource) -> u64 {
    lifetime_attribute(resource).unwrap_or(DEFAULT_LIFETIME)
}

fn held(resource: Option<Resource>) -> Option<Resource> {
    resource.filter(|r| r.state == ResourceState::Active)
}

impl Policy for RegistryControl {
    fn decide_issuance(req: IssuanceRequest) -> Result<Decision, String> {
        if req.identifiers.is_empty() {
            return Ok(deny("no identifiers requested"));
        }
        let mut lifetime: Option<u64> = None;
        let mut unheld: Vec<&str> = Vec::new();
        for id in &req.identifiers {
            // `holder` rather than the whole resource: one string crosses, not ten.
            match registry::holder(id)?.filter(|h| h.state == ResourceState::Active) {
                Some(h) => {
                    let l = h.lifetime_seconds.unwrap_or(DEFAULT_LIFETIME);
                    lifetime = Some(lifetime.map_or(l, |x| x.min(l)));
                }
                None => unheld.push(&id.value),
            }
        }
        if !unheld.is_empty() {
            return Ok(deny(format!("not held by tenant {}: {}", req.tenant, unheld.join(", "))));
        }
        let lifetime = lifetime.unwrap_or(DEFAULT_LIFETIME).min(req.requested_lifetime_seconds);
        Ok(allow_by_control(req.identifiers, lifetime))
    }

    fn decide_renewal(req: RenewalRequest) -> Result<Decision, String> {
        if req.identifiers.is_empty() {
            return Ok(deny("certificate names no identifiers"));
        }
        let mut lifetime: Option<u64> = None;
        let mut rekey = false;
        let mut lost: Vec<String> = Vec::new();
        let mut consider = |found: Option<Resource>, label: &str| match held(found) {
            Some(r) => {
                let l = lifetime_of(&r);
                lifetime = Some(lifetime.map_or(l, |x| x.min(l)));
                rekey |= r.attributes.iter().any(|(k, v)| k == "rekey" && v == "true");
            }
            None => lost.push(label.to_owned()),
        };
        if req.resources.is_empty() {
            // Not bound to a resource: each name must still be held.
            for id in &req.identifiers {
                consider(registry::resource_for(id)?, &id.value);
            }
        } else {
            for rid in &req.resources {
                consider(registry::resource_by_id(rid)?, rid);
            }
        }
        if !lost.is_empty() {
            return Ok(deny(format!("no longer held by tenant {}: {}", req.tenant, lost.join(", "))));
        }
        let lifetime = lifetime.unwrap_or(DEFAULT_LIFETIME).min(req.requested_lifetime_seconds);
        let mut g = grant(req.identifiers.clone(), lifetime);
        g.authorize_by_control = req.identifiers;
        g.rekey = rekey;
        Ok(Decision::Allow(g))
    }

    fn decide_distribution(req: DistributionRequest) -> Result<Decision, String> {
        for hsm in [&req.source_hsm, &req.target_hsm] {
            match held(registry::resource_by_id(hsm)?) {
                Some(r) if r.kind == "hsm" => {}
                Some(r) => return Ok(deny(format!("{hsm} is a {}, not an hsm", r.kind))),
                None => return Ok(deny(format!("hsm {hsm} is not held by tenant {}", req.tenant))),
            }
        }
        Ok(allow_distribution())
    }
}

tenure_policy_sdk::policy!(RegistryControl);
