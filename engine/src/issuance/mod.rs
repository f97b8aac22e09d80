//! The one path to a leaf certificate, whatever triggered it (an ACME
//! finalize, the renewal sweep, a rekey in a tenant's HSM, provisioning):
//!
//! 1. **decide**: the tenant's plugin chain, told what triggered it
//!    ([`decide_issuance`], [`decide_renewal`], [`decide_provisioning`]), then
//!    the host's own rules (the
//!    grant may narrow the names and the lifetime, never widen them; a profile
//!    the server does not offer is a denial). An allow is an [`Allowed`].
//! 2. **sign**: [`Allowed::sign`] — the only caller of the leaf signer
//!    ([`signer`], private to this module; `ca::issue_leaf` demands a
//!    [`signer::LeafSigning`] capability that only it can make).
//! 3. **record**: [`Signed::record`] (one certificate) or [`record_renewals`]
//!    (a sweep's batch): the certificate row, its bindings to resources, the
//!    audit record with the plugins' digests and input digest, the delivery
//!    outbox and the claim it settles (the order, the predecessor, the HSM
//!    key), in one transaction.
//!
//! Invariant: no code outside this module signs a leaf, and none of this
//! module's signatures escapes unrecorded except through an error.

mod signer;

use std::collections::BTreeSet;
use std::time::{Duration, UNIX_EPOCH};

use crate::audit::AuditRecord;
use crate::core::Core;
use crate::error::{Error, ErrorKind, Result};
use crate::identifier::Identifier;
use crate::model::*;
use crate::observe;
use crate::policies::{Decided, PluginChain};
use crate::policy::{self, Decision, Grant};
use crate::registry::{Resource, ResourceState};
use crate::store::{Claim, IssuedRecord, ProvisioningOutcome, ProvisioningTally, RenewalOutcome, RenewalTally};

pub(crate) use signer::LeafSigning;

/// What the host asks the plugins for, before they have spoken.
pub(crate) struct Ask<'a> {
    /// The tenant the certificate is for.
    pub tenant: &'a Tenant,
    /// The ACME account asking, if one is.
    pub account: Option<&'a str>,
    /// What triggered the decision.
    pub trigger: policy::Trigger,
    /// The names and addresses asked for.
    pub identifiers: &'a [Identifier],
    /// The profile asked for (the server's default when none was).
    pub profile: &'a str,
    /// The lifetime the host would give without the plugins (the profile's,
    /// narrowed by earlier grants).
    pub lifetime: Duration,
}

/// A decision that allowed a certificate: what it may name, for how long,
/// under which profile, and the audit record to store with it.
#[must_use = "an allowed issuance is signed, or its audit record stored"]
pub(crate) struct Allowed {
    tenant: String,
    issuer_id: i64,
    identifiers: Vec<Identifier>,
    lifetime: Duration,
    profile: String,
    grant: Grant,
    audit: AuditRecord,
}

/// The outcome of the decide step.
pub(crate) enum Verdict {
    /// The chain and the host allow it.
    Allowed(Allowed),
    /// Denied; the audit record says by whom and why, and must be stored.
    Denied {
        /// Why, for the client or the operator.
        reason: String,
        /// The decision's record.
        audit: AuditRecord,
    },
}

impl Allowed {
    /// The lifetime: the smaller of the grant's and the profile's.
    pub(crate) fn lifetime(&self) -> Duration {
        self.lifetime
    }
    /// The profile: the grant's, or the one asked for.
    pub(crate) fn profile(&self) -> &str {
        &self.profile
    }
    /// The chain's grant as it answered.
    pub(crate) fn grant(&self) -> &Grant {
        &self.grant
    }
    /// The audit record, for a decision that issues nothing now (new-order).
    pub(crate) fn into_audit(self) -> AuditRecord {
        self.audit
    }
    /// A host rule refuses what the plugins allowed: the denial keeps their
    /// digests and says why the host overruled them.
    pub(crate) fn overrule(self, reason: impl Into<String>) -> Verdict {
        let mut decided = Decided { decision: Decision::Allow(self.grant), audit: self.audit };
        decided.overrule(reason.into());
        let reason = decided.audit.reason.clone().unwrap_or_default();
        Verdict::Denied { reason, audit: decided.audit }
    }

