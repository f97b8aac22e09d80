//! One function per admin operation: parse the typed input, one engine call,
//! render. Registry and audit operations go through `Admin::registry`, plugin
//! operations through `Admin::policies`, certificates through
//! `Admin::lifecycle`. A tenant caller reaches a handler only for what the
//! route table let through; lists and the audit log restrict themselves here.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use tenure_acme::problem::Problem;
use tenure_engine::lifecycle::certificate_json;
use tenure_engine::policies::PluginScope;
use tenure_engine::ra::TenantLimits;
use tenure_engine::registry::PermitOverlap;

use crate::auth::Caller;
use crate::input::{json, query};
use crate::requests::*;
use crate::routes::{Call, Handled, forbidden, normalize_serial, not_yours};
use crate::{Admin, Answer};

/// The tenant a list or the audit log is restricted to: the operator's
/// choice; a tenant's own, and 403 if it names another.
fn scoped_tenant(caller: &Caller, asked: Option<String>) -> Result<Option<String>, Problem> {
    match (caller.tenant(), asked) {
        (None, asked) => Ok(asked),
        (Some(own), Some(asked)) if asked != own => Err(not_yours(own, &asked)),
        (Some(own), _) => Ok(Some(own.to_string())),
    }
}

/// `GET /v1/tenants`.
pub fn list_tenants(admin: Arc<Admin>, call: Call) -> Handled {
    Box::pin(async move {
        let NoQuery {} = query(call.query.as_deref())?;
        let list = admin.registry(|r| r.tenants()).await?;
        let own = call.caller.tenant();
        let list = list.iter().filter(|t| own.is_none_or(|own| t.name == own));
        let list = list.map(|t| json!({ "tenant": t.name, "permits": t.permits, "issuer_id": t.issuer_id, "removed_at": t.removed_at }));
        Ok(Answer::ok(json!(list.collect::<Vec<_>>())))
    })
}

/// `POST /v1/tenants`: the tenant, its intermediate CA, and its EAB key.
pub fn create_tenant(admin: Arc<Admin>, call: Call) -> Handled {
    Box::pin(async move {
        let NewTenant { name, permits, allow_overlap } = json(&call.body)?;
        let overlap = if allow_overlap { PermitOverlap::Allow } else { PermitOverlap::Refuse };
        let created = admin.registry(move |r| r.create_tenant_with(&name, Some(&permits), overlap)).await?;
        Ok(Answer::created(json!({
            "tenant": created.tenant.name,
            "permits": created.tenant.permits,
            "eab_kid": created.eab_kid,
            "eab_hmac": URL_SAFE_NO_PAD.encode(&created.eab_hmac),
        })))
    })
}

/// `GET /v1/tenants/{name}/limits`: the tenant's own rate limits and those in force.
pub fn tenant_limits(admin: Arc<Admin>, call: Call) -> Handled {
    Box::pin(async move {
        let NoQuery {} = query(call.query.as_deref())?;
        let name = call.param().to_string();
        let (own, effective) = admin.registry(move |r| r.tenant_limits(&name)).await?;
        Ok(Answer::ok(json!({ "tenant": call.param(), "own": own, "effective": effective })))
    })
}

/// `PUT /v1/tenants/{name}/limits`: replaces the tenant's own rate limits
/// (a member left out follows the server's default).
pub fn set_tenant_limits(admin: Arc<Admin>, call: Call) -> Handled {
    Box::pin(async move {
        let own: TenantLimits = json(&call.body)?;
        let name = call.param().to_string();
        let stored = own.clone();
        let effective = admin.registry(move |r| r.set_tenant_limits(&name, &stored)).await?;
        Ok(Answer::ok(json!({ "tenant": call.param(), "own": own, "effective": effective })))
    })
}

/// `GET /v1/tenants/{name}/webhook-secret`: the key its webhooks' signatures are made with.
pub fn tenant_webhook_secret(admin: Arc<Admin>, call: Call) -> Handled {
    Box::pin(async move {
        let NoQuery {} = query(call.query.as_deref())?;
        let name = call.param().to_string();
        let tenant = name.clone();
        let secret = admin.registry(move |r| r.webhook_secret(&tenant)).await?;
        Ok(Answer::ok(json!({ "tenant": name, "webhook_secret": secret })))
    })
}

