//! Storage (the SA role), behind narrow traits: one per part of the engine that
//! stores something. [`Storage`] is all of them; `sqlite` is the embedded
//! implementation (the default), and a PostgreSQL one is a second
//! implementation of the same traits.
//!
//! Every method is one whole state change or one read; a method that writes
//! several rows does so in one transaction, so a crash leaves either all of a
//! change or none of it. Nothing outside this module sees SQL. Business rules
//! stay with the engine: a method that needs one inside its transaction (the
//! registry's conflict rule) takes it as a closure.

pub(crate) mod pg;
mod sqlite;

use std::path::Path;
use std::sync::Arc;

pub use crate::audit::AuditRecord;
use crate::error::Result;
use crate::hsm::{HsmKey, HsmSlot, SlotState};
use crate::identifier::Identifier;
use crate::model::*;
use crate::registry::{AttributeChanges, Event, EventKind, NewResource, Resource, ResourceState};
pub use pg::PgStore;
pub use sqlite::SqliteStore;

/// Every store trait: what the engine holds.
pub trait Storage:
    SettingsStore
    + TenantStore
    + AccountStore
    + OrderStore
    + CertificateStore
    + DeliveryStore
    + ProvisioningStore
    + RegistryStore
    + PluginStore
    + AuditStore
    + CustodyStore
    + ReplayStore
    + TenantRemovalStore
    + TokenStore
    + IntermediateStore
    + TenantKeyStore
{
}

impl Storage for SqliteStore {}

/// Opens the embedded store of a data directory (`DIR/tenure.db`), creating it
/// and bringing its schema up to date.
pub fn open_sqlite(path: &Path) -> Result<Arc<dyn Storage>> {
    Ok(Arc::new(SqliteStore::open(path)?))
}

/// Copies the SQLite database at `from` into the empty PostgreSQL database at
/// `to` (made up to date first), all in one transaction; (table, rows) copied.
pub fn copy_sqlite_to_postgres(from: &Path, to: &str) -> Result<Vec<(String, i64)>> {
    copy_sqlite_to_postgres_observed(from, to, &mut |_| {})
}

/// [`copy_sqlite_to_postgres`], telling `progress` where the copy stands.
pub fn copy_sqlite_to_postgres_observed(from: &Path, to: &str, progress: &mut dyn FnMut(CopyProgress<'_>)) -> Result<Vec<(String, i64)>> {
    pg::import::copy_sqlite_into(from, &PgStore::open(to)?, progress)
}

pub use pg::import::CopyProgress;

/// Opens the shared store at a PostgreSQL URL, bringing its schema up to date.
pub fn open_postgres(url: &str) -> Result<Arc<dyn Storage>> {
    Ok(Arc::new(PgStore::open(url)?))
}

/// The rule a new tenant must pass against every existing one, run by the
/// store inside the transaction that inserts it (see `Registry::create_tenant`).
pub type TenantRule<'a> = &'a dyn Fn(&[Tenant]) -> Result<()>;

/// One tenant of [`TenantStore::insert_tenants`]: what `insert_tenant` takes.
pub struct NewTenantRow<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its permitted subtrees, normalized.
    pub permits: &'a [String],
    /// Its intermediate's certificate.
    pub intermediate_der: &'a [u8],
    /// Its intermediate's key blob.
    pub intermediate_key: &'a [u8],
    /// Its webhook secret, sealed.
    pub webhook_secret_sealed: &'a [u8],
    /// Its first EAB key: id and sealed HMAC key.
    pub eab: Option<(&'a str, &'a [u8])>,
    /// The rule it must pass beside every other tenant.
    pub rule: TenantRule<'a>,
}

/// How `TenantStore::reseal_issuer_keys` rewrites a stored key: the new blob,
/// or None to leave it.
pub type Reseal<'a> = &'a dyn Fn(&[u8]) -> Result<Option<Vec<u8>>>;

/// A live resource overlapping a name, zone or address another resource is
/// about to hold: what the registry's conflict rule judges.
#[derive(Debug, Clone)]
pub struct Overlap {
    /// The name, zone or address asked for.
    pub item: String,
    /// The live resource already holding it, or something inside or above it.
    pub holder: Resource,
}

/// What a plugin install was decided on, checked again inside its
/// transaction, so a removal or a change of the signature requirement that
/// commits meanwhile is not overtaken by it.
#[derive(Debug, Default, Clone, Copy)]
pub struct InstallGuard<'a> {
    /// The tenant whose plugin it is: it must exist and not be removed.
    pub tenant: Option<&'a str>,
    /// A setting the decision read (key, value as read): it must be unchanged.
    pub setting: Option<(&'a str, Option<&'a [u8]>)>,
}

/// The registry's conflict rule, run inside the store's transaction.
pub type ConflictRule<'a> = &'a dyn Fn(&[Overlap]) -> Result<()>;

