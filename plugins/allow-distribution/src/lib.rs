//! Test plugin: allows every key distribution, whatever the HSMs are (the host
//! must still refuse one across tenants). Every other hook keeps the default, deny.
#![no_std]

use tenure_policy_sdk::prelude::*;

struct AllowDistribution;
impl Policy for AllowDistribution {
    fn decide_distribution(_req: DistributionRequest) -> Decision {
        allow_distribution()
    }
}

tenure_policy_sdk::policy!(AllowDistribution);