/// `POST /v1/tenants/{name}/webhook-secret/rotate`: a new secret, in force at once.
pub fn rotate_tenant_webhook_secret(admin: Arc<Admin>, call: Call) -> Handled {
    Box::pin(async move {
        let NoBody {} = json(&call.body)?;
        let name = call.param().to_string();
        let tenant = name.clone();
        let secret = admin.registry(move |r| r.rotate_webhook_secret(&tenant)).await?;
        Ok(Answer::ok(json!({ "tenant": name, "webhook_secret": secret })))
    })
}

/// `PUT /v1/tenants/{name}/permits` `{"permits", "allow_overlap"?}`: a new
/// intermediate constrained to them; certificates naming what they leave out
/// are revoked in the same transaction.
pub fn update_tenant_permits(admin: Arc<Admin>, call: Call) -> Handled {
    Box::pin(async move {
        let UpdatePermits { permits, allow_overlap } = json(&call.body)?;
        let overlap = if allow_overlap { PermitOverlap::Allow } else { PermitOverlap::Refuse };
        let name = call.param().to_string();
        Ok(Answer::ok(json!(admin.registry(move |r| r.update_tenant(&name, &permits, overlap)).await?)))
    })
}

/// `POST /v1/tenants/{name}/rotate`: a new intermediate key, same permits; the
/// old intermediate stays valid for its certificates.
pub fn rotate_tenant_intermediate(admin: Arc<Admin>, call: Call) -> Handled {
    Box::pin(async move {
        let NoBody {} = json(&call.body)?;
        let name = call.param().to_string();
        Ok(Answer::ok(json!(admin.registry(move |r| r.rotate_intermediate(&name)).await?)))
    })
}

/// `DELETE /v1/tenants/{name}`: resources released, certificates and
/// intermediates revoked, accounts deactivated, HSM tokens returned; the
/// history stays. A non-empty `hsm_slot_failures` means: call again.
pub fn remove_tenant(admin: Arc<Admin>, call: Call) -> Handled {
    Box::pin(async move {
        let NoQuery {} = query(call.query.as_deref())?;
        let name = call.param().to_string();
        Ok(Answer::ok(json!(admin.registry(move |r| r.remove_tenant(&name)).await?)))
    })
}

/// `GET /v1/tenants/{name}/keys`: the keys its plugins may be signed with.
pub fn list_tenant_keys(admin: Arc<Admin>, call: Call) -> Handled {
    Box::pin(async move {
        let NoQuery {} = query(call.query.as_deref())?;
        let name = call.param().to_string();
        Ok(Answer::ok(json!(admin.policies(move |p| p.tenant_keys(&name)).await?)))
    })
}

/// `POST /v1/tenants/{name}/keys`: the body is a PEM public key (Ed25519 or
/// ECDSA P-256).
pub fn add_tenant_key(admin: Arc<Admin>, call: Call) -> Handled {
    Box::pin(async move {
        let pem = std::str::from_utf8(&call.body).map_err(|_| Problem::malformed("the body must be a PEM public key (text)"))?.to_string();
        let name = call.param().to_string();
        Ok(Answer::created(json!(admin.policies(move |p| p.add_tenant_key(&name, &pem)).await?)))
    })
}

/// `DELETE /v1/tenants/{name}/keys?key_id=`: 404 if the tenant has no such key.
/// Plugins it signed stay installed: signatures are checked at install.
pub fn remove_tenant_key(admin: Arc<Admin>, call: Call) -> Handled {
    Box::pin(async move {
        let KeyQuery { key_id } = query(call.query.as_deref())?;
        let name = call.param().to_string();
        let (tenant, key) = (name.clone(), key_id.clone());
        if admin.policies(move |p| p.remove_tenant_key(&tenant, &key)).await? {
            Ok(Answer::ok(json!({ "tenant": name, "key_id": key_id, "removed": true })))
        } else {
            Err(Problem::not_found(format!("tenant {name} has no key {key_id}")))
        }
    })
}