/// What an issued certificate settles when it is recorded. (One exists per
/// certificate being recorded; boxing the key would buy nothing.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Claim {
    /// An ACME order, which must still be ready and becomes valid with it.
    /// (A `replaces` predecessor is marked replaced in the same transaction.)
    Order {
        /// The order finalized.
        order_id: String,
    },
    /// A scheduled certificate the sweep renews, which must still be
    /// scheduled and unrevoked, and becomes renewed.
    Renewal {
        /// The certificate succeeded.
        predecessor: String,
    },
    /// A key generated in a tenant's HSM: it becomes the resource's active key,
    /// and the key it replaces (and that key's certificate) start retiring.
    HsmKey {
        /// The new key, with its certificate.
        key: HsmKey,
        /// When the replaced key is destroyed.
        retire_after: UnixTime,
        /// The provisioning request it settles, when provisioning made it.
        provisioning: Option<ProvisioningRequest>,
    },
    /// A resource's provisioning request, which must still be the latest
    /// (a change since asks again) and leaves the queue with it. The
    /// predecessor, if any (the resource's earlier provisioned certificate), is
    /// marked replaced.
    Provisioning(ProvisioningRequest),
}

/// A resource waiting in the provisioning queue: put there in the transaction
/// that added it or changed its attributes, taken out in the one that records
/// its certificate or its denial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisioningRequest {
    /// The resource.
    pub resource_id: String,
    /// Bumped by every change: settling a request the resource has moved past fails.
    pub request: i64,
    /// What asked: `created`, `attributes-changed`, `resumed`.
    pub reason: String,
    /// Failed tries of ours so far.
    pub attempts: i64,
    /// Why the last try failed.
    pub last_error: Option<String>,
}

/// What provisioning decided for one request, recorded with its batch.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum ProvisioningOutcome {
    /// A certificate, settling [`Claim::Provisioning`].
    Issued(IssuedRecord),
    /// The policy said no: the audit record, and the request settled.
    Denied {
        /// The request it settles.
        request: ProvisioningRequest,
        /// The decision's record.
        audit: AuditRecord,
    },
}

/// What a batch of provisioning outcomes did once stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProvisioningTally {
    /// Certificates stored.
    pub provisioned: usize,
    /// Denials stored.
    pub denied: usize,
    /// Outcomes dropped: the resource changed meanwhile (its newer request is asked next).
    pub superseded: usize,
}

/// Whether a resource, as it is after a change, goes (back) into the
/// provisioning queue; run by the store inside the change's transaction.
pub type ProvisionRule<'a> = &'a dyn Fn(&Resource) -> bool;

/// A signed certificate and everything recorded with it in one transaction.
#[derive(Debug, Clone)]
pub struct IssuedRecord {
    /// The certificate.
    pub cert: Certificate,
    /// Its lifecycle: bindings, renewal plan, predecessor, policy.
    pub life: CertificateLifecycle,
    /// The decision that allowed it.
    pub audit: AuditRecord,
    /// (resource id, kind, target) for every delivery target of its resources.
    pub deliveries: Vec<(String, DeliveryKind, String)>,
    /// The event they carry: `certificate.provisioned` or `certificate.renewed`.
    pub event: &'static str,
    /// The key tenure generated, encrypted to its recipient, delivered beside
    /// the chain (never stored otherwise, erased when the deliveries end).
    pub key_age: Option<String>,
    /// What it settles.
    pub claim: Claim,
}

/// What the sweep decided for one due certificate. (At most a batch of these
/// exist at once; boxing the larger variant would buy nothing.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum RenewalOutcome {
    /// A successor, claiming its predecessor ([`Claim::Renewal`]).
    Renewed(IssuedRecord),
    /// The policy refused (or the certificate cannot be renewed): it lapses.
    Lapsed {
        /// The certificate that lapses.
        serial: String,
        /// Why.
        note: String,
        /// The decision, when there was one.
        audit: Option<AuditRecord>,
    },
}

/// What a batch of outcomes did once stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenewalTally {
    /// Successors stored.
    pub renewed: usize,
    /// Certificates that lapsed.
    pub lapsed: usize,
    /// Outcomes dropped because the certificate left the queue meanwhile (a
    /// release, a client's replacement, another sweep).
    pub skipped: usize,
}

/// An issuer's latest CRL.
#[derive(Debug, Clone)]
pub struct StoredCrl {
    /// The issuer.
    pub issuer_id: i64,
    /// The CRL number (RFC 5280 §5.2.3).
    pub number: i64,
    /// thisUpdate.
    pub this_update: UnixTime,
    /// nextUpdate.
    pub next_update: UnixTime,
    /// The issuer's revocation count when the CRL was made: a higher count means it is stale.
    pub revocation_mark: i64,
    /// The signed CRL.
    pub der: Vec<u8>,
}

/// An entry of a CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedEntry {
    /// The certificate's serial, hex.
    pub serial: String,
    /// When it was revoked.
    pub revoked_at: UnixTime,
    /// The RFC 5280 reason code.
    pub reason: u8,
}

/// One entry of a slot's custody log: (kind, at, key id, detail).
pub type CustodyEvent = (String, i64, Option<String>, serde_json::Value);

