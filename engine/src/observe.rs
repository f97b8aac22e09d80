//! What the engine counts, through the `metrics` facade: certificates stored,
//! policy decisions and their time, HSM operations. The binary installs the
//! recorder (Prometheus) and renders it; without one every call here is a
//! no-op. Counting happens where the thing counted is final: a certificate
//! after the transaction that stores it committed, a decision once the chain
//! answered, an HSM operation once the token answered.
//!
//! The backlog gauges (renewals due, deliveries pending) are not kept here:
//! they are counted in the store when scraped ([`crate::Engine::backlog`]).

use std::time::Duration;

use crate::model::Trigger;
use crate::store::IssuedRecord;

/// Counter: certificates stored, by `tenant` and `trigger` (`acme-finalize`,
/// `renewal`, `rekey`, `provisioning`).
pub const CERTIFICATES_ISSUED: &str = "tenure_certificates_issued_total";
/// Counter: plugin-chain decisions, by `hook` (`issuance`, `renewal`,
/// `distribution`) and `outcome` (`allow`, `deny`, `error`: the chain could not run).
pub const POLICY_DECISIONS: &str = "tenure_policy_decisions_total";
/// Histogram: seconds one plugin-chain decision took, by `hook`.
pub const POLICY_DECISION_SECONDS: &str = "tenure_policy_decision_seconds";
/// Counter: PKCS#11 operations, by `operation` (`login`, `sign`, `generate`,
/// `copy`, `destroy`, `initialize`) and `outcome` (`ok`, `error`).
pub const HSM_OPERATIONS: &str = "tenure_hsm_operations_total";
/// Counter: a tenant's intermediate replaced by a new one, by `trigger`
/// (`update`: new permits; `rotate`: by hand; `schedule`: near its expiry).
pub const INTERMEDIATES_REPLACED: &str = "tenure_intermediates_replaced_total";
/// Gauge: scheduled certificates whose renewal window has opened.
pub const RENEWALS_DUE: &str = "tenure_renewals_due";
/// Gauge: outbox messages (certificates, notices) not yet delivered.
pub const DELIVERIES_PENDING: &str = "tenure_deliveries_pending";
/// Gauge: resources waiting in the provisioning queue.
pub const PROVISIONING_PENDING: &str = "tenure_provisioning_pending";

/// Upper bounds (seconds) of the decision histogram's buckets: a built-in
/// plugin decides in tens of microseconds, a plugin at its epoch deadline in
/// about a second.
pub const POLICY_DECISION_BUCKETS: &[f64] = &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// Registers the help text of every engine metric with the installed recorder.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(CERTIFICATES_ISSUED, "Certificates stored, by tenant and by what triggered them.");
    describe_counter!(POLICY_DECISIONS, "Plugin-chain decisions, by hook and outcome (allow, deny, error).");
    describe_histogram!(POLICY_DECISION_SECONDS, Unit::Seconds, "Time one plugin-chain decision took, by hook.");
    describe_counter!(HSM_OPERATIONS, "PKCS#11 operations on HSM tokens, by operation and outcome (ok, error).");
    describe_counter!(INTERMEDIATES_REPLACED, "Tenant intermediates replaced, by trigger (update, rotate, schedule).");
    describe_gauge!(RENEWALS_DUE, "Scheduled certificates whose renewal window has opened, counted at scrape time.");
    describe_gauge!(DELIVERIES_PENDING, "Outbox messages not yet delivered, counted at scrape time.");
    describe_gauge!(PROVISIONING_PENDING, "Resources waiting in the provisioning queue, counted at scrape time.");
}

/// Counts certificates whose transaction committed.
pub(crate) fn issued<'a>(stored: impl IntoIterator<Item = &'a IssuedRecord>) {
    for record in stored {
        issued_one(&record.cert.tenant, record.life.trigger);
    }
}

/// Counts one certificate whose transaction committed.
pub(crate) fn issued_one(tenant: &str, trigger: Trigger) {
    metrics::counter!(CERTIFICATES_ISSUED, "tenant" => tenant.to_string(), "trigger" => trigger.as_str()).increment(1);
}

/// Counts one decision of `hook` and its time.
pub(crate) fn decided(hook: &'static str, outcome: &'static str, took: Duration) {
    metrics::counter!(POLICY_DECISIONS, "hook" => hook, "outcome" => outcome).increment(1);
    metrics::histogram!(POLICY_DECISION_SECONDS, "hook" => hook).record(took.as_secs_f64());
}

/// Counts a decision of `hook` that could not run (the policy host or the
/// chain did not load): a denial, as every fault on the decision path is.
pub(crate) fn undecided(hook: &'static str) {
    metrics::counter!(POLICY_DECISIONS, "hook" => hook, "outcome" => "error").increment(1);
}

/// Counts an HSM operation by how it ended, and passes its result on.
pub(crate) fn hsm<T, E>(operation: &'static str, result: std::result::Result<T, E>) -> std::result::Result<T, E> {
    let outcome = if result.is_ok() { "ok" } else { "error" };
    metrics::counter!(HSM_OPERATIONS, "operation" => operation, "outcome" => outcome).increment(1);
    result
}

/// The queues an operator watches, counted in the store at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Scheduled certificates whose renewal window has opened.
    pub renewals_due: i64,
    /// Outbox messages not yet delivered.
    pub deliveries_pending: i64,
    /// Resources waiting in the provisioning queue.
    pub provisioning_pending: i64,
}

impl Backlog {
    /// Sets the backlog gauges to these counts.
    pub fn record(&self) {
        metrics::gauge!(RENEWALS_DUE).set(self.renewals_due as f64);
        metrics::gauge!(DELIVERIES_PENDING).set(self.deliveries_pending as f64);
        metrics::gauge!(PROVISIONING_PENDING).set(self.provisioning_pending as f64);
    }
}

/// A recorder for unit tests: counters by name and labels, in memory.
#[cfg(test)]
pub(crate) mod testing {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use metrics::{Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

    /// Counters as `name{label=value,…}` (labels in the order given) → total.
    #[derive(Default, Clone)]
    pub(crate) struct Counters(Arc<Mutex<BTreeMap<String, u64>>>);

    struct One(Counters, String);

    impl CounterFn for One {
        fn increment(&self, value: u64) {
            *self.0.0.lock().unwrap().entry(self.1.clone()).or_default() += value;
        }
        fn absolute(&self, value: u64) {
            self.0.0.lock().unwrap().insert(self.1.clone(), value);
        }
    }

    impl Counters {
        /// The total of `name{labels}`, 0 if never counted.
        pub(crate) fn get(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
            let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            self.0.lock().unwrap().get(&format!("{name}{{{}}}", labels.join(","))).copied().unwrap_or(0)
        }
    }

    impl Recorder for Counters {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
            Counter::from_arc(Arc::new(One(self.clone(), format!("{}{{{}}}", key.name(), labels.join(",")))))
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }
}
