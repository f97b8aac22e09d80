//! Test plugin: allocates (and touches) memory until the host's cap stops it.
#![no_std]

use tenure_policy_sdk::prelude::*;

struct MemoryHog;

fn hog() -> Result<Decision, String> {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        blocks.push(vec![0xA5; 1 << 20]);
        core::hint::black_box(&blocks);
    }
}

impl Policy for MemoryHog {
    fn decide_issuance(_req: IssuanceRequest) -> Result<Decision, String> {
        hog()
    }
    fn decide_renewal(_req: RenewalRequest) -> Result<Decision, String> {
        hog()
    }
}

tenure_policy_sdk::policy!(MemoryHog);
