//! The renewal sweep: every certificate whose window has opened is put to
//! `decide-renewal` with the registry as it is now; on allow a successor is
//! signed (same key) and stored with its predecessor's update and its
//! deliveries, on deny the certificate lapses with the reason.
//!
//! Batches are decided and signed in parallel outside any transaction, then
//! stored in one. A crash before the commit loses only unsent signatures; the
//! commit claims each predecessor with a guarded update, so a sweep repeated
//! after a restart (or two processes sweeping at once) never issues twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::authority::Authority;
use crate::ca;
use crate::error::Result;
use crate::model::*;
use crate::policy::{CertificateInfo, Decision, Plugin, RenewalRequest};
use crate::store::{RenewalOutcome, RenewalTally, Renewed};

use super::{DELIVERY_DIR_ATTRIBUTE, DELIVERY_WEBHOOK_ATTRIBUTE};

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub renewed: usize,
    pub lapsed: usize,
    pub skipped: usize,
    /// Certificates whose renewal failed for a reason of ours (not the
    /// policy's); they are retried on a later sweep.
    pub deferred: usize,
    pub batches: usize,
    pub elapsed: Duration,
}

impl SweepReport {
    fn add(&mut self, t: RenewalTally, deferred: usize) {
        self.renewed += t.renewed;
        self.lapsed += t.lapsed;
        self.skipped += t.skipped;
        self.deferred += deferred;
        self.batches += 1;
    }
}

/// What a batch's certificates share, looked up once.
struct Batch {
    chains: HashMap<String, Result<Vec<Arc<Plugin>>>>,
    targets: HashMap<String, Vec<(DeliveryKind, String)>>,
}

/// How long a certificate whose renewal failed on our side waits for the next try.
const RETRY_DELAY: i64 = 60;

impl Authority {
    /// Renews every certificate whose renewal window has opened (or that
    /// expired while still held), batch by batch, until none is due.
    pub fn sweep_renewals(&self) -> Result<SweepReport> {
        self.sweep_renewals_paced(|wait| {
            std::thread::sleep(wait);
            true
        })
    }

