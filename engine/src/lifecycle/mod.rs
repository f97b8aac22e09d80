//! The certificate lifecycle after issuance (DESIGN.md point 5): a certificate
//! is bound to the registry resources its names came from; while they are
//! held, tenure reissues it before it expires ([`renewal`]) and delivers the
//! successor ([`delivery`]); when one is released or transferred, the store
//! revokes it in the same transaction. ARI ([`ari`]) tells ACME clients the
//! same plan, and each issuer publishes a CRL ([`crl`]). [`scheduler`] runs it
//! all in the background of `tenure serve`, with the leases of resources
//! ([`lease`]): one not confirmed in time is suspended. [`provisioning`] gives
//! a resource that asks for one its certificate, with no client.

pub mod ari;
pub mod crl;
pub mod delivery;
pub mod lease;
pub mod provisioning;
pub mod renewal;
pub mod scheduler;
pub mod webhook;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::core::Core;
use crate::error::Result;
use crate::model::*;

pub use ari::RenewalWindow;
pub use delivery::{DeliveryReport, WebhookSender};
pub use lease::LeaseReport;
pub use provisioning::ProvisioningReport;
pub use renewal::SweepReport;
pub use webhook::{WebhookAllow, WebhookTarget};

/// The events the outbox carries, as webhooks name them (`event`).
pub mod events {
    /// A resource's first certificate (or one after its attributes changed), with no client.
    pub const PROVISIONED: &str = "certificate.provisioned";
    /// A successor the sweep issued.
    pub const RENEWED: &str = "certificate.renewed";
    /// Renewal stopped (the policy denied it, or a suspension); the certificate runs out.
    pub const LAPSED: &str = "certificate.lapsed";
    /// Revoked (the resource was released or transferred, or an ACME revocation).
    pub const REVOKED: &str = "certificate.revoked";
    /// The resource was suspended (by the platform, or its lease ran out).
    pub const SUSPENDED: &str = "resource.suspended";
    /// The policy refused a key's copy to an HSM.
    pub const DISTRIBUTION_DENIED: &str = "distribution.denied";
}

/// Resource attributes naming where a renewed certificate goes.
pub const DELIVERY_DIR_ATTRIBUTE: &str = "delivery-dir";
pub const DELIVERY_WEBHOOK_ATTRIBUTE: &str = "delivery-webhook";

#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    /// The renewal window opens when this fraction of the lifetime is left.
    pub renewal_fraction: f64,
    /// Certificates decided, signed and stored per transaction by the sweep.
    pub batch: usize,
    /// At most this many certificates per second through the background
    /// sweep, so a backlog (after downtime, or when many certificates fall
    /// due at once) does not crowd out ACME traffic or the HSM. None: no limit.
    pub renewal_rate: Option<f64>,
    /// At most this many resources provisioned per second, so a burst of
    /// new resources does not crowd out ACME traffic. None: no limit.
    pub provisioning_rate: Option<f64>,
    /// How often the scheduler sweeps, delivers and refreshes CRLs.
    pub interval: Duration,
    /// A CRL's nextUpdate is this far after its thisUpdate…
    pub crl_validity: Duration,
    /// …and it is regenerated this often even without revocations.
    pub crl_refresh: Duration,
    /// How long a key rekeyed by the sweep in a tenant's HSM keeps working
    /// beside its successor.
    pub rekey_overlap: Duration,
    /// Delivery attempts before a delivery is given up.
    pub delivery_attempts: i64,
    /// The first retry's delay; it doubles per attempt, up to an hour.
    pub delivery_backoff: Duration,
    /// Every `delivery-dir` must lie below this directory. None: file
    /// delivery is off (fail closed), since any other place could be a
    /// directory the operator never meant tenure to write.
    pub delivery_root: Option<PathBuf>,
    /// Destinations webhooks may reach beyond https to public addresses.
    pub webhook_allow: Vec<WebhookAllow>,
    /// A tenant's intermediate is replaced (a new key, the same permits) by
    /// the scheduler once it expires within this long.
    pub intermediate_rotate_before: Duration,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            renewal_fraction: 1.0 / 3.0,
            batch: 256,
            renewal_rate: None,
            provisioning_rate: None,
            interval: Duration::from_secs(30),
            crl_validity: Duration::from_secs(24 * 3600),
            crl_refresh: Duration::from_secs(3600),
            rekey_overlap: Duration::from_secs(3600),
            delivery_attempts: 10,
            delivery_backoff: Duration::from_secs(5),
            delivery_root: None,
            webhook_allow: Vec::new(),
            intermediate_rotate_before: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

impl LifecycleConfig {
    /// When the renewal window of a certificate issued at `issued_at` for
    /// `lifetime` opens. Counted from the issuance, not the backdated
    /// notBefore, so very short lifetimes still get their whole window.
    pub fn renew_at(&self, issued_at: UnixTime, lifetime: Duration) -> UnixTime {
        let fraction = self.renewal_fraction.clamp(0.0, 1.0);
        issued_at + (lifetime.as_secs_f64() * (1.0 - fraction)).round() as i64
    }
}