/// `GET /v1/plugins/signatures`: whether tenant plugins must be signed.
pub fn plugin_signatures(admin: Arc<Admin>, call: Call) -> Handled {
    Box::pin(async move {
        let NoQuery {} = query(call.query.as_deref())?;
        let required = admin.policies(|p| p.tenant_plugin_signatures_required()).await?;
        Ok(Answer::ok(json!({ "required": required })))
    })
}

/// `PUT /v1/plugins/signatures` `{"required": bool}`: in force at once on every server.
pub fn set_plugin_signatures(admin: Arc<Admin>, call: Call) -> Handled {
    Box::pin(async move {
        let PluginSignatures { required } = json(&call.body)?;
        admin.policies(move |p| p.set_tenant_plugin_signatures(required)).await?;
        Ok(Answer::ok(json!({ "required": required })))
    })
}

/// `GET /v1/resources[?tenant=]`.
pub fn list_resources(admin: Arc<Admin>, call: Call) -> Handled {
    Box::pin(async move {
        let ResourcesQuery { tenant } = query(call.query.as_deref())?;
        let tenant = scoped_tenant(&call.caller, tenant)?;
        Ok(Answer::ok(json!(admin.registry(move |r| r.resources(tenant.as_deref())).await?)))
    })
}

/// `POST /v1/resources`.
pub fn add_resource(admin: Arc<Admin>, call: Call) -> Handled {
    Box::pin(async move {
        let new: AddResource = json(&call.body)?;
        Ok(Answer::created(json!(admin.registry(move |r| r.add_resource(new.into())).await?)))
    })
}

/// `GET /v1/resources/{id}`: the resource and its events.
pub fn show_resource(admin: Arc<Admin>, call: Call) -> Handled {
    Box::pin(async move {
        let NoQuery {} = query(call.query.as_deref())?;
        let id = call.param().to_string();
        let (resource, events, provisioning) = admin
            .registry(move |r| {
                let resource = r.resource(&id)?.ok_or_else(|| tenure_engine::Error::not_found(format!("no resource {id}")))?;
                Ok((resource, r.resource_events(&id)?, r.provisioning_status(&id)?))
            })
            .await?;
        // A resource transferred to the caller keeps its earlier holder's
        // events; a tenant sees its own only.
        let events: Vec<_> = events.into_iter().filter(|e| call.caller.tenant().is_none_or(|own| e.tenant == own)).collect();
        Ok(Answer::ok(json!({ "resource": resource, "events": events, "provisioning": provisioning })))
    })
}

/// `POST /v1/resources/{id}/release`: the tenant lets go; its certificates are revoked.
pub fn release_resource(admin: Arc<Admin>, call: Call) -> Handled {
    Box::pin(async move {
        let NoBody {} = json(&call.body)?;
        let id = call.param().to_string();
        Ok(Answer::ok(json!(admin.registry(move |r| r.release_resource(&id)).await?)))
    })
}

/// `POST /v1/resources/{id}/transfer` `{"to": tenant}`.
pub fn transfer_resource(admin: Arc<Admin>, call: Call) -> Handled {
    Box::pin(async move {
        let Transfer { to } = json(&call.body)?;
        let id = call.param().to_string();
        Ok(Answer::ok(json!(admin.registry(move |r| r.transfer_resource(&id, &to)).await?)))
    })
}

/// `PATCH /v1/resources/{id}` `{"attributes": {...}}`: sets and removes
/// attributes in one change; returns the resource.
pub fn patch_resource(admin: Arc<Admin>, call: Call) -> Handled {
    Box::pin(async move {
        let PatchResource { attributes } = json(&call.body)?;
        let id = call.param().to_string();
        Ok(Answer::ok(json!(admin.registry(move |r| r.set_attributes(&id, &attributes)).await?)))
    })
}

/// `POST /v1/resources/{id}/confirm`: the platform vouches for a leased
/// resource; its lease runs again from now.
pub fn confirm_resource(admin: Arc<Admin>, call: Call) -> Handled {
    Box::pin(async move {
        let NoBody {} = json(&call.body)?;
        let id = call.param().to_string();
        Ok(Answer::ok(json!(admin.registry(move |r| r.confirm_resource(&id)).await?)))
    })
}

