//! Write a tenure policy plugin as one trait impl.
//!
//! ```ignore
//! #![no_std]
//! use tenure_policy_sdk::prelude::*;
//!
//! struct MyPolicy;
//! impl Policy for MyPolicy {
//!     fn decide_issuance(req: IssuanceRequest) -> Decision {
//!         if req.identifiers.len() > 10 {
//!             return deny("at most 10 names");
//!         }
//!         allow(req.identifiers, 3600)
//!     }
//!     // decide_renewal and decide_distribution keep their default: deny.
//! }
//! tenure_policy_sdk::policy!(MyPolicy);
//! ```
//!
//! Plugins are `#![no_std]` with `alloc`: the SDK's `runtime` feature supplies the
//! allocator and the panic handler, so the component imports nothing but the `policy`
//! world (`std` would pull in WASI imports, which tenure refuses).
#![no_std]

extern crate alloc;

/// The bindings generated from `wit/` (the `policy` world).
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "tenure:policy/policy",
        pub_export_macro: true,
        export_macro_name: "__export_policy",
        default_bindings_module: "::tenure_policy_sdk::bindings",
    });
}

#[cfg(feature = "runtime")]
mod runtime;

use alloc::string::String;
use alloc::vec::Vec;

pub use bindings::tenure::policy::types::{
    CertificateInfo, Decision, DistributionRequest, Grant, Holding, Identifier, IdentifierKind, IssuanceRequest, KeyType, RenewalRequest,
    Resource, ResourceState, Tenant,
};

/// The registry, scoped by the host to the tenant the decision is made for.
pub mod registry {
    pub use crate::bindings::tenure::policy::registry::{holder, resource_by_address, resource_by_id, resource_by_name, resources, tenant};
    use crate::{Identifier, IdentifierKind, Resource};

    /// The resource an identifier names: by name for DNS, by address for IP.
    pub fn resource_for(id: &Identifier) -> Option<Resource> {
        match id.kind {
            IdentifierKind::Dns => resource_by_name(&id.value),
            IdentifierKind::Ip => resource_by_address(&id.value),
        }
    }
}

/// Unix seconds, from the host.
pub fn now() -> u64 {
    bindings::tenure::policy::clock::now()
}

pub mod log {
    use crate::bindings::tenure::policy::log::{Level, log};
    pub fn debug(message: &str) {
        log(Level::Debug, message)
    }
    pub fn info(message: &str) {
        log(Level::Info, message)
    }
    pub fn warn(message: &str) {
        log(Level::Warn, message)
    }
    pub fn error(message: &str) {
        log(Level::Error, message)
    }
}

/// A policy. Every hook defaults to deny: implement the ones you decide.
pub trait Policy {
    fn decide_issuance(request: IssuanceRequest) -> Decision {
        let _ = request;
        deny("this policy does not allow issuance")
    }
    fn decide_renewal(request: RenewalRequest) -> Decision {
        let _ = request;
        deny("this policy does not allow renewal")
    }
    fn decide_distribution(request: DistributionRequest) -> Decision {
        let _ = request;
        deny("this policy does not allow key distribution")
    }
}

/// The resource's `lifetime-seconds` attribute, when it is a positive number:
/// the convention platforms use to set certificate lifetimes per resource.
pub fn lifetime_attribute(resource: &Resource) -> Option<u64> {
    resource.attributes.iter().find(|(k, _)| k == "lifetime-seconds").and_then(|(_, v)| v.parse::<u64>().ok()).filter(|&s| s > 0)
}

pub fn deny(reason: impl Into<String>) -> Decision {
    Decision::Deny(reason.into())
}

/// Allow these identifiers for this long, challenges required, default profile.
pub fn allow(identifiers: Vec<Identifier>, lifetime_seconds: u64) -> Decision {
    Decision::Allow(grant(identifiers, lifetime_seconds))
}

/// A grant to refine before `Decision::Allow(..)`.
pub fn grant(identifiers: Vec<Identifier>, lifetime_seconds: u64) -> Grant {
    Grant { identifiers, lifetime_seconds, profile: None, authorize_by_control: Vec::new(), rekey: false }
}

/// The allow of a key distribution (which grants no names and no lifetime).
pub fn allow_distribution() -> Decision {
    allow(Vec::new(), 0)
}

/// Everything a plugin usually needs, `format!` and `vec!` included.
pub mod prelude {
    pub use crate::{
        CertificateInfo, Decision, DistributionRequest, Grant, Identifier, IdentifierKind, IssuanceRequest, KeyType, Policy,
        RenewalRequest, Resource, ResourceState, Tenant, allow, allow_distribution, deny, grant, lifetime_attribute, log, now, registry,
    };
    pub use alloc::borrow::ToOwned;
    pub use alloc::boxed::Box;
    pub use alloc::string::{String, ToString};
    pub use alloc::vec::Vec;
    pub use alloc::{format, vec};
}

/// Export a [`Policy`] as the component's `decide-*` functions.
#[macro_export]
macro_rules! policy {
    ($policy:ty) => {
        const _: () = {
            struct __TenurePolicyExport;
            impl $crate::bindings::Guest for __TenurePolicyExport {
                fn decide_issuance(request: $crate::IssuanceRequest) -> $crate::Decision {
                    <$policy as $crate::Policy>::decide_issuance(request)
                }
                fn decide_renewal(request: $crate::RenewalRequest) -> $crate::Decision {
                    <$policy as $crate::Policy>::decide_renewal(request)
                }
                fn decide_distribution(request: $crate::DistributionRequest) -> $crate::Decision {
                    <$policy as $crate::Policy>::decide_distribution(request)
                }
            }
    $crate::bindings::__export_policy!(__TenurePolicyExport with_types_in $crate::bindings);
        };
    };
}
