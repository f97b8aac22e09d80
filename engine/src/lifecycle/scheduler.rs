//! The background of `tenure serve`: every interval, suspend resources whose
//! lease ran out, sweep due renewals, work off deliveries, refresh CRLs; and,
//! every second on a thread of its own, provision the resources that asked
//! and deliver what that made (a resource added through the CLI, another
//! process, gets its certificate within seconds, whatever the interval).
//! Plain threads: every step blocks on SQLite, signing or plugins, and none of
//! it belongs on the async runtime.

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{Lifecycle, WebhookSender};

/// The lifecycle's background thread; stopped (between two transactions) when dropped.
pub struct Scheduler {
    stops: Vec<mpsc::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

/// How often the provisioning queue is looked at: a query of an index that is
/// empty when nothing waits.
const PROVISIONING_POLL: Duration = Duration::from_secs(1);

impl Scheduler {
    /// Starts the thread.
    pub fn spawn(lifecycle: Lifecycle, webhooks: Arc<dyn WebhookSender>) -> std::io::Result<Scheduler> {
        let (stop, stopped) = mpsc::channel::<()>();
        let (stop_provisioning, provisioning_stopped) = mpsc::channel::<()>();
        let interval = lifecycle.core.config.lifecycle.interval;
        let (provisioner, provisioning_webhooks) = (lifecycle.clone(), webhooks.clone());
        let provisioning = std::thread::Builder::new().name("provisioning".into()).spawn(move || {
            yield_to_requests();
            match provisioner.release_provisioning_claims() {
                Ok(0) => {}
                Ok(n) => tracing::info!(requests = n, "provisioning requests a stopped server had claimed are due again"),
                Err(e) => tracing::error!(error = %e, "could not release stale provisioning claims"),
            }
            loop {
                provision_once(&provisioner, &*provisioning_webhooks);
                if !matches!(provisioning_stopped.recv_timeout(PROVISIONING_POLL), Err(RecvTimeoutError::Timeout)) {
                    return;
                }
            }
        })?;
        let thread = std::thread::Builder::new().name("lifecycle".into()).spawn(move || {
            yield_to_requests();
            // Every wait, between passes and between a sweep's batches, is a
            // wait for the stop signal; once seen, every later wait says stop.
            match lifecycle.release_renewal_claims() {
                Ok(0) => {}
                Ok(n) => tracing::info!(certificates = n, "renewals a stopped server had claimed are due again"),
                Err(e) => tracing::error!(error = %e, "could not release stale renewal claims"),
            }
            let mut stopping = false;
            let mut pause = |wait: Duration| {
                stopping = stopping || !matches!(stopped.recv_timeout(wait), Err(RecvTimeoutError::Timeout));
                !stopping
            };
            loop {
                run_once(&lifecycle, &*webhooks, &mut pause);
                if !pause(interval) {
                    return;
                }
            }
        })?;
        Ok(Scheduler { stops: vec![stop, stop_provisioning], threads: vec![thread, provisioning] })
    }
}

/// Background work yields the CPU to requests: the calling thread (and the
/// threads it starts, which inherit it: the sweep's and provisioning's
/// workers) runs at nice +10, so a burst of provisioning or a renewal backlog
/// uses the cores ACME leaves idle rather than its share. Measured with
/// examples/bench/provision.sh (BENCHMARKS.md): 10,000 resources provisioned
/// beside ACME load moved its p99 from 29 to 66 ms at the same priority.
fn yield_to_requests() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority take and return plain integers; on
        // Linux PRIO_PROCESS with a thread id sets that thread's nice value.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, BACKGROUND_NICE) } != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "could not lower the background threads' priority");
        }
    }
}

/// The nice value of the background threads (requests run at the process's, normally 0).
#[cfg(target_os = "linux")]
const BACKGROUND_NICE: libc::c_int = 10;

/// Provisions what waits, then delivers; failures are logged and retried.
fn provision_once(lifecycle: &Lifecycle, webhooks: &dyn WebhookSender) {
    match lifecycle.provision_pending() {
        Ok(r) if r.provisioned + r.denied + r.deferred + r.dropped > 0 => {
            tracing::info!(provisioned = r.provisioned, denied = r.denied, deferred = r.deferred, dropped = r.dropped, "provisioning");
            if let Err(e) = lifecycle.deliver_pending(webhooks) {
                tracing::error!(error = %e, "delivery pass failed");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "provisioning pass failed"),
    }
}

/// One pass; failures are logged and retried on the next pass. The sweep
/// waits (and may be stopped) through `pause`.
fn run_once(lifecycle: &Lifecycle, webhooks: &dyn WebhookSender, pause: &mut dyn FnMut(Duration) -> bool) {
    // Intermediates near their end are replaced before the sweep, which then
    // renews from the new one.
    match lifecycle.rotate_expiring_intermediates() {
        Ok(r) if r.rotated.len() + r.blocked + r.failed > 0 => {
            tracing::info!(rotated = r.rotated.len(), raced = r.raced, blocked = r.blocked, failed = r.failed, "intermediate rotation")
        }
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "intermediate rotation pass failed"),
    }
    // Leases first: a resource suspended now is not renewed by the sweep below.
    match lifecycle.expire_leases() {
        Ok(r) if r.suspended > 0 => tracing::info!(suspended = r.suspended, "leases expired"),
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "lease pass failed"),
    }
    match lifecycle.sweep_renewals_paced(pause) {
        Ok(r) if r.renewed + r.lapsed + r.deferred > 0 => tracing::info!(
            renewed = r.renewed,
            lapsed = r.lapsed,
            deferred = r.deferred,
            skipped = r.skipped,
            ms = r.elapsed.as_millis() as u64,
            "renewal sweep"
        ),
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "renewal sweep failed"),
    }
    match lifecycle.deliver_pending(webhooks) {
        Ok(d) if d.delivered + d.retrying + d.failed > 0 => {
            tracing::info!(delivered = d.delivered, retrying = d.retrying, failed = d.failed, "deliveries")
        }
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "delivery pass failed"),
    }
    if let Err(e) = lifecycle.refresh_crls() {
        tracing::error!(error = %e, "CRL refresh failed");
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        for stop in &self.stops {
            let _ = stop.send(());
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
