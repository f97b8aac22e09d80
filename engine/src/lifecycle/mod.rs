//! The certificate lifecycle after issuance (DESIGN.md point 5): a certificate
//! is bound to the registry resources its names came from; while they are
//! held, tenure reissues it before it expires ([`renewal`]) and delivers the
//! successor ([`delivery`]); when one is released or transferred, the store
//! revokes it in the same transaction. ARI ([`ari`]) tells ACME clients the
//! same plan, and each issuer publishes a CRL ([`crl`]). [`scheduler`] runs it
//! all in the background of `tenure serve`.

pub mod ari;
pub mod crl;
pub mod delivery;
pub mod renewal;
pub mod scheduler;

use std::time::Duration;

use crate::authority::Authority;
use crate::error::Result;
use crate::identifier::Identifier;
use crate::model::*;
use crate::registry::ResourceState;

pub use ari::RenewalWindow;
pub use delivery::{DeliveryReport, WebhookSender};
pub use renewal::SweepReport;

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
    /// How often the scheduler sweeps, delivers and refreshes CRLs.
    pub interval: Duration,
    /// A CRL's nextUpdate is this far after its thisUpdate…
    pub crl_validity: Duration,
    /// …and it is regenerated this often even without revocations.
    pub crl_refresh: Duration,
    /// Delivery attempts before a delivery is given up.
    pub delivery_attempts: i64,
    /// The first retry's delay; it doubles per attempt, up to an hour.
    pub delivery_backoff: Duration,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            renewal_fraction: 1.0 / 3.0,
            batch: 256,
            renewal_rate: None,
            interval: Duration::from_secs(30),
            crl_validity: Duration::from_secs(24 * 3600),
            crl_refresh: Duration::from_secs(3600),
            delivery_attempts: 10,
            delivery_backoff: Duration::from_secs(5),
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

/// The resources a new certificate is bound to, and whether every one of its
/// names is held (then tenure renews it itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub resources: Vec<String>,
    pub all_held: bool,
}

impl Authority {
    /// Binds identifiers to the tenant's active resources holding them, plus
    /// those resources' anchors: releasing an anchor ends the certificate too.
    pub fn binding_of(&self, tenant: &str, identifiers: &[Identifier]) -> Result<Binding> {
        let mut resources: Vec<String> = Vec::new();
        let mut all_held = !identifiers.is_empty();
        for id in identifiers {
            let holders = self.store.resources_holding(Some(tenant), id)?;
            let Some(holder) = holders.into_iter().find(|r| r.state == ResourceState::Active) else {
                all_held = false;
                continue;
            };
            if let Some(anchor) = &holder.anchor {
                resources.push(anchor.clone());
            }
            resources.push(holder.id);
        }
        resources.sort();
        resources.dedup();
        Ok(Binding { resources, all_held })
    }

    /// Certificates with their lifecycle, newest first.
    pub fn certificates(
        &self,
        tenant: Option<&str>,
        resource: Option<&str>,
        limit: i64,
    ) -> Result<Vec<(Certificate, CertificateLifecycle)>> {
        self.store.certificate_records(tenant, resource, limit)
    }

    pub fn certificate_record(&self, serial: &str) -> Result<Option<(Certificate, CertificateLifecycle)>> {
        self.store.certificate_record(serial)
    }

    pub fn deliveries_of(&self, serial: &str) -> Result<Vec<Delivery>> {
        self.store.deliveries_of(serial)
    }

    /// Sets the URL certificates use to point at this server (CRL distribution
    /// points). `tenure serve` sets it; other processes (the CLI's `renew`)
    /// read the last one set.
    pub fn set_public_url(&self, url: &str) -> Result<()> {
        let url = url.trim_end_matches('/').to_string();
        self.store.set_setting("public-url", url.as_bytes())?;
        if let Ok(mut cached) = self.public_url.write() {
            *cached = Some(url);
        }
        Ok(())
    }

    pub(crate) fn public_url(&self) -> Result<Option<String>> {
        if let Some(url) = self.public_url.read().ok().and_then(|u| u.clone()) {
            return Ok(Some(url));
        }
        let stored = self.store.setting("public-url")?.and_then(|v| String::from_utf8(v).ok());
        if let (Some(url), Ok(mut cached)) = (&stored, self.public_url.write()) {
            *cached = Some(url.clone());
        }
        Ok(stored)
    }

    /// The CRL URL certificates of `issuer_id` carry, once a public URL is known.
    pub fn crl_url(&self, issuer_id: i64) -> Result<Option<String>> {
        Ok(self.public_url()?.map(|base| format!("{base}/crl/{issuer_id}")))
    }
}
