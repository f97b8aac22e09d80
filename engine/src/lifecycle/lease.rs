//! Leases: a resource with `lease-seconds=N` must be confirmed by the platform
//! (its monitor) within N seconds of its creation, last confirmation or
//! resumption, or it is suspended here — its certificates lapse like any
//! suspended resource's. The store finds expired leases through an index of
//! active leased resources, so a pass costs nothing when none ran out.
//!
//! The suspension is the durable record (a `suspended` event with the reason);
//! a resource with a `delivery-webhook` is also told, once and best effort
//! (`resource.suspended`, signed as deliveries are): the outbox carries
//! certificates only, and the event is what a missed notice falls back on.

use serde_json::json;

use super::delivery::{SIGNATURE_HEADER, sign_webhook};
use super::{DELIVERY_WEBHOOK_ATTRIBUTE, Lifecycle, WebhookSender, webhook};
use crate::error::Result;
use crate::model::now;
use crate::registry::Resource;

/// At most this many leases are expired per store query.
const BATCH: i64 = 256;

/// What one pass over expired leases did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaseReport {
    pub suspended: usize,
    pub notified: usize,
    pub notify_failed: usize,
}

impl Lifecycle {
    /// Suspends every active resource whose lease ran out by now, each in its
    /// own transaction (a confirmation racing it wins if it commits first).
    pub fn expire_leases(&self, sender: &dyn WebhookSender) -> Result<LeaseReport> {
        self.expire_leases_at(now(), sender)
    }

    /// [`Self::expire_leases`] as of `at` (tests need not wait for a lease).
    pub(crate) fn expire_leases_at(&self, at: crate::model::UnixTime, sender: &dyn WebhookSender) -> Result<LeaseReport> {
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
                match self.notify_suspended(&resource, sender) {
                    Ok(true) => report.notified += 1,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(resource = %id, error = %e, "lease expiry notification failed");
                        report.notify_failed += 1;
                    }
                }
            }
            // A short batch was all there was; a batch that changed nothing
            // (all confirmed meanwhile) would come back the same.
            if (fetched as i64) < BATCH || changed == 0 {
                return Ok(report);
            }
        }
    }

    /// POSTs `resource.suspended` to the resource's webhook, if it has one
    /// (within the operator's bounds, as deliveries are); false without one.
    fn notify_suspended(&self, resource: &Resource, sender: &dyn WebhookSender) -> std::result::Result<bool, String> {
        let Some(url) = resource.attributes.get(DELIVERY_WEBHOOK_ATTRIBUTE).filter(|u| !u.is_empty()) else { return Ok(false) };
        let cfg = &self.core.config.lifecycle;
        let target = webhook::webhook_target(url, &cfg.webhook_allow, &webhook::system_resolve).map_err(|e| e.detail)?;
        let body = json!({
            "event": "resource.suspended",
            "reason": "lease expired",
            "resource": resource.id,
            "tenant": resource.tenant,
            "lease_expires": resource.lease_expires,
            "at": resource.updated_at,
        })
        .to_string()
        .into_bytes();
        let secret = webhook::tenant_secret(&self.core, &resource.tenant).map_err(|e| e.detail)?;
        let headers = vec![
            ("Content-Type".to_string(), "application/json".to_string()),
            (SIGNATURE_HEADER.to_string(), sign_webhook(secret.as_bytes(), now(), &body)),
        ];
        sender.post(&target, &headers, &body)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;
    use crate::Engine;
    use crate::config::Config;
    use crate::lifecycle::WebhookTarget;
    use crate::registry::{NewResource, ResourceState};

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, serde_json::Value)>>);

    impl WebhookSender for Recorder {
        fn post(&self, target: &WebhookTarget, _headers: &[(String, String)], body: &[u8]) -> std::result::Result<(), String> {
            let body = serde_json::from_slice(body).map_err(|e| e.to_string())?;
            self.0.lock().map_err(|e| e.to_string())?.push((target.url.to_string(), body));
            Ok(())
        }
    }

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
        assert_eq!(a.lifecycle.expire_leases_at(expires - 1, &sender).unwrap(), LeaseReport::default());
        assert_eq!(a.registry.resource(&r.id).unwrap().unwrap().state, ResourceState::Active);

        let report = a.lifecycle.expire_leases_at(expires, &sender).unwrap();
        assert_eq!(report, LeaseReport { suspended: 1, notified: 1, notify_failed: 0 });
        assert_eq!(a.registry.resource(&r.id).unwrap().unwrap().state, ResourceState::Suspended);
        let events = a.registry.resource_events(&r.id).unwrap();
        let last = events.last().unwrap();
        assert_eq!((last.kind.as_str(), last.detail["reason"].as_str()), ("suspended", Some("lease expired")), "{last:?}");
        let sent = sender.0.lock().unwrap();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].1["event"], "resource.suspended");
        assert_eq!(sent[0].1["resource"], r.id.as_str());

        // Suspended: not expired again.
        assert_eq!(a.lifecycle.expire_leases_at(expires + 1000, &sender).unwrap().suspended, 0);
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
        let sender = Recorder::default();
        assert_eq!(a.lifecycle.expire_leases_at(first, &sender).unwrap().suspended, 0);

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
