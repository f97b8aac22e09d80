//! The route table: every ACME path is named once here, with the methods it
//! accepts, how it is authenticated (no JWS, or a JWS with the key rule of RFC
//! 8555 §6.2) and its handler. The directory and every URL the server hands
//! out are built from the same patterns (see [`crate::resources::Urls`]), so a
//! URL the server gives out is always one it routes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode, header, request::Parts};

use crate::handlers::{account, authz, cert, open, order};
use crate::problem::Problem;
use crate::request::{Authenticated, KeyRule, authenticate};
use crate::resources::Urls;
use crate::server::{FrontEnd, Reply};

/// A boxed future, for handlers stored as function pointers in the table.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A handler of a resource read without a JWS; it may await the engine.
pub type OpenHandler = for<'a> fn(&'a Arc<FrontEnd>, &'a Call) -> BoxFuture<'a, Result<Reply, Problem>>;

/// A handler of a signed POST. It runs on a blocking thread, after
/// authentication, because all of its work is SQLite, plugins and signing.
pub type SignedHandler = fn(&FrontEnd, &Call, Authenticated) -> Result<Reply, Problem>;

/// The resources of the server, one per row of [`ROUTES`], in the same order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// The directory (RFC 8555 §7.1.1).
    Directory,
    /// The terms of service the directory points to.
    Terms,
    /// newNonce (RFC 8555 §7.2).
    NewNonce,
    /// Renewal information (RFC 9773); the directory names the prefix.
    RenewalInfo,
    /// An issuer's CRL, at the URL its certificates carry.
    Crl,
    /// newAccount (RFC 8555 §7.3).
    NewAccount,
    /// An account.
    Account,
    /// An account's orders list.
    AccountOrders,
    /// keyChange (RFC 8555 §7.3.5).
    KeyChange,
    /// newOrder (RFC 8555 §7.4).
    NewOrder,
    /// An order.
    Order,
    /// An order's finalize URL.
    Finalize,
    /// An authorization.
    Authorization,
    /// A challenge.
    Challenge,
    /// A certificate chain.
    Certificate,
    /// revokeCert (RFC 8555 §7.6).
    RevokeCert,
}

impl Resource {
    /// The resource's label in logs and metrics: a fixed word, never an id,
    /// so `tenure_acme_requests_total` has a bounded set of series.
    pub fn label(self) -> &'static str {
        match self {
            Resource::Directory => "directory",
            Resource::Terms => "terms",
            Resource::NewNonce => "new-nonce",
            Resource::RenewalInfo => "renewal-info",
            Resource::Crl => "crl",
            Resource::NewAccount => "new-account",
            Resource::Account => "account",
            Resource::AccountOrders => "account-orders",
            Resource::KeyChange => "key-change",
            Resource::NewOrder => "new-order",
            Resource::Order => "order",
            Resource::Finalize => "finalize",
            Resource::Authorization => "authorization",
            Resource::Challenge => "challenge",
            Resource::Certificate => "certificate",
            Resource::RevokeCert => "revoke-cert",
        }
    }
}

/// The label of a path no route names (see [`Resource::label`]).
pub const UNKNOWN_RESOURCE: &str = "unknown";

/// The label of the resource at `path`, or [`UNKNOWN_RESOURCE`].
pub fn resource_label(path: &str) -> &'static str {
    find(path).map_or(UNKNOWN_RESOURCE, |(route, _)| route.resource.label())
}

/// How a route is authenticated, and who handles it.
pub enum Handler {
    /// Read without a JWS.
    Open(OpenHandler),
    /// A POST carrying a JWS whose key reference must follow the rule.
    Signed(KeyRule, SignedHandler),
}

/// One row of the table.
pub struct Route {
    /// Which resource this is.
    pub resource: Resource,
    /// The path; `{name}` stands for one non-empty segment (at most one per pattern).
    pub pattern: &'static str,
    /// The methods the path accepts; any other gets 405 with `Allow`.
    pub methods: &'static [Method],
    /// Authentication and handler.
    pub handler: Handler,
}

const READ: &[Method] = &[Method::GET, Method::HEAD];
const POST: &[Method] = &[Method::POST];

/// A row read without a JWS.
const fn plain(resource: Resource, pattern: &'static str, methods: &'static [Method], handler: OpenHandler) -> Route {
    Route { resource, pattern, methods, handler: Handler::Open(handler) }
}

