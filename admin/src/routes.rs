//! The admin route table: each operation is one row (method, path, who may
//! call it, handler). Authentication comes first, so a caller without a token
//! learns nothing, not even which paths exist; then 404 for a path no row
//! names, 405 with `Allow` for a path named with other methods; then the
//! row's [`Access`]: every row must say whether a tenant may call it and how
//! its scope is checked, so no route is added without that decision.
//!
//! A tenant is refused (403) whatever is not its own, and a thing of another
//! tenant is refused exactly as one that does not exist, so a tenant learns
//! nothing of others, not even whether a name, id or serial is taken.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use hyper::body::Incoming;
use tenure_acme::problem::Problem;
use tenure_acme::routes::match_pattern;

use crate::auth::{self, Caller};
use crate::handlers::*;
use crate::{Admin, Answer, Refusal};

/// What a handler returns, boxed so handlers fit in one table.
pub type Handled = Pin<Box<dyn Future<Output = Result<Answer, Problem>> + Send>>;

/// An operation of the admin API.
pub type Handler = fn(Arc<Admin>, Call) -> Handled;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The operator's token only; a tenant's gets 403.
    Operator,
    /// The operator, and a tenant for what is its own, checked as the scope says.
    Tenant(Scope),
}

/// How a tenant-scoped route is held to the caller's own things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The path's `{}` segment is a tenant's name: the caller's own.
    PathTenant,
    /// The path's `{}` segment is a resource id: one the caller holds.
    PathResource,
    /// The path's `{}` segment is a certificate serial: one of the caller's.
    PathCertificate,
    /// No path segment: the handler answers only with the caller's own
    /// things (a list, the audit log), and refuses a query naming another tenant.
    Handler,
}

/// What a handler gets besides the engine.
pub struct Call {
    /// Who is calling; the table has already held a tenant to its scope.
    pub caller: Caller,
    /// The path's variable segment (a resource id, a tenant), if the path has one.
    pub param: Option<String>,
    /// The raw query string.
    pub query: Option<String>,
    /// The request's headers.
    pub headers: HeaderMap,
    /// The body, read whole.
    pub body: Bytes,
}

impl Call {
    /// The path's variable segment; empty when the row's path has none, which
    /// the table rules out for every handler that asks.
    pub fn param(&self) -> &str {
        self.param.as_deref().unwrap_or("")
    }
}

use Access::{Operator, Tenant};
use Scope::{Handler as Own, PathCertificate, PathResource, PathTenant};

/// Every operation: method, path (`{name}` is one segment), who may call it, handler.
pub static ROUTES: &[(Method, &str, Access, Handler)] = &[
    (Method::GET, "/v1/tenants", Tenant(Own), list_tenants),
    (Method::POST, "/v1/tenants", Operator, create_tenant),
    (Method::GET, "/v1/tenants/{name}/limits", Tenant(PathTenant), tenant_limits),
    (Method::PUT, "/v1/tenants/{name}/limits", Operator, set_tenant_limits),
    (Method::GET, "/v1/tenants/{name}/webhook-secret", Tenant(PathTenant), tenant_webhook_secret),
    (Method::POST, "/v1/tenants/{name}/webhook-secret/rotate", Tenant(PathTenant), rotate_tenant_webhook_secret),
    (Method::POST, "/v1/tenants/{name}/token", Operator, issue_tenant_token),
    (Method::PUT, "/v1/tenants/{name}/permits", Operator, update_tenant_permits),
    (Method::POST, "/v1/tenants/{name}/rotate", Operator, rotate_tenant_intermediate),
    (Method::DELETE, "/v1/tenants/{name}", Operator, remove_tenant),
    (Method::GET, "/v1/tenants/{name}/keys", Tenant(PathTenant), list_tenant_keys),
    (Method::POST, "/v1/tenants/{name}/keys", Operator, add_tenant_key),
    (Method::DELETE, "/v1/tenants/{name}/keys", Operator, remove_tenant_key),
    (Method::GET, "/v1/resources", Tenant(Own), list_resources),
    (Method::POST, "/v1/resources", Operator, add_resource),
    (Method::GET, "/v1/resources/{id}", Tenant(PathResource), show_resource),
    (Method::PATCH, "/v1/resources/{id}", Operator, patch_resource),
    (Method::POST, "/v1/resources/{id}/release", Operator, release_resource),
    (Method::POST, "/v1/resources/{id}/transfer", Operator, transfer_resource),
    (Method::POST, "/v1/resources/{id}/suspend", Operator, suspend_resource),
    (Method::POST, "/v1/resources/{id}/resume", Operator, resume_resource),
    (Method::POST, "/v1/resources/{id}/confirm", Operator, confirm_resource),
    (Method::POST, "/v1/resources/{id}/renew", Tenant(PathResource), renew_resource),
    (Method::GET, "/v1/certificates", Tenant(Own), list_certificates),
    (Method::GET, "/v1/certificates/{serial}", Tenant(PathCertificate), show_certificate),
    (Method::POST, "/v1/certificates/{serial}/revoke", Tenant(PathCertificate), revoke_certificate),
    (Method::GET, "/v1/plugins", Tenant(Own), list_plugins),
    (Method::GET, "/v1/plugins/signatures", Tenant(Own), plugin_signatures),
    (Method::PUT, "/v1/plugins/signatures", Operator, set_plugin_signatures),
    (Method::PUT, "/v1/plugins/operator", Operator, install_operator_plugin),
    (Method::DELETE, "/v1/plugins/operator", Operator, remove_operator_plugin),
    (Method::PUT, "/v1/plugins/tenant/{tenant}", Tenant(PathTenant), install_tenant_plugin),
    (Method::DELETE, "/v1/plugins/tenant/{tenant}", Tenant(PathTenant), remove_tenant_plugin),
    (Method::POST, "/v1/plugins/tenant/{tenant}/check", Tenant(PathTenant), check_tenant_plugin),
    (Method::POST, "/v1/plugins/tenant/{tenant}/eval", Tenant(PathTenant), eval_tenant_plugin),
    (Method::GET, "/v1/audit", Tenant(Own), audit),
];