/// Small named values: the public URL, the CA-HSM configuration, the webhook secret marker.
pub trait SettingsStore: Send + Sync {
    fn setting(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// Sets `key` only if it is not set yet; returns the value that holds afterwards.
    fn set_setting(&self, key: &str, value: &[u8]) -> Result<()>;

    fn setting_or_insert(&self, key: &str, value: &[u8]) -> Result<Vec<u8>>;

    /// Readiness: commits a tiny write (the `readiness-probe` setting) within
    /// about `bound`. A lock held elsewhere fails it then, rather than letting
    /// it wait as long as a request would.
    fn probe_write(&self, bound: std::time::Duration) -> Result<()>;
}

/// Tenants' admin-API tokens (`tenants.token_hash`): only the SHA-256 of each
/// token's secret is stored, and only a tenant that is not removed has one
/// that counts.
pub trait TokenStore: Send + Sync {
    /// The token hash of a live (not removed) tenant; None if it has none, or
    /// there is no such live tenant.
    fn tenant_token_hash(&self, tenant: &str) -> Result<Option<Vec<u8>>>;

    /// Stores a live tenant's token hash: with `replace`, in place of the
    /// current one; without, only if it has none. Returns whether it was
    /// stored (false: it has one and `replace` was not given). NotFound if
    /// there is no such live tenant.
    fn store_tenant_token_hash(&self, tenant: &str, hash: &[u8], replace: bool) -> Result<bool>;
}

/// The CA hierarchy (root and per-tenant intermediates), tenants and their EAB keys.
pub trait TenantStore: Send + Sync {
    fn root(&self) -> Result<Option<IssuerRecord>>;

    /// Stores the root unless another process stored one first; returns the one that holds.
    fn insert_root(&self, cert_der: &[u8], key_pkcs8: &[u8]) -> Result<IssuerRecord>;

    fn issuer(&self, id: i64) -> Result<Option<IssuerRecord>>;

    fn issuers(&self) -> Result<Vec<IssuerRecord>>;

    /// Creates a tenant with its intermediate, its sealed webhook secret and
    /// (optionally) its first EAB key, in one transaction, if `rule` accepts
    /// it beside every existing tenant.
    #[allow(clippy::too_many_arguments)]
    fn insert_tenant(
        &self,
        name: &str,
        permits: &[String],
        intermediate_der: &[u8],
        intermediate_key: &[u8],
        webhook_secret_sealed: &[u8],
        eab: Option<(&str, &[u8])>,
        rule: TenantRule<'_>,
    ) -> Result<Tenant>;

    /// Several tenants, each as [`TenantStore::insert_tenant`] makes one, its
    /// rule run beside the existing tenants and the batch's earlier ones. The
    /// SQLite store makes them in one transaction (all or none) and reads the
    /// existing tenants once for the batch, where one by one reads them once
    /// per tenant (`tenure bench seed`); this default inserts them one by one.
    fn insert_tenants(&self, batch: &[NewTenantRow<'_>]) -> Result<Vec<Tenant>> {
        batch
            .iter()
            .map(|t| self.insert_tenant(t.name, t.permits, t.intermediate_der, t.intermediate_key, t.webhook_secret_sealed, t.eab, t.rule))
            .collect()
    }

    fn tenant(&self, name: &str) -> Result<Option<Tenant>>;

    fn tenants(&self) -> Result<Vec<Tenant>>;

    /// The tenant and HMAC key behind an EAB key id.
    fn eab_key(&self, kid: &str) -> Result<Option<(String, Vec<u8>)>>;

    /// The tenant's sealed webhook secret; None if it has none (or there is no such tenant).
    fn tenant_webhook_secret(&self, tenant: &str) -> Result<Option<Vec<u8>>>;

    /// Stores the tenant's sealed webhook secret: with `replace`, in place of
    /// the current one; without, only if it has none. Returns the one that
    /// holds afterwards. NotFound if there is no such tenant.
    fn store_tenant_webhook_secret(&self, tenant: &str, sealed: &[u8], replace: bool) -> Result<Vec<u8>>;

    /// Rewrites issuer key blobs `f` wants changed (sealing plain keys of an
    /// older data directory), all in one transaction. Returns how many changed.
    fn reseal_issuer_keys(&self, f: Reseal<'_>) -> Result<usize>;

    /// Rewrites EAB HMAC keys `f` wants changed (sealing the plain keys of an
    /// older data directory), all in one transaction. Returns how many changed.
    fn reseal_eab_keys(&self, f: Reseal<'_>) -> Result<usize>;
}

/// A tenant's intermediate replaced (`tenant update`, `tenant rotate`, the
/// automatic rotation): what [`IntermediateStore::swap_intermediate`] writes.
pub struct IntermediateSwap<'a> {
    /// The tenant.
    pub tenant: &'a str,
    /// The issuer the caller read as the tenant's current one: the swap
    /// happens only if it still is (two servers cannot both swap).
    pub expected_issuer: i64,
    /// The tenant's permits from now on (normalized).
    pub permits: &'a [String],
    /// The new intermediate.
    pub cert_der: &'a [u8],
    /// Its key, as stored (sealed, or a reference into an HSM).
    pub key: &'a [u8],
    /// Its notAfter.
    pub not_after: UnixTime,
    /// Run inside the transaction over every tenant: the permits rule, as at create.
    pub tenants_rule: TenantRule<'a>,
    /// Run inside the transaction over the tenant's live (not released)
    /// resources, as (id, names and zones and addresses): refuses a change
    /// that would leave one outside the permits.
    pub held_rule: HeldRule<'a>,
    /// Whether an unexpired, unrevoked certificate of the tenant naming these
    /// identifiers is revoked (privilegeWithdrawn) with the swap.
    pub withdrawn: &'a dyn Fn(&[Identifier]) -> bool,
    /// The note the revoked certificates and their notices carry.
    pub note: &'a str,
}

/// The rule a tenant's live resources must pass, as (resource id, its
/// names, zones and addresses), run inside the transaction that changes the
/// tenant's permits.
pub type HeldRule<'a> = &'a dyn Fn(&[(String, Vec<Identifier>)]) -> Result<()>;

/// What a swap did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntermediateSwapped {
    /// The new issuer's id.
    pub issuer_id: i64,
    /// Serials of the certificates revoked with it.
    pub revoked: Vec<String>,
    /// Notices queued about them.
    pub notices: usize,
}

/// A live tenant's current intermediate.
#[derive(Debug, Clone)]
pub struct TenantIntermediate {
    /// The tenant.
    pub tenant: String,
    /// The issuer.
    pub issuer_id: i64,
    /// Its certificate.
    pub cert_der: Vec<u8>,
    /// Its notAfter as stored; None on rows from before it was (read the certificate).
    pub not_after: Option<UnixTime>,
}

/// Tenants' intermediates as they change: swapped in one compare-and-swap
/// transaction with what the change implies.
pub trait IntermediateStore: Send + Sync {
    /// Inserts the new intermediate and makes it the tenant's, with its
    /// permits; revokes what `withdrawn` selects (reason 9), stopping its
    /// renewal and queueing the notices a revocation queues; all in one
    /// transaction, and only if the tenant is live and its issuer is still
    /// `expected_issuer` (otherwise a Conflict, and nothing changes).
    fn swap_intermediate(&self, swap: &IntermediateSwap<'_>) -> Result<IntermediateSwapped>;

    /// The current intermediate of every live (not removed) tenant that ends
    /// by `before`, or whose end is not stored (rows from before it was), by
    /// tenant name.
    fn current_intermediates_ending(&self, before: UnixTime) -> Result<Vec<TenantIntermediate>>;

    /// How many intermediates the tenant has had (its first is 1).
    fn intermediate_count(&self, tenant: &str) -> Result<i64>;

    /// Records an issuer's expiry read from its certificate (rows from
    /// before the column, and those `insert_tenant` made), so each is parsed once.
    fn set_issuer_not_after(&self, issuer_id: i64, not_after: UnixTime) -> Result<()>;
}

/// ACME accounts (RFC 8555 §7.3).
pub trait AccountStore: Send + Sync {
    fn account(&self, id: &str) -> Result<Option<Account>>;

