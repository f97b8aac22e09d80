//! Key custody in HSMs over PKCS#11 (any module; SoftHSM2 in tests).
//!
//! - `custody`: the CA's own keys, non-extractable in a token, or sealed software keys.
//! - `pool`: tokens the operator puts in a pool, allocated exclusively to a
//!   tenant (the registry knows each allocation as a resource of kind `hsm`),
//!   handed over, released (zeroized) back to the pool; keys generated or
//!   rekeyed in place for a resource, with their certificate written back.
//! - `wrap`: copying a key between two HSMs of one tenant, wrapped only, after
//!   the policy's `decide-distribution` allows it.
//! - `distribution`: every key a tenant's policy says an HSM should also hold,
//!   copied into it through `wrap` (at allocation, and on demand).
//! - `session`: the PKCS#11 plumbing (cryptoki).
//!
//! Custody model of an allocated token. tenure initializes the token with the
//! pool's SO PIN, sets a fresh random user PIN and shows it once (allocate);
//! the state is then `handed-over`. From then on no operator command uses the
//! user PIN: `tenure hsm keys` reads public objects and tenure's own records
//! only, and nothing exports or signs on the operator's behalf. tenure keeps a
//! sealed copy of the user PIN solely for the two policy-gated operations the
//! tenant signed up for: rekey in place on a renewal grant and distribution
//! after `decide-distribution` allows it (audited). The tenant ends even that
//! by changing the PIN (tenure's attempts then fail, saying so), or chooses it
//! from the start with `allocate --tenant-only` (tenure never keeps the PIN).
//! The SO PIN stays with tenure: release re-initializes the token, which
//! destroys every object whatever the user PIN is.

mod custody;
mod distribution;
mod pool;
pub mod session;
mod wrap;

pub use custody::{CA_HSM_SETTING, CaCustody, CaHsmConfig, HsmCaKey, configure_ca_hsm};
pub use distribution::DistributionAttempt;
pub(crate) use pool::rekey_identifiers;
pub use pool::{HsmAllocation, HsmKeyInfo, RekeyOutcome};
pub use session::{ObjectInfo, Token};
pub use wrap::{DistributionOutcome, sign_with};

use std::sync::Arc;

use serde::Serialize;

use crate::core::Core;
use crate::model::UnixTime;

/// HSM custody: the token pool, allocation to tenants, keys generated (and
/// certified, through the issuance path) in tenant tokens, distribution.
#[derive(Clone)]
pub struct Custody {
    pub(crate) core: Arc<Core>,
}

/// The kind of registry resource an allocated token is.
pub const RESOURCE_KIND: &str = "hsm";
/// The registry attribute of a resource that names the `hsm` resource holding its key.
pub const KEY_ATTRIBUTE: &str = "hsm";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlotState {
    /// In the pool: initialized, no user PIN in tenure's hands, no tenant.
    Free,
    /// Being initialized for a tenant (a crash here leaves it for `release`).
    Allocating,
    /// The tenant has its PIN; tenure keeps a sealed copy for policy-gated rekey and distribution only.
    HandedOver,
    /// Only the tenant can use keys: tenure holds no user PIN.
    TenantOnly,
    /// Released with a grace period: keys kept, unusable by tenure, zeroized at `release_after`.
    Releasing,
}

impl SlotState {
    pub fn as_str(self) -> &'static str {
        match self {
            SlotState::Free => "free",
            SlotState::Allocating => "allocating",
            SlotState::HandedOver => "handed-over",
            SlotState::TenantOnly => "tenant-only",
            SlotState::Releasing => "releasing",
        }
    }
    pub fn parse(s: &str) -> Option<SlotState> {
        Some(match s {
            "free" => SlotState::Free,
            "allocating" => SlotState::Allocating,
            "handed-over" => SlotState::HandedOver,
            "tenant-only" => SlotState::TenantOnly,
            "releasing" => SlotState::Releasing,
            _ => return None,
        })
    }
}

/// A pooled token, as stored (PINs stay sealed in the store).
#[derive(Debug, Clone, Serialize)]
pub struct HsmSlot {
    pub id: String,
    pub module: String,
    pub token_label: String,
    pub state: SlotState,
    pub tenant: Option<String>,
    /// The registry resource (kind `hsm`) while allocated.
    pub resource_id: Option<String>,
    pub pin_handed_over_at: Option<UnixTime>,
    pub release_after: Option<UnixTime>,
    pub created_at: UnixTime,
    #[serde(skip)]
    pub so_pin_sealed: Vec<u8>,
    #[serde(skip)]
    pub user_pin_sealed: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    Active,
    /// Replaced by a rekey; still in the token and usable until `retire_after`.
    Retiring,
    /// Destroyed in the token.
    Retired,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Retiring => "retiring",
            KeyState::Retired => "retired",
        }
    }
    pub fn parse(s: &str) -> Option<KeyState> {
        Some(match s {
            "active" => KeyState::Active,
            "retiring" => KeyState::Retiring,
            "retired" => KeyState::Retired,
            _ => return None,
        })
    }
}

/// A key tenure generated in, or distributed to, a pooled token.
#[derive(Debug, Clone, Serialize)]
pub struct HsmKey {
    pub id: String,
    pub slot_id: String,
    #[serde(serialize_with = "as_hex")]
    pub cka_id: Vec<u8>,
    pub label: String,
    pub resource_id: Option<String>,
    #[serde(skip)]
    pub spki: Vec<u8>,
    #[serde(skip)]
    pub cert_der: Option<Vec<u8>>,
    pub cert_serial: Option<String>,
    pub cert_not_after: Option<UnixTime>,
    pub state: KeyState,
    pub retire_after: Option<UnixTime>,
    pub replaces: Option<String>,
    /// `generated` or `distributed`.
    pub origin: String,
    pub source_key: Option<String>,
    pub created_at: UnixTime,
}

fn as_hex<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&session::hex(v))
}

/// Seal contexts: a PIN sealed for one slot and role opens for no other.
pub(crate) fn so_pin_context(slot_id: &str) -> String {
    format!("hsm so-pin {slot_id}")
}
pub(crate) fn user_pin_context(slot_id: &str) -> String {
    format!("hsm user-pin {slot_id}")
}
