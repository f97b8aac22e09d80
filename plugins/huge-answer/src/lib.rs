//! Test plugin: answers far more than the host accepts.
//! Issuance: a 4 MiB deny reason. Renewal: an allow naming 20,000 identifiers.
#![no_std]

use tenure_policy_sdk::prelude::*;

struct HugeAnswer;

impl Policy for HugeAnswer {
    fn decide_issuance(_req: IssuanceRequest) -> Result<Decision, String> {
        Ok(deny("x".repeat(4 << 20)))
    }
    fn decide_renewal(req: RenewalRequest) -> Result<Decision, String> {
        let name = req.identifiers.first().cloned().unwrap_or(Identifier::dns("example.com"));
        Ok(allow(vec![name; 20_000], 3600))
    }
}

tenure_policy_sdk::policy!(HugeAnswer);
