//! The audit log's record: one decision of a plugin chain, with the plugins'
//! digests, the input they saw and what they answered. Written in the same
//! transaction as the state change the decision allowed (or alone, for a
//! denial that changes nothing else).

/// An audit record: one decision of the policy chain.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditRecord {
    /// Its place in the log (assigned when stored).
    pub seq: i64,
    /// Unix seconds.
    pub at: i64,
    /// `issuance`, `renewal` or `distribution`.
    pub hook: String,
    /// The tenant decided for.
    pub tenant: String,
    /// The ACME account that asked, if one did.
    pub account: Option<String>,
    /// SHA-256 digests of the plugins of the chain, in order.
    pub plugins: Vec<String>,
    /// Beside each of `plugins`: the id of the tenant key whose signature was
    /// verified when that plugin was installed; None for a built-in, an
    /// operator plugin or an unsigned one (and for every plugin of a record
    /// written before signers were recorded).
    pub signers: Vec<Option<String>>,
    /// SHA-256 of the input's JSON text.
    pub input_digest: String,
    /// The input as the plugins saw it.
    pub input: serde_json::Value,
    /// `allow` or `deny`.
    pub outcome: String,
    /// Why it was denied.
    pub reason: Option<String>,
    /// What was granted.
    pub grant: Option<serde_json::Value>,
    /// How long the decision took.
    pub duration_us: i64,
}

/// The signers of a stored record, beside its `plugins` (`count` of them):
/// as stored, or all None for a record from before they were (NULL); cut or
/// padded to `count` so the two lists always pair up.
pub(crate) fn signers_read(stored: Option<Vec<Option<String>>>, count: usize) -> Vec<Option<String>> {
    let mut signers = stored.unwrap_or_default();
    signers.resize(count, None);
    signers
}