/// A row for a signed POST whose key reference follows `rule`.
const fn signed(resource: Resource, pattern: &'static str, rule: KeyRule, handler: SignedHandler) -> Route {
    Route { resource, pattern, methods: POST, handler: Handler::Signed(rule, handler) }
}

/// Every path the ACME server answers.
#[rustfmt::skip]
pub static ROUTES: [Route; 16] = [
    plain(Resource::Directory, "/directory", READ, open::directory),
    plain(Resource::Terms, "/terms", READ, open::terms),
    plain(Resource::NewNonce, "/acme/new-nonce", READ, open::new_nonce),
    // RFC 9773 §4.3: renewal information is a plain GET, no JWS.
    plain(Resource::RenewalInfo, "/acme/renewal-info/{cert-id}", &[Method::GET], open::renewal_info),
    plain(Resource::Crl, "/crl/{issuer}", READ, open::crl),
    signed(Resource::NewAccount, "/acme/new-account", KeyRule::Jwk, account::new_account),
    signed(Resource::Account, "/acme/acct/{id}", KeyRule::Kid, account::account),
    signed(Resource::AccountOrders, "/acme/acct/{id}/orders", KeyRule::Kid, account::orders),
    signed(Resource::KeyChange, "/acme/key-change", KeyRule::Kid, account::key_change),
    signed(Resource::NewOrder, "/acme/new-order", KeyRule::Kid, order::new_order),
    signed(Resource::Order, "/acme/order/{id}", KeyRule::Kid, order::order),
    signed(Resource::Finalize, "/acme/order/{id}/finalize", KeyRule::Kid, order::finalize),
    signed(Resource::Authorization, "/acme/authz/{id}", KeyRule::Kid, authz::authorization),
    signed(Resource::Challenge, "/acme/chall/{id}", KeyRule::Kid, authz::challenge),
    signed(Resource::Certificate, "/acme/cert/{serial}", KeyRule::Kid, cert::certificate),
    // Either the account that holds the certificate or the certificate's own key.
    signed(Resource::RevokeCert, "/acme/revoke-cert", KeyRule::Either, cert::revoke),
];

/// The row of a resource.
pub fn route(resource: Resource) -> &'static Route {
    // The table is in `Resource` order (a unit test holds it to that).
    &ROUTES[resource as usize]
}

/// What a handler knows about its request besides the JWS.
pub struct Call {
    /// The request method (new-nonce answers HEAD and GET differently).
    pub method: Method,
    /// URLs under the base the client used.
    pub urls: Urls,
    /// The full URL of this request, as a JWS `url` must name it.
    pub url: String,
    /// The address the request came from (rate limits on new accounts).
    pub peer: std::net::IpAddr,
    /// The path's variable segment, when the pattern has one.
    param: Option<String>,
}

impl Call {
    /// The path's variable segment (an id, a serial); empty when the pattern
    /// has none, which the table rules out for every handler that asks.
    pub fn param(&self) -> &str {
        self.param.as_deref().unwrap_or("")
    }
}

/// Matches `path` against `pattern` (`{name}` stands for one non-empty
/// segment); on a match, the variable segment if any. The admin API routes
/// with it too.
pub fn match_pattern(pattern: &str, path: &str) -> Option<Option<String>> {
    let (mut want, mut have) = (pattern.split('/'), path.split('/'));
    let mut param = None;
    loop {
        match (want.next(), have.next()) {
            (None, None) => return Some(param),
            (Some(w), Some(h)) if w.starts_with('{') => {
                if h.is_empty() {
                    return None;
                }
                param = Some(h.to_string());
            }
            (Some(w), Some(h)) if w == h => {}
            _ => return None,
        }
    }
}

/// The route of a path, and its variable segment.
fn find(path: &str) -> Option<(&'static Route, Option<String>)> {
    ROUTES.iter().find_map(|r| match_pattern(r.pattern, path).map(|param| (r, param)))
}

