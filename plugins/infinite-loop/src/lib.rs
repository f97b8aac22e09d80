//! Test plugin: never returns. The host's deadline must stop it.
#![no_std]

use tenure_policy_sdk::prelude::*;

struct InfiniteLoop;

fn spin() -> ! {
    let mut x: u64 = 0;
    loop {
        // Volatile, so the loop is neither removed nor folded.
        unsafe { core::ptr::write_volatile(&mut x, x.wrapping_add(1)) };
    }
}

impl Policy for InfiniteLoop {
    fn decide_issuance(_req: IssuanceRequest) -> Result<Decision, String> {
        spin()
    }
    fn decide_renewal(_req: RenewalRequest) -> Result<Decision, String> {
        spin()
    }
    fn decide_distribution(_req: DistributionRequest) -> Result<Decision, String> {
        spin()
    }
}

tenure_policy_sdk::policy!(InfiniteLoop);
