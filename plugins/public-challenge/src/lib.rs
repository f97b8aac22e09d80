//! The public tenant's default: anyone may ask for any name, and proves control of it
//! with an ACME challenge (nothing is authorized by control). Renewal is the client's
//! business (it re-orders), and public tenants have no HSMs.
#![no_std]

use tenure_policy_sdk::prelude::*;

const DEFAULT_LIFETIME: u64 = 24 * 3600;

struct PublicChallenge;

impl Policy for PublicChallenge {
    fn decide_issuance(req: IssuanceRequest) -> Decision {
        if req.identifiers.is_empty() {
            return deny("no identifiers requested");
        }
        let lifetime = match req.requested_lifetime_seconds {
            0 => DEFAULT_LIFETIME,
            n => n,
        };
        allow(req.identifiers, lifetime)
    }

    fn decide_renewal(_req: RenewalRequest) -> Decision {
        deny("public certificates are renewed by their ACME clients")
    }

    fn decide_distribution(_req: DistributionRequest) -> Decision {
        deny("the public tenant has no HSMs")
    }
}

tenure_policy_sdk::policy!(PublicChallenge);
