//! An example tenant policy: certificates only for names under `internal.`
//! subdomains the tenant holds in the registry, at most 6 hours, by control.
//! Everything the plugin does not implement (renewal, distribution) is denied.
#![no_std]

use tenure_policy_sdk::prelude::*;

const MAX_LIFETIME: u64 = 6 * 3600;

struct InternalOnly;

impl Policy for InternalOnly {
    fn decide_issuance(req: IssuanceRequest) -> Decision {
        for id in &req.identifiers {
            if id.kind == IdentifierKind::Dns && !id.value.contains(".internal.") {
                return deny(format!("{} is not under an internal. subdomain", id.value));
            }
            match registry::resource_for(id) {
                Some(r) if r.state == ResourceState::Active => {}
                _ => return deny(format!("{} is not held by tenant {}", id.value, req.tenant)),
            }
        }
        let lifetime = match req.requested_lifetime_seconds {
            0 => MAX_LIFETIME,
            n => n.min(MAX_LIFETIME),
        };
        let mut g = grant(req.identifiers.clone(), lifetime);
        g.authorize_by_control = req.identifiers;
        Decision::Allow(g)
    }
}

tenure_policy_sdk::policy!(InternalOnly);
