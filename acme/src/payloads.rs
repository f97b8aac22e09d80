//! The JWS payloads the server reads (RFC 8555 §7), as typed structs, all
//! parsed by [`parse`].
//!
//! Unknown members are ignored: RFC 8555 clients may send extensions, and a
//! server that refused them would break clients that are newer than it. A
//! known member of the wrong type is a `malformed` problem (or the type the
//! RFC names for it) whose detail names the member, e.g.
//! `"identifiers[0].value": invalid type: integer, expected a string`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::problem::{Problem, ProblemType};

/// A payload of one request type.
pub trait Payload: DeserializeOwned {
    /// The request's name in problem details, e.g. "newOrder".
    const NAME: &'static str;

    /// The problem for a member that did not parse (`path` as in
    /// `identifiers[0].type`, `.` for the payload itself): `malformed`,
    /// unless the RFC names another type for that member.
    fn problem(_path: &str, detail: String) -> Problem {
        Problem::malformed(detail)
    }
}

/// Parses a JWS payload: JSON without duplicate members (they only serve to
/// make two parsers disagree), an object, then the typed struct.
pub fn parse<T: Payload>(bytes: &[u8]) -> Result<T, Problem> {
    let value =
        crate::jws::parse_json_strict(bytes).map_err(|e| Problem::malformed(format!("the {} payload is not JSON: {e}", T::NAME)))?;
    // A struct would also deserialize from an array, positionally.
    if !value.is_object() {
        return Err(Problem::malformed(format!("the {} payload must be a JSON object", T::NAME)));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let detail = if path == "." {
            format!("the {} payload: {}", T::NAME, e.inner())
        } else {
            format!("the {} payload's {path:?}: {}", T::NAME, e.inner())
        };
        T::problem(&path, detail)
    })
}

/// `"status": "deactivated"`, the one status change a client may ask for
/// (RFC 8555 §7.3.6, §7.5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Deactivation {
    /// The only accepted value.
    #[serde(rename = "deactivated")]
    Deactivated,
}

/// newAccount (RFC 8555 §7.3).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewAccount {
    /// Contact URLs (`mailto:`).
    pub contact: Option<Vec<String>>,
    /// Whether the client agreed to the terms of service.
    pub terms_of_service_agreed: Option<bool>,
    /// Only look the key's account up; never create one (§7.3.1).
    pub only_return_existing: Option<bool>,
    /// A flattened JWS binding the account key to an external account
    /// (§7.3.4); `jws::verify_eab` parses it.
    pub external_account_binding: Option<Value>,
}

impl Payload for NewAccount {
    const NAME: &'static str = "newAccount";
}

/// An update of an account (RFC 8555 §7.3.2, §7.3.6).
#[derive(Debug, Deserialize)]
pub struct AccountUpdate {
    /// Deactivation; when present, other members are not applied.
    pub status: Option<Deactivation>,
    /// New contact URLs.
    pub contact: Option<Vec<String>>,
}

impl Payload for AccountUpdate {
    const NAME: &'static str = "account update";
}

/// The payload of keyChange's inner JWS (RFC 8555 §7.3.5).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyChange {
    /// The URL of the account whose key changes.
    pub account: String,
    /// The account's current key, as a JWK (parsed by `jws::Jwk::from_json`).
    pub old_key: Value,
}

impl Payload for KeyChange {
    const NAME: &'static str = "keyChange inner";
}

/// newOrder (RFC 8555 §7.4).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewOrder {
    /// What the certificate will name.
    pub identifiers: Vec<OrderIdentifier>,
    /// Not supported: lifetimes come from the profile.
    pub not_before: Option<Value>,
    /// Not supported: lifetimes come from the profile.
    pub not_after: Option<Value>,
    /// A profile from the directory's `meta.profiles`.
    pub profile: Option<String>,
    /// The ARI certificate id of the certificate this order replaces (RFC 9773 §5).
    pub replaces: Option<String>,
}

impl Payload for NewOrder {
    const NAME: &'static str = "newOrder";
}

/// An identifier as a client writes it; the engine judges the type and value,
/// so an unknown type is `unsupportedIdentifier`, not a parse error.
#[derive(Debug, Deserialize)]
pub struct OrderIdentifier {
    /// "dns" or "ip".
    #[serde(rename = "type")]
    pub kind: String,
    /// The name or address.
    pub value: String,
}

/// finalize (RFC 8555 §7.4).
#[derive(Debug, Deserialize)]
pub struct Finalize {
    /// The CSR, DER in base64url.
    pub csr: String,
}

impl Payload for Finalize {
    const NAME: &'static str = "finalize";
}

impl Finalize {
    /// The CSR's DER; an undecodable CSR is `badCSR` (§7.4).
    pub fn csr_der(&self) -> Result<Vec<u8>, Problem> {
        URL_SAFE_NO_PAD.decode(&self.csr).map_err(|_| Problem::new(ProblemType::BadCsr, "\"csr\" is not base64url without padding"))
    }
}

