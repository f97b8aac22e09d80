//! The [`Registry`] service: tenants and the resources they hold, as the
//! platform writes them (CLI, admin API), and the audit log. The conflict
//! rule (no two tenants hold the same name) lives here; the store applies it
//! inside its transaction.

use std::sync::Arc;

use crate::PUBLIC_TENANT;
use crate::audit::AuditRecord;
use crate::ca::{self, Permit};
use crate::core::Core;
use crate::error::{Conflict, Error, ErrorKind, Result};
use crate::model::Tenant;
use crate::ra::{EffectiveLimits, TenantLimits};
use crate::registry::{
    AttributeChanges, Event, EventKind, NewResource, ProvisioningStatus, Resource, ResourceState, check_attribute_values,
};
use crate::store::{NewTenantRow, Overlap};

/// Tenants, the resources they hold, and the audit log.
#[derive(Clone)]
pub struct Registry {
    pub(crate) core: Arc<Core>,
}

/// A created tenant and its first EAB credentials.
pub struct TenantCreated {
    /// The tenant.
    pub tenant: Tenant,
    /// Its first External Account Binding key id.
    pub eab_kid: String,
    /// That key's HMAC secret (shown once).
    pub eab_hmac: Vec<u8>,
}

/// The registry's conflict rule: no live resource of another tenant may hold
/// the same name, address or zone, nor a name or zone inside or above a zone.
fn held_elsewhere(tenant: &str) -> impl Fn(&[Overlap]) -> Result<()> + '_ {
    move |overlaps| match overlaps.iter().find(|o| o.holder.tenant != tenant) {
        Some(o) => Err(Error::conflict(
            Conflict::HeldElsewhere { resource: o.holder.id.clone(), tenant: o.holder.tenant.clone() },
            format!("{} is held by resource {} of tenant {}", o.item, o.holder.id, o.holder.tenant),
        )),
        None => Ok(()),
    }
}

/// A tenant's permit rule, as the store runs it.
type BoxedRule<'a> = Box<dyn Fn(&[Tenant]) -> Result<()> + 'a>;

/// A tenant made but not yet stored (see `Registry::create_tenants_with`).
struct PreparedTenant<'a> {
    name: &'a str,
    parsed: Option<Vec<Permit>>,
    normalized: Vec<String>,
    intermediate_der: Vec<u8>,
    key_blob: Vec<u8>,
    webhook_secret: Vec<u8>,
    eab_kid: String,
    eab_hmac: Vec<u8>,
    sealed_hmac: Vec<u8>,
}

/// Whether a new tenant's permits may overlap another tenant's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PermitOverlap {
    /// Refused: two tenants' intermediates could then both certify a name,
    /// and the registry would be all that keeps them apart.
    Refuse,
    /// The operator says so explicitly (a tenant delegated a subzone, say).
    Allow,
}

