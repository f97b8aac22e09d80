//! Registry control: allow exactly what the registry shows the tenant holding.
//!
//! Issuance: every identifier must name an active resource of the tenant (by name or
//! zone for DNS, by address for IP); then all of them are authorized by control (no
//! challenge) and the lifetime is the shortest `lifetime-seconds` attribute among those
//! resources (default 24 h). Any unheld identifier denies, naming it.
//! Renewal: every resource the certificate is bound to must still be held and active.
//! Distribution: both HSMs must be active HSM resources of the tenant.
#![no_std]

use tenure_policy_sdk::prelude::*;

const DEFAULT_LIFETIME: u64 = 24 * 3600;

struct RegistryControl;

fn lifetime_of(resource: &Resource) -> u64 {
    lifetime_attribute(resource).unwrap_or(DEFAULT_LIFETIME)
}

fn held(resource: &Option<Resource>) -> Option<&Resource> {
    resource.as_ref().filter(|r| r.state == ResourceState::Active)
}

fn cap(lifetime: u64, requested: u64) -> u64 {
    if requested > 0 { lifetime.min(requested) } else { lifetime }
}

impl Policy for RegistryControl {
    fn decide_issuance(req: IssuanceRequest) -> Decision {
        let mut lifetime = DEFAULT_LIFETIME;
        let mut lifetime_set = false;
        let mut unheld: Vec<&str> = Vec::new();
        for id in &req.identifiers {
            // `holder` rather than the whole resource: one string crosses, not ten.
            match registry::holder(id).filter(|h| h.state == ResourceState::Active) {
                Some(h) => {
                    let l = h.lifetime_seconds.unwrap_or(DEFAULT_LIFETIME);
                    lifetime = if lifetime_set { lifetime.min(l) } else { l };
                    lifetime_set = true;
                }
                None => unheld.push(&id.value),
            }
        }
        if req.identifiers.is_empty() {
            return deny("no identifiers requested");
        }
        if !unheld.is_empty() {
            return deny(format!("not held by tenant {}: {}", req.tenant, unheld.join(", ")));
        }
        let mut g = grant(req.identifiers.clone(), cap(lifetime, req.requested_lifetime_seconds));
        g.authorize_by_control = req.identifiers;
        Decision::Allow(g)
    }

    fn decide_renewal(req: RenewalRequest) -> Decision {
        let cert = req.certificate;
        let mut lifetime: Option<u64> = None;
        let mut rekey = false;
        let mut lost: Vec<String> = Vec::new();
        let mut consider = |found: Option<Resource>, label: &str| match held(&found) {
            Some(r) => {
                let l = lifetime_of(r);
                lifetime = Some(lifetime.map_or(l, |x| x.min(l)));
                rekey |= r.attributes.iter().any(|(k, v)| k == "rekey" && v == "true");
            }
            None => lost.push(label.to_owned()),
        };
        if cert.resources.is_empty() {
            // Not bound to a resource: each name must still be held.
            for id in &cert.identifiers {
                consider(registry::resource_for(id), &id.value);
            }
        } else {
            for rid in &cert.resources {
                consider(registry::resource_by_id(rid), rid);
            }
        }
        if cert.identifiers.is_empty() {
            return deny("certificate names no identifiers");
        }
        if !lost.is_empty() {
            return deny(format!("no longer held by tenant {}: {}", req.tenant, lost.join(", ")));
        }
        let mut g = grant(cert.identifiers.clone(), lifetime.unwrap_or(DEFAULT_LIFETIME));
        g.authorize_by_control = cert.identifiers;
        g.rekey = rekey;
        Decision::Allow(g)
    }

    fn decide_distribution(req: DistributionRequest) -> Decision {
        for hsm in [&req.source_hsm, &req.target_hsm] {
            let found = registry::resource_by_id(hsm);
            match held(&found) {
                Some(r) if r.kind == "hsm" => {}
                Some(r) => return deny(format!("{hsm} is a {}, not an hsm", r.kind)),
                None => return deny(format!("hsm {hsm} is not held by tenant {}", req.tenant)),
            }
        }
        allow_distribution()
    }
}

tenure_policy_sdk::policy!(RegistryControl);