/// Routes one request: 404 for a path no row names, 405 with `Allow` for a
/// method the row does not accept, else the row's authentication and handler.
pub async fn dispatch(fe: &Arc<FrontEnd>, urls: Urls, parts: &Parts, body: Bytes, peer: std::net::IpAddr) -> Result<Reply, Problem> {
    let path = parts.uri.path();
    let Some((route, param)) = find(path) else {
        return Err(Problem::not_found(format!("no resource at {path}")));
    };
    if !route.methods.contains(&parts.method) {
        let allow = route.methods.iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
        let detail = match route.handler {
            Handler::Signed(..) => format!("{path} accepts POST only (RFC 8555 §6.3)"),
            Handler::Open(_) => format!("{path} accepts {allow} only"),
        };
        let problem = Problem::malformed(detail).with_status(StatusCode::METHOD_NOT_ALLOWED);
        return Ok(Reply::problem(problem).header(header::ALLOW, allow));
    }
    let call = Call { method: parts.method.clone(), url: format!("{}{path}", urls.base), urls, param, peer };
    match route.handler {
        Handler::Open(handler) => handler(fe, &call).await,
        Handler::Signed(rule, handler) => {
            let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            // Everything after this point is signature checks, signing and SQLite:
            // one hop to a blocking thread per request, not one per engine call.
            fe.on_blocking_thread(move |fe| {
                let req = authenticate(fe, &content_type, &body, &call.url, &call.urls, rule)?;
                if let Some(account) = &req.account {
                    crate::request_log::note_account(&account.id);
                }
                handler(fe, &call, req)
            })
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_resource_order_with_at_most_one_variable_each() {
        for (i, r) in ROUTES.iter().enumerate() {
            assert_eq!(r.resource as usize, i, "{} is out of place", r.pattern);
            assert!(r.pattern.matches('{').count() <= 1, "{}", r.pattern);
            assert!(!r.methods.is_empty(), "{}", r.pattern);
            if let Handler::Signed(..) = r.handler {
                assert_eq!(r.methods, POST, "signed requests are POSTs (RFC 8555 §6.3): {}", r.pattern);
            }
        }
    }

    #[test]
    fn every_resource_has_its_own_fixed_label() {
        let labels: Vec<&str> = ROUTES.iter().map(|r| r.resource.label()).collect();
        let mut distinct = labels.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), labels.len(), "{labels:?}");
        assert!(!labels.contains(&UNKNOWN_RESOURCE));
        for label in labels.iter().chain([&UNKNOWN_RESOURCE]) {
            assert!(!label.is_empty() && label.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'), "{label}");
        }
        // Each pattern, its variable filled in, is labelled with its own resource.
        for r in &ROUTES {
            let path = r.pattern.replace("{id}", "x1").replace("{serial}", "0a").replace("{cert-id}", "a.b").replace("{issuer}", "7");
            assert!(!path.contains('{'), "{}", r.pattern);
            assert_eq!(resource_label(&path), r.resource.label(), "{path}");
        }
    }

    #[test]
    fn paths_are_labelled_without_their_ids() {
        assert_eq!(resource_label("/acme/order/Zx81fQ/finalize"), "finalize");
        assert_eq!(resource_label("/acme/acct/17"), "account");
        assert_eq!(resource_label("/acme/acct/17/orders"), "account-orders");
        assert_eq!(resource_label("/acme/chall/abc"), "challenge");
        assert_eq!(resource_label("/acme/revoke-cert"), "revoke-cert");
        assert_eq!(resource_label("/acme/renewal-info/aaa.bbb"), "renewal-info");
        for unknown in ["/", "", "/wp-login.php", "/acme/order/", "/directory/x"] {
            assert_eq!(resource_label(unknown), UNKNOWN_RESOURCE, "{unknown:?}");
        }
    }

    #[test]
    fn paths_match_exactly_one_route() {
        let hit = |path: &str| find(path).map(|(r, p)| (r.resource, p));
        assert_eq!(hit("/directory"), Some((Resource::Directory, None)));
        assert_eq!(hit("/acme/acct/abc"), Some((Resource::Account, Some("abc".into()))));
        assert_eq!(hit("/acme/acct/abc/orders"), Some((Resource::AccountOrders, Some("abc".into()))));
        assert_eq!(hit("/acme/order/o1/finalize"), Some((Resource::Finalize, Some("o1".into()))));
        assert_eq!(hit("/crl/7"), Some((Resource::Crl, Some("7".into()))));
        for miss in ["/", "", "/directory/", "/acme/acct/", "/acme/acct/a/b", "/acme/order//finalize", "/acme/nothing-here", "/acme"] {
            assert_eq!(hit(miss), None, "{miss:?}");
        }
    }
}
