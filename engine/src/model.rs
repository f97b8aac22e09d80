//! The ACME objects as the engine keeps them (RFC 8555 §7.1). The front end
//! renders them; the store persists them; only the RA (and the issuance path) changes them.

use serde::{Deserialize, Serialize};

use crate::identifier::Identifier;

/// Seconds since the Unix epoch; every time in the engine is one of these.
pub type UnixTime = i64;

pub fn now() -> UnixTime {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

macro_rules! status_enum {
    ($name:ident { $($variant:ident => $text:literal),* $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),* }
        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)* _ => None }
            }
        }
    };
}

status_enum!(AccountStatus { Valid => "valid", Deactivated => "deactivated", Revoked => "revoked" });
// No `processing`: an order stays ready while its certificate is signed, and
// becomes valid in the transaction that records it (see `issuance`).
status_enum!(OrderStatus { Pending => "pending", Ready => "ready", Valid => "valid", Invalid => "invalid" });
status_enum!(AuthorizationStatus {
    Pending => "pending", Valid => "valid", Invalid => "invalid", Deactivated => "deactivated",
    Expired => "expired", Revoked => "revoked"
});
status_enum!(ChallengeStatus { Pending => "pending", Processing => "processing", Valid => "valid", Invalid => "invalid" });
status_enum!(RenewalState {
    Client => "client", Scheduled => "scheduled", Renewed => "renewed", Replaced => "replaced",
    Lapsed => "lapsed", Stopped => "stopped"
});

/// An error recorded on an order or challenge: the ACME problem type name
/// (e.g. "unauthorized") and a human detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedError {
    pub kind: String,
    pub detail: String,
}

#[derive(Debug, Clone)]
pub struct Account {
    pub id: String,
    pub thumbprint: String,
    /// The public JWK exactly as the front end canonicalized it.
    pub jwk: String,
    pub status: AccountStatus,
    pub contact: Vec<String>,
    pub tenant: String,
    pub eab_kid: Option<String>,
    pub tos_agreed: bool,
    pub created_at: UnixTime,
}

#[derive(Debug, Clone)]
pub struct Order {
    pub id: String,
    pub account_id: String,
    pub status: OrderStatus,
    pub expires: UnixTime,
    pub identifiers: Vec<Identifier>,
    pub profile: String,
    pub error: Option<RecordedError>,
    pub certificate: Option<String>,
    pub replaces: Option<String>,
    pub created_at: UnixTime,
    pub authorizations: Vec<String>,
    /// The lifetime the policy granted, capping the profile's.
    pub lifetime_seconds: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct Authorization {
    pub id: String,
    pub order_id: String,
    pub account_id: String,
    pub identifier: Identifier,
    pub wildcard: bool,
    pub status: AuthorizationStatus,
    pub expires: UnixTime,
    pub challenges: Vec<Challenge>,
}

#[derive(Debug, Clone)]
pub struct Challenge {
    pub id: String,
    pub authz_id: String,
    pub kind: String,
    pub token: String,
    pub status: ChallengeStatus,
    pub validated: Option<UnixTime>,
    pub error: Option<RecordedError>,
}

/// A certificate tenure signed.
#[derive(Debug, Clone)]
pub struct Certificate {
    pub serial: String,
    /// The ACME account it was issued to; none when no account asked (an HSM
    /// rekey, provisioning). Renewals keep their predecessor's.
    pub account_id: Option<String>,
    /// The ACME order it finalized (a renewal keeps its predecessor's).
    pub order_id: Option<String>,
    pub tenant: String,
    pub issuer_id: i64,
    pub der: Vec<u8>,
    pub identifiers: Vec<Identifier>,
    pub not_before: UnixTime,
    pub not_after: UnixTime,
    pub revoked_at: Option<UnixTime>,
    pub revocation_reason: Option<u8>,
}

#[derive(Debug, Clone)]
pub struct Tenant {
    pub name: String,
    /// Permitted subtrees as written (`example.com`, `10.0.0.0/8`); empty for
    /// the public tenant, whose intermediate is unconstrained.
    pub permits: Vec<String>,
    pub issuer_id: i64,
    /// When `tenant remove` removed it (its row stays, so history keeps its
    /// name); None while it is live. A removed tenant takes no new work.
    pub removed_at: Option<UnixTime>,
}

/// A CA certificate and its key, as stored.
#[derive(Debug, Clone)]
pub struct IssuerRecord {
    pub id: i64,
    pub tenant: Option<String>,
    pub cert_der: Vec<u8>,
    /// The key as stored: a sealed PKCS#8 (see `sealing`), a reference to a key in
    /// an HSM (see `hsm::custody`), or, in data directories from before sealing,
    /// plain PKCS#8 (sealed on the next start).
    pub key_pkcs8: Vec<u8>,
}

/// Where a certificate stands in its life beyond issuance: what it is bound to,
/// who renews it and when, and what came before and after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateLifecycle {
    pub profile: String,
    /// Registry resources the certificate is bound to (those its names came
    /// from, and their anchors). Releasing or transferring one revokes it.
    pub resources: Vec<String>,
    /// `Scheduled` when tenure reissues it itself (every name is held);
    /// `Client` when the ACME client renews.
    pub renewal: RenewalState,
    /// Start of the renewal window.
    pub renew_at: Option<UnixTime>,
    /// Why renewal lapsed or stopped.
    pub note: Option<String>,
    pub predecessor: Option<String>,
    pub successor: Option<String>,
    /// Digests of the plugins whose chain allowed it, comma-separated.
    pub policy: String,
    /// What issued it.
    pub trigger: Trigger,
    /// Its place in its line: 1 for a first certificate, its predecessor's
    /// plus one for a successor (a renewal, a rekey, a reprovisioning).
    pub generation: i64,
    /// Who holds its private key, and so whether tenure can give it a new one.
    pub key_source: KeySource,
}

/// A message in the outbox for one of a resource's targets: a certificate
/// (`certificate.provisioned`, `certificate.renewed`: the chain, and for a key
/// tenure generated, the key encrypted to its recipient) or a notice of an
/// event (`certificate.lapsed`, `certificate.revoked`, `resource.suspended`,
/// `distribution.denied`: webhooks only).
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: i64,
    /// The event, e.g. `certificate.renewed`.
    pub event: String,
    /// The certificate delivered or concerned, if any.
    pub serial: Option<String>,
    pub resource_id: String,
    pub kind: DeliveryKind,
    /// A directory for `File`, a URL for `Webhook`.
    pub target: String,
    pub state: DeliveryState,
    pub attempts: i64,
    pub next_attempt: UnixTime,
    pub last_error: Option<String>,
    /// A notice's body (the event's details), for events that are not a
    /// certificate to render.
    pub payload: Option<serde_json::Value>,
    /// `key.pem.age`: the key tenure generated, encrypted to the resource's
    /// `key-recipient` (ASCII-armoured age). Erased when the delivery ends.
    pub key_age: Option<String>,
}

status_enum!(KeySource {
    Client => "client", Hsm => "hsm", Recipient => "recipient", Platform => "platform"
});

status_enum!(Trigger {
    AcmeFinalize => "acme-finalize", Renewal => "renewal", Rekey => "rekey", Provisioning => "provisioning"
});
status_enum!(DeliveryKind { File => "file", Webhook => "webhook" });
status_enum!(DeliveryState { Pending => "pending", Delivered => "delivered", Failed => "failed" });
