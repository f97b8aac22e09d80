//! The ACME resources as JSON (RFC 8555 §7.1) and the URLs that name them.

use serde_json::{Value, json};
use tenure_engine::model::*;

use crate::problem::urn_of;

/// URLs are built from the base the client used (scheme + Host), as Pebble
/// does, so `localhost` and `127.0.0.1` both work and `url` checks are exact.
#[derive(Debug, Clone)]
pub struct Urls {
    pub base: String,
}

impl Urls {
    pub fn directory(&self) -> String {
        format!("{}/directory", self.base)
    }
    pub fn new_nonce(&self) -> String {
        format!("{}/acme/new-nonce", self.base)
    }
    pub fn new_account(&self) -> String {
        format!("{}/acme/new-account", self.base)
    }
    pub fn new_order(&self) -> String {
        format!("{}/acme/new-order", self.base)
    }
    pub fn revoke_cert(&self) -> String {
        format!("{}/acme/revoke-cert", self.base)
    }
    pub fn key_change(&self) -> String {
        format!("{}/acme/key-change", self.base)
    }
    pub fn renewal_info(&self) -> String {
        format!("{}/acme/renewal-info", self.base)
    }
    pub fn terms(&self) -> String {
        format!("{}/terms", self.base)
    }
    pub fn account(&self, id: &str) -> String {
        format!("{}/acme/acct/{id}", self.base)
    }
    pub fn account_orders(&self, id: &str) -> String {
        format!("{}/acme/acct/{id}/orders", self.base)
    }
    pub fn order(&self, id: &str) -> String {
        format!("{}/acme/order/{id}", self.base)
    }
    pub fn finalize(&self, id: &str) -> String {
        format!("{}/acme/order/{id}/finalize", self.base)
    }
    pub fn authz(&self, id: &str) -> String {
        format!("{}/acme/authz/{id}", self.base)
    }
    pub fn challenge(&self, id: &str) -> String {
        format!("{}/acme/chall/{id}", self.base)
    }
    pub fn certificate(&self, serial: &str) -> String {
        format!("{}/acme/cert/{serial}", self.base)
    }
    /// The account id named by a `kid`, if it is one of our account URLs.
    pub fn account_id_of_kid<'a>(&self, kid: &'a str) -> Option<&'a str> {
        let id = kid.strip_prefix(&self.base)?.strip_prefix("/acme/acct/")?;
        (!id.is_empty() && !id.contains('/')).then_some(id)
    }
}

pub fn rfc3339(t: UnixTime) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

fn error_json(e: &RecordedError) -> Value {
    json!({ "type": urn_of(&e.kind), "detail": e.detail })
}

pub fn account_json(urls: &Urls, a: &Account) -> Value {
    json!({
        "status": a.status.as_str(),
        "contact": a.contact,
        "termsOfServiceAgreed": a.tos_agreed,
        "orders": urls.account_orders(&a.id),
    })
}

pub fn order_json(urls: &Urls, o: &Order) -> Value {
    let mut v = json!({
        "status": o.status.as_str(),
        "expires": rfc3339(o.expires),
        "identifiers": o.identifiers,
        "authorizations": o.authorizations.iter().map(|id| urls.authz(id)).collect::<Vec<_>>(),
        "finalize": urls.finalize(&o.id),
        "profile": o.profile,
    });
    if let Some(serial) = &o.certificate {
        v["certificate"] = json!(urls.certificate(serial));
    }
    if let Some(e) = &o.error {
        v["error"] = error_json(e);
    }
    if let Some(r) = &o.replaces {
        v["replaces"] = json!(r);
    }
    v
}

pub fn challenge_json(urls: &Urls, c: &Challenge) -> Value {
    let mut v = json!({
        "type": c.kind,
        "url": urls.challenge(&c.id),
        "status": c.status.as_str(),
        "token": c.token,
    });
    if let Some(t) = c.validated {
        v["validated"] = json!(rfc3339(t));
    }
    if let Some(e) = &c.error {
        v["error"] = error_json(e);
    }
    v
}

pub fn authz_json(urls: &Urls, a: &Authorization) -> Value {
    let mut v = json!({
        "status": a.status.as_str(),
        "expires": rfc3339(a.expires),
        "identifier": a.identifier,
        "challenges": a.challenges.iter().map(|c| challenge_json(urls, c)).collect::<Vec<_>>(),
    });
    if a.wildcard {
        v["wildcard"] = json!(true);
    }
    v
}