    /// The host refuses what the grant leaves it (a name left out, a name no
    /// longer held): the audit record becomes a denial with that reason.
    pub(crate) fn refuse(self, reason: impl Into<String>) -> Verdict {
        let reason = reason.into();
        let mut audit = self.audit;
        audit.outcome = "deny".into();
        audit.reason = Some(reason.clone());
        audit.grant = None;
        Verdict::Denied { reason, audit }
    }

    /// Signs the leaf for `spki` under the tenant's intermediate, valid for
    /// the allowed lifetime from now (backdated a minute for clients whose
    /// clocks run slightly behind), with the issuer's CRL distribution point
    /// once the public URL is known.
    pub(crate) fn sign(self, core: &Core, spki: &[u8]) -> Result<Signed> {
        let issued_at = now();
        let leaf = signer::sign(core, self.issuer_id, spki, &self.identifiers, self.lifetime)?;
        Ok(Signed { allowed: self, leaf, issued_at })
    }
}

/// A signed leaf that is not yet recorded: handed out only once recorded.
#[must_use = "a signed certificate must be recorded (or dropped on an error path)"]
pub(crate) struct Signed {
    allowed: Allowed,
    leaf: crate::ca::IssuedLeaf,
    issued_at: UnixTime,
}

/// Where an issued certificate comes from and what it is bound to.
pub(crate) struct Provenance {
    /// The ACME account (kept from the predecessor by renewals).
    pub account_id: Option<String>,
    /// The ACME order (kept from the predecessor by renewals).
    pub order_id: Option<String>,
    /// What issued it.
    pub trigger: Trigger,
    /// The certificate it succeeds or replaces.
    pub predecessor: Option<String>,
    /// Resources it is bound to, and whether tenure renews it itself.
    pub binding: Binding,
    /// (resource id, kind, target) to deliver it to.
    pub deliveries: Vec<(String, DeliveryKind, String)>,
    /// Who holds its key.
    pub key_source: KeySource,
    /// The key tenure generated for it, encrypted to its recipient, delivered with it.
    pub key_age: Option<String>,
    /// Its generation: 1, or its predecessor's plus one.
    pub generation: i64,
}

impl Signed {
    /// The DER of the signed leaf.
    pub(crate) fn der(&self) -> &[u8] {
        &self.leaf.der
    }

    /// Its serial, hex.
    pub(crate) fn serial(&self) -> &str {
        &self.leaf.serial_hex
    }

    /// Its notAfter, Unix seconds.
    pub(crate) fn not_after(&self) -> UnixTime {
        self.leaf.not_after.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
    }

    /// The record the store takes: the certificate, its lifecycle, its
    /// decision, its deliveries, and the claim it settles.
    pub(crate) fn into_record(self, core: &Core, from: Provenance, claim: Claim) -> IssuedRecord {
        let Signed { allowed, leaf, issued_at } = self;
        let unix = |t: std::time::SystemTime| t.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        let cert = Certificate {
            serial: leaf.serial_hex,
            account_id: from.account_id,
            order_id: from.order_id,
            tenant: allowed.tenant,
            issuer_id: allowed.issuer_id,
            der: leaf.der,
            identifiers: allowed.identifiers,
            not_before: unix(leaf.not_before),
            not_after: unix(leaf.not_after),
            revoked_at: None,
            revocation_reason: None,
        };
        let life = CertificateLifecycle {
            profile: allowed.profile,
            // Tenure renews only what the registry shows held, name by name;
            // a name proven by challenge is the client's to renew.
            renewal: if from.binding.all_held { RenewalState::Scheduled } else { RenewalState::Client },
            resources: from.binding.resources,
            // The lifetime the leaf got: shorter than allowed when it ends with its issuer.
            renew_at: Some(core.config.lifecycle.renew_at(
                issued_at,
                allowed.lifetime.min(std::time::Duration::from_secs(unix(leaf.not_after).saturating_sub(issued_at).max(1) as u64)),
            )),
            note: None,
            predecessor: from.predecessor,
            successor: None,
            policy: allowed.audit.plugins.join(","),
            trigger: from.trigger,
            generation: from.generation,
            key_source: from.key_source,
        };
        let event =
            if from.trigger == Trigger::Provisioning { crate::lifecycle::events::PROVISIONED } else { crate::lifecycle::events::RENEWED };
        IssuedRecord { cert, life, audit: allowed.audit, deliveries: from.deliveries, event, key_age: from.key_age, claim }
    }