/// `POST /v1/resources/{id}/suspend`: held, but not to be certified meanwhile.
pub fn suspend_resource(admin: Arc<Admin>, call: Call) -> Handled {
    Box::pin(async move {
        let NoBody {} = json(&call.body)?;
        let id = call.param().to_string();
        Ok(Answer::ok(json!(admin.registry(move |r| r.suspend_resource(&id)).await?)))
    })
}

/// `POST /v1/resources/{id}/resume`: active again.
pub fn resume_resource(admin: Arc<Admin>, call: Call) -> Handled {
    Box::pin(async move {
        let NoBody {} = json(&call.body)?;
        let id = call.param().to_string();
        Ok(Answer::ok(json!(admin.registry(move |r| r.resume_resource(&id)).await?)))
    })
}

/// `GET /v1/plugins`.
pub fn list_plugins(admin: Arc<Admin>, call: Call) -> Handled {
    Box::pin(async move {
        let NoQuery {} = query(call.query.as_deref())?;
        let list = admin.policies(|p| p.installed_plugins()).await?;
        let own = call.caller.tenant().map(|t| PluginScope::Tenant(t.to_string()).key());
        let list: Vec<_> = list
            .iter()
            .filter(|p| own.as_ref().is_none_or(|own| &p.scope == own))
            .map(|p| json!({ "scope": p.scope, "digest": p.digest, "installed_at": p.installed_at, "signed_by": p.signed_by }))
            .collect();
        Ok(Answer::ok(json!(list)))
    })
}

/// `PUT /v1/plugins/operator`: the body is the component's bytes.
pub fn install_operator_plugin(admin: Arc<Admin>, call: Call) -> Handled {
    Box::pin(install(admin, PluginScope::Operator, call))
}

/// `PUT /v1/plugins/tenant/{tenant}`: the body is the component's bytes.
pub fn install_tenant_plugin(admin: Arc<Admin>, call: Call) -> Handled {
    let scope = PluginScope::Tenant(call.param().to_string());
    Box::pin(install(admin, scope, call))
}

/// The header that carries a plugin's detached signature, base64url.
pub const PLUGIN_SIGNATURE_HEADER: &str = "tenure-plugin-signature";

/// The longest signature header read (an Ed25519 or ECDSA signature is far shorter).
const MAX_SIGNATURE_HEADER: usize = 1024;

/// Installs a scope's plugin, with its detached signature if the request carries one.
async fn install(admin: Arc<Admin>, scope: PluginScope, call: Call) -> Result<Answer, Problem> {
    let key = scope.key();
    let signature = match call.headers.get(PLUGIN_SIGNATURE_HEADER) {
        None => None,
        Some(v) if v.len() > MAX_SIGNATURE_HEADER => {
            return Err(Problem::malformed(format!("the Tenure-Plugin-Signature header is over {MAX_SIGNATURE_HEADER} bytes")));
        }
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| URL_SAFE_NO_PAD.decode(v.trim()).ok())
                .ok_or_else(|| Problem::malformed("the Tenure-Plugin-Signature header is not base64url (without padding)"))?,
        ),
    };
    let installed = admin.policies(move |p| p.install_signed_plugin(scope, &call.body, signature.as_deref())).await?;
    Ok(Answer::ok(json!({ "scope": key, "digest": installed.digest, "signed_by": installed.signed_by })))
}

/// `POST /v1/plugins/tenant/{tenant}/check`: the body is a component; its
/// digest, imports and exports, as `tenure plugin check` prints them. Nothing is stored.
pub fn check_tenant_plugin(admin: Arc<Admin>, call: Call) -> Handled {
    Box::pin(async move {
        let NoQuery {} = query(call.query.as_deref())?;
        let info = admin.policies(move |p| p.check_plugin(&call.body)).await?;
        Ok(Answer::ok(json!(info)))
    })
}

