//! Test plugin: what the 0.1 SDK built. `wit/policy.wit` here is `tenure:policy@0.1.0`
//! exactly as it was released, and the runtime is the SDK's (the same no_std allocator
//! and panic handler), so the component imports `tenure:policy/*@0.1.0` and nothing else:
//! a faithful old plugin, which a 0.2 server must refuse, saying how to rebuild it.
#![no_std]
// The canonical ABI flattens records into many parameters: generated code, not ours.
#![allow(clippy::too_many_arguments)]

extern crate alloc;

wit_bindgen::generate!({ path: "wit", world: "tenure:policy/policy" });

#[path = "../../sdk/src/runtime.rs"]
mod runtime;

/// What the SDK runtime's panic handler calls.
mod log {
    pub fn error(message: &str) {
        crate::tenure::policy::log::log(crate::tenure::policy::log::Level::Error, message)
    }
}

use tenure::policy::types::Grant;

struct Legacy;

impl Guest for Legacy {
    fn decide_issuance(req: IssuanceRequest) -> Decision {
        // Uses the 0.1 registry (an `option`, no `result`), as 0.1 plugins did.
        if req.identifiers.iter().any(|id| tenure::policy::registry::holder(id).is_none()) {
            return Decision::Deny("not held".into());
        }
        Decision::Allow(Grant {
            identifiers: req.identifiers,
            lifetime_seconds: 3600,
            profile: None,
            authorize_by_control: alloc::vec::Vec::new(),
            rekey: false,
        })
    }
    fn decide_renewal(_req: RenewalRequest) -> Decision {
        Decision::Deny("no".into())
    }
    fn decide_distribution(_req: DistributionRequest) -> Decision {
        Decision::Deny("no".into())
    }
}

export!(Legacy);
