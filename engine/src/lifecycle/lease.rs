//! Leases: a resource with `lease-seconds=N` must be confirmed by the platform
//! (its monitor) within N seconds of its creation, last confirmation or
//! resumption, or it is suspended here — its certificates lapse like any
//! suspended resource's. The store finds expired leases through an index of
//! active leased resources, so a pass costs nothing when none ran out.
//!
//! The suspension is the durable record (a `suspended` event with the reason),
//! and a resource with a `delivery-webhook` is told through the outbox
//! (`resource.suspended`), written in the suspension's own transaction.

use super::Lifecycle;
use crate::error::Result;
use crate::model::now;

/// At most this many leases are expired per store query.
const BATCH: i64 = 256;

/// What one pass over expired leases did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaseReport {
    pub suspended: usize,
}

impl Lifecycle {
    /// Suspends every active resource whose lease ran out by now, each in its
    /// own transaction (a confirmation racing it wins if it commits first).
    pub fn expire_leases(&self) -> Result<LeaseReport> {
        self.expire_leases_at(now())
    }

    /// [`Self::expire_leases`] as of `at` (tests need not wait for a lease).
    pub(crate) fn expire_leases_at(&self, at: crate::model::UnixTime) -> Result<LeaseReport> {
        let mut report = LeaseReport::default();
        loop {
            let expired = self.core.store.expired_leases(at, BATCH)?;
            let fetched = expired.len();
            let mut changed = 0;
            for id in expired {
                let Some(resource) = self.core.store.suspend_expired_lease(&id, at)? else { continue };
                changed += 1;
                report.suspended += 1;
                tracing::warn!(resource = %id, tenant = %resource.tenant, "lease expired; resource suspended");
            }
            // A short batch was all there was; a batch that changed nothing
            // (all confirmed meanwhile) would come back the same.
            if (fetched as i64) < BATCH || changed == 0 {
                return Ok(report);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::Engine;
    use crate::config::Config;
    use crate::lifecycle::DELIVERY_WEBHOOK_ATTRIBUTE;
    use crate::lifecycle::delivery::tests::Recorder;
    use crate::registry::{NewResource, Resource, ResourceState};

    fn leased(a: &Engine, seconds: &str, webhook: Option<&str>) -> Resource {
        a.registry.create_tenant("corp", Some(&["corp.example".to_string()])).unwrap();
        let mut attributes = BTreeMap::from([(crate::registry::LEASE_ATTRIBUTE.to_string(), seconds.to_string())]);
        if let Some(url) = webhook {
            attributes.insert(DELIVERY_WEBHOOK_ATTRIBUTE.to_string(), url.to_string());
        }
        a.registry
            .add_resource(NewResource {
                tenant: "corp".into(),
                kind: "vm".into(),
                names: vec!["vm.corp.example".into()],
                attributes,
                ..Default::default()
            })
            .unwrap()
    }

    /// Unconfirmed past its lease: suspended, with the reason, and its webhook told.
    #[test]
    fn an_expired_lease_suspends_and_notifies() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.lifecycle.webhook_allow = vec!["http://127.0.0.1".parse().unwrap()];
        let a = Engine::open(dir.path(), config).unwrap();
        let r = leased(&a, "60", Some("http://127.0.0.1:9/hook"));
        let expires = r.lease_expires.expect("a lease deadline");
        assert_eq!(expires, r.created_at + 60);
        let sender = Recorder::default();

        // Not yet.
        assert_eq!(a.lifecycle.expire_leases_at(expires - 1).unwrap(), LeaseReport::default());
        assert_eq!(a.registry.resource(&r.id).unwrap().unwrap().state, ResourceState::Active);

        let report = a.lifecycle.expire_leases_at(expires).unwrap();
        assert_eq!(report, LeaseReport { suspended: 1 });
        assert_eq!(a.registry.resource(&r.id).unwrap().unwrap().state, ResourceState::Suspended);
        let events = a.registry.resource_events(&r.id).unwrap();
        let last = events.last().unwrap();
        assert_eq!((last.kind.as_str(), last.detail["reason"].as_str()), ("suspended", Some("lease expired")), "{last:?}");
        // Told through the outbox, which survives a restart before it is sent.
        let delivered = a.lifecycle.deliver_pending(&sender).unwrap();
        assert_eq!(delivered.delivered, 1, "{delivered:?}");
        let sent = sender.0.lock().unwrap();
        assert_eq!(sent.len(), 1);
        let body: serde_json::Value = serde_json::from_slice(&sent[0].2).unwrap();
        assert_eq!(body["event"], "resource.suspended");
        assert_eq!(body["resource"], r.id.as_str());
        assert_eq!(body["reason"], "lease expired");

        // Suspended: not expired again.
        assert_eq!(a.lifecycle.expire_leases_at(expires + 1000).unwrap().suspended, 0);
    }

    /// Confirming moves the deadline to now + lease; resuming restarts it;
    /// confirming is refused without a lease or while suspended.
    #[test]
    fn confirm_extends_and_resume_restarts_the_lease() {
        let dir = tempfile::tempdir().unwrap();
        let a = Engine::open(dir.path(), Config::default()).unwrap();
        let r = leased(&a, "10", None);
        let first = r.lease_expires.unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let confirmed = a.registry.confirm_resource(&r.id).unwrap();
        assert!(confirmed.lease_expires.unwrap() > first, "{confirmed:?}");
        assert_eq!(a.registry.resource_events(&r.id).unwrap().last().unwrap().kind, "confirmed");
        // The old deadline passes without a suspension: the confirmation moved it.
        assert_eq!(a.lifecycle.expire_leases_at(first).unwrap().suspended, 0);

        let suspended = a.registry.suspend_resource(&r.id).unwrap();
        let err = a.registry.confirm_resource(&r.id).unwrap_err();
        assert!(err.detail.contains("is suspended"), "{err}");
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let resumed = a.registry.resume_resource(&r.id).unwrap();
        assert!(resumed.lease_expires.unwrap() > suspended.lease_expires.unwrap(), "{resumed:?}");
        assert_eq!(resumed.lease_expires, Some(resumed.updated_at + 10));

        // Removing the attribute ends the lease; confirming then has nothing to confirm.
        let plain = a.registry.set_attributes(&r.id, &BTreeMap::from([(crate::registry::LEASE_ATTRIBUTE.to_string(), None)])).unwrap();
        assert_eq!(plain.lease_expires, None);
        let err = a.registry.confirm_resource(&r.id).unwrap_err();
        assert!(err.detail.contains("has no lease"), "{err}");
    }
}
