//! The registry's write side, as the platform uses it (CLI, admin API).

use super::{Authority, PUBLIC_TENANT};
use crate::ca::{self, Permit};
use crate::error::{Error, ErrorKind, Result};
use crate::registry::{Event, EventKind, NewResource, Resource, ResourceState};

impl Authority {
    /// Registers a resource a tenant holds. Its names must lie inside the
    /// tenant's permitted subtrees, and no other tenant may hold them.
    pub fn add_resource(&self, req: NewResource) -> Result<Resource> {
        let req = req.normalized()?;
        self.check_inside_permits(&req.tenant, &req)?;
        if req.names.is_empty() && req.zones.is_empty() && req.addresses.is_empty() && req.kind != "hsm" {
            return Err(Error::malformed("a resource needs at least one --name, --zone or --address"));
        }
        let id = format!("res_{}", self.random_id(9));
        self.store.insert_resource(&id, &req)
    }

    pub fn resource(&self, id: &str) -> Result<Option<Resource>> {
        self.store.resource(id)
    }

    pub fn resources(&self, tenant: Option<&str>) -> Result<Vec<Resource>> {
        self.store.resources(tenant)
    }

    pub fn resource_events(&self, id: &str) -> Result<Vec<Event>> {
        self.store.resource_events(id)
    }

    /// The tenant lets go of the resource.
    pub fn release_resource(&self, id: &str) -> Result<Resource> {
        self.store.set_resource_state(id, ResourceState::Released, EventKind::Released)
    }

    pub fn suspend_resource(&self, id: &str) -> Result<Resource> {
        self.store.set_resource_state(id, ResourceState::Suspended, EventKind::Suspended)
    }

    pub fn resume_resource(&self, id: &str) -> Result<Resource> {
        self.store.set_resource_state(id, ResourceState::Active, EventKind::Resumed)
    }

    /// Hands the resource to another tenant, whose permits must cover it.
    pub fn transfer_resource(&self, id: &str, to: &str) -> Result<Resource> {
        let current = self.store.resource(id)?.ok_or_else(|| Error::not_found(format!("no resource {id}")))?;
        // The old tenant knows the token's PIN and its keys are in it: an HSM
        // changes hands only by release (zeroized) and a new allocation.
        if current.kind == crate::hsm::RESOURCE_KIND {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("{id} is an HSM: release it (`tenure hsm release`) and allocate one to {to} instead"),
            ));
        }
        let moved = current.moved_to(to);
        self.check_inside_permits(to, &moved)?;
        self.store.transfer_resource(id, to)
    }

    fn check_inside_permits(&self, tenant: &str, r: &NewResource) -> Result<()> {
        let t = self.store.tenant(tenant)?.ok_or_else(|| Error::not_found(format!("no tenant {tenant:?}")))?;
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
}

impl Authority {
    /// The newest `limit` decisions, oldest first, optionally of one tenant.
    pub fn audit(&self, tenant: Option<&str>, limit: i64) -> Result<Vec<crate::store::AuditRecord>> {
        self.store.audit(tenant, limit)
    }
}