    fn account_by_thumbprint(&self, thumbprint: &str) -> Result<Option<Account>>;

    /// Inserts the account unless its key is already registered, in which case
    /// the existing account is returned with `false`.
    fn insert_account(&self, a: &Account) -> Result<(Account, bool)>;

    fn update_account_contact(&self, id: &str, contact: &[String]) -> Result<()>;

    /// Deactivates the account and, as RFC 8555 §7.3.6 asks, its pending authorizations.
    fn deactivate_account(&self, id: &str) -> Result<()>;

    /// Replaces the account key; fails with Conflict (and the holder's id) if the new key is taken.
    fn change_account_key(&self, id: &str, old_thumbprint: &str, new_thumbprint: &str, new_jwk: &str) -> Result<()>;
}

/// ACME orders, authorizations and challenges (RFC 8555 §7.4-7.5).
pub trait OrderStore: Send + Sync {
    /// Stores a new order with all its authorizations and challenges at once.
    /// The decision that allowed it is audited in the same transaction.
    /// Authorizations the order lists that are not among `authzs` are
    /// existing ones of the same account that it reuses: they are linked, not
    /// copied, so the order reads them (and their status) where they live.
    fn insert_order(&self, order: &Order, authzs: &[Authorization], audit: Option<&AuditRecord>) -> Result<()>;

    fn order(&self, id: &str) -> Result<Option<Order>>;

    fn order_ids_of_account(&self, account_id: &str) -> Result<Vec<String>>;

    fn authorization(&self, id: &str) -> Result<Option<Authorization>>;

    fn authorizations_of_order(&self, order_id: &str) -> Result<Vec<Authorization>>;

    /// The challenge and its authorization.
    fn challenge(&self, id: &str) -> Result<Option<(Challenge, Authorization)>>;

    /// Moves a pending challenge of a pending authorization to `processing`.
    /// Returns false when another request got there first or the state forbids it.
    fn begin_challenge(&self, challenge_id: &str) -> Result<bool>;

    /// Records a validation outcome on the challenge, its authorization and its order, atomically.
    fn finish_challenge(&self, challenge_id: &str, outcome: std::result::Result<(), RecordedError>) -> Result<()>;

    /// Challenges left `processing` (e.g. by a restart), to validate again.
    fn processing_challenges(&self) -> Result<Vec<(Challenge, Authorization)>>;

    fn deactivate_authorization(&self, authz_id: &str) -> Result<()>;