/// Authenticates, routes, authorizes and runs one request.
pub async fn dispatch(admin: Arc<Admin>, req: Request<Incoming>) -> Result<Answer, Refusal> {
    let caller = auth::authenticate(&admin, req.headers()).await?;
    let (method, path, query) = (req.method().clone(), req.uri().path().to_string(), req.uri().query().map(str::to_string));
    let mut allowed: Vec<&str> = Vec::new();
    let mut found = None;
    for (m, pattern, access, handler) in ROUTES {
        if let Some(param) = match_pattern(pattern, &path) {
            if *m == method {
                found = Some((*access, *handler, param));
                break;
            }
            allowed.push(m.as_str());
        }
    }
    let Some((access, handler, param)) = found else {
        if allowed.is_empty() {
            return Err(Problem::not_found(format!("no admin resource {method} {path}")).into());
        }
        let allow = allowed.join(", ");
        return Err(Refusal {
            problem: Problem::malformed(format!("{path} accepts {allow}, not {method}")).with_status(StatusCode::METHOD_NOT_ALLOWED),
            header: Some((header::ALLOW, allow)),
        });
    };
    authorize(&admin, &caller, access, param.as_deref(), &method, &path).await?;
    let (parts, body) = req.into_parts();
    let body = crate::input::read_body(body).await?;
    Ok(handler(admin, Call { caller, param, query, headers: parts.headers, body }).await?)
}

/// Holds a tenant to the row's access rule: 403 for an operator-only row,
/// and for a path segment that is not the tenant's own (another tenant's and
/// one that does not exist alike). The operator passes.
pub async fn authorize(
    admin: &Arc<Admin>,
    caller: &Caller,
    access: Access,
    param: Option<&str>,
    method: &Method,
    path: &str,
) -> Result<(), Problem> {
    let Some(tenant) = caller.tenant() else { return Ok(()) };
    let param = param.unwrap_or("");
    let own = match access {
        Access::Operator => {
            return Err(forbidden(format!("{method} {path} is the operator's; a tenant's token cannot call it")));
        }
        Access::Tenant(Scope::Handler) => return Ok(()),
        Access::Tenant(Scope::PathTenant) => param == tenant,
        Access::Tenant(Scope::PathResource) => {
            let id = param.to_string();
            admin.registry(move |r| r.resource(&id)).await?.is_some_and(|r| r.tenant == tenant)
        }
        Access::Tenant(Scope::PathCertificate) => {
            let serial = normalize_serial(param);
            admin.lifecycle(move |l| l.certificate_record(&serial)).await?.is_some_and(|(c, _)| c.tenant == tenant)
        }
    };
    if own { Ok(()) } else { Err(not_yours(tenant, param)) }
}

/// 403 for a tenant caller, with the reason.
pub fn forbidden(detail: String) -> Problem {
    Problem::unauthorized(detail).with_status(StatusCode::FORBIDDEN)
}

