//! Write a tenure policy plugin as one trait impl.
//!
//! ```ignore
//! #![no_std]
//! use tenure_policy_sdk::prelude::*;
//!
//! struct MyPolicy;
//! impl Policy for MyPolicy {
//!     fn decide_issuance(req: IssuanceRequest) -> Result<Decision, String> {
//!         for id in &req.identifiers {
//!             // `?`: a registry that cannot answer denies, it is not "not held".
//!             if registry::holder(id)?.is_none() {
//!                 return Ok(deny(format!("{} is not held", id.value)));
//!             }
//!         }
//!         Ok(allow(req.identifiers, req.requested_lifetime_seconds.min(3600)))
//!     }
//!     // decide_renewal keeps its default: the same rules as decide_issuance.
//!     // decide_distribution keeps its default: deny.
//! }
//! tenure_policy_sdk::policy!(MyPolicy);
//! ```
//!
//! Every hook returns `Result<Decision, String>`: `Err(why)` (from `?` on a registry
//! call, typically) becomes the denial `could not decide: why`.
//!
//! Plugins are `#![no_std]` with `alloc`: the SDK's `runtime` feature supplies the
//! allocator and the panic handler, so the component imports nothing but the `policy`
//! world (`std` would pull in WASI imports, which tenure refuses). Natively (`cargo
//! test`), the `testing` feature gives the registry an in-memory stand-in.
#![no_std]

extern crate alloc;
#[cfg(feature = "testing")]
extern crate std;

/// The bindings generated from `wit/` (the `policy` world).
// The canonical ABI flattens records into many parameters: generated code, not ours.
#[allow(clippy::too_many_arguments)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "tenure:policy/policy",
        pub_export_macro: true,
        export_macro_name: "__export_policy",
        default_bindings_module: "::tenure_policy_sdk::bindings",
        // So tests can `assert_eq!` decisions and requests.
        additional_derives: [PartialEq],
    });
}

#[cfg(all(feature = "runtime", target_arch = "wasm32"))]
mod runtime;

#[cfg(feature = "testing")]
pub mod testing;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

pub use bindings::tenure::policy::types::{
    CertificateInfo, Decision, DistributionRequest, Grant, Holding, Identifier, IdentifierKind, IssuanceRequest, KeyInfo, KeyType,
    RenewalRequest, Resource, ResourceState, Tenant, Trigger,
};

/// The version of `wit/` this SDK builds against.
pub const WIT_VERSION: &str = "0.2.0";

/// The registry, scoped by the host to the tenant the decision is made for.
///
/// Every call answers `Err(reason)` when the registry could not be read: use `?`, so
/// an outage denies instead of reading as "nobody holds it".
pub mod registry {
    use alloc::string::String;
    use alloc::vec::Vec;

    #[cfg(target_arch = "wasm32")]
    use crate::bindings::tenure::policy::registry as source;
    #[cfg(not(target_arch = "wasm32"))]
    use crate::native as source;
    use crate::{Holding, Identifier, IdentifierKind, Resource, Tenant};

    /// The tenant's resource holding an identifier, in brief: by exact name or by a
    /// zone the name is under for DNS (a wildcard `*.example.com` through a zone
    /// holding `example.com` or above), by address for IP. Released resources hold
    /// nothing. The cheapest lookup.
    pub fn holder(id: &Identifier) -> Result<Option<Holding>, String> {
        source::holder(id)
    }
    /// The resource with this exact name, or one holding a zone the name is under.
    pub fn resource_by_name(name: &str) -> Result<Option<Resource>, String> {
        source::resource_by_name(name)
    }
    /// The resource with this address.
    pub fn resource_by_address(address: &str) -> Result<Option<Resource>, String> {
        source::resource_by_address(address)
    }
    /// The resource with this id (released ones included: check `state`).
    pub fn resource_by_id(id: &str) -> Result<Option<Resource>, String> {
        source::resource_by_id(id)
    }
    /// Every resource of the tenant.
    pub fn resources() -> Result<Vec<Resource>, String> {
        source::resources()
    }
    /// The tenant: its name and the permits of its intermediate CA.
    pub fn tenant() -> Result<Tenant, String> {
        source::tenant()
    }