    /// The sweep, handing `pause` what is left to wait after each batch to
    /// keep to `renewal_rate` (zero without a limit). `pause` waits and
    /// returns false to end the sweep there: the scheduler's way to shut down
    /// between two transactions rather than after the whole backlog.
    pub fn sweep_renewals_paced(&self, mut pause: impl FnMut(Duration) -> bool) -> Result<SweepReport> {
        let started = Instant::now();
        let mut report = SweepReport::default();
        let batch = self.config().lifecycle.batch.max(1) as i64;
        let rate = self.config().lifecycle.renewal_rate.filter(|r| r.is_finite() && *r > 0.0);
        // Only what was due when the sweep began: successors issued by this
        // sweep fall due at or after it, so the loop ends even when lifetimes
        // are shorter than a sweep.
        let cutoff = now();
        loop {
            // Each batch leaves the queue: renewed, lapsed, or deferred to a later sweep.
            let due = self.store.due_certificates(cutoff, batch)?;
            if due.is_empty() {
                break;
            }
            let (tally, deferred) = self.renew_batch(due)?;
            report.add(tally, deferred);
            if tally.renewed + tally.lapsed + deferred == 0 {
                // Nothing left the queue (every outcome was skipped): stop rather
                // than fetch the same batch again; the next sweep retries.
                break;
            }
            let wait = rate.map_or(Duration::ZERO, |rate| {
                let processed = report.renewed + report.lapsed + report.deferred + report.skipped;
                Duration::from_secs_f64(processed as f64 / rate).saturating_sub(started.elapsed())
            });
            if !pause(wait) {
                break;
            }
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// Renews a resource's scheduled certificates now, due or not (`tenure renew --now --resource`).
    pub fn renew_resource_now(&self, resource_id: &str) -> Result<SweepReport> {
        let started = Instant::now();
        self.store.resource(resource_id)?.ok_or_else(|| crate::Error::not_found(format!("no resource {resource_id}")))?;
        let mut report = SweepReport::default();
        let due = self.store.scheduled_certificates_of_resource(resource_id)?;
        for chunk in due.chunks(self.config().lifecycle.batch.max(1)) {
            let (tally, deferred) = self.renew_batch(chunk.to_vec())?;
            report.add(tally, deferred);
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// Decides and signs a batch on every core, then stores it in one
    /// transaction. Also returns how many failed on our side (and were deferred).
    fn renew_batch(&self, due: Vec<(Certificate, CertificateLifecycle)>) -> Result<(RenewalTally, usize)> {
        // Looked up once per batch rather than per certificate: each tenant's
        // plugin chain, and each bound resource's delivery targets.
        let mut chains = HashMap::new();
        let mut targets: HashMap<String, Vec<(DeliveryKind, String)>> = HashMap::new();
        for (cert, life) in &due {
            if !chains.contains_key(&cert.tenant) {
                chains.insert(cert.tenant.clone(), self.plugin_chain(&cert.tenant));
            }
            for id in &life.resources {
                if !targets.contains_key(id) {
                    targets.insert(id.clone(), self.delivery_targets(id)?);
                }
            }
        }
        let batch = Batch { chains, targets };
        let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(due.len().max(1));
        let per = due.len().div_ceil(workers);
        let results: Vec<(String, Result<RenewalOutcome>)> = std::thread::scope(|s| {
            let batch = &batch;
            let handles: Vec<_> = due
                .chunks(per.max(1))
                .map(|chunk| {
                    (chunk, s.spawn(move || chunk.iter().map(|(c, l)| (c.serial.clone(), self.renew_one(c, l, batch))).collect::<Vec<_>>()))
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|(chunk, h)| {
                    // A panic (a bug) must not leave its certificates at the head of the
                    // queue forever: they are deferred like any failure of ours.
                    h.join().unwrap_or_else(|_| {
                        chunk.iter().map(|(c, _)| (c.serial.clone(), Err(crate::Error::internal("renewal panicked")))).collect()
                    })
                })
                .collect()
        });
        let mut outcomes = Vec::with_capacity(results.len());
        let mut deferred = 0;
        for (serial, r) in results {
            match r {
                Ok(o) => outcomes.push(o),
                Err(e) => {
                    tracing::warn!(%serial, error = %e, "renewal failed; retrying later");
                    self.store.defer_renewal(&serial, now() + RETRY_DELAY, &e.detail)?;
                    deferred += 1;
                }
            }
        }
        Ok((self.store.record_renewals(&outcomes)?, deferred))
    }

    /// Where a resource's renewed certificates go, from its attributes.
    fn delivery_targets(&self, resource_id: &str) -> Result<Vec<(DeliveryKind, String)>> {
        let Some(resource) = self.store.resource(resource_id)? else { return Ok(Vec::new()) };
        Ok([(DELIVERY_DIR_ATTRIBUTE, DeliveryKind::File), (DELIVERY_WEBHOOK_ATTRIBUTE, DeliveryKind::Webhook)]
            .into_iter()
            .filter_map(|(attribute, kind)| resource.attributes.get(attribute).filter(|t| !t.is_empty()).map(|t| (kind, t.clone())))
            .collect())
    }

    /// One certificate: the policy's decision, and on allow its successor.
    fn renew_one(&self, cert: &Certificate, life: &CertificateLifecycle, batch: &Batch) -> Result<RenewalOutcome> {
        let request = RenewalRequest {
            tenant: cert.tenant.clone(),
            trigger: crate::policy::Trigger::Renewal,
            identifiers: cert.identifiers.clone(),
            resources: life.resources.clone(),
            profile: life.profile.clone(),
            requested_lifetime_seconds: self.profile_lifetime(&life.profile)?.as_secs().max(1),
            certificate: Some(CertificateInfo {
                serial: cert.serial.clone(),
                identifiers: cert.identifiers.clone(),
                not_before: cert.not_before.max(0) as u64,
                not_after: cert.not_after.max(0) as u64,
                resources: life.resources.clone(),
            }),
        };
        let chain = match batch.chains.get(&cert.tenant) {
            Some(Ok(chain)) => chain,
            Some(Err(e)) => return Err(e.clone()),
            None => return Err(crate::Error::internal("the batch has no chain for this tenant")),
        };
        let decided = self.decide_renewal_by(chain, &cert.tenant, Some(&cert.account_id), &request)?;
        let grant = match &decided.decision {
            Decision::Allow(g) => g,
            Decision::Deny(reason) => {
                return Ok(RenewalOutcome::Lapsed {
                    serial: cert.serial.clone(),
                    note: format!("policy denied renewal: {reason}"),
                    audit: Some(decided.audit),
                });
            }
        };
        // The grant may narrow the names, never widen them.
        let identifiers: Vec<_> = cert.identifiers.iter().filter(|i| grant.identifiers.contains(i)).cloned().collect();
        if identifiers.is_empty() {
            return Ok(RenewalOutcome::Lapsed {
                serial: cert.serial.clone(),
                note: "the renewal grant names none of the certificate's identifiers".into(),
                audit: Some(decided.audit),
            });
        }
        let profile = grant.profile.clone().filter(|p| self.config().profiles.iter().any(|x| &x.name == p)).unwrap_or(life.profile.clone());
        let lifetime = self.profile_lifetime(&profile)?.min(Duration::from_secs(grant.lifetime_seconds.max(1)));
        if grant.rekey {
            // Keys of ACME clients are theirs: tenure can only rekey keys it
            // holds (HSM slots); this one is reissued on the same key.
            tracing::info!(serial = %cert.serial, "renewal grant asks for a new key; the key is the client's, keeping it");
        }
        let spki = ca::cert_info(&cert.der)?.spki_der;
        let issued_at = now();
        let leaf = self.sign_leaf(cert.issuer_id, &spki, &identifiers, lifetime)?;
        let successor = Certificate {
            serial: leaf.serial_hex.clone(),
            account_id: cert.account_id.clone(),
            order_id: cert.order_id.clone(),
            tenant: cert.tenant.clone(),
            issuer_id: cert.issuer_id,
            der: leaf.der,
            identifiers,
            not_before: leaf.not_before.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0),
            not_after: leaf.not_after.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0),
            revoked_at: None,
            revocation_reason: None,
        };
        let deliveries = life
            .resources
            .iter()
            .flat_map(|id| batch.targets.get(id).into_iter().flatten().map(move |(kind, target)| (id.clone(), *kind, target.clone())))
            .collect();
        Ok(RenewalOutcome::Renewed(Renewed {
            predecessor: cert.serial.clone(),
            life: CertificateLifecycle {
                profile,
                resources: life.resources.clone(),
                renewal: RenewalState::Scheduled,
                renew_at: Some(self.config().lifecycle.renew_at(issued_at, lifetime)),
                note: None,
                predecessor: Some(cert.serial.clone()),
                successor: None,
                policy: decided.audit.plugins.join(","),
            },
            cert: successor,
            deliveries,
            audit: decided.audit,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rcgen::{CertificateParams, KeyPair};

    use crate::Identifier;
    use crate::authority::{Authority, Config, NewOrder};

    /// `n` certificates for www.corp.example, due once the second they were issued in is over.
    fn issue_due(a: &Authority, n: usize) -> Vec<String> {
        let account = crate::authority::tenant_account_holding_corp_example(a);
        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::new(vec!["www.corp.example".to_string()]).unwrap().serialize_request(&key).unwrap();
        let originals = (0..n)
            .map(|_| {
                let order = a
                    .new_order(&account, NewOrder { identifiers: vec![Identifier::dns("www.corp.example")], profile: None, replaces: None })
                    .unwrap();
                a.finalize(&account, &order, csr.der(), b"account key").unwrap().certificate.unwrap()
            })
            .collect();
        // A sweep takes what fell due before the second it starts in.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        originals
    }

    /// Two authorities on one data directory (two processes: `serve` and
    /// `tenure renew --now`) sweeping the same due certificates at once.
    #[test]
    fn concurrent_sweeps_issue_exactly_one_successor_each() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.lifecycle.renewal_fraction = 1.0;
        config.lifecycle.batch = 3;
        let a = Authority::open(dir.path(), config.clone()).unwrap();
        let originals = issue_due(&a, 20);
        // The sweepers schedule successors with the default window, so none is due:
        // otherwise a sweep starting a second after the other's commit renews
        // successors too, and the count below is off.
        drop(a);
        config.lifecycle.renewal_fraction = crate::lifecycle::LifecycleConfig::default().renewal_fraction;
        let a = Authority::open(dir.path(), config.clone()).unwrap();
        let b = Authority::open(dir.path(), config).unwrap();
        let (ra, rb) = std::thread::scope(|s| {
            let ha = s.spawn(|| a.sweep_renewals().unwrap());
            let hb = s.spawn(|| b.sweep_renewals().unwrap());
            (ha.join().unwrap(), hb.join().unwrap())
        });
        assert_eq!(ra.renewed + rb.renewed, originals.len(), "{ra:?} {rb:?}");
        let mut successors: HashMap<String, usize> = HashMap::new();
        for (_, life) in a.certificates(Some("corp"), None, 1000).unwrap() {
            if let Some(p) = life.predecessor {
                *successors.entry(p).or_default() += 1;
            }
        }
        for o in &originals {
            assert_eq!(successors.get(o), Some(&1), "certificate {o}");
        }
    }

    /// `renewal_rate` spaces the batches out, and a pause that says stop
    /// ends the sweep between two transactions with the rest still due.
    #[test]
    fn a_paced_sweep_keeps_to_its_rate_and_stops_between_batches() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.lifecycle.renewal_fraction = 1.0;
        config.lifecycle.batch = 2;
        config.lifecycle.renewal_rate = Some(10.0);
        let a = Authority::open(dir.path(), config).unwrap();
        let originals = issue_due(&a, 6);

        let mut pauses = 0;
        let report = a
            .sweep_renewals_paced(|wait| {
                std::thread::sleep(wait);
                pauses += 1;
                pauses < 2
            })
            .unwrap();
        assert_eq!((report.renewed, report.batches), (4, 2), "{report:?}");
        // Four certificates at ten a second take at least 0.4 s, however fast the signing.
        assert!(report.elapsed >= std::time::Duration::from_millis(400), "{report:?}");

        let renewed = |a: &Authority| {
            let certs = a.certificates(Some("corp"), None, 1000).unwrap();
            originals.iter().filter(|o| certs.iter().any(|(_, l)| l.predecessor.as_ref() == Some(o))).count()
        };
        assert_eq!(renewed(&a), 4);
        // What the stopped sweep left is still due (with the successors, whose window opens at once here).
        a.sweep_renewals_paced(|_| true).unwrap();
        assert_eq!(renewed(&a), 6);
    }
}
