//! The default for a tenant: identifiers the registry shows the tenant holding
//! (active) are authorized by control, with the shortest `lifetime-seconds`
//! attribute among their resources; every other identifier inside the tenant's
//! constraints is allowed too, but must be proven with an ACME challenge.
//! Renewal: every bound resource must still be held and active.
//! Provisioning (no client asks): a resource whose attribute `certificate` is
//! `auto` gets a certificate for its names and addresses, with a new key at
//! every renewal (`rekey`; tenure rekeys only keys it holds).
#![no_std]

use tenure_policy_sdk::prelude::*;

const DEFAULT_LIFETIME: u64 = 24 * 3600;

struct ControlOrChallenge;

fn lifetime_of(resource: &Resource) -> u64 {
    lifetime_attribute(resource).unwrap_or(DEFAULT_LIFETIME)
}

/// The attribute by which a resource asks for a certificate, and the value
/// that asks this policy to provision it.
const CERTIFICATE_ATTRIBUTE: &str = "certificate";
const AUTO: &str = "auto";

fn provisioned_automatically(resource: &Resource) -> bool {
    resource.attributes.iter().any(|(k, v)| k == CERTIFICATE_ATTRIBUTE && v == AUTO)
}

/// Provisioning: only a resource that asks with `certificate=auto`, for what it holds.
fn decide_provisioning(req: IssuanceRequest) -> Result<Decision, String> {
    let Some(id) = req.resource.as_deref() else {
        return Ok(deny("a provisioning request names no resource"));
    };
    let Some(resource) = registry::resource_by_id(id)?.filter(|r| r.state == ResourceState::Active) else {
        return Ok(deny(format!("resource {id} is not held by tenant {}", req.tenant)));
    };
    if !provisioned_automatically(&resource) {
        return Ok(deny(format!("resource {id} does not ask for a certificate with {CERTIFICATE_ATTRIBUTE}={AUTO}")));
    }
    let lifetime = lifetime_of(&resource).min(req.requested_lifetime_seconds);
    let mut g = grant(req.identifiers.clone(), lifetime);
    g.authorize_by_control = req.identifiers;
    g.rekey = true;
    Ok(Decision::Allow(g))
}

impl Policy for ControlOrChallenge {
    fn decide_issuance(req: IssuanceRequest) -> Result<Decision, String> {
        if req.identifiers.is_empty() {
            return Ok(deny("no identifiers requested"));
        }
        if req.trigger == Trigger::Provisioning {
            return decide_provisioning(req);
        }
        let mut lifetime: Option<u64> = None;
        let mut held = Vec::new();
        for id in &req.identifiers {
            if let Some(h) = registry::holder(id)?.filter(|h| h.state == ResourceState::Active) {
                let l = h.lifetime_seconds.unwrap_or(DEFAULT_LIFETIME);
                lifetime = Some(lifetime.map_or(l, |x| x.min(l)));
                held.push(id.clone());
            }
        }
        let lifetime = lifetime.unwrap_or(DEFAULT_LIFETIME).min(req.requested_lifetime_seconds);
        let mut g = grant(req.identifiers, lifetime);
        g.authorize_by_control = held;
        Ok(Decision::Allow(g))
    }

    fn decide_renewal(req: RenewalRequest) -> Result<Decision, String> {
        if req.identifiers.is_empty() {
            return Ok(deny("certificate names no identifiers"));
        }
        if req.resources.is_empty() {
            return Ok(deny("the certificate is bound to no resource; its client renews it"));
        }
        let mut lifetime: Option<u64> = None;
        let mut rekey = false;
        for rid in &req.resources {
            match registry::resource_by_id(rid)?.filter(|r| r.state == ResourceState::Active) {
                Some(r) => {
                    rekey |= provisioned_automatically(&r);
                    let l = lifetime_of(&r);
                    lifetime = Some(lifetime.map_or(l, |x| x.min(l)));
                }
                None => return Ok(deny(format!("resource {rid} is no longer held by tenant {}", req.tenant))),
            }
        }
        let lifetime = lifetime.unwrap_or(DEFAULT_LIFETIME).min(req.requested_lifetime_seconds);
        let mut decision = allow_by_control(req.identifiers, lifetime);
        if let Decision::Allow(g) = &mut decision {
            g.rekey = rekey;
        }
        Ok(decision)
    }
}

tenure_policy_sdk::policy!(ControlOrChallenge);