/// A challenge response (RFC 8555 §7.5.1): `{}` says "validate now"; members
/// some clients add (e.g. an old `keyAuthorization`) are ignored.
#[derive(Debug, Deserialize)]
pub struct ChallengeResponse {}

impl Payload for ChallengeResponse {
    const NAME: &'static str = "challenge response";
}

/// An authorization update: only deactivation (RFC 8555 §7.5.2).
#[derive(Debug, Deserialize)]
pub struct AuthorizationUpdate {
    /// Must be "deactivated".
    pub status: Deactivation,
}

impl Payload for AuthorizationUpdate {
    const NAME: &'static str = "authorization update";
}

/// revokeCert (RFC 8555 §7.6).
#[derive(Debug, Deserialize)]
pub struct RevokeCert {
    /// The certificate, DER in base64url.
    pub certificate: String,
    /// An RFC 5280 CRL reason code.
    pub reason: Option<u8>,
}

impl Payload for RevokeCert {
    const NAME: &'static str = "revokeCert";

    /// §7.6: a reason that is not a reason code is `badRevocationReason`.
    fn problem(path: &str, detail: String) -> Problem {
        if path == "reason" {
            Problem::new(ProblemType::BadRevocationReason, format!("\"reason\" must be a CRL reason code; {detail}"))
        } else {
            Problem::malformed(detail)
        }
    }
}

impl RevokeCert {
    /// The certificate's DER.
    pub fn certificate_der(&self) -> Result<Vec<u8>, Problem> {
        URL_SAFE_NO_PAD.decode(&self.certificate).map_err(|_| Problem::malformed("\"certificate\" is not base64url without padding"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem<T: Payload + std::fmt::Debug>(json: &str) -> Problem {
        parse::<T>(json.as_bytes()).expect_err(json)
    }

    #[test]
    fn a_wrong_type_names_the_member() {
        let p = problem::<NewOrder>(r#"{"identifiers":[{"type":"dns","value":5}]}"#);
        assert_eq!(p.kind, ProblemType::Malformed);
        assert!(p.detail.contains("\"identifiers[0].value\""), "{}", p.detail);
        let p = problem::<NewAccount>(r#"{"onlyReturnExisting":"yes"}"#);
        assert!(p.detail.contains("onlyReturnExisting") && p.detail.contains("boolean"), "{}", p.detail);
        let p = problem::<NewAccount>(r#"{"contact":["mailto:a@b.test",7]}"#);
        assert!(p.detail.contains("contact[1]"), "{}", p.detail);
        let p = problem::<NewOrder>(r#"{"profile":"x"}"#);
        assert!(p.detail.contains("missing field `identifiers`"), "{}", p.detail);
        let p = problem::<AccountUpdate>(r#"{"status":"valid"}"#);
        assert!(p.detail.contains("\"status\""), "{}", p.detail);
    }

    #[test]
    fn unknown_members_are_ignored_and_null_is_absent() {
        let o: NewOrder = parse(br#"{"identifiers":[{"type":"dns","value":"a.test","x":1}],"notBefore":null,"ext":{"y":2}}"#).unwrap();
        assert_eq!(o.identifiers[0].value, "a.test");
        assert!(o.not_before.is_none() && o.profile.is_none());
        let a: NewAccount = parse(br#"{"contact":null,"externalAccountBinding":null,"future":true}"#).unwrap();
        assert!(a.contact.is_none() && a.external_account_binding.is_none());
        parse::<ChallengeResponse>(br#"{"keyAuthorization":"t.k"}"#).unwrap();
    }

    #[test]
    fn non_objects_duplicates_and_bad_reasons_are_refused() {
        assert_eq!(problem::<ChallengeResponse>("[]").kind, ProblemType::Malformed);
        assert_eq!(problem::<Finalize>(r#"["csr"]"#).kind, ProblemType::Malformed);
        assert_eq!(problem::<Finalize>(r#"{"csr":"a","csr":"b"}"#).kind, ProblemType::Malformed);
        assert_eq!(problem::<Finalize>("not json").kind, ProblemType::Malformed);
        for reason in ["300", "-1", "\"keyCompromise\"", "1.5"] {
            let p = problem::<RevokeCert>(&format!(r#"{{"certificate":"AA","reason":{reason}}}"#));
            assert_eq!(p.kind, ProblemType::BadRevocationReason, "{reason}: {}", p.detail);
        }
        assert_eq!(problem::<RevokeCert>(r#"{"certificate":5}"#).kind, ProblemType::Malformed);
        let f: Finalize = parse(br#"{"csr":"***"}"#).unwrap();
        assert_eq!(f.csr_der().unwrap_err().kind, ProblemType::BadCsr);
    }
}