    /// How many unexpired pending authorizations the account holds, and when
    /// the first of them expires.
    fn pending_authorizations(&self, account_id: &str, at: UnixTime) -> Result<(usize, Option<UnixTime>)>;

    /// Whether the account holds valid, unexpired authorizations for every identifier.
    fn account_holds_authorizations(&self, account_id: &str, identifiers: &[Identifier], at: UnixTime) -> Result<bool>;

    /// The account's valid authorization for `identifier` (an authorization
    /// target) with the same `wildcard` flag, that a challenge validated and
    /// that is still unexpired at `valid_at`; of several, the one expiring last.
    fn reusable_authorization(
        &self,
        account_id: &str,
        identifier: &Identifier,
        wildcard: bool,
        valid_at: UnixTime,
    ) -> Result<Option<Authorization>>;
}

/// Certificates, their lifecycle (bindings, renewal queue) and CRLs.
/// Every certificate enters through `record_issuance` or `record_renewals`,
/// which only the issuance path calls.
pub trait CertificateStore: Send + Sync {
    fn certificate(&self, serial: &str) -> Result<Option<Certificate>>;

    /// Revokes unless already revoked; returns false if it was.
    /// A revoked certificate is not renewed either: both in one transaction.
    fn revoke_certificate(&self, serial: &str, reason: u8) -> Result<bool>;

    fn certificate_record(&self, serial: &str) -> Result<Option<(Certificate, CertificateLifecycle)>>;

    /// Certificates, newest first, optionally of one tenant and/or bound to one resource.
    fn certificate_records(
        &self,
        tenant: Option<&str>,
        resource: Option<&str>,
        limit: i64,
    ) -> Result<Vec<(Certificate, CertificateLifecycle)>>;

    /// Up to `limit` certificates whose renewal window opened before `before`, oldest due first.
    fn due_certificates(&self, before: UnixTime, limit: i64) -> Result<Vec<(Certificate, CertificateLifecycle)>>;

    /// How many scheduled certificates' renewal windows opened before `before`
    /// (claimed by a sweep or not): the renewal backlog, counted in the index
    /// the sweep reads.
    fn renewals_due(&self, before: UnixTime) -> Result<i64>;

    /// The scheduled certificates bound to a resource, due or not.
    fn scheduled_certificates_of_resource(&self, resource_id: &str) -> Result<Vec<(Certificate, CertificateLifecycle)>>;

    /// Records one issued certificate with everything that goes with it (its
    /// bindings, its audit record, its deliveries, the claim it settles) in one
    /// transaction. If the claim no longer holds (the order is no longer ready,
    /// the predecessor no longer scheduled) nothing is stored and the error says
    /// so: the certificate must not be handed out.
    fn record_issuance(&self, issued: &IssuedRecord) -> Result<()>;

    /// Stores a batch of sweep outcomes in one transaction. Each applies only if
    /// its claim still holds (the certificate is still scheduled and unrevoked),
    /// so a release that came in meanwhile wins, and a sweep repeated after a
    /// crash issues nothing twice.
    fn record_renewals(&self, outcomes: &[RenewalOutcome]) -> Result<RenewalTally>;

    /// Makes every certificate a sweeping server claimed due again: a server
    /// starting takes over the claims of one that died (its lease would hold
    /// them back until it ran out). Returns how many. SQLite's sweep claims
    /// nothing (one server works its queue), so there it is always 0.
    fn release_renewal_claims(&self) -> Result<usize>;

    /// Moves a scheduled certificate's renewal to `at` after a failure of ours.
    fn defer_renewal(&self, serial: &str, at: UnixTime, note: &str) -> Result<()>;

    /// Revoked certificates of an issuer that have not expired yet (an expired
    /// certificate may leave the CRL, RFC 5280 §3.3).
    fn revoked_certificates(&self, issuer_id: i64, at: UnixTime) -> Result<Vec<RevokedEntry>>;

    /// How many certificates of the issuer were ever revoked: grows with every revocation.
    fn revocation_mark(&self, issuer_id: i64) -> Result<i64>;

    fn crl(&self, issuer_id: i64) -> Result<Option<StoredCrl>>;

    /// The issuers whose stored CRL may need making again: none stored, made
    /// at or before `made_by`, running out at or before `at`, or counting
    /// another number of revocations than the issuer's certificates have now;
    /// and the root always (its mark counts revoked intermediates too). One
    /// query for the scheduler's pass, where reading each issuer's CRL and
    /// mark costs ~1.3 s of CPU every pass with 100,000 tenants (issue 17).
    fn issuers_with_crl_due(&self, made_by: UnixTime, at: UnixTime) -> Result<Vec<i64>>;

    /// Stores a CRL unless one with the same or a higher number is there (two
    /// processes regenerating at once); returns whether it was stored.
    fn put_crl(&self, crl: &StoredCrl) -> Result<bool>;
}

/// The delivery outbox of issued certificates.
pub trait DeliveryStore: Send + Sync {
    /// Claims up to `limit` due deliveries for `lease` seconds: another worker
    /// (the CLI, a second process) skips them until the lease runs out.
    fn claim_deliveries(&self, at: UnixTime, limit: i64, lease: i64) -> Result<Vec<Delivery>>;

