//! Test plugin: a std plugin that reads a file, so its component imports
//! wasi:filesystem (and more of WASI). tenure must refuse to load it.
//! It binds the WIT itself: the SDK's runtime is no_std and would clash with std's.
// The canonical ABI flattens records into many parameters: generated code, not ours.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({ path: "../../wit", world: "tenure:policy/policy" });

struct UsesFs;

impl Guest for UsesFs {
    fn decide_issuance(_req: IssuanceRequest) -> Decision {
        match std::fs::read_to_string("/etc/passwd") {
            Ok(s) => Decision::Deny(s),
            Err(e) => Decision::Deny(e.to_string()),
        }
    }
    fn decide_renewal(_req: RenewalRequest) -> Decision {
        Decision::Deny("no".into())
    }
    fn decide_distribution(_req: DistributionRequest) -> Decision {
        Decision::Deny("no".into())
    }
}

export!(UsesFs);