    /// Records it, with everything that goes with it, in one transaction, and
    /// returns the certificate. If the claim no longer holds, nothing is
    /// stored and the error says why: the certificate is never handed out.
    pub(crate) fn record(self, core: &Core, from: Provenance, claim: Claim) -> Result<Certificate> {
        let record = self.into_record(core, from, claim);
        core.store.record_issuance(&record)?;
        observe::issued([&record]);
        Ok(record.cert)
    }
}

/// Records a sweep's batch (successors and lapses) in one transaction.
pub(crate) fn record_renewals(core: &Core, outcomes: &[RenewalOutcome]) -> Result<RenewalTally> {
    let tally = core.store.record_renewals(outcomes)?;
    let renewed = outcomes.iter().filter_map(|o| if let RenewalOutcome::Renewed(r) = o { Some(r) } else { None });
    count_stored(core, renewed.collect(), tally.renewed);
    Ok(tally)
}

/// Records a provisioning batch (certificates and denials, each settling its
/// request) in one transaction.
pub(crate) fn record_provisionings(core: &Core, outcomes: &[ProvisioningOutcome]) -> Result<ProvisioningTally> {
    let tally = core.store.record_provisionings(outcomes)?;
    let issued = outcomes.iter().filter_map(|o| if let ProvisioningOutcome::Issued(r) = o { Some(r) } else { None });
    count_stored(core, issued.collect(), tally.provisioned);
    Ok(tally)
}

/// Counts the certificates of a committed batch, of which the store says
/// `stored` were kept: all of them, usually; when some were dropped (their
/// claim no longer held), those whose serial is in the store.
fn count_stored(core: &Core, records: Vec<&IssuedRecord>, stored: usize) {
    if stored == records.len() {
        observe::issued(records);
        return;
    }
    if stored == 0 {
        return;
    }
    for record in records {
        match core.store.certificate(&record.cert.serial) {
            Ok(Some(_)) => observe::issued([record]),
            Ok(None) => {}
            // Stored already; only the count misses it.
            Err(e) => {
                tracing::warn!(serial = %record.cert.serial, error = %e, "cannot tell whether a certificate was stored; it is not counted")
            }
        }
    }
}

/// decide-issuance: the tenant's chain, then the host's rules. The grant must
/// keep every identifier asked for (an ACME order is all or nothing) and may
/// only shorten the lifetime; a profile the server does not offer is denied.
pub(crate) fn decide_issuance(core: &Core, ask: &Ask<'_>, key: Option<policy::KeyInfo>) -> Result<Verdict> {
    let request = policy::IssuanceRequest {
        tenant: ask.tenant.name.clone(),
        account: ask.account.map(str::to_string),
        trigger: ask.trigger,
        identifiers: ask.identifiers.to_vec(),
        key,
        profile: ask.profile.to_string(),
        requested_lifetime_seconds: ask.lifetime.as_secs().max(1),
        resource: None,
    };
    let decided = core.decide_issuance(&ask.tenant.name, ask.account, &request)?;
    let allowed = match admit(core, ask, decided)? {
        Verdict::Allowed(a) => a,
        denied => return Ok(denied),
    };
    let granted: BTreeSet<&Identifier> = allowed.grant.identifiers.iter().collect();
    let left_out: Vec<String> = ask.identifiers.iter().filter(|i| !granted.contains(i)).map(|i| i.value.clone()).collect();
    if !left_out.is_empty() {
        return Ok(allowed.refuse(format!("the grant leaves out {}", left_out.join(", "))));
    }
    Ok(Verdict::Allowed(allowed))
}