    /// The resource an identifier names: by name for DNS, by address for IP.
    pub fn resource_for(id: &Identifier) -> Result<Option<Resource>, String> {
        match id.kind {
            IdentifierKind::Dns => resource_by_name(&id.value),
            IdentifierKind::Ip => resource_by_address(&id.value),
        }
    }
}

/// Natively, the host's imports do not exist: the registry, log and clock are the
/// `testing` stand-ins, or without that feature a registry that always fails.
#[cfg(not(target_arch = "wasm32"))]
mod native {
    #[cfg(feature = "testing")]
    pub use crate::testing::native::*;

    #[cfg(not(feature = "testing"))]
    mod absent {
        use alloc::string::String;
        use alloc::vec::Vec;

        use crate::{Holding, Identifier, Resource, Tenant};

        fn absent<T>() -> Result<T, String> {
            Err("no registry outside tenure: for native tests, enable the SDK's `testing` feature".into())
        }
        pub fn holder(_: &Identifier) -> Result<Option<Holding>, String> {
            absent()
        }
        pub fn resource_by_name(_: &str) -> Result<Option<Resource>, String> {
            absent()
        }
        pub fn resource_by_address(_: &str) -> Result<Option<Resource>, String> {
            absent()
        }
        pub fn resource_by_id(_: &str) -> Result<Option<Resource>, String> {
            absent()
        }
        pub fn resources() -> Result<Vec<Resource>, String> {
            absent()
        }
        pub fn tenant() -> Result<Tenant, String> {
            absent()
        }
        pub fn now() -> u64 {
            0
        }
        pub fn log(_: crate::log::Level, _: &str) {}
    }
    #[cfg(not(feature = "testing"))]
    pub use absent::*;
}

/// Unix seconds, from the host (natively: `testing::Registry::now`, else 0).
pub fn now() -> u64 {
    #[cfg(target_arch = "wasm32")]
    return bindings::tenure::policy::clock::now();
    #[cfg(not(target_arch = "wasm32"))]
    return native::now();
}

/// tenure's log, tagged with the plugin's digest (natively: standard error, under `testing`).
pub mod log {
    pub use crate::bindings::tenure::policy::log::Level;

    fn log(level: Level, message: &str) {
        #[cfg(target_arch = "wasm32")]
        crate::bindings::tenure::policy::log::log(level, message);
        #[cfg(not(target_arch = "wasm32"))]
        crate::native::log(level, message);
    }
    /// A debug line.
    pub fn debug(message: &str) {
        log(Level::Debug, message)
    }
    /// An info line.
    pub fn info(message: &str) {
        log(Level::Info, message)
    }
    /// A warning.
    pub fn warn(message: &str) {
        log(Level::Warn, message)
    }
    /// An error line; the host quotes the last one when the plugin traps.
    pub fn error(message: &str) {
        log(Level::Error, message)
    }
}

/// A policy. Implement the hooks you decide; `Err(why)` denies with "could not decide".
///
/// Defaults: issuance and distribution deny. Renewal asks this policy's own
/// `decide_issuance` with [`RenewalRequest::as_issuance`] (trigger carried over, no
/// key, the same identifiers, profile and lifetime), so a policy written for issuance
/// applies the same rules to the server's renewals instead of stopping them all.
pub trait Policy {
    /// May a certificate be issued? (ACME order and finalize, provisioning.)
    fn decide_issuance(request: IssuanceRequest) -> Result<Decision, String> {
        let _ = request;
        Ok(deny("this policy does not allow issuance"))
    }
    /// May the server issue a successor on its own? (Renewal sweep, HSM rekey.)
    fn decide_renewal(request: RenewalRequest) -> Result<Decision, String> {
        Self::decide_issuance(request.as_issuance())
    }
    /// May a wrapped key be copied between two of the tenant's HSMs?
    fn decide_distribution(request: DistributionRequest) -> Result<Decision, String> {
        let _ = request;
        Ok(deny("this policy does not allow key distribution"))
    }
}

/// What the exported functions answer for a hook's result.
#[doc(hidden)]
pub fn __answer(result: Result<Decision, String>) -> Decision {
    result.unwrap_or_else(|why| Decision::Deny(format!("could not decide: {why}")))
}

