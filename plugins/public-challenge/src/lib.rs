//! The public tenant's default: anyone may ask for any name, and proves control of it
//! with an ACME challenge (nothing is authorized by control), for the profile's
//! lifetime. Renewal is the client's business (it re-orders), and public tenants have
//! no HSMs.
#![no_std]

use tenure_policy_sdk::prelude::*;

struct PublicChallenge;

impl Policy for PublicChallenge {
    fn decide_issuance(req: IssuanceRequest) -> Result<Decision, String> {
        if req.identifiers.is_empty() {
            return Ok(deny("no identifiers requested"));
        }
        Ok(allow(req.identifiers, req.requested_lifetime_seconds))
    }

    fn decide_renewal(_req: RenewalRequest) -> Result<Decision, String> {
        Ok(deny("public certificates are renewed by their ACME clients"))
    }

    fn decide_distribution(_req: DistributionRequest) -> Result<Decision, String> {
        Ok(deny("the public tenant has no HSMs"))
    }
}

tenure_policy_sdk::policy!(PublicChallenge);
