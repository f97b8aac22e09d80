//! The ACME resources as JSON (RFC 8555 §7.1) and the URLs that name them.

use serde_json::{Value, json};
use tenure_engine::model::*;

use crate::problem::urn_of;
use crate::routes::{Resource, route};

/// URLs are built from the base the client used (scheme + Host), as Pebble
/// does, so `localhost` and `127.0.0.1` both work and `url` checks are exact.
/// Paths come from the route table, so every URL handed out is one it routes.
#[derive(Debug, Clone)]
pub struct Urls {
    /// `https://` and the host (and port) the client addressed.
    pub base: String,
}

impl Urls {
    /// The URL of `resource`, its variable segment (if any) set to `param`.
    pub fn of(&self, resource: Resource, param: &str) -> String {
        let pattern = route(resource).pattern;
        match variable(pattern) {
            Some((prefix, suffix)) => format!("{}{prefix}{param}{suffix}", self.base),
            None => format!("{}{pattern}", self.base),
        }
    }

    /// The variable segment of `url` if it is a URL of `resource` on this base.
    pub fn param_of<'a>(&self, resource: Resource, url: &'a str) -> Option<&'a str> {
        let (prefix, suffix) = variable(route(resource).pattern)?;
        let param = url.strip_prefix(&self.base)?.strip_prefix(prefix)?.strip_suffix(suffix)?;
        (!param.is_empty() && !param.contains('/')).then_some(param)
    }

    /// The directory.
    pub fn directory(&self) -> String {
        self.of(Resource::Directory, "")
    }
    /// newNonce.
    pub fn new_nonce(&self) -> String {
        self.of(Resource::NewNonce, "")
    }
    /// newAccount.
    pub fn new_account(&self) -> String {
        self.of(Resource::NewAccount, "")
    }
    /// newOrder.
    pub fn new_order(&self) -> String {
        self.of(Resource::NewOrder, "")
    }
    /// revokeCert.
    pub fn revoke_cert(&self) -> String {
        self.of(Resource::RevokeCert, "")
    }
    /// keyChange.
    pub fn key_change(&self) -> String {
        self.of(Resource::KeyChange, "")
    }
    /// RFC 9773 §4.1: the directory names the prefix; clients append `/{cert-id}`.
    pub fn renewal_info(&self) -> String {
        let pattern = route(Resource::RenewalInfo).pattern;
        let prefix = variable(pattern).map_or(pattern, |(prefix, _)| prefix);
        format!("{}{}", self.base, prefix.trim_end_matches('/'))
    }
    /// The terms of service.
    pub fn terms(&self) -> String {
        self.of(Resource::Terms, "")
    }
    /// An account (also its `kid`).
    pub fn account(&self, id: &str) -> String {
        self.of(Resource::Account, id)
    }
    /// An account's orders list.
    pub fn account_orders(&self, id: &str) -> String {
        self.of(Resource::AccountOrders, id)
    }
    /// An order.
    pub fn order(&self, id: &str) -> String {
        self.of(Resource::Order, id)
    }
    /// An order's finalize URL.
    pub fn finalize(&self, id: &str) -> String {
        self.of(Resource::Finalize, id)
    }
    /// An authorization.
    pub fn authz(&self, id: &str) -> String {
        self.of(Resource::Authorization, id)
    }
    /// A challenge.
    pub fn challenge(&self, id: &str) -> String {
        self.of(Resource::Challenge, id)
    }
    /// A certificate chain.
    pub fn certificate(&self, serial: &str) -> String {
        self.of(Resource::Certificate, serial)
    }
    /// The account id named by a `kid`, if it is one of our account URLs.
    pub fn account_id_of_kid<'a>(&self, kid: &'a str) -> Option<&'a str> {
        self.param_of(Resource::Account, kid)
    }
}

/// A pattern's text before and after its `{…}` segment, if it has one.
fn variable(pattern: &str) -> Option<(&str, &str)> {
    let open = pattern.find('{')?;
    let close = open + pattern[open..].find('}')?;
    Some((&pattern[..open], &pattern[close + 1..]))
}

/// A timestamp as RFC 3339, the form ACME objects carry.
pub fn rfc3339(t: UnixTime) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

fn error_json(e: &RecordedError) -> Value {
    json!({ "type": urn_of(&e.kind), "detail": e.detail })
}

/// An account object (RFC 8555 §7.1.2).
pub fn account_json(urls: &Urls, a: &Account) -> Value {
    json!({
        "status": a.status.as_str(),
        "contact": a.contact,
        "termsOfServiceAgreed": a.tos_agreed,
        "orders": urls.account_orders(&a.id),
    })
}

/// An order object (RFC 8555 §7.1.3).
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

/// A challenge object (RFC 8555 §8).
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

/// An authorization object (RFC 8555 §7.1.4).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_come_from_the_route_table() {
        let urls = Urls { base: "https://ca.test:14000".into() };
        assert_eq!(urls.finalize("o1"), "https://ca.test:14000/acme/order/o1/finalize");
        assert_eq!(urls.renewal_info(), "https://ca.test:14000/acme/renewal-info");
        assert_eq!(urls.account_id_of_kid("https://ca.test:14000/acme/acct/a1"), Some("a1"));
        for bad in ["https://ca.test:14000/acme/acct/", "https://ca.test:14000/acme/acct/a1/orders", "https://other/acme/acct/a1"] {
            assert_eq!(urls.account_id_of_kid(bad), None, "{bad}");
        }
    }
}