    /// Records one attempt: delivered, retry at `retry_at`, or (None) given up.
    fn finish_delivery(&self, id: i64, outcome: std::result::Result<(), String>, retry_at: Option<UnixTime>) -> Result<()>;

    fn deliveries_of(&self, serial: &str) -> Result<Vec<Delivery>>;

    /// How many outbox messages wait to be delivered (due or backing off).
    fn deliveries_pending(&self) -> Result<i64>;

    /// The outbox messages of a resource (certificates and notices), newest last.
    fn deliveries_of_resource(&self, resource_id: &str, limit: i64) -> Result<Vec<Delivery>>;

    /// Stores a denial's audit record and a notice (`event`, `payload`) to the
    /// resource's webhook, if it has one, in one transaction.
    fn record_denial_notice(&self, audit: &AuditRecord, resource_id: &str, event: &str, payload: &serde_json::Value) -> Result<()>;
}

/// The provisioning queue (see [`ProvisioningRequest`]).
pub trait ProvisioningStore: Send + Sync {
    /// Claims up to `limit` due requests for `lease` seconds (another worker
    /// skips them meanwhile), oldest first.
    fn claim_provisioning(&self, at: UnixTime, limit: i64, lease: i64) -> Result<Vec<ProvisioningRequest>>;

    /// Takes a request out of the queue with nothing issued (a denial, with
    /// its audit record; a resource no longer active, without). False when
    /// the resource changed meanwhile (the newer request stays).
    fn settle_provisioning(&self, request: &ProvisioningRequest, audit: Option<&AuditRecord>) -> Result<bool>;

    /// Records a batch of outcomes in one transaction, each settling its own
    /// request; one whose request was superseded meanwhile writes nothing.
    fn record_provisionings(&self, outcomes: &[ProvisioningOutcome]) -> Result<ProvisioningTally>;

    /// Makes every claimed request due now: a server starting takes over the
    /// claims of one that died with them (its lease would otherwise hold them
    /// back until it ran out). Returns how many.
    fn release_provisioning_claims(&self) -> Result<usize>;

    /// Puts a request back for a try at `at` after a failure of ours.
    fn retry_provisioning(&self, request: &ProvisioningRequest, at: UnixTime, error: &str) -> Result<()>;

    /// The resource's request still in the queue, if any.
    fn provisioning_request(&self, resource_id: &str) -> Result<Option<ProvisioningRequest>>;

    /// How many requests wait.
    fn provisioning_backlog(&self) -> Result<i64>;

    /// The resource's latest certificate that tenure provisioned and still
    /// renews or could (not revoked; scheduled or lapsed), and its lifecycle.
    fn provisioned_certificate_of(&self, resource_id: &str) -> Result<Option<(Certificate, CertificateLifecycle)>>;
}

/// The resource registry: what each tenant holds, and its events.
pub trait RegistryStore: Send + Sync {
    /// Adds a resource and its `created` event, after `rule` has judged the
    /// live resources overlapping what it would hold, in the same transaction
    /// (so two racing adds cannot both pass).
    /// Queues it for provisioning if `provision` says so, in the same transaction.
    fn insert_resource(&self, id: &str, r: &NewResource, rule: ConflictRule<'_>, provision: ProvisionRule<'_>) -> Result<Resource>;

    fn resource(&self, id: &str) -> Result<Option<Resource>>;

    fn resources(&self, tenant: Option<&str>) -> Result<Vec<Resource>>;

    /// Live (not released) resources of `tenant` holding a DNS name, exactly or through a zone.
    fn resources_holding_name(&self, tenant: Option<&str>, name: &str) -> Result<Vec<Resource>>;

    fn resources_holding_address(&self, tenant: Option<&str>, address: &str) -> Result<Vec<Resource>>;

    /// The resources holding what an identifier's authorization is for (a
    /// wildcard's base name), by name or zone for DNS, by address for IP.
    fn resources_holding(&self, tenant: Option<&str>, id: &crate::identifier::Identifier) -> Result<Vec<Resource>>;

    /// Live resources holding a name, or a zone, strictly under `zone` (what a
    /// wildcard `*.zone` would also cover).
    fn resources_under(&self, zone: &str) -> Result<Vec<Resource>>;

