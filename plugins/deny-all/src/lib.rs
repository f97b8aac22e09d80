//! Test plugin: implements nothing, so every hook keeps the SDK's default: issuance and
//! distribution deny, and renewal asks issuance, which denies.
#![no_std]

use tenure_policy_sdk::prelude::*;

struct DenyAll;
impl Policy for DenyAll {}

tenure_policy_sdk::policy!(DenyAll);