impl RenewalRequest {
    /// The issuance request the default `decide_renewal` hands to `decide_issuance`:
    /// the same tenant, trigger, identifiers, profile and lifetime; no account, no key
    /// (the host decides the key: the same one at renewal, a fresh one at rekey), and
    /// no resource (that field is for provisioning).
    pub fn as_issuance(&self) -> IssuanceRequest {
        IssuanceRequest {
            tenant: self.tenant.clone(),
            account: None,
            trigger: self.trigger,
            identifiers: self.identifiers.clone(),
            key: None,
            profile: self.profile.clone(),
            requested_lifetime_seconds: self.requested_lifetime_seconds,
            resource: None,
        }
    }
}

impl Trigger {
    /// The WIT spelling, e.g. `"acme-finalize"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Trigger::AcmeOrder => "acme-order",
            Trigger::AcmeFinalize => "acme-finalize",
            Trigger::Renewal => "renewal",
            Trigger::Rekey => "rekey",
            Trigger::Provisioning => "provisioning",
        }
    }
}

impl Identifier {
    /// A DNS identifier (lower-case, no trailing dot, as the host sends them).
    pub fn dns(name: &str) -> Identifier {
        Identifier { kind: IdentifierKind::Dns, value: name.into() }
    }
    /// An IP identifier, in canonical text form.
    pub fn ip(address: &str) -> Identifier {
        Identifier { kind: IdentifierKind::Ip, value: address.into() }
    }
}

impl Decision {
    /// Whether this is an allow.
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }
    /// The grant of an allow.
    pub fn grant(&self) -> Option<&Grant> {
        match self {
            Decision::Allow(g) => Some(g),
            Decision::Deny(_) => None,
        }
    }
    /// The reason of a deny.
    pub fn deny_reason(&self) -> Option<&str> {
        match self {
            Decision::Allow(_) => None,
            Decision::Deny(r) => Some(r),
        }
    }
}

/// The resource's `lifetime-seconds` attribute, when it is a positive number:
/// the convention platforms use to set certificate lifetimes per resource.
pub fn lifetime_attribute(resource: &Resource) -> Option<u64> {
    resource.attributes.iter().find(|(k, _)| k == "lifetime-seconds").and_then(|(_, v)| v.trim().parse::<u64>().ok()).filter(|&s| s > 0)
}

/// A denial; the reason reaches the operator and, for ACME, the client.
pub fn deny(reason: impl Into<String>) -> Decision {
    Decision::Deny(reason.into())
}

/// Allow these identifiers for this long, challenges required, default profile.
pub fn allow(identifiers: Vec<Identifier>, lifetime_seconds: u64) -> Decision {
    Decision::Allow(grant(identifiers, lifetime_seconds))
}

/// Allow these identifiers for this long, all authorized by control (no challenge):
/// for names the registry shows the tenant holding.
pub fn allow_by_control(identifiers: Vec<Identifier>, lifetime_seconds: u64) -> Decision {
    let mut g = grant(identifiers.clone(), lifetime_seconds);
    g.authorize_by_control = identifiers;
    Decision::Allow(g)
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
        CertificateInfo, Decision, DistributionRequest, Grant, Holding, Identifier, IdentifierKind, IssuanceRequest, KeyInfo, KeyType,
        Policy, RenewalRequest, Resource, ResourceState, Tenant, Trigger, allow, allow_by_control, allow_distribution, deny, grant,
        lifetime_attribute, log, now, registry,
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
                    $crate::__answer(<$policy as $crate::Policy>::decide_issuance(request))
                }
                fn decide_renewal(request: $crate::RenewalRequest) -> $crate::Decision {
                    $crate::__answer(<$policy as $crate::Policy>::decide_renewal(request))
                }
                fn decide_distribution(request: $crate::DistributionRequest) -> $crate::Decision {
                    $crate::__answer(<$policy as $crate::Policy>::decide_distribution(request))
                }
            }
    $crate::bindings::__export_policy!(__TenurePolicyExport with_types_in $crate::bindings);
        };
    };
}

#[cfg(all(test, feature = "testing"))]
mod tests;
