//! Test plugin: allows every key distribution, whatever the HSMs are (the host
//! must still refuse one across tenants). Issuance keeps the default, deny (and so renewal, which asks it).
#![no_std]

use tenure_policy_sdk::prelude::*;

struct AllowDistribution;
impl Policy for AllowDistribution {
    fn decide_distribution(_req: DistributionRequest) -> Result<Decision, String> {
        Ok(allow_distribution())
    }
}

tenure_policy_sdk::policy!(AllowDistribution);