/// `POST /v1/plugins/tenant/{tenant}/eval`: one decision against the live
/// registry (a candidate alone, or the tenant's chain), as `tenure plugin
/// eval` makes it. The request's tenant must be the path's. Nothing is stored.
pub fn eval_tenant_plugin(admin: Arc<Admin>, call: Call) -> Handled {
    use base64::engine::general_purpose::STANDARD;
    use tenure_engine::policy::{Hook, HookRequest};
    Box::pin(async move {
        let NoQuery {} = query(call.query.as_deref())?;
        let EvalRequest { hook, request, chain, wasm } = json(&call.body)?;
        let hook: Hook = hook.parse().map_err(|e| Problem::malformed(format!("the body's \"hook\": {e}")))?;
        let text = request.to_string();
        let request = HookRequest::from_json(hook, &text).map_err(|e| Problem::malformed(format!("the body's \"request\": {e}")))?;
        if request.tenant() != call.param() {
            return Err(match call.caller.tenant() {
                Some(own) => not_yours(own, request.tenant()),
                None => Problem::malformed(format!("the request is tenant {:?}'s, not {:?}'s", request.tenant(), call.param())),
            });
        }
        let wasm = wasm
            .map(|w| STANDARD.decode(w.trim()).or_else(|_| URL_SAFE_NO_PAD.decode(w.trim())))
            .transpose()
            .map_err(|_| Problem::malformed("the body's \"wasm\" is not base64"))?;
        if wasm.is_none() && !chain {
            return Err(Problem::malformed("give a candidate plugin (\"wasm\"), or \"chain\": true for the tenant's installed chain"));
        }
        let evaluated = request.clone();
        let outcome = admin.policies(move |p| p.eval(wasm.as_deref(), chain, &evaluated)).await?;
        Ok(Answer::ok(json!({
            "hook": hook.as_str(),
            "request": request,
            "decision": outcome.decision,
            "verdicts": outcome.verdicts,
        })))
    })
}

/// `DELETE /v1/plugins/operator`.
pub fn remove_operator_plugin(admin: Arc<Admin>, _call: Call) -> Handled {
    Box::pin(remove(admin, PluginScope::Operator))
}

/// `DELETE /v1/plugins/tenant/{tenant}`.
pub fn remove_tenant_plugin(admin: Arc<Admin>, call: Call) -> Handled {
    Box::pin(remove(admin, PluginScope::Tenant(call.param().to_string())))
}

/// Removes a scope's plugin; 404 if none was installed.
async fn remove(admin: Arc<Admin>, scope: PluginScope) -> Result<Answer, Problem> {
    let key = scope.key();
    if admin.policies(move |p| p.remove_plugin(scope)).await? {
        Ok(Answer::ok(json!({ "scope": key, "removed": true })))
    } else {
        Err(Problem::not_found(format!("no plugin is installed for {key}")))
    }
}

/// The most audit records one answer carries.
const MAX_AUDIT_RECORDS: u32 = 10_000;

/// `GET /v1/audit[?tenant=][&limit=]`: the newest decisions, oldest first.
pub fn audit(admin: Arc<Admin>, call: Call) -> Handled {
    Box::pin(async move {
        let AuditQuery { tenant, limit } = query(call.query.as_deref())?;
        let tenant = scoped_tenant(&call.caller, tenant)?;
        // Bounded: each record carries its decision's whole input.
        let limit = i64::from(limit.unwrap_or(1000).min(MAX_AUDIT_RECORDS));
        Ok(Answer::ok(json!(admin.registry(move |r| r.audit(tenant.as_deref(), limit)).await?)))
    })
}

/// `POST /v1/tenants/{name}/token` `{"rotate": bool}`: the tenant's admin-API
/// token, shown only now (only its hash is kept). Without `rotate`, 409 if it
/// has one.
pub fn issue_tenant_token(admin: Arc<Admin>, call: Call) -> Handled {
    Box::pin(async move {
        let TokenRequest { rotate } = json(&call.body)?;
        let name = call.param().to_string();
        let tenant = name.clone();
        let token = admin.registry(move |r| r.issue_tenant_token(&tenant, rotate)).await?;
        Ok(Answer::created(json!({ "tenant": name, "token": token })))
    })
}

