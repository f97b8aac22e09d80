//! Test plugin: panics on issuance, executes `unreachable` on renewal.
#![no_std]

use tenure_policy_sdk::prelude::*;

struct Trap;

impl Policy for Trap {
    fn decide_issuance(req: IssuanceRequest) -> Result<Decision, String> {
        panic!("deliberate panic for {}", req.tenant)
    }
    fn decide_renewal(_req: RenewalRequest) -> Result<Decision, String> {
        core::arch::wasm32::unreachable()
    }
}

tenure_policy_sdk::policy!(Trap);