/// decide-issuance with trigger `provisioning` and the resource: the grant may
/// narrow the names (a resource's certificate need not carry them all) and
/// shorten the lifetime; a grant that keeps none of them is a denial.
pub(crate) fn decide_provisioning(core: &Core, ask: &Ask<'_>, resource_id: &str, key: Option<policy::KeyInfo>) -> Result<Verdict> {
    let request = policy::IssuanceRequest {
        tenant: ask.tenant.name.clone(),
        account: None,
        trigger: policy::Trigger::Provisioning,
        identifiers: ask.identifiers.to_vec(),
        key,
        profile: ask.profile.to_string(),
        requested_lifetime_seconds: ask.lifetime.as_secs().max(1),
        resource: Some(resource_id.to_string()),
    };
    let decided = core.decide_issuance(&ask.tenant.name, None, &request)?;
    narrowed(core, ask, decided, "the provisioning grant names none of the resource's identifiers")
}

/// What a renewal (or rekey) asks for, besides the [`Ask`].
pub(crate) struct Renewing<'a> {
    /// The certificate succeeded, if there is one (a first key in an HSM has none).
    pub current: Option<&'a Certificate>,
    /// The resources the new certificate is bound to.
    pub resources: &'a [String],
}

/// decide-renewal through `chain` (looked up once per sweep batch): the grant
/// may narrow the names (never widen them) and shorten the lifetime; a grant
/// that keeps none of them, or names an unknown profile, is a denial.
pub(crate) fn decide_renewal(core: &Core, chain: &PluginChain, ask: &Ask<'_>, renewing: &Renewing<'_>) -> Result<Verdict> {
    let request = renewal_request(ask, renewing);
    let decided = core.decide_renewal_by(chain, &ask.tenant.name, ask.account, &request)?;
    narrowed(core, ask, decided, "the renewal grant names none of the certificate's identifiers")
}

/// The host's rules for a grant that may narrow the names (renewal,
/// provisioning): [`admit`], then a grant that keeps none is overruled with
/// `none_kept`; the names kept are sorted.
fn narrowed(core: &Core, ask: &Ask<'_>, decided: Decided, none_kept: &str) -> Result<Verdict> {
    let mut allowed = match admit(core, ask, decided)? {
        Verdict::Allowed(a) => a,
        denied => return Ok(denied),
    };
    if allowed.identifiers.is_empty() {
        return Ok(allowed.overrule(none_kept));
    }
    allowed.identifiers.sort();
    Ok(Verdict::Allowed(allowed))
}

/// The key the plugins see (WIT `key-info`) for a key type the CA certifies.
pub(crate) fn key_info(key_type: crate::ca::KeyType) -> policy::KeyInfo {
    use crate::ca::KeyType as K;
    use policy::KeyType as P;
    match key_type {
        K::EcdsaP256 => policy::KeyInfo { key_type: P::EcdsaP256, bits: 256 },
        K::EcdsaP384 => policy::KeyInfo { key_type: P::EcdsaP384, bits: 384 },
        K::Rsa(bits) => policy::KeyInfo { key_type: P::Rsa, bits },
        K::Ed25519 => policy::KeyInfo { key_type: P::Ed25519, bits: 255 },
    }
}

/// A binding for `identifiers` ([`binding_of`]) that also holds `also` and
/// their anchors: the resources a certificate made for them (a rekey, a
/// provisioning) ends with.
pub(crate) fn binding_with(core: &Core, tenant: &str, identifiers: &[Identifier], also: &[&Resource]) -> Result<Binding> {
    let mut binding = binding_of(core, tenant, identifiers)?;
    for r in also {
        binding.resources.push(r.id.clone());
        binding.resources.extend(r.anchor.iter().cloned());
    }
    binding.resources.sort();
    binding.resources.dedup();
    Ok(binding)
}

/// Every delivery target of `resources`, as (resource id, kind, target).
pub(crate) fn deliveries_to(core: &Core, resources: &[String]) -> Result<Vec<(String, DeliveryKind, String)>> {
    let mut deliveries = Vec::new();
    for id in resources {
        deliveries.extend(delivery_targets(core, id)?.into_iter().map(|(kind, target)| (id.clone(), kind, target)));
    }
    Ok(deliveries)
}