/// `POST /v1/resources/{id}/renew`: renews the resource's scheduled
/// certificates now, due or not (`tenure renew --resource`); they are
/// delivered as any renewal is.
pub fn renew_resource(admin: Arc<Admin>, call: Call) -> Handled {
    Box::pin(async move {
        let NoBody {} = json(&call.body)?;
        let id = call.param().to_string();
        let resource = id.clone();
        let report = admin.lifecycle(move |l| l.renew_resource_now(&resource)).await?;
        Ok(Answer::ok(json!({
            "resource": id,
            "renewed": report.renewed,
            "lapsed": report.lapsed,
            "deferred": report.deferred,
            "skipped": report.skipped,
        })))
    })
}

/// The most certificates one list answers with.
const MAX_CERTIFICATES: u32 = 1000;

/// `GET /v1/certificates[?tenant=][&resource=][&limit=]`: newest first.
pub fn list_certificates(admin: Arc<Admin>, call: Call) -> Handled {
    Box::pin(async move {
        let CertificatesQuery { tenant, resource, limit } = query(call.query.as_deref())?;
        let tenant = scoped_tenant(&call.caller, tenant)?;
        if let (Some(own), Some(id)) = (call.caller.tenant(), &resource) {
            // Another tenant's resource and none at all are refused alike.
            let id = id.clone();
            let held = admin.registry(move |r| r.resource(&id)).await?;
            if held.is_none_or(|r| r.tenant != own) {
                return Err(not_yours(own, resource.as_deref().unwrap_or("")));
            }
        }
        let limit = i64::from(limit.unwrap_or(100).min(MAX_CERTIFICATES));
        let listed = admin.lifecycle(move |l| l.certificates(tenant.as_deref(), resource.as_deref(), limit)).await?;
        Ok(Answer::ok(json!(listed.iter().map(|(c, l)| certificate_json(c, l)).collect::<Vec<_>>())))
    })
}

/// `GET /v1/certificates/{serial}` (hex; colons and case do not matter): the
/// certificate, its lifecycle (renewal state, renew-at, predecessor and
/// successor) and its deliveries, as `tenure cert show --json` prints them.
pub fn show_certificate(admin: Arc<Admin>, call: Call) -> Handled {
    Box::pin(async move {
        let NoQuery {} = query(call.query.as_deref())?;
        let serial = normalize_serial(call.param());
        let (record, deliveries) = admin
            .lifecycle(move |l| {
                let record =
                    l.certificate_record(&serial)?.ok_or_else(|| tenure_engine::Error::not_found(format!("no certificate {serial}")))?;
                let deliveries = l.deliveries_of(&serial)?;
                Ok((record, deliveries))
            })
            .await?;
        let (c, l) = record;
        if call.caller.tenant().is_some_and(|own| own != c.tenant) {
            // The table checked this; a certificate cannot change tenant, but fail closed.
            return Err(forbidden(format!("certificate {} is not the caller's", c.serial)));
        }
        let mut v = certificate_json(&c, &l);
        v["deliveries"] = deliveries
            .iter()
            .map(|d| json!({ "event": d.event, "kind": d.kind.as_str(), "target": d.target, "state": d.state.as_str(), "attempts": d.attempts, "last_error": d.last_error }))
            .collect();
        Ok(Answer::ok(v))
    })
}

/// `POST /v1/certificates/{serial}/revoke` `{"reason": 0..5}`: revokes it
/// (a subscriber's reasons only); its renewal stops, its notice is delivered,
/// the next CRL lists it. Answers with the certificate.
pub fn revoke_certificate(admin: Arc<Admin>, call: Call) -> Handled {
    Box::pin(async move {
        let Revoke { reason } = json(&call.body)?;
        let serial = normalize_serial(call.param());
        let (c, l) = admin
            .lifecycle(move |l| {
                l.revoke_certificate(&serial, reason)?;
                l.certificate_record(&serial)?.ok_or_else(|| tenure_engine::Error::internal("certificate vanished"))
            })
            .await?;
        Ok(Answer::ok(certificate_json(&c, &l)))
    })
}
