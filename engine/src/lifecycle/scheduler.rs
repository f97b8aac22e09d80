//! The background of `tenure serve`: every interval, suspend resources whose
//! lease ran out, sweep due renewals, work off deliveries, refresh CRLs. A plain thread: every step blocks on
//! SQLite, signing or plugins, and none of it belongs on the async runtime.

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{Lifecycle, WebhookSender};

/// The lifecycle's background thread; stopped (between two transactions) when dropped.
pub struct Scheduler {
    stop: mpsc::Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl Scheduler {
    /// Starts the thread.
    pub fn spawn(lifecycle: Lifecycle, webhooks: Arc<dyn WebhookSender>) -> std::io::Result<Scheduler> {
        let (stop, stopped) = mpsc::channel::<()>();
        let interval = lifecycle.core.config.lifecycle.interval;
        let thread = std::thread::Builder::new().name("lifecycle".into()).spawn(move || {
            // Every wait, between passes and between a sweep's batches, is a
            // wait for the stop signal; once seen, every later wait says stop.
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
        Ok(Scheduler { stop, thread: Some(thread) })
    }
}

/// One pass; failures are logged and retried on the next pass. The sweep
/// waits (and may be stopped) through `pause`.
fn run_once(lifecycle: &Lifecycle, webhooks: &dyn WebhookSender, pause: &mut dyn FnMut(Duration) -> bool) {
    // Leases first: a resource suspended now is not renewed by the sweep below.
    match lifecycle.expire_leases(webhooks) {
        Ok(r) if r.suspended > 0 => {
            tracing::info!(suspended = r.suspended, notified = r.notified, notify_failed = r.notify_failed, "leases expired")
        }
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
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
