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
use std::time::{Duration, Instant};

use super::Lifecycle;
use crate::ca;
use crate::error::Result;
use crate::issuance::{self, Ask, Binding, Provenance, Renewing, Verdict};
use crate::model::*;
use crate::policy::Trigger as PolicyTrigger;
use crate::store::{Claim, RenewalOutcome, RenewalTally};

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
    tenants: HashMap<String, Result<Tenant>>,
    chains: HashMap<String, Result<crate::policies::PluginChain>>,
    targets: HashMap<String, Vec<(DeliveryKind, String)>>,
    /// For certificates whose key tenure generated and sent encrypted: the
    /// recipient a new key goes to, as the resource names it now.
    recipients: HashMap<String, Option<age::x25519::Recipient>>,
}

/// What renewing one HSM-held certificate came to.
enum HsmRenewal {
    Renewed,
    Lapsed(RenewalTally),
    Deferred,
}

/// How long a certificate whose renewal failed on our side waits for the next try.
const RETRY_DELAY: i64 = 60;

impl Lifecycle {
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
    pub fn sweep_renewals_paced(&self, pause: impl FnMut(Duration) -> bool) -> Result<SweepReport> {
        self.sweep_renewals_observed(pause, |_| {})
    }

    /// [`Self::sweep_renewals_paced`], handing `progress` the tally so far
    /// after each batch (`tenure renew` shows it on a terminal).
    pub fn sweep_renewals_observed(
        &self,
        mut pause: impl FnMut(Duration) -> bool,
        mut progress: impl FnMut(&SweepReport),
    ) -> Result<SweepReport> {
        let started = Instant::now();
        let mut report = SweepReport::default();
        let batch = self.core.config.lifecycle.batch.max(1) as i64;
        let rate = self.core.config.lifecycle.renewal_rate.filter(|r| r.is_finite() && *r > 0.0);
        // Only what was due when the sweep began: successors issued by this
        // sweep fall due at or after it, so the loop ends even when lifetimes
        // are shorter than a sweep.
        let cutoff = now();
        loop {
            // Each batch leaves the queue: renewed, lapsed, or deferred to a later sweep.
            let due = self.core.store.due_certificates(cutoff, batch)?;
            if due.is_empty() {
                break;
            }
            let (tally, deferred) = self.renew_batch(due)?;
            report.add(tally, deferred);
            progress(&report);
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
        self.core.store.resource(resource_id)?.ok_or_else(|| crate::Error::not_found(format!("no resource {resource_id}")))?;
        let mut report = SweepReport::default();
        let due = self.core.store.scheduled_certificates_of_resource(resource_id)?;
        for chunk in due.chunks(self.core.config.lifecycle.batch.max(1)) {
            let (tally, deferred) = self.renew_batch(chunk.to_vec())?;
            report.add(tally, deferred);
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// Renews a batch; returns what was stored and how many failed on our
    /// side (and were deferred).
    fn renew_batch(&self, due: Vec<(Certificate, CertificateLifecycle)>) -> Result<(RenewalTally, usize)> {
        // Suspending a resource lapses its scheduled certificates; one still
        // scheduled here (issued while it was suspended) lapses the same way,
        // so resuming schedules it again.
        let mut states = HashMap::new();
        let mut lapses = Vec::new();
        let mut kept = Vec::with_capacity(due.len());
        for (cert, life) in due {
            let mut suspended = None;
            for id in &life.resources {
                if !states.contains_key(id) {
                    states.insert(id.clone(), self.core.store.resource(id)?.map(|r| r.state));
                }
                if states.get(id) == Some(&Some(crate::registry::ResourceState::Suspended)) {
                    suspended = Some(id);
                    break;
                }
            }
            match suspended {
                Some(id) => lapses.push(RenewalOutcome::Lapsed {
                    serial: cert.serial.clone(),
                    note: format!("{} {id}", crate::registry::SUSPENDED_LAPSE_NOTE),
                    audit: None,
                }),
                None => kept.push((cert, life)),
            }
        }
        let lapsed = if lapses.is_empty() { RenewalTally::default() } else { issuance::record_renewals(&self.core, &lapses)? };
        let (tally, deferred) = self.renew_unsuspended(kept)?;
        let tally = RenewalTally {
            renewed: tally.renewed + lapsed.renewed,
            lapsed: tally.lapsed + lapsed.lapsed,
            skipped: tally.skipped + lapsed.skipped,
        };
        Ok((tally, deferred))
    }

    /// [`Self::renew_batch`] of certificates no suspension holds back.
    fn renew_unsuspended(&self, due: Vec<(Certificate, CertificateLifecycle)>) -> Result<(RenewalTally, usize)> {
        // Certificates of keys tenure made in a tenant's HSM are renewed into
        // it with a fresh key, one by one (the token is the bottleneck, and
        // each rekey records its own key); the rest on every core.
        let (in_hsm, due): (Vec<_>, Vec<_>) =
            due.into_iter().partition(|(_, life)| life.trigger == Trigger::Rekey || life.key_source == KeySource::Hsm);
        let (mut hsm_tally, mut hsm_deferred) = (RenewalTally::default(), 0);
        for (cert, _) in &in_hsm {
            match self.rekey_in_hsm(cert)? {
                HsmRenewal::Renewed => hsm_tally.renewed += 1,
                HsmRenewal::Lapsed(t) => {
                    hsm_tally.lapsed += t.lapsed;
                    hsm_tally.skipped += t.skipped;
                }
                HsmRenewal::Deferred => hsm_deferred += 1,
            }
        }
        if due.is_empty() {
            return Ok((hsm_tally, hsm_deferred));
        }
        let (tally, deferred) = self.renew_in_software(due)?;
        let tally = RenewalTally {
            renewed: tally.renewed + hsm_tally.renewed,
            lapsed: tally.lapsed + hsm_tally.lapsed,
            skipped: tally.skipped + hsm_tally.skipped,
        };
        Ok((tally, deferred + hsm_deferred))
    }

    /// A certificate whose key tenure made in a tenant's token: a rekey of its
    /// resource (decide-renewal with trigger rekey, a fresh key in the token,
    /// the new certificate written beside it, the old key retiring after the
    /// overlap). A denial lapses it; a failure of ours defers it.
    fn rekey_in_hsm(&self, cert: &Certificate) -> Result<HsmRenewal> {
        let resource = match self.core.store.hsm_key_of_certificate(&cert.serial)? {
            Some(key) => key.resource_id,
            None => None,
        };
        let Some(resource) = resource else {
            self.core.store.defer_renewal(&cert.serial, now() + RETRY_DELAY, "no HSM key of tenure's certifies it")?;
            return Ok(HsmRenewal::Deferred);
        };
        let custody = crate::hsm::Custody { core: self.core.clone() };
        match custody.rekey(&resource, None, self.core.config.lifecycle.rekey_overlap) {
            Ok(_) => Ok(HsmRenewal::Renewed),
            // The plugins said no (their decision is audited by the rekey).
            Err(e) if e.kind == crate::ErrorKind::Unauthorized && e.detail.starts_with("policy denied") => {
                let lapse = RenewalOutcome::Lapsed { serial: cert.serial.clone(), note: e.detail, audit: None };
                Ok(HsmRenewal::Lapsed(issuance::record_renewals(&self.core, &[lapse])?))
            }
            Err(e) => {
                tracing::warn!(serial = %cert.serial, error = %e, "rekey in the HSM failed; retrying later");
                self.core.store.defer_renewal(&cert.serial, now() + RETRY_DELAY, &e.detail)?;
                Ok(HsmRenewal::Deferred)
            }
        }
    }

    /// Decides and signs a batch of certificates whose keys are their
    /// clients' on every core, then stores it in one transaction.
    fn renew_in_software(&self, due: Vec<(Certificate, CertificateLifecycle)>) -> Result<(RenewalTally, usize)> {
        // Looked up once per batch rather than per certificate: each tenant's
        // plugin chain, and each bound resource's delivery targets.
        let mut tenants = HashMap::new();
        let mut chains = HashMap::new();
        let mut targets: HashMap<String, Vec<(DeliveryKind, String)>> = HashMap::new();
        let mut recipients = HashMap::new();
        for (cert, life) in &due {
            if life.key_source == KeySource::Recipient {
                recipients.insert(cert.serial.clone(), super::provisioning::recipient_of(&self.core, &life.resources)?);
            }
            if !chains.contains_key(&cert.tenant) {
                chains.insert(cert.tenant.clone(), self.core.plugin_chain(&cert.tenant));
                tenants.insert(cert.tenant.clone(), self.core.tenant_of(&cert.tenant));
            }
            for id in &life.resources {
                if !targets.contains_key(id) {
                    targets.insert(id.clone(), issuance::delivery_targets(&self.core, id)?);
                }
            }
        }
        let batch = Batch { tenants, chains, targets, recipients };
        let results = super::on_every_core(&due, "renewal", |(c, l)| self.renew_one(c, l, &batch));
        let mut outcomes = Vec::with_capacity(results.len());
        let mut deferred = 0;
        for ((cert, _), r) in due.iter().zip(results) {
            let serial = &cert.serial;
            match r {
                Ok(o) => outcomes.push(o),
                Err(e) => {
                    tracing::warn!(%serial, error = %e, "renewal failed; retrying later");
                    self.core.store.defer_renewal(serial, now() + RETRY_DELAY, &e.detail)?;
                    deferred += 1;
                }
            }
        }
        Ok((issuance::record_renewals(&self.core, &outcomes)?, deferred))
    }

    /// One certificate: the policy's decision, and on allow its successor,
    /// through the issuance path (decide → sign; the batch records).
    fn renew_one(&self, cert: &Certificate, life: &CertificateLifecycle, batch: &Batch) -> Result<RenewalOutcome> {
        let (tenant, chain) = match (batch.tenants.get(&cert.tenant), batch.chains.get(&cert.tenant)) {
            (Some(Ok(tenant)), Some(Ok(chain))) => (tenant, chain),
            (Some(Err(e)), _) | (_, Some(Err(e))) => return Err(e.clone()),
            _ => return Err(crate::Error::internal("the batch has no chain for this tenant")),
        };
        let ask = Ask {
            tenant,
            account: cert.account_id.as_deref(),
            trigger: PolicyTrigger::Renewal,
            identifiers: &cert.identifiers,
            profile: &life.profile,
            lifetime: self.core.config.profile_lifetime(&life.profile)?,
        };
        let renewing = Renewing { current: Some(cert), resources: &life.resources };
        let allowed = match issuance::decide_renewal(&self.core, chain, &ask, &renewing)? {
            Verdict::Allowed(a) => a,
            Verdict::Denied { reason, audit } => {
                return Ok(RenewalOutcome::Lapsed {
                    serial: cert.serial.clone(),
                    note: format!("policy denied renewal: {reason}"),
                    audit: Some(audit),
                });
            }
        };
        // A new key only where tenure made the last one: keys of ACME clients
        // and of the platform are theirs, and reissued as they are.
        let recipient = batch.recipients.get(&cert.serial).and_then(Option::as_ref).filter(|_| allowed.grant().rekey);
        let (spki, key_age) = match recipient {
            Some(recipient) => {
                let (spki, pem) = super::provisioning::generate_p256()?;
                (spki, Some(super::provisioning::encrypt_to(recipient, pem.as_bytes())?))
            }
            None => (ca::cert_info(&cert.der)?.spki_der, None),
        };
        let signed = allowed.sign(&self.core, &spki)?;
        let deliveries = life
            .resources
            .iter()
            .flat_map(|id| batch.targets.get(id).into_iter().flatten().map(move |(kind, target)| (id.clone(), *kind, target.clone())))
            .collect();
        let from = Provenance {
            account_id: cert.account_id.clone(),
            order_id: cert.order_id.clone(),
            trigger: Trigger::Renewal,
            predecessor: Some(cert.serial.clone()),
            // A renewal keeps its predecessor's binding and is renewed again.
            binding: Binding { resources: life.resources.clone(), all_held: true },
            deliveries,
            key_source: life.key_source,
            key_age,
            generation: life.generation + 1,
        };
        Ok(RenewalOutcome::Renewed(signed.into_record(&self.core, from, Claim::Renewal { predecessor: cert.serial.clone() })))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rcgen::{CertificateParams, KeyPair};

    use crate::Engine;
    use crate::Identifier;
    use crate::config::Config;
    use crate::model::RenewalState;
    use crate::ra::NewOrder;

    /// `n` certificates for www.corp.example, due once the second they were issued in is over.
    fn issue_due(a: &Engine, n: usize) -> Vec<String> {
        let account = crate::ra::tenant_account_holding_corp_example(a);
        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::new(vec!["www.corp.example".to_string()]).unwrap().serialize_request(&key).unwrap();
        let originals = (0..n)
            .map(|_| {
                let order = a
                    .ra
                    .new_order(&account, NewOrder { identifiers: vec![Identifier::dns("www.corp.example")], profile: None, replaces: None })
                    .unwrap();
                a.ra.finalize(&account, &order, csr.der(), b"account key").unwrap().certificate.unwrap()
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
        let a = Engine::open(dir.path(), config.clone()).unwrap();
        let originals = issue_due(&a, 20);
        // The sweepers schedule successors with the default window, so none is due:
        // otherwise a sweep starting a second after the other's commit renews
        // successors too, and the count below is off.
        drop(a);
        config.lifecycle.renewal_fraction = crate::lifecycle::LifecycleConfig::default().renewal_fraction;
        let a = Engine::open(dir.path(), config.clone()).unwrap();
        let b = Engine::open(dir.path(), config).unwrap();
        let (ra, rb) = std::thread::scope(|s| {
            let ha = s.spawn(|| a.lifecycle.sweep_renewals().unwrap());
            let hb = s.spawn(|| b.lifecycle.sweep_renewals().unwrap());
            (ha.join().unwrap(), hb.join().unwrap())
        });
        assert_eq!(ra.renewed + rb.renewed, originals.len(), "{ra:?} {rb:?}");
        let mut successors: HashMap<String, usize> = HashMap::new();
        for (_, life) in a.lifecycle.certificates(Some("corp"), None, 1000).unwrap() {
            if let Some(p) = life.predecessor {
                *successors.entry(p).or_default() += 1;
            }
        }
        for o in &originals {
            assert_eq!(successors.get(o), Some(&1), "certificate {o}");
        }
    }

    /// While its resource is suspended no certificate is renewed (they lapse,
    /// not revoked); resuming schedules them again and the next sweep
    /// reissues what fell due meanwhile.
    #[test]
    fn suspended_resources_are_not_renewed_and_resume_reissues() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.lifecycle.renewal_fraction = 1.0;
        let a = Engine::open(dir.path(), config).unwrap();
        let originals = issue_due(&a, 2);
        let resource = a.registry.resources(Some("corp")).unwrap().pop().unwrap();

        let suspended = a.registry.suspend_resource(&resource.id).unwrap();
        let event = a.registry.resource_events(&resource.id).unwrap().pop().unwrap();
        assert_eq!(event.detail["lapsed_certificates"], 2, "{event:?}");
        assert_eq!(suspended.state, crate::registry::ResourceState::Suspended);
        let report = a.lifecycle.sweep_renewals().unwrap();
        assert_eq!(report.renewed, 0, "{report:?}");
        for o in &originals {
            let (cert, life) = a.lifecycle.certificate_record(o).unwrap().unwrap();
            assert_eq!(life.renewal, RenewalState::Lapsed, "{o}");
            assert!(cert.revoked_at.is_none(), "lapsed, not revoked: {o}");
        }

        a.registry.resume_resource(&resource.id).unwrap();
        let event = a.registry.resource_events(&resource.id).unwrap().pop().unwrap();
        assert_eq!(event.detail["rescheduled_certificates"], 2, "{event:?}");
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let report = a.lifecycle.sweep_renewals().unwrap();
        assert_eq!(report.renewed, 2, "{report:?}");
        let certs = a.lifecycle.certificates(Some("corp"), None, 1000).unwrap();
        for o in &originals {
            assert!(certs.iter().any(|(_, l)| l.predecessor.as_ref() == Some(o)), "{o} reissued after resume");
        }
    }

    /// A certificate still scheduled for a suspended resource (issued while it
    /// was suspended) lapses in the sweep, undecided, and resume picks it up.
    #[test]
    fn the_sweep_lapses_what_a_suspension_holds_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.lifecycle.renewal_fraction = 1.0;
        let a = Engine::open(dir.path(), config).unwrap();
        let serial = issue_due(&a, 1).pop().unwrap();
        let resource = a.registry.resources(Some("corp")).unwrap().pop().unwrap();
        a.registry.suspend_resource(&resource.id).unwrap();
        // As if issued while suspended: scheduled again behind the registry's back.
        let db = rusqlite::Connection::open(dir.path().join("tenure.db")).unwrap();
        db.execute("UPDATE certificates SET renewal = 'scheduled', renewal_note = NULL WHERE serial = ?1", [&serial]).unwrap();
        let report = a.lifecycle.sweep_renewals().unwrap();
        assert_eq!((report.renewed, report.lapsed), (0, 1), "{report:?}");
        let (_, life) = a.lifecycle.certificate_record(&serial).unwrap().unwrap();
        assert_eq!(life.renewal, RenewalState::Lapsed);
        assert!(life.note.as_deref().unwrap_or_default().starts_with("suspended with resource"), "{life:?}");
        a.registry.resume_resource(&resource.id).unwrap();
        assert_eq!(a.lifecycle.certificate_record(&serial).unwrap().unwrap().1.renewal, RenewalState::Scheduled);
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
        let a = Engine::open(dir.path(), config).unwrap();
        let originals = issue_due(&a, 6);

        let mut pauses = 0;
        let report = a
            .lifecycle
            .sweep_renewals_paced(|wait| {
                std::thread::sleep(wait);
                pauses += 1;
                pauses < 2
            })
            .unwrap();
        assert_eq!((report.renewed, report.batches), (4, 2), "{report:?}");
        // Four certificates at ten a second take at least 0.4 s, however fast the signing.
        assert!(report.elapsed >= std::time::Duration::from_millis(400), "{report:?}");

        let renewed = |a: &Engine| {
            let certs = a.lifecycle.certificates(Some("corp"), None, 1000).unwrap();
            originals.iter().filter(|o| certs.iter().any(|(_, l)| l.predecessor.as_ref() == Some(o))).count()
        };
        assert_eq!(renewed(&a), 4);
        // What the stopped sweep left is still due (with the successors, whose window opens at once here).
        a.lifecycle.sweep_renewals_paced(|_| true).unwrap();
        assert_eq!(renewed(&a), 6);
    }
}
