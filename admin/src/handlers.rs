//! One function per admin operation: parse the typed input, one engine call,
//! render. Registry operations go through `Admin::registry`, plugin and audit
//! operations through `Admin::policies`.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use tenure_acme::problem::Problem;
use tenure_engine::policies::PluginScope;
use tenure_engine::ra::TenantLimits;
use tenure_engine::registry::PermitOverlap;

use crate::input::{json, query};
use crate::requests::*;
use crate::routes::{Call, Handled};
use crate::{Admin, Answer};

/// `GET /v1/tenants`.
pub fn list_tenants(admin: Arc<Admin>, call: Call) -> Handled {
    Box::pin(async move {
        let NoQuery {} = query(call.query.as_deref())?;
        let list = admin.registry(|r| r.tenants()).await?;
        Ok(Answer::ok(json!(list.iter().map(|t| json!({ "tenant": t.name, "permits": t.permits })).collect::<Vec<_>>())))
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

/// `GET /v1/resources[?tenant=]`.
pub fn list_resources(admin: Arc<Admin>, call: Call) -> Handled {
    Box::pin(async move {
        let ResourcesQuery { tenant } = query(call.query.as_deref())?;
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
        let list = admin.policies(|p| p.plugins()).await?;
        let list: Vec<_> = list.iter().map(|(scope, digest, at)| json!({ "scope": scope, "digest": digest, "installed_at": at })).collect();
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

async fn install(admin: Arc<Admin>, scope: PluginScope, call: Call) -> Result<Answer, Problem> {
    let key = scope.key();
    let digest = admin.policies(move |p| p.install_plugin(scope, &call.body)).await?;
    Ok(Answer::ok(json!({ "scope": key, "digest": digest })))
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

/// `GET /v1/audit[?tenant=][&limit=]`: the newest decisions, oldest first.
pub fn audit(admin: Arc<Admin>, call: Call) -> Handled {
    Box::pin(async move {
        let AuditQuery { tenant, limit } = query(call.query.as_deref())?;
        let limit = i64::from(limit.unwrap_or(1000));
        Ok(Answer::ok(json!(admin.registry(move |r| r.audit(tenant.as_deref(), limit)).await?)))
    })
}