/// 403 for a name, id or serial that is not the tenant's own: the same words
/// whether it is another's or nobody's.
pub fn not_yours(tenant: &str, what: &str) -> Problem {
    forbidden(format!("{what:?} is not tenant {tenant}'s; its token reaches only its own tenant, resources, certificates and plugin"))
}

/// A serial as the store keeps it: lowercase hex without colons, bounded
/// (longer than any serial is not one, and is not looked up whole).
pub fn normalize_serial(serial: &str) -> String {
    serial.chars().filter(|c| *c != ':').take(128).collect::<String>().to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::test_admin;

    #[test]
    fn each_method_and_path_is_one_row() {
        for (i, (m, p, _, _)) in ROUTES.iter().enumerate() {
            assert!(p.matches('{').count() <= 1, "{p}");
            for (m2, p2, _, _) in &ROUTES[i + 1..] {
                assert!(!(m == m2 && p == p2), "{m} {p} is named twice");
            }
        }
    }

    /// Every row decides who may call it, and the decision fits the path: a
    /// scope read from the path needs a `{}` segment of that kind; one left to
    /// the handler needs none, and is a read (a list); no tenant mutates a
    /// resource.
    #[test]
    fn every_row_has_an_access_rule_that_fits_its_path() {
        for (m, p, access, _) in ROUTES {
            let segment = p.split('/').find(|s| s.starts_with('{'));
            match access {
                Access::Operator => {}
                Access::Tenant(Scope::Handler) => {
                    assert_eq!(segment, None, "{m} {p}: a handler-scoped row has no path segment");
                    assert_eq!(*m, Method::GET, "{m} {p}: a handler-scoped row is a read");
                }
                Access::Tenant(Scope::PathTenant) => assert!(matches!(segment, Some("{name}" | "{tenant}")), "{m} {p}"),
                Access::Tenant(Scope::PathResource) => assert_eq!(segment, Some("{id}"), "{m} {p}"),
                Access::Tenant(Scope::PathCertificate) => assert_eq!(segment, Some("{serial}"), "{m} {p}"),
            }
            if p.starts_with("/v1/resources") && *m != Method::GET && !p.ends_with("/renew") {
                assert_eq!(*access, Access::Operator, "{m} {p}: a tenant does not change the registry");
            }
        }
    }

    /// A tenant caller on every row with another tenant's name, resource or
    /// certificate (or one that does not exist) gets 403, as on every
    /// operator-only row even with its own name; its own passes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_tenant_is_refused_whatever_is_not_its_own() {
        let (admin, _dir) = test_admin(&["a", "b"]);
        let add = |tenant: &str, name: &str| {
            admin
                .registry
                .add_resource(tenure_engine::registry::NewResource {
                    tenant: tenant.into(),
                    kind: "vm".into(),
                    names: vec![name.into()],
                    ..Default::default()
                })
                .unwrap()
                .id
        };
        let (res_a, res_b) = (add("a", "vm.a.example"), add("b", "vm.b.example"));
        let a = Caller::Tenant("a".into());
        let mut tried = 0;
        for (m, p, access, _) in ROUTES {
            let (others, own): (Vec<&str>, Option<&str>) = match access {
                Access::Operator => (vec!["a", "b", &res_a, &res_b], None),
                Access::Tenant(Scope::Handler) => continue,
                Access::Tenant(Scope::PathTenant) => (vec!["b", "nobody", "A", ""], Some("a")),
                Access::Tenant(Scope::PathResource) => (vec![&res_b, "res_nothing", "a"], Some(&res_a)),
                // No certificate is issued here: none is the tenant's (the e2e test has real ones).
                Access::Tenant(Scope::PathCertificate) => (vec!["00", "ab:cd", "b"], None),
            };
            for other in others {
                let p = authorize(&admin, &a, *access, Some(other), m, p).await.expect_err(&format!("{m} {p} with {other:?}"));
                assert_eq!(p.status(), StatusCode::FORBIDDEN, "{m} {p:?}");
                assert_eq!(p.to_json()["status"], 403);
                tried += 1;
            }
            if let Some(own) = own {
                authorize(&admin, &a, *access, Some(own), m, p).await.unwrap_or_else(|e| panic!("{m} {p} with its own: {e}"));
            }
            authorize(&admin, &Caller::Operator, *access, Some("b"), m, p).await.expect("the operator passes");
        }
        assert!(tried > ROUTES.len(), "every row with a segment was tried");
    }

    #[test]
    fn serials_are_normalized_and_bounded() {
        assert_eq!(normalize_serial("AB:cd:01"), "abcd01");
        assert_eq!(normalize_serial(&"f".repeat(1000)).len(), 128);
    }
}