/// `f` of every item, the items split over the machine's cores, the results
/// in the items' order. A thread that panics (a bug) gives its items an error
/// saying `what` panicked, so they are retried like any failure of ours
/// rather than left at the head of their queue.
pub(crate) fn on_every_core<T: Sync, R: Send>(items: &[T], what: &str, f: impl Fn(&T) -> Result<R> + Sync) -> Vec<Result<R>> {
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(items.len().max(1));
    let per = items.len().div_ceil(workers).max(1);
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> =
            items.chunks(per).map(|chunk| (chunk.len(), s.spawn(move || chunk.iter().map(f).collect::<Vec<_>>()))).collect();
        handles
            .into_iter()
            .flat_map(|(n, h)| {
                h.join().unwrap_or_else(|_| (0..n).map(|_| Err(crate::Error::internal(format!("{what} panicked")))).collect())
            })
            .collect()
    })
}

/// Renewal sweeps, deliveries, CRLs and the records of issued certificates:
/// what the scheduler and the CLI's `cert` and `renew` commands call.
#[derive(Clone)]
pub struct Lifecycle {
    pub(crate) core: Arc<Core>,
}

impl Lifecycle {
    /// Certificates with their lifecycle, newest first.
    pub fn certificates(
        &self,
        tenant: Option<&str>,
        resource: Option<&str>,
        limit: i64,
    ) -> Result<Vec<(Certificate, CertificateLifecycle)>> {
        self.core.store.certificate_records(tenant, resource, limit)
    }

    pub fn certificate_record(&self, serial: &str) -> Result<Option<(Certificate, CertificateLifecycle)>> {
        self.core.store.certificate_record(serial)
    }

    pub fn deliveries_of(&self, serial: &str) -> Result<Vec<Delivery>> {
        self.core.store.deliveries_of(serial)
    }

    /// The latest `limit` outbox messages of a resource (certificates and notices).
    pub fn deliveries_of_resource(&self, resource_id: &str, limit: i64) -> Result<Vec<Delivery>> {
        self.core.store.deliveries_of_resource(resource_id, limit)
    }

    /// Sets the URL certificates use to point at this server (CRL distribution
    /// points). `tenure serve` sets it; other processes (the CLI's `renew`)
    /// read the last one set.
    pub fn set_public_url(&self, url: &str) -> Result<()> {
        let url = url.trim_end_matches('/').to_string();
        self.core.store.set_setting("public-url", url.as_bytes())?;
        if let Ok(mut cached) = self.core.public_url.write() {
            *cached = Some(url);
        }
        Ok(())
    }

    /// Brings every issuer's CRL up to date (the scheduler's periodic pass).
    pub fn refresh_crls(&self) -> Result<usize> {
        self.core.refresh_crls()
    }

    /// The PEM chain of a certificate: leaf, then its intermediate.
    pub fn certificate_chain_pem(&self, cert: &Certificate) -> Result<String> {
        self.core.chain_pem(cert)
    }

    /// Revokes a certificate for its tenant or the operator (the admin API),
    /// with a subscriber's reason only (RFC 5280 §5.3.1: 0, 1, 3, 4 or 5; 0
    /// if none). The store stops its renewal and queues its notice in the same
    /// transaction; the next CRL lists it.
    pub fn revoke_certificate(&self, serial: &str, reason: Option<u8>) -> Result<Certificate> {
        use crate::error::{Error, ErrorKind};
        let reason = reason.unwrap_or(0);
        if !matches!(reason, 0 | 1 | 3 | 4 | 5) {
            let detail = format!("revocation reason {reason} is not accepted; use 0, 1, 3, 4 or 5");
            return Err(Error::new(ErrorKind::BadRevocationReason, detail));
        }
        let cert = self.core.store.certificate(serial)?.ok_or_else(|| Error::not_found(format!("no certificate {serial}")))?;
        if cert.revoked_at.is_some() || !self.core.store.revoke_certificate(serial, reason)? {
            return Err(Error::new(ErrorKind::AlreadyRevoked, format!("certificate {serial} is already revoked")));
        }
        tracing::info!(serial, reason, tenant = %cert.tenant, "certificate revoked through the admin API");
        self.core.store.certificate(serial)?.ok_or_else(|| Error::internal("certificate vanished"))
    }
}

/// Where a certificate stands now: `revoked`, `expired` or `valid`.
pub fn certificate_status(cert: &Certificate) -> &'static str {
    if cert.revoked_at.is_some() {
        "revoked"
    } else if cert.not_after <= now() {
        "expired"
    } else {
        "valid"
    }
}

/// A certificate and its lifecycle as one JSON object: the form `tenure cert
/// list --json` prints and the admin API answers, kept in one place so the
/// two never drift apart.
pub fn certificate_json(c: &Certificate, l: &CertificateLifecycle) -> serde_json::Value {
    serde_json::json!({
        "serial": c.serial,
        "tenant": c.tenant,
        "status": certificate_status(c),
        "identifiers": c.identifiers.iter().map(|i| i.value.as_str()).collect::<Vec<_>>(),
        "not_before": c.not_before,
        "not_after": c.not_after,
        "revoked_at": c.revoked_at,
        "revocation_reason": c.revocation_reason,
        "profile": l.profile,
        "resources": l.resources,
        "renewal": l.renewal.as_str(),
        "renew_at": l.renew_at,
        "renewal_note": l.note,
        "predecessor": l.predecessor,
        "successor": l.successor,
        "account": c.account_id,
        "order": c.order_id,
        "trigger": l.trigger.as_str(),
        "generation": l.generation,
        "key_source": l.key_source.as_str(),
        "policy": l.policy,
    })
}
