//! The background of `tenure serve`: every interval, sweep due renewals,
//! work off deliveries, refresh CRLs. A plain thread: every step blocks on
//! SQLite, signing or plugins, and none of it belongs on the async runtime.

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;

use crate::authority::Authority;

use super::WebhookSender;

pub struct Scheduler {
    stop: mpsc::Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl Scheduler {
    pub fn spawn(authority: Arc<Authority>, webhooks: Arc<dyn WebhookSender>) -> std::io::Result<Scheduler> {
        let (stop, stopped) = mpsc::channel::<()>();
        let interval = authority.config().lifecycle.interval;
        let thread = std::thread::Builder::new().name("lifecycle".into()).spawn(move || {
            loop {
                run_once(&authority, &*webhooks);
                match stopped.recv_timeout(interval) {
                    Err(RecvTimeoutError::Timeout) => continue,
                    _ => return,
                }
            }
        })?;
        Ok(Scheduler { stop, thread: Some(thread) })
    }
}

/// One pass; failures are logged and retried on the next pass.
pub fn run_once(authority: &Authority, webhooks: &dyn WebhookSender) {
    match authority.sweep_renewals() {
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
    match authority.deliver_pending(webhooks) {
        Ok(d) if d.delivered + d.retrying + d.failed > 0 => {
            tracing::info!(delivered = d.delivered, retrying = d.retrying, failed = d.failed, "deliveries")
        }
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "delivery pass failed"),
    }
    if let Err(e) = authority.refresh_crls() {
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