    /// Changes a resource's state (suspend, resume, release) and logs the
    /// event, in one transaction with what the state change means for its
    /// certificates and lease: suspending lapses its scheduled certificates
    /// (not revoked); resuming schedules again those lapsed by a suspension
    /// (when no other resource they are bound to is still suspended) and
    /// restarts its lease; releasing revokes them.
    /// A resumed resource that `provision` wants and that has no live
    /// certificate is queued for provisioning. Suspension sends the
    /// `resource.suspended` notice, a release `certificate.revoked` ones.
    fn set_resource_state(&self, id: &str, state: ResourceState, kind: EventKind, provision: ProvisionRule<'_>) -> Result<Resource>;

    /// Applies attribute changes (validated by the caller) and logs an
    /// `attributes-changed` event naming the keys set and removed (never
    /// their values); a lease whose length changes restarts from now.
    /// Refuses a released resource.
    /// The resource as changed goes to the provisioning queue if `provision` says so.
    fn set_resource_attributes(&self, id: &str, changes: &AttributeChanges, provision: ProvisionRule<'_>) -> Result<Resource>;

    /// Restarts an active resource's lease from now and logs `confirmed`.
    /// Refuses a resource without a lease or not active.
    fn confirm_resource(&self, id: &str) -> Result<Resource>;

    /// Up to `limit` active resources whose lease ran out by `at`, the oldest first.
    fn expired_leases(&self, at: UnixTime, limit: i64) -> Result<Vec<String>>;

    /// Suspends the resource if it is still active with its lease run out by
    /// `at` (a confirmation may have come meanwhile), as `set_resource_state`
    /// suspends, with the reason in the event; None if it no longer is.
    fn suspend_expired_lease(&self, id: &str, at: UnixTime) -> Result<Option<Resource>>;

    /// Moves a resource to another tenant and logs the event, after `rule` has
    /// judged what overlaps it in the new tenant's hands; revokes its
    /// certificates in the same transaction.
    /// A resource that asks for a certificate (`provision`) is queued for its new tenant's.
    fn transfer_resource(&self, id: &str, to: &str, rule: ConflictRule<'_>, provision: ProvisionRule<'_>) -> Result<Resource>;

    fn resource_events(&self, id: &str) -> Result<Vec<Event>>;
}

/// Installed policy plugins, by scope, and the generation counter every server watches.
pub trait PluginStore: Send + Sync {
    /// Installs (or replaces) the plugin of a scope and bumps the plugin generation.
    fn install_plugin(&self, scope: &str, digest: &str, wasm: &[u8]) -> Result<()>;

    fn remove_plugin(&self, scope: &str) -> Result<bool>;

    /// (scope, digest, installed_at) of every installed plugin.
    fn plugins(&self) -> Result<Vec<(String, String, i64)>>;

    fn plugin_wasm(&self, scope: &str) -> Result<Option<(String, Vec<u8>)>>;

    /// A counter bumped by every plugin change, so servers notice installs made by the CLI.
    fn plugin_generation(&self) -> Result<i64>;
}

/// A tenant's plugin signing key as stored: (key id, SubjectPublicKeyInfo DER, created at).
pub type StoredTenantKey = (String, Vec<u8>, UnixTime);

/// An installed plugin with its signer: (scope, digest, installed at, id of the key that signed it).
pub type SignedPluginRow = (String, String, UnixTime, Option<String>);

/// A scope's installed plugin: (digest, component, id of the key that signed it).
pub type SignedPlugin = (String, Vec<u8>, Option<String>);

/// Keys tenants register to sign their plugins (`tenant_keys`), and plugins
/// installed with the key that signed them (`plugins.signed_by`).
pub trait TenantKeyStore: Send + Sync {
    /// Registers a tenant's key; returns when. NotFound without the tenant;
    /// Conflict if the key is registered already or the tenant holds `max_keys`.
    fn insert_tenant_key(&self, tenant: &str, key_id: &str, spki_der: &[u8], max_keys: usize) -> Result<UnixTime>;

    /// The tenant's keys, oldest first.
    fn tenant_keys(&self, tenant: &str) -> Result<Vec<StoredTenantKey>>;

    /// Deletes a tenant's key (plugins it signed stay installed); false if it had none of that id.
    fn delete_tenant_key(&self, tenant: &str, key_id: &str) -> Result<bool>;

    /// Installs (or replaces) the plugin of a scope with its signer (tenant,
    /// key id), or none, and bumps the plugin generation, in one transaction;
    /// Conflict if the signing key is no longer registered, or what `guard`
    /// holds no longer holds, when it commits.
    fn install_signed_plugin(
        &self,
        scope: &str,
        digest: &str,
        wasm: &[u8],
        signer: Option<(&str, &str)>,
        guard: &InstallGuard<'_>,
    ) -> Result<()>;

    /// Every installed plugin with its signer, by scope.
    fn signed_plugins(&self) -> Result<Vec<SignedPluginRow>>;

    /// A scope's plugin: (digest, component, signer), read together so the signer matches the bytes.
    fn signed_plugin_wasm(&self, scope: &str) -> Result<Option<SignedPlugin>>;
}

/// The append-only audit log of decisions.
pub trait AuditStore: Send + Sync {
    fn audit(&self, tenant: Option<&str>, limit: i64) -> Result<Vec<AuditRecord>>;

    /// Appends an audit record on its own (a denial that changes no other state).
    fn record_audit(&self, rec: &AuditRecord) -> Result<()>;
}

/// HSM custody: the token pool, allocations, keys and their log.
pub trait CustodyStore: Send + Sync {
    fn insert_hsm_slot(&self, id: &str, module: &str, label: &str, so_pin_sealed: &[u8]) -> Result<HsmSlot>;

    fn hsm_slot(&self, id: &str) -> Result<Option<HsmSlot>>;

    /// The slot allocated as registry resource `resource_id`.
    fn hsm_slot_by_resource(&self, resource_id: &str) -> Result<Option<HsmSlot>>;

    fn hsm_slots(&self) -> Result<Vec<HsmSlot>>;

    /// Claims a free slot for `tenant` (state `allocating`), or None if the pool is empty.
    fn claim_free_hsm_slot(&self, tenant: &str) -> Result<Option<HsmSlot>>;

    /// A claimed slot goes back to the pool untouched (a failed allocation).
    fn abort_hsm_allocation(&self, id: &str) -> Result<()>;

    /// The allocation is done: the slot is the tenant's, known to the registry as `resource_id`.
    fn complete_hsm_allocation(&self, id: &str, resource_id: &str, user_pin_sealed: Option<&[u8]>) -> Result<HsmSlot>;

    /// Changes a slot's state; `clear_user_pin` drops tenure's copy of the PIN.
    fn set_hsm_slot_state(
        &self,
        id: &str,
        state: SlotState,
        release_after: Option<i64>,
        clear_user_pin: bool,
        why: &str,
    ) -> Result<HsmSlot>;

    /// The token was zeroized: back to the pool; its keys are gone.
    fn finish_hsm_release(&self, id: &str) -> Result<HsmSlot>;

    /// Slots whose grace period is over.
    fn hsm_slots_due_release(&self, at: i64) -> Result<Vec<HsmSlot>>;

    fn hsm_key(&self, id: &str) -> Result<Option<HsmKey>>;

    fn hsm_keys_of_slot(&self, slot_id: &str) -> Result<Vec<HsmKey>>;

    /// The active key generated for a resource in a slot, if any.
    fn active_hsm_key_of_resource(&self, slot_id: &str, resource_id: &str) -> Result<Option<HsmKey>>;

    /// The key (generated by tenure in a tenant's token) a certificate certifies.
    fn hsm_key_of_certificate(&self, serial: &str) -> Result<Option<HsmKey>>;

    /// Keys whose overlap is over.
    fn hsm_keys_due_retirement(&self, at: i64) -> Result<Vec<HsmKey>>;

    fn mark_hsm_key_retired(&self, key: &HsmKey) -> Result<()>;

    /// A distribution that happened: the copy's record and the decision's audit record, together.
    fn record_hsm_distribution(&self, copy: &HsmKey, audit: &AuditRecord) -> Result<()>;

    /// The custody log of a slot, oldest first.
    fn hsm_events(&self, slot_id: &str) -> Result<Vec<CustodyEvent>>;
}

/// What one run of [`TenantRemovalStore::remove_tenant`] changed. A run on a
/// tenant removed before changes only what was left, so each count is of
/// this run's changes alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TenantRemoval {
    /// When the tenant was removed (the first run's time).
    pub removed_at: UnixTime,
    /// Whether an earlier run had removed it already.
    pub already_removed: bool,
    /// Resources released (as `resource release` does).
    pub resources_released: usize,
    /// Certificates revoked (cessationOfOperation), those of the released
    /// resources included.
    pub certificates_revoked: usize,
    /// Intermediates revoked (listed in the root's CRL from now on).
    pub intermediates_revoked: usize,
    /// ACME accounts deactivated.
    pub accounts_deactivated: usize,
    /// EAB keys deleted.
    pub eab_keys_deleted: usize,
    /// Provisioning requests taken out of the queue.
    pub provisioning_settled: usize,
    /// Whether the tenant's plugin was removed (the plugin generation bumped).
    pub plugin_removed: bool,
    /// Keys registered to sign the tenant's plugins, deleted.
    pub signing_keys_deleted: usize,
    /// Whether an admin API token was cleared.
    pub token_cleared: bool,
}

/// A revoked intermediate, as the root's CRL lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedIssuer {
    /// The issuer.
    pub issuer_id: i64,
    /// Its certificate (the serial and expiry are read from it).
    pub cert_der: Vec<u8>,
    /// When it was revoked.
    pub revoked_at: UnixTime,
    /// The RFC 5280 reason code.
    pub reason: u8,
}

/// Removing a tenant, and what the root's CRL lists because of it.
pub trait TenantRemovalStore: Send + Sync {
    /// Removes `name` in one transaction: every live resource released as
    /// `set_resource_state` releases (event, certificates revoked and their
    /// renewals stopped, notices); every other unexpired, unrevoked
    /// certificate of the tenant revoked with `reason`; every intermediate
    /// of the tenant revoked with `reason`; its accounts deactivated (with
    /// their pending authorizations and orders); its EAB keys, plugin (the
    /// plugin generation bumped), plugin-signing keys and token deleted; its
    /// resources' provisioning requests settled; `removed_at` set (kept from
    /// the first run). The audit log, resource events and certificates stay.
    /// NotFound if there is no such tenant.
    fn remove_tenant(&self, name: &str, reason: u8) -> Result<TenantRemoval>;

    /// Every revoked intermediate, expired or not (the caller leaves expired
    /// ones off the CRL but counts them in the root's revocation mark).
    fn revoked_intermediates(&self) -> Result<Vec<RevokedIssuer>>;
}

/// Nonces spent by servers that share one database (RFC 8555 §6.5: each is
/// accepted once, by whichever server sees it first).
pub trait ReplayStore: Send + Sync {
    /// Records `nonce` as spent until `expires`; false if it was spent already.
    fn spend_nonce(&self, nonce: &[u8], expires: UnixTime) -> Result<bool>;
}