/// Refuses permits that share a name or address with another tenant's.
pub(super) fn permits_apart(name: &str, permits: &[Permit]) -> impl Fn(&[Tenant]) -> Result<()> {
    move |tenants| {
        // A removed tenant's intermediates are revoked: its names are free again.
        for other in tenants.iter().filter(|t| t.name != name && t.name != PUBLIC_TENANT && t.removed_at.is_none()) {
            for theirs in &other.permits {
                let Ok(theirs_parsed) = Permit::parse(theirs) else { continue };
                if let Some(mine) = permits.iter().find(|p| p.overlaps(&theirs_parsed)) {
                    return Err(Error::conflict(
                        Conflict::PermitsOverlap { tenant: other.name.clone() },
                        format!("permit {mine} overlaps tenant {}'s permit {theirs}", other.name),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Registry {
    /// A tenant's own rate limits and the limits in force for its accounts.
    pub fn tenant_limits(&self, name: &str) -> Result<(TenantLimits, EffectiveLimits)> {
        self.require_tenant(name)?;
        let own = self.core.tenant_limits(name)?;
        let effective = own.over(&self.core.config.rate_limits);
        Ok((own, effective))
    }

    /// Sets a tenant's own rate limits (what it leaves out follows the
    /// server's); returns the limits in force for its accounts.
    pub fn set_tenant_limits(&self, name: &str, limits: &TenantLimits) -> Result<EffectiveLimits> {
        self.require_tenant(name)?;
        self.core.set_tenant_limits(name, limits)?;
        Ok(limits.over(&self.core.config.rate_limits))
    }

    fn require_tenant(&self, name: &str) -> Result<Tenant> {
        self.core.store.tenant(name)?.ok_or_else(|| Error::not_found(format!("no tenant {name}")))
    }

    /// Creates a tenant, its name-constrained intermediate and an EAB key.
    /// `permits` = None only for the public tenant (an unconstrained intermediate).
    /// Permits overlapping another tenant's are refused.
    pub fn create_tenant(&self, name: &str, permits: Option<&[String]>) -> Result<TenantCreated> {
        self.create_tenant_with(name, permits, PermitOverlap::Refuse)
    }

    /// [`Registry::create_tenant`], with the operator's word on overlapping permits.
    pub fn create_tenant_with(&self, name: &str, permits: Option<&[String]>, overlap: PermitOverlap) -> Result<TenantCreated> {
        let mut made = self.create_tenants_with(&[(name, permits)], overlap)?;
        made.pop().ok_or_else(|| Error::internal("no tenant made"))
    }

    /// Several tenants, each as [`Registry::create_tenant_with`] makes one
    /// (its permits apart from every other tenant's and the batch's earlier
    /// ones unless `overlap` allows), stored together: the store reads the
    /// existing tenants once per batch instead of once per tenant
    /// (`tenure bench seed` fills a registry of 100,000 tenants so).
    pub fn create_tenants_with(&self, batch: &[(&str, Option<&[String]>)], overlap: PermitOverlap) -> Result<Vec<TenantCreated>> {
        let prepared = batch.iter().map(|(name, permits)| self.prepare_tenant(name, *permits)).collect::<Result<Vec<_>>>()?;
        let rules: Vec<BoxedRule<'_>> = prepared
            .iter()
            .map(|p| match overlap {
                PermitOverlap::Refuse => Box::new(permits_apart(p.name, p.parsed.as_deref().unwrap_or_default())) as BoxedRule<'_>,
                PermitOverlap::Allow => Box::new(|_: &[Tenant]| Ok(())),
            })
            .collect();
        let rows: Vec<NewTenantRow<'_>> = prepared
            .iter()
            .zip(&rules)
            .map(|(p, rule)| NewTenantRow {
                name: p.name,
                permits: &p.normalized,
                intermediate_der: &p.intermediate_der,
                intermediate_key: &p.key_blob,
                webhook_secret_sealed: &p.webhook_secret,
                eab: Some((&p.eab_kid, &p.sealed_hmac)),
                rule: &**rule,
            })
            .collect();
        let tenants = self.core.store.insert_tenants(&rows)?;
        drop(rows);
        drop(rules);
        Ok(tenants
            .into_iter()
            .zip(prepared)
            .map(|(tenant, p)| TenantCreated { tenant, eab_kid: p.eab_kid, eab_hmac: p.eab_hmac })
            .collect())
    }

    /// A tenant's checks and what is made for it before it is stored: its
    /// intermediate (a new key), its EAB key, its webhook secret.
    fn prepare_tenant<'a>(&self, name: &'a str, permits: Option<&[String]>) -> Result<PreparedTenant<'a>> {
        validate_tenant_name(name)?;
        super::removal::refuse_reused_name(&*self.core.store, name)?;
        let parsed = match permits {
            Some(list) => {
                if list.is_empty() {
                    return Err(Error::malformed("a tenant needs at least one permitted domain or address range"));
                }
                Some(list.iter().map(|p| Permit::parse(p)).collect::<Result<Vec<_>>>()?)
            }
            None => None,
        };
        let core = &self.core;
        let common_name = format!("tenure {name} CA");
        let key = core.ca_keys.new_ca_key(&common_name)?;
        let intermediate = ca::new_intermediate_with(&core.root, &common_name, parsed.as_deref(), key)?;
        let key_blob = core.ca_keys.key_blob(&intermediate.key)?;
        let eab_kid = format!("{name}-{}", core.random_id(9));
        let mut eab_hmac = vec![0u8; 32];
        core.fill_random(&mut eab_hmac)?;
        let normalized: Vec<String> = parsed.iter().flatten().map(|p| p.to_string()).collect();
        let sealed_hmac = core.ca_keys.seal_eab_key(&eab_hmac)?;
        let webhook_secret = crate::lifecycle::webhook::new_sealed_secret(core, name)?;
        Ok(PreparedTenant {
            name,
            parsed,
            normalized,
            intermediate_der: intermediate.cert_der,
            key_blob,
            webhook_secret,
            eab_kid,
            eab_hmac,
            sealed_hmac,
        })
    }

    /// A tenant by name.
    pub fn tenant(&self, name: &str) -> Result<Option<Tenant>> {
        self.core.store.tenant(name)
    }

    /// Every tenant.
    pub fn tenants(&self) -> Result<Vec<Tenant>> {
        self.core.store.tenants()
    }

    /// The secret the tenant's webhooks are signed with (HMAC-SHA256 keyed by
    /// this text), made now for a tenant from before per-tenant secrets.
    pub fn webhook_secret(&self, tenant: &str) -> Result<String> {
        self.existing_tenant(tenant)?;
        crate::lifecycle::webhook::tenant_secret(&self.core, tenant)
    }

    /// Replaces the tenant's webhook secret and returns the new one; webhooks
    /// sent from now on carry signatures under it only.
    pub fn rotate_webhook_secret(&self, tenant: &str) -> Result<String> {
        self.existing_tenant(tenant)?;
        let secret = crate::lifecycle::webhook::rotate_tenant_secret(&self.core, tenant)?;
        tracing::info!(tenant, "webhook secret rotated");
        Ok(secret)
    }

    /// Registers a resource a tenant holds. Its names must lie inside the
    /// tenant's permitted subtrees, and no other tenant may hold them.
    pub fn add_resource(&self, req: NewResource) -> Result<Resource> {
        let req = req.normalized()?;
        self.check_inside_permits(&req.tenant, &req)?;
        // Delivery targets against this process's delivery root and webhook
        // allowances; delivery checks them again (the filesystem and DNS may change).
        crate::lifecycle::delivery::check_targets(&self.core.config.lifecycle, &req.attributes)?;
        if req.names.is_empty() && req.zones.is_empty() && req.addresses.is_empty() && req.kind != "hsm" {
            return Err(Error::malformed("a resource needs at least one name, zone or address"));
        }
        let has_identifiers = !req.names.is_empty() || !req.addresses.is_empty();
        crate::lifecycle::provisioning::check_attributes(&req.kind, has_identifiers, &req.attributes)?;
        self.check_key_holder(&req.tenant, &req.kind, &req.attributes)?;
        let id = format!("res_{}", self.core.random_id(9));
        self.core.store.insert_resource(&id, &req, &held_elsewhere(&req.tenant), &crate::lifecycle::provisioning::wants_certificate)
    }

    pub fn resource(&self, id: &str) -> Result<Option<Resource>> {
        self.core.store.resource(id)
    }

    pub fn resources(&self, tenant: Option<&str>) -> Result<Vec<Resource>> {
        self.core.store.resources(tenant)
    }

    pub fn resource_events(&self, id: &str) -> Result<Vec<Event>> {
        self.core.store.resource_events(id)
    }

    /// The tenant lets go of the resource.
    pub fn release_resource(&self, id: &str) -> Result<Resource> {
        self.core.store.set_resource_state(id, ResourceState::Released, EventKind::Released, &|_| false)
    }

    /// Still held, but not renewed meanwhile: its scheduled certificates lapse
    /// (they are not revoked) and run out.
    pub fn suspend_resource(&self, id: &str) -> Result<Resource> {
        self.core.store.set_resource_state(id, ResourceState::Suspended, EventKind::Suspended, &|_| false)
    }

    /// Active again: what the suspension lapsed is scheduled again (the next
    /// sweep reissues what fell due meanwhile), its lease restarts, and one
    /// that asks for a certificate and has none is provisioned.
    pub fn resume_resource(&self, id: &str) -> Result<Resource> {
        self.core.store.set_resource_state(
            id,
            ResourceState::Active,
            EventKind::Resumed,
            &crate::lifecycle::provisioning::wants_certificate,
        )
    }

    /// Sets (`Some`) and removes (`None`, or an empty value) attributes in one
    /// change, validated as at add. Changing `lease-seconds` restarts the lease
    /// from now; removing it ends the lease.
    pub fn set_attributes(&self, id: &str, changes: &AttributeChanges) -> Result<Resource> {
        if changes.is_empty() {
            return Err(Error::malformed("no attribute to set or remove"));
        }
        let set: std::collections::BTreeMap<String, String> =
            changes.iter().filter_map(|(k, v)| v.as_ref().filter(|v| !v.is_empty()).map(|v| (k.clone(), v.clone()))).collect();
        for k in changes.keys() {
            if k.is_empty() || k.len() > 128 {
                return Err(Error::malformed(format!("attribute name {k:?} must be 1-128 characters")));
            }
        }
        check_attribute_values(&set)?;
        crate::lifecycle::delivery::check_targets(&self.core.config.lifecycle, &set)?;
        // The provisioning attributes as they will be (a concurrent change is
        // caught by the worker, which reads them again).
        let current = self.core.store.resource(id)?.ok_or_else(|| Error::not_found(format!("no resource {id}")))?;
        let mut merged = current.attributes.clone();
        for (k, v) in changes {
            match v.as_ref().filter(|v| !v.is_empty()) {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        let has_identifiers = !current.names.is_empty() || !current.addresses.is_empty();
        crate::lifecycle::provisioning::check_attributes(&current.kind, has_identifiers, &merged)?;
        if changes.contains_key(crate::hsm::KEY_ATTRIBUTE) {
            self.check_key_holder(&current.tenant, &current.kind, &merged)?;
        }
        // Every change of a resource that asks for a certificate is put to its
        // plugins again: a new key, recipient, lifetime or target takes effect at once.
        self.core.store.set_resource_attributes(id, changes, &crate::lifecycle::provisioning::wants_work_after_change)
    }

    /// A resource's `hsm` attribute names an `hsm` resource of its own
    /// tenant that is not released (its key is made there).
    fn check_key_holder(&self, tenant: &str, kind: &str, attributes: &std::collections::BTreeMap<String, String>) -> Result<()> {
        let Some(id) = attributes.get(crate::hsm::KEY_ATTRIBUTE).filter(|v| !v.is_empty()) else { return Ok(()) };
        if kind == crate::hsm::RESOURCE_KIND {
            return Ok(());
        }
        let bad = |why: &str| Err(Error::malformed(format!("attribute {}={id}: {why}", crate::hsm::KEY_ATTRIBUTE)));
        match self.core.store.resource(id)? {
            None => bad("no such resource"),
            Some(r) if r.kind != crate::hsm::RESOURCE_KIND => {
                bad(&format!("it is a {}, not an hsm (a token allocated with `tenure hsm allocate`)", r.kind))
            }
            Some(r) if r.tenant != tenant => bad(&format!("it is not tenant {tenant}'s")),
            Some(r) if r.state == ResourceState::Released => bad("it is released"),
            Some(_) => Ok(()),
        }
    }

    /// Where the resource's provisioning stands (`resource show`, `GET
    /// /v1/resources/{id}`): whether a request waits (and why its last try
    /// failed), and the certificate tenure keeps current for it.
    pub fn provisioning_status(&self, id: &str) -> Result<ProvisioningStatus> {
        let pending = self.core.store.provisioning_request(id)?;
        let current = self.core.store.provisioned_certificate_of(id)?;
        Ok(ProvisioningStatus {
            pending: pending.is_some(),
            attempts: pending.as_ref().map_or(0, |p| p.attempts),
            last_error: pending.and_then(|p| p.last_error),
            certificate: current.as_ref().map(|(c, _)| c.serial.clone()),
            generation: current.as_ref().map(|(_, l)| l.generation),
            key_source: current.map(|(_, l)| l.key_source.as_str()),
        })
    }

    /// The platform vouches for a leased resource: its lease runs again from now.
    pub fn confirm_resource(&self, id: &str) -> Result<Resource> {
        self.core.store.confirm_resource(id)
    }

    /// Hands the resource to another tenant, whose permits must cover it.
    pub fn transfer_resource(&self, id: &str, to: &str) -> Result<Resource> {
        let current = self.core.store.resource(id)?.ok_or_else(|| Error::not_found(format!("no resource {id}")))?;
        // The old tenant knows the token's PIN and its keys are in it: an HSM
        // changes hands only by release (zeroized) and a new allocation.
        if current.kind == crate::hsm::RESOURCE_KIND {
            return Err(Error::conflict(
                Conflict::Custody,
                format!("{id} is an HSM: release it (zeroizing it) and allocate one to {to} instead"),
            ));
        }
        let moved = current.moved_to(to);
        self.check_inside_permits(to, &moved)?;
        self.core.store.transfer_resource(id, to, &held_elsewhere(to), &crate::lifecycle::provisioning::wants_certificate)
    }

    fn existing_tenant(&self, name: &str) -> Result<Tenant> {
        self.core.store.tenant(name)?.ok_or_else(|| Error::not_found(format!("no tenant {name}")))
    }

    fn check_inside_permits(&self, tenant: &str, r: &NewResource) -> Result<()> {
        let t = super::removal::live_tenant(&*self.core.store, tenant)?;
        if t.name == PUBLIC_TENANT {
            return Err(Error::malformed("the public tenant holds no resources; create a tenant first"));
        }
        let permits = t.permits.iter().map(|p| Permit::parse(p)).collect::<Result<Vec<_>>>()?;
        let outside: Vec<String> =
            r.identifiers().iter().filter(|id| !ca::permitted(Some(&permits), id)).map(|id| id.value.clone()).collect();
        if !outside.is_empty() {
            return Err(Error::new(
                ErrorKind::Malformed,
                format!("{} lie outside tenant {tenant:?}'s permitted names ({})", outside.join(", "), t.permits.join(", ")),
            ));
        }
        Ok(())
    }

    /// The newest `limit` decisions, oldest first, optionally of one tenant.
    pub fn audit(&self, tenant: Option<&str>, limit: i64) -> Result<Vec<AuditRecord>> {
        self.core.store.audit(tenant, limit)
    }
}

fn validate_tenant_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::malformed(format!("tenant name {name:?} must be 1-63 characters of lowercase letters, digits, '-' and '_'")))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::Engine;
    use crate::config::Config;
    use crate::registry::{AttributeChanges, NewResource, PermitOverlap};

    fn changes(list: &[(&str, Option<&str>)]) -> AttributeChanges {
        list.iter().map(|(k, v)| (k.to_string(), v.map(str::to_string))).collect()
    }

    /// Sets and removes in one change, recorded by key only; refuses what
    /// add refuses, with the same words, and a released resource.
    #[test]
    fn attribute_changes_are_validated_and_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let a = Engine::open(dir.path(), Config::default()).unwrap();
        a.registry.create_tenant("corp", Some(&["corp.example".to_string()])).unwrap();
        let r = a
            .registry
            .add_resource(NewResource {
                tenant: "corp".into(),
                kind: "vm".into(),
                names: vec!["vm.corp.example".into()],
                attributes: BTreeMap::from([("team".to_string(), "blue".to_string()), ("old".to_string(), "x".to_string())]),
                ..Default::default()
            })
            .unwrap();

        let changed = a.registry.set_attributes(&r.id, &changes(&[("team", Some("red")), ("old", None), ("tier", Some(""))])).unwrap();
        assert_eq!(changed.attributes, BTreeMap::from([("team".to_string(), "red".to_string())]));
        let event = a.registry.resource_events(&r.id).unwrap().pop().unwrap();
        assert_eq!(event.kind, "attributes-changed");
        assert_eq!(event.detail, serde_json::json!({ "set": ["team"], "removed": ["old"] }));
        assert!(!event.detail.to_string().contains("red"), "values stay out of events");

        let refused = |c: &[(&str, Option<&str>)]| a.registry.set_attributes(&r.id, &changes(c)).unwrap_err().detail;
        assert_eq!(refused(&[]), "no attribute to set or remove");
        assert!(refused(&[("big", Some(&"x".repeat(4097)))]).contains("longer than 4096 bytes"));
        assert!(refused(&[("lease-seconds", Some("9"))]).contains("from 10 to 31536000, not \"9\""));
        assert!(refused(&[("lease-seconds", Some("ten"))]).contains("not \"ten\""));
        assert!(refused(&[("delivery-dir", Some("relative/dir"))]).contains("must be an absolute path"));
        // No delivery root is configured here: file delivery is off, as at add.
        assert!(refused(&[("delivery-dir", Some("/srv/certs"))]).contains("file delivery is off"));
        assert!(refused(&[("delivery-webhook", Some("http://127.0.0.1/hook"))]).contains("delivery-webhook"));
        assert!(refused(&[("", Some("x"))]).contains("1-128 characters"));
        // Nothing of a refused change was kept.
        assert_eq!(a.registry.resource(&r.id).unwrap().unwrap().attributes, changed.attributes);

        let unknown = a.registry.set_attributes("res_nope", &changes(&[("a", Some("b"))])).unwrap_err();
        assert_eq!(unknown.kind, crate::ErrorKind::NotFound);
        a.registry.release_resource(&r.id).unwrap();
        let err = a.registry.set_attributes(&r.id, &changes(&[("a", Some("b"))])).unwrap_err();
        assert!(matches!(err.conflict, Some(crate::Conflict::ResourceState)), "{err:?}");
    }

    /// A batch is stored together or not at all, and its tenants' permits
    /// are kept apart from each other as from the tenants before it.
    #[test]
    fn tenants_made_in_a_batch() {
        let dir = tempfile::tempdir().unwrap();
        let a = Engine::open(dir.path(), Config::default()).unwrap();
        let permits = |p: &str| vec![p.to_string()];
        let (one, two, three) = (permits("a.example"), permits("b.example"), permits("x.a.example"));
        let made = a.registry.create_tenants_with(&[("a", Some(&one)), ("b", Some(&two))], PermitOverlap::Refuse).unwrap();
        assert_eq!(made.iter().map(|t| t.tenant.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert!(made[0].eab_kid.starts_with("a-") && made[1].eab_kid.starts_with("b-"));
        assert_ne!(made[0].tenant.issuer_id, made[1].tenant.issuer_id);

        let (four, five) = (permits("c.example"), permits("y.c.example"));
        // (TenantCreated, holding the EAB secret, has no Debug: no unwrap_err.)
        let refused = |batch: &[(&str, Option<&[String]>)], overlap| match a.registry.create_tenants_with(batch, overlap) {
            Ok(_) => panic!("the batch was made"),
            Err(e) => e,
        };
        let err = refused(&[("c", Some(&four)), ("d", Some(&five))], PermitOverlap::Refuse);
        assert!(matches!(err.conflict, Some(crate::Conflict::PermitsOverlap { ref tenant }) if tenant == "c"), "{err:?}");
        let err = refused(&[("e", Some(&permits("e.example"))), ("f", Some(&three))], PermitOverlap::Refuse);
        assert!(matches!(err.conflict, Some(crate::Conflict::PermitsOverlap { .. })));
        let names: Vec<String> = a.registry.tenants().unwrap().into_iter().map(|t| t.name).collect();
        assert!(!names.iter().any(|n| ["c", "d", "e", "f"].contains(&n.as_str())), "a refused batch left {names:?}");
        let err = refused(&[("g", Some(&permits("g.example"))), ("g", Some(&permits("h.example")))], PermitOverlap::Allow);
        assert!(matches!(err.conflict, Some(crate::Conflict::TenantExists)));
        assert!(a.registry.tenant("g").unwrap().is_none());
    }

    #[test]
    fn cli_attribute_changes_parse() {
        let c = crate::registry::parse_attribute_changes(&["a=1".into(), "b=".into()], &["c".into()]).unwrap();
        assert_eq!(c, changes(&[("a", Some("1")), ("b", None), ("c", None)]));
        assert!(crate::registry::parse_attribute_changes(&["a=1".into()], &["a".into()]).unwrap_err().detail.contains("twice"));
        assert!(crate::registry::parse_attribute_changes(&["a".into()], &[]).is_err());
    }
}