/// The decide-renewal request for `ask`, as the plugins see it (and `plugin
/// eval` shows it).
pub(crate) fn renewal_request(ask: &Ask<'_>, renewing: &Renewing<'_>) -> policy::RenewalRequest {
    policy::RenewalRequest {
        tenant: ask.tenant.name.clone(),
        trigger: ask.trigger,
        identifiers: ask.identifiers.to_vec(),
        resources: renewing.resources.to_vec(),
        profile: ask.profile.to_string(),
        requested_lifetime_seconds: ask.lifetime.as_secs().max(1),
        certificate: renewing.current.map(|cert| policy::CertificateInfo {
            serial: cert.serial.clone(),
            identifiers: cert.identifiers.clone(),
            not_before: cert.not_before.max(0) as u64,
            not_after: cert.not_after.max(0) as u64,
            resources: renewing.resources.to_vec(),
        }),
    }
}

/// The host's rules common to every allow: names narrowed to the grant's, the
/// profile the grant's (if the server offers it) or the asked one, the
/// lifetime the smaller of the grant's, the asked one and the profile's.
fn admit(core: &Core, ask: &Ask<'_>, decided: Decided) -> Result<Verdict> {
    let Decided { decision, audit } = decided;
    let grant = match decision {
        Decision::Allow(g) => g,
        Decision::Deny(reason) => return Ok(Verdict::Denied { reason, audit }),
    };
    let mut allowed = Allowed {
        tenant: ask.tenant.name.clone(),
        issuer_id: ask.tenant.issuer_id,
        identifiers: ask.identifiers.iter().filter(|i| grant.identifiers.contains(i)).cloned().collect(),
        lifetime: ask.lifetime,
        profile: ask.profile.to_string(),
        grant,
        audit,
    };
    if let Some(p) = allowed.grant.profile.clone() {
        if !core.config.has_profile(&p) {
            let offered: Vec<&str> = core.config.profiles.iter().map(|p| p.name.as_str()).collect();
            return Ok(
                allowed.overrule(format!("the grant names the profile {p:?}, which this server does not offer ({})", offered.join(", ")))
            );
        }
        allowed.profile = p;
    }
    let profile_lifetime = core.config.profile_lifetime(&allowed.profile)?;
    let granted = Duration::from_secs(allowed.grant.lifetime_seconds.max(1));
    allowed.lifetime = ask.lifetime.min(profile_lifetime).min(granted).max(Duration::from_secs(1));
    Ok(Verdict::Allowed(allowed))
}

/// Stores the audit record of a denial (nothing else changes).
pub(crate) fn record_denial(core: &Core, audit: &AuditRecord) -> Result<()> {
    core.store.record_audit(audit)
}

/// The resources a new certificate is bound to, and whether every one of its
/// names is held (then tenure renews it itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Resource ids, sorted.
    pub resources: Vec<String>,
    /// Whether every identifier is held by an active resource of the tenant.
    pub all_held: bool,
}

/// Binds identifiers to the tenant's active resources holding them, plus
/// those resources' anchors: releasing an anchor ends the certificate too.
pub(crate) fn binding_of(core: &Core, tenant: &str, identifiers: &[Identifier]) -> Result<Binding> {
    let mut resources: Vec<String> = Vec::new();
    let mut all_held = !identifiers.is_empty();
    for id in identifiers {
        let holders = core.store.resources_holding(Some(tenant), id)?;
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

/// Where a resource's certificates go, from its attributes (`delivery-dir`,
/// `delivery-webhook`).
pub(crate) fn delivery_targets(core: &Core, resource_id: &str) -> Result<Vec<(DeliveryKind, String)>> {
    use crate::lifecycle::{DELIVERY_DIR_ATTRIBUTE, DELIVERY_WEBHOOK_ATTRIBUTE};
    let Some(resource) = core.store.resource(resource_id)? else { return Ok(Vec::new()) };
    Ok([(DELIVERY_DIR_ATTRIBUTE, DeliveryKind::File), (DELIVERY_WEBHOOK_ATTRIBUTE, DeliveryKind::Webhook)]
        .into_iter()
        .filter_map(|(attribute, kind)| resource.attributes.get(attribute).filter(|t| !t.is_empty()).map(|t| (kind, t.clone())))
        .collect())
}

/// The error an ACME client sees for a denied issuance.
pub(crate) fn denied(reason: &str, what: &str) -> Error {
    Error::new(ErrorKind::Unauthorized, format!("policy denied {what}: {reason}"))
}
