//! The registration authority (the RA role, the ACME front end's service):
//! accounts, orders, authorizations, challenges' outcomes, finalize,
//! revocation, certificate download, ARI and CRLs. Every state change is
//! decided here and written through the store in one transaction; every
//! certificate comes out of `issuance`. The front end calls these methods
//! after it has authenticated the request; they block (storage, signing), so
//! async callers run them on a blocking thread.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::ca::{self, Permit};
use crate::config::{Config, MAX_IDENTIFIERS, PUBLIC_TENANT};
use crate::core::Core;
use crate::error::{Error, ErrorKind, Result};
use crate::identifier::{Identifier, IdentifierKind};
use crate::issuance::{self, Ask, Provenance, Verdict};
use crate::lifecycle::RenewalWindow;
use crate::model::*;
use crate::policy::Trigger;
use crate::store::Claim;

mod eab;
pub mod limits;
mod nonce;
pub use eab::{ExternalBinding, MacAlgorithm, verify_external_binding};
pub use limits::{EffectiveLimits, TenantLimits};

/// The key an address's new accounts are counted under: the address, or for
/// IPv6 its /64 (one host usually holds a whole /64).
fn address_key(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// What a new account request carries once the front end has checked its JWS.
pub struct NewAccount {
    /// The account key, as the front end canonicalized it.
    pub jwk: String,
    /// Its RFC 7638 thumbprint.
    pub thumbprint: String,
    /// `mailto:` contacts.
    pub contact: Vec<String>,
    /// Whether the client agreed to the terms of service.
    pub tos_agreed: bool,
    /// The External Account Binding, parsed but not yet verified: the engine
    /// checks its MAC with the tenant's key and that it binds this key.
    pub eab: Option<ExternalBinding>,
    /// The address the request came from, for the per-address limit on new
    /// accounts without EAB (None: not counted, e.g. in-process callers).
    pub source: Option<std::net::IpAddr>,
}

pub struct NewOrder {
    pub identifiers: Vec<Identifier>,
    pub profile: Option<String>,
    pub replaces: Option<String>,
}

/// Who asks to revoke (RFC 8555 §7.6).
pub enum Revoker<'a> {
    /// An account, by its id.
    Account(&'a str),
    /// Whoever holds the certificate's key; the SubjectPublicKeyInfo of the JWS key.
    CertificateKey(&'a [u8]),
}

/// A reused authorization must stay valid at least this long, so the order
/// that lists it can still be finalized (Boulder's cutoff).
const REUSE_MIN_REMAINING: Duration = Duration::from_secs(24 * 3600);

/// The challenge types offered, in order of preference.
pub const HTTP_01: &str = "http-01";
pub const DNS_01: &str = "dns-01";
pub const TLS_ALPN_01: &str = "tls-alpn-01";

/// The registration authority.
#[derive(Clone)]
pub struct Ra {
    pub(crate) core: Arc<Core>,
}

/// An order claimed for finalizing; the claim ends when this drops.
struct FinalizeClaim<'a> {
    set: &'a Mutex<HashSet<String>>,
    order_id: String,
}

impl Drop for FinalizeClaim<'_> {
    fn drop(&mut self) {
        let mut set = self.set.lock().unwrap_or_else(|p| p.into_inner());
        set.remove(&self.order_id);
    }
}

impl Ra {
    /// The configuration (profiles and EAB requirement, for the directory).
    pub fn config(&self) -> &Config {
        &self.core.config
    }

    // ---- accounts -----------------------------------------------------------

    pub fn account(&self, id: &str) -> Result<Option<Account>> {
        self.core.store.account(id)
    }

    pub fn account_by_thumbprint(&self, thumbprint: &str) -> Result<Option<Account>> {
        self.core.store.account_by_thumbprint(thumbprint)
    }

    /// Registers an account, or returns the one already holding the key (`false`).
    pub fn create_account(&self, req: NewAccount) -> Result<(Account, bool)> {
        validate_contacts(&req.contact)?;
        let tenant = match &req.eab {
            Some(binding) => {
                let (tenant, stored_key) = self.core.store.eab_key(&binding.kid)?.ok_or_else(|| {
                    Error::new(ErrorKind::Unauthorized, format!("unknown External Account Binding key id {:?}", binding.kid))
                })?;
                verify_external_binding(binding, &self.core.ca_keys.open_eab_key(&stored_key)?, &req.thumbprint)?;
                // Removal deletes a tenant's EAB keys; a removed tenant takes no account all the same.
                crate::registry::removal::live_tenant(&*self.core.store, &tenant)
                    .map_err(|e| Error::new(ErrorKind::Unauthorized, e.detail))?;
                tenant
            }
            None if self.core.config.eab_required => {
                return Err(Error::new(ErrorKind::ExternalAccountRequired, "this server requires External Account Binding"));
            }
            None => PUBLIC_TENANT.to_string(),
        };
        // Anonymous registrations are bounded per source address; an EAB key
        // already says who is asking.
        let counted = match (&req.eab, req.source) {
            (None, Some(ip)) => Some(address_key(ip)),
            _ => None,
        };
        let per_hour = self.core.config.rate_limits.accounts_per_ip_per_hour;
        if let Some(key) = &counted {
            self.core.account_allowance.take(key, per_hour).map_err(|wait| {
                Error::rate_limited(
                    format!("{key} may register at most {per_hour} accounts an hour; the next in {} s", wait.as_secs().max(1)),
                    wait,
                )
            })?;
        }
        let account = Account {
            id: self.core.random_id(12),
            thumbprint: req.thumbprint,
            jwk: req.jwk,
            status: AccountStatus::Valid,
            contact: req.contact,
            tenant,
            eab_kid: req.eab.map(|b| b.kid),
            tos_agreed: req.tos_agreed,
            created_at: now(),
        };
        let inserted = self.core.store.insert_account(&account);
        if let (Some(key), Err(_) | Ok((_, false))) = (&counted, &inserted) {
            self.core.account_allowance.give_back(key, per_hour);
        }
        inserted
    }

    /// The rate limits `tenant`'s accounts are held to: its own where the
    /// operator set them, the server's otherwise.
    pub fn limits_of(&self, tenant: &str) -> Result<EffectiveLimits> {
        Ok(self.core.tenant_limits(tenant)?.over(&self.core.config.rate_limits))
    }

    pub fn update_contact(&self, account: &Account, contact: Vec<String>) -> Result<Account> {
        validate_contacts(&contact)?;
        self.core.store.update_account_contact(&account.id, &contact)?;
        Ok(Account { contact, ..account.clone() })
    }

    pub fn deactivate_account(&self, account: &Account) -> Result<Account> {
        self.core.store.deactivate_account(&account.id)?;
        Ok(Account { status: AccountStatus::Deactivated, ..account.clone() })
    }

    /// Key rollover (RFC 8555 §7.3.5). A new key already in use is a Conflict
    /// whose detail is the id of the account holding it.
    pub fn change_key(&self, account: &Account, new_jwk: String, new_thumbprint: String) -> Result<Account> {
        self.core.store.change_account_key(&account.id, &account.thumbprint, &new_thumbprint, &new_jwk)?;
        Ok(Account { jwk: new_jwk, thumbprint: new_thumbprint, ..account.clone() })
    }

    // ---- orders -------------------------------------------------------------

    pub fn new_order(&self, account: &Account, req: NewOrder) -> Result<Order> {
        if req.identifiers.is_empty() {
            return Err(Error::malformed("an order needs at least one identifier"));
        }
        if req.identifiers.len() > MAX_IDENTIFIERS {
            return Err(Error::new(ErrorKind::RejectedIdentifier, format!("an order may hold at most {MAX_IDENTIFIERS} identifiers")));
        }
        let profile = match req.profile {
            Some(p) => {
                if !self.core.config.profiles.iter().any(|x| x.name == p) {
                    return Err(Error::new(ErrorKind::InvalidProfile, format!("unknown profile {p:?}")));
                }
                p
            }
            None => self.core.config.default_profile.clone(),
        };
        let identifiers: Vec<Identifier> = req.identifiers.into_iter().collect::<BTreeSet<_>>().into_iter().collect();
        let limits = self.limits_of(&account.tenant)?;
        self.check_validation_failures(account, &identifiers, &limits)?;
        // Taken before the decision: a flood of orders the policy refuses
        // would otherwise cost a plugin run and an audit record each, free.
        self.take_order_allowance(account, &limits)?;
        self.check_identifiers_permitted(&account.tenant, &identifiers)?;
        self.check_not_held_by_others(&account.tenant, &identifiers)?;
        if let Some(cert_id) = &req.replaces {
            self.core.replaced_certificate(account, &identifiers, cert_id)?;
        }

        // The policy chain decides before anything is stored.
        let tenant = self.core.tenant_of(&account.tenant)?;
        let ask = Ask {
            tenant: &tenant,
            account: Some(&account.id),
            trigger: Trigger::AcmeOrder,
            identifiers: &identifiers,
            profile: &profile,
            lifetime: self.core.config.profile_lifetime(&profile)?,
        };
        let allowed = match issuance::decide_issuance(&self.core, &ask, None)? {
            Verdict::Allowed(a) => a,
            Verdict::Denied { reason, audit } => {
                // The denial is audited even though nothing else is written.
                issuance::record_denial(&self.core, &audit)?;
                return Err(match reason.strip_prefix("the grant leaves out ") {
                    Some(names) => Error::new(ErrorKind::RejectedIdentifier, format!("policy does not grant {names}")),
                    None => issuance::denied(&reason, "the order"),
                });
            }
        };
        let profile = allowed.profile().to_string();
        let lifetime_seconds = allowed.lifetime().as_secs() as i64;
        let grant = allowed.grant().clone();
        let by_control: BTreeSet<Identifier> = grant.authorize_by_control.iter().map(|i| i.authorization_target()).collect();

        let t = now();
        let expires = t + self.core.config.order_lifetime.as_secs() as i64;
        let order_id = self.core.time_ordered_id(9);
        // One authorization per name to prove: a wildcard and its base share one
        // target but need different challenges, so they stay separate.
        let mut targets: Vec<(Identifier, bool)> = identifiers.iter().map(|i| (i.authorization_target(), i.is_wildcard())).collect();
        targets.dedup();
        // Reuse changes only how names are proven: every check above (the
        // tenant's constraints, other tenants' holdings, the policy) has run.
        let reused = if self.core.config.reuse_valid_authorizations {
            self.reusable_authorizations(account, &targets, &by_control, t)?
        } else {
            Vec::new()
        };
        targets.retain(|(id, wildcard)| !reused.iter().any(|a| a.identifier == *id && a.wildcard == *wildcard));
        let authzs: Vec<Authorization> = targets
            .into_iter()
            .map(|(identifier, wildcard)| {
                let authz_id = self.core.time_ordered_id(9);
                let kinds: &[&str] = match (identifier.kind, wildcard) {
                    (_, true) => &[DNS_01],
                    (IdentifierKind::Dns, false) => &[HTTP_01, DNS_01, TLS_ALPN_01],
                    (IdentifierKind::Ip, false) => &[HTTP_01, TLS_ALPN_01],
                };
                let challenges = kinds
                    .iter()
                    .map(|k| Challenge {
                        id: self.core.time_ordered_id(9),
                        authz_id: authz_id.clone(),
                        kind: k.to_string(),
                        token: self.core.random_id(32),
                        status: ChallengeStatus::Pending,
                        validated: None,
                        error: None,
                    })
                    .collect();
                // Held in the registry and granted by control: valid with no challenge.
                let status = if by_control.contains(&identifier) { AuthorizationStatus::Valid } else { AuthorizationStatus::Pending };
                Authorization {
                    id: authz_id,
                    order_id: order_id.clone(),
                    account_id: account.id.clone(),
                    identifier,
                    wildcard,
                    status,
                    expires,
                    challenges,
                }
            })
            .collect();
        let pending = authzs.iter().filter(|a| a.status == AuthorizationStatus::Pending).count();
        if let Err(e) = self.check_pending_authorizations(account, pending, &limits) {
            // The host refuses what the plugins allowed; the audit says why.
            self.core.order_allowance.give_back(&account.id, limits.orders_per_hour);
            if let Verdict::Denied { audit, .. } = allowed.refuse(e.detail.clone()) {
                issuance::record_denial(&self.core, &audit)?;
            }
            return Err(e);
        }
        let all_valid = pending == 0;
        let order = Order {
            id: order_id,
            account_id: account.id.clone(),
            status: if all_valid { OrderStatus::Ready } else { OrderStatus::Pending },
            // Not past its authorizations (as Boulder): a ready order stays finalizable only while they are valid.
            expires: reused.iter().map(|a| a.expires).fold(expires, i64::min),
            identifiers,
            profile,
            error: None,
            certificate: None,
            replaces: req.replaces,
            created_at: t,
            // New ones first, then reused ones: the order the store lists them in.
            authorizations: authzs.iter().chain(&reused).map(|a| a.id.clone()).collect(),
            lifetime_seconds: Some(lifetime_seconds),
        };
        self.core.store.insert_order(&order, &authzs, Some(&allowed.into_audit()))?;
        Ok(order)
    }

    /// The account's authorizations of earlier orders that a new order lists
    /// instead of new ones, when the operator turned reuse on (RFC 8555
    /// §7.1.6 lets orders share authorizations). Only authorizations a
    /// challenge validated, for the same name, and wildcard for wildcard (a
    /// wildcard's is proven by dns-01 alone; as Boulder), with
    /// [`REUSE_MIN_REMAINING`] left. Names granted by control are left out:
    /// their new authorizations are valid at once and reflect the registry now.
    fn reusable_authorizations(
        &self,
        account: &Account,
        targets: &[(Identifier, bool)],
        by_control: &BTreeSet<Identifier>,
        t: UnixTime,
    ) -> Result<Vec<Authorization>> {
        // Short order lifetimes (tests) would otherwise never reuse anything.
        let margin = REUSE_MIN_REMAINING.min(self.core.config.order_lifetime / 2).as_secs() as i64;
        let mut reused = Vec::new();
        for (identifier, wildcard) in targets.iter().filter(|(id, _)| !by_control.contains(id)) {
            if let Some(authz) = self.core.store.reusable_authorization(&account.id, identifier, *wildcard, t + margin)? {
                reused.push(authz);
            }
        }
        Ok(reused)
    }

    /// Takes one of the account's new orders for this hour (a token bucket).
    fn take_order_allowance(&self, account: &Account, limits: &EffectiveLimits) -> Result<()> {
        self.core.order_allowance.take(&account.id, limits.orders_per_hour).map_err(|wait| {
            Error::rate_limited(
                format!(
                    "account {} may place at most {} orders an hour; the next in {} s",
                    account.id,
                    limits.orders_per_hour,
                    wait.as_secs().max(1)
                ),
                wait,
            )
        })
    }

    /// Refuses an order for an identifier whose validations by this account
    /// failed too often in the last hour: retrying a broken setup at once
    /// only costs both sides.
    fn check_validation_failures(&self, account: &Account, identifiers: &[Identifier], limits: &EffectiveLimits) -> Result<()> {
        for id in identifiers {
            let target = id.authorization_target();
            if let Some(wait) =
                self.core.validation_failures.wait(&limits::failure_key(&account.id, &target), limits.failed_validations_per_hour)
            {
                return Err(Error::rate_limited(
                    format!(
                        "validation of {} failed {} times in the last hour for account {}; the next order for it in {} s",
                        target.value,
                        limits.failed_validations_per_hour,
                        account.id,
                        wait.as_secs().max(1)
                    ),
                    wait,
                ));
            }
        }
        Ok(())
    }

    /// Whether `new` more pending authorizations would take the account past
    /// its bound; the error says so. (Names held in the registry are valid at
    /// once and never count, so the common path makes no query.)
    fn check_pending_authorizations(&self, account: &Account, new: usize, limits: &EffectiveLimits) -> Result<()> {
        if new == 0 {
            return Ok(());
        }
        let limit = limits.pending_authorizations;
        let at = now();
        let (pending, first_expiry) = self.core.store.pending_authorizations(&account.id, at)?;
        if pending + new > limit {
            // Without the client's help, room comes when the first one expires.
            let wait = Duration::from_secs(first_expiry.map_or(60, |e| (e - at).max(1)) as u64);
            return Err(Error::rate_limited(
                format!(
                    "account {} holds {pending} pending authorizations (at most {limit}): validate or deactivate them, or wait for them to expire",
                    account.id
                ),
                wait,
            ));
        }
        Ok(())
    }

    /// Refuses identifiers outside the tenant's intermediate's constraints, at
    /// newOrder already, so nothing is validated that could never be issued.
    fn check_identifiers_permitted(&self, tenant_name: &str, identifiers: &[Identifier]) -> Result<()> {
        let tenant = self.core.store.tenant(tenant_name)?.ok_or_else(|| Error::internal(format!("tenant {tenant_name:?} is missing")))?;
        if tenant.name == PUBLIC_TENANT {
            return Ok(());
        }
        let permits = tenant.permits.iter().map(|p| Permit::parse(p)).collect::<Result<Vec<_>>>()?;
        let outside: Vec<String> = identifiers.iter().filter(|id| !ca::permitted(Some(&permits), id)).map(|id| id.value.clone()).collect();
        if !outside.is_empty() {
            return Err(Error::new(
                ErrorKind::RejectedIdentifier,
                format!("tenant {:?} may not be issued certificates for {}", tenant.name, outside.join(", ")),
            ));
        }
        Ok(())
    }

    /// Refuses names another tenant holds in the registry: a tenant may not be
    /// issued what someone else controls, whatever its plugins say. A
    /// wildcard `*.b.example` covers every name under `b.example`, so a name
    /// or zone another tenant holds anywhere under it refuses it too.
    fn check_not_held_by_others(&self, tenant: &str, identifiers: &[Identifier]) -> Result<()> {
        for id in identifiers {
            let mut holders = self.core.store.resources_holding(None, id)?;
            if id.is_wildcard() {
                holders.extend(self.core.store.resources_under(&id.authorization_target().value)?);
            }
            if let Some(other) = holders.iter().find(|r| r.tenant != tenant) {
                let what = if id.is_wildcard() && !other.covers(id) { "covers a name held by" } else { "is held by" };
                return Err(Error::new(ErrorKind::RejectedIdentifier, format!("{} {what} another tenant", id.value)));
            }
        }
        Ok(())
    }

    /// The order as a client should see it now (pending past expiry is invalid).
    pub fn order(&self, id: &str) -> Result<Option<Order>> {
        Ok(self.core.store.order(id)?.map(|mut o| {
            if matches!(o.status, OrderStatus::Pending | OrderStatus::Ready) && o.expires <= now() {
                o.status = OrderStatus::Invalid;
            }
            o
        }))
    }

    /// One of the account's orders: None if there is no such order,
    /// Unauthorized if it is another account's (RFC 8555 §7.4: an account
    /// sees only its own objects).
    pub fn order_of(&self, account: &Account, id: &str) -> Result<Option<Order>> {
        match self.order(id)? {
            Some(o) if o.account_id != account.id => Err(Error::new(ErrorKind::Unauthorized, "this order belongs to another account")),
            found => Ok(found),
        }
    }

    /// One of the account's authorizations (as [`Ra::order_of`]).
    pub fn authorization_of(&self, account: &Account, id: &str) -> Result<Option<Authorization>> {
        match self.authorization(id)? {
            Some(a) if a.account_id != account.id => {
                Err(Error::new(ErrorKind::Unauthorized, "this authorization belongs to another account"))
            }
            found => Ok(found),
        }
    }

    /// One of the account's challenges, with its authorization (as [`Ra::order_of`]).
    pub fn challenge_of(&self, account: &Account, id: &str) -> Result<Option<(Challenge, Authorization)>> {
        match self.challenge(id)? {
            Some((_, a)) if a.account_id != account.id => {
                Err(Error::new(ErrorKind::Unauthorized, "this challenge belongs to another account"))
            }
            found => Ok(found),
        }
    }

    /// The ids of the account's orders.
    pub fn orders_of(&self, account: &Account) -> Result<Vec<String>> {
        self.core.store.order_ids_of_account(&account.id)
    }

    pub fn authorization(&self, id: &str) -> Result<Option<Authorization>> {
        Ok(self.core.store.authorization(id)?.map(|mut a| {
            if matches!(a.status, AuthorizationStatus::Pending | AuthorizationStatus::Valid) && a.expires <= now() {
                a.status = AuthorizationStatus::Expired;
            }
            a
        }))
    }

    pub fn deactivate_authorization(&self, account: &Account, authz: &Authorization) -> Result<Authorization> {
        if authz.account_id != account.id {
            return Err(Error::new(ErrorKind::Unauthorized, "this authorization belongs to another account"));
        }
        if !matches!(authz.status, AuthorizationStatus::Pending | AuthorizationStatus::Valid) {
            return Err(Error::malformed(format!("an authorization in state {} cannot be deactivated", authz.status.as_str())));
        }
        self.core.store.deactivate_authorization(&authz.id)?;
        self.authorization(&authz.id)?.ok_or_else(|| Error::internal("authorization vanished"))
    }

    pub fn challenge(&self, id: &str) -> Result<Option<(Challenge, Authorization)>> {
        self.core.store.challenge(id)
    }

    /// A client said it is ready for validation (RFC 8555 §7.5.1). Returns true
    /// when the caller must now validate; false when there is nothing to do
    /// (already processing, valid or invalid).
    pub fn begin_challenge(&self, account: &Account, challenge: &Challenge, authz: &Authorization) -> Result<bool> {
        if authz.account_id != account.id {
            return Err(Error::new(ErrorKind::Unauthorized, "this challenge belongs to another account"));
        }
        if authz.expires <= now() {
            return Err(Error::malformed("the authorization has expired"));
        }
        self.core.store.begin_challenge(&challenge.id)
    }

    /// Records what validating a challenge found. A failure counts against
    /// the account's failed-validation allowance for the identifier.
    pub fn finish_challenge(&self, challenge_id: &str, outcome: std::result::Result<(), RecordedError>) -> Result<()> {
        let failed = outcome.is_err();
        self.core.store.finish_challenge(challenge_id, outcome)?;
        if failed && let Some((_, authz)) = self.core.store.challenge(challenge_id)? {
            let tenant = self.core.store.account(&authz.account_id)?.map(|a| a.tenant);
            let per_hour = match tenant {
                Some(t) => self.limits_of(&t)?.failed_validations_per_hour,
                None => self.core.config.rate_limits.failed_validations_per_hour,
            };
            // An empty allowance stays empty; the error is for the next order.
            let _ = self.core.validation_failures.take(&limits::failure_key(&authz.account_id, &authz.identifier), per_hour);
        }
        Ok(())
    }

    /// Challenges that were being validated when the server last stopped.
    pub fn interrupted_challenges(&self) -> Result<Vec<(Challenge, Authorization, Account)>> {
        let mut out = Vec::new();
        for (ch, authz) in self.core.store.processing_challenges()? {
            if let Some(acct) = self.core.store.account(&authz.account_id)? {
                out.push((ch, authz, acct));
            }
        }
        Ok(out)
    }

    /// Finalizes a ready order with the client's CSR (RFC 8555 §7.4) and issues.
    /// `account_key_spki` is the account key's SubjectPublicKeyInfo, which the
    /// certificate may not reuse.
    pub fn finalize(&self, account: &Account, order: &Order, csr_der: &[u8], account_key_spki: &[u8]) -> Result<Order> {
        if order.account_id != account.id {
            return Err(Error::new(ErrorKind::Unauthorized, "this order belongs to another account"));
        }
        if order.status != OrderStatus::Ready {
            return Err(Error::new(
                ErrorKind::OrderNotReady,
                format!("the order is {}, not ready; finalize needs every authorization valid", order.status.as_str()),
            ));
        }
        let csr = ca::parse_csr(csr_der)?;
        let asked: BTreeSet<&Identifier> = csr.identifiers.iter().collect();
        let ordered: BTreeSet<&Identifier> = order.identifiers.iter().collect();
        if asked != ordered {
            return Err(Error::new(
                ErrorKind::BadCsr,
                format!("the CSR names {} but the order is for {}", list(asked.iter().copied()), list(ordered.iter().copied())),
            ));
        }
        if account_key_spki == csr.spki_der.as_slice() {
            return Err(Error::new(ErrorKind::BadCsr, "the certificate key must not be the account key"));
        }
        // Another tenant may have come to hold a name since newOrder.
        self.check_not_held_by_others(&account.tenant, &order.identifiers)?;
        let tenant = self.core.tenant_of(&account.tenant)?;
        let mut lifetime = self.core.config.profile_lifetime(&order.profile)?;
        if let Some(granted) = order.lifetime_seconds {
            lifetime = lifetime.min(Duration::from_secs(granted.max(1) as u64));
        }

        // The chain decides again with what newOrder could not know: the key,
        // and the registry as it is now (a resource may have been released).
        let key = issuance::key_info(csr.key_type);
        let ask = Ask {
            tenant: &tenant,
            account: Some(&account.id),
            trigger: Trigger::AcmeFinalize,
            identifiers: &order.identifiers,
            profile: &order.profile,
            lifetime,
        };
        let mut verdict = issuance::decide_issuance(&self.core, &ask, Some(key))?;
        if let Verdict::Allowed(allowed) = verdict {
            // Names authorized by control at newOrder must still be held now.
            let still_held: BTreeSet<Identifier> = allowed.grant().authorize_by_control.iter().map(|i| i.authorization_target()).collect();
            let lost: Vec<String> = self
                .core
                .store
                .authorizations_of_order(&order.id)?
                .into_iter()
                .filter(|a| !a.challenges.iter().any(|c| c.status == ChallengeStatus::Valid))
                .filter(|a| !still_held.contains(&a.identifier))
                .map(|a| a.identifier.value)
                .collect();
            verdict =
                if lost.is_empty() { Verdict::Allowed(allowed) } else { allowed.refuse(format!("no longer held: {}", lost.join(", "))) };
        }
        let allowed = match verdict {
            Verdict::Allowed(a) => a,
            Verdict::Denied { reason, audit } => {
                issuance::record_denial(&self.core, &audit)?;
                return Err(match reason.strip_prefix("the grant leaves out ") {
                    Some(names) => Error::new(ErrorKind::Unauthorized, format!("policy no longer grants {names}")),
                    None if reason.starts_with("no longer held: ") => {
                        Error::new(ErrorKind::Unauthorized, format!("authorized by control, but {reason}"))
                    }
                    None => issuance::denied(&reason, "issuance"),
                });
            }
        };

        // One finalize per order signs: a second one arriving meanwhile is
        // refused here, without a commit of its own (the order used to be
        // marked `processing` in a transaction before signing). The order
        // stays `ready` in the database while signing; the record step stores
        // the certificate only if it still is, in the same transaction that
        // makes it valid, so even finalizes in two processes record exactly one
        // certificate, and a crash before that commit leaves a ready order to
        // finalize again instead of one stuck in `processing`.
        let _claim = {
            let mut set = self.core.finalizing.lock().unwrap_or_else(|p| p.into_inner());
            if !set.insert(order.id.clone()) {
                return Err(Error::new(ErrorKind::OrderNotReady, "the order is already being finalized"));
            }
            FinalizeClaim { set: &self.core.finalizing, order_id: order.id.clone() }
        };
        let predecessor = match &order.replaces {
            Some(cert_id) => Some(self.core.replaced_certificate(account, &order.identifiers, cert_id)?.serial),
            None => None,
        };
        // A replacement continues its predecessor's line (one more read, only for `replaces`).
        let generation = match &predecessor {
            Some(serial) => self.core.store.certificate_record(serial)?.map_or(1, |(_, l)| l.generation + 1),
            None => 1,
        };
        let signed = allowed.sign(&self.core, &csr.spki_der)?;
        let from = Provenance {
            account_id: Some(account.id.clone()),
            order_id: Some(order.id.clone()),
            trigger: crate::model::Trigger::AcmeFinalize,
            predecessor,
            binding: issuance::binding_of(&self.core, &tenant.name, &order.identifiers)?,
            deliveries: Vec::new(),
            key_source: crate::model::KeySource::Client,
            key_age: None,
            generation,
        };
        signed.record(&self.core, from, Claim::Order { order_id: order.id.clone() })?;
        self.order(&order.id)?.ok_or_else(|| Error::internal("order vanished"))
    }

    // ---- certificates ---------------------------------------------------------

    pub fn certificate(&self, serial: &str) -> Result<Option<Certificate>> {
        self.core.store.certificate(serial)
    }

    /// The PEM chain of one of the account's certificates (RFC 8555 §7.4.2):
    /// None if there is no such certificate, Unauthorized if it is another
    /// account's.
    pub fn certificate_chain_of(&self, account: &Account, serial: &str) -> Result<Option<String>> {
        let Some(cert) = self.core.store.certificate(serial)? else { return Ok(None) };
        if cert.account_id.as_deref() != Some(account.id.as_str()) {
            return Err(Error::new(ErrorKind::Unauthorized, "this certificate belongs to another account"));
        }
        self.core.chain_pem(&cert).map(Some)
    }

    /// The suggested renewal window of a certificate (RFC 9773), by its ARI id.
    pub fn renewal_info(&self, cert_id: &str) -> Result<RenewalWindow> {
        self.core.renewal_info(cert_id)
    }

    /// The current CRL (DER) of an issuer.
    pub fn crl(&self, issuer_id: i64) -> Result<Vec<u8>> {
        self.core.crl(issuer_id)
    }

    /// Revokes a certificate we issued (RFC 8555 §7.6).
    pub fn revoke(&self, revoker: Revoker<'_>, cert_der: &[u8], reason: Option<u8>) -> Result<Certificate> {
        let reason = reason.unwrap_or(0);
        // RFC 5280 §5.3.1: 7 is unused; 8 (removeFromCRL) is for delta CRLs;
        // a subscriber may not claim a CA compromise (2) or privilegeWithdrawn/aACompromise (9, 10).
        if !matches!(reason, 0 | 1 | 3 | 4 | 5) {
            return Err(Error::new(
                ErrorKind::BadRevocationReason,
                format!("revocation reason {reason} is not accepted; use 0, 1, 3, 4 or 5"),
            ));
        }
        let info = ca::cert_info(cert_der).map_err(|e| Error::malformed(format!("certificate: {}", e.detail)))?;
        let cert = self
            .core
            .store
            .certificate(&info.serial_hex)?
            .filter(|c| c.der == cert_der)
            .ok_or_else(|| Error::not_found("this server did not issue that certificate"))?;
        match revoker {
            Revoker::CertificateKey(spki) => {
                if spki != info.spki_der.as_slice() {
                    return Err(Error::new(ErrorKind::Unauthorized, "the request is not signed with the certificate's key"));
                }
            }
            Revoker::Account(account_id) => {
                let allowed = cert.account_id.as_deref() == Some(account_id)
                    || self.core.store.account_holds_authorizations(account_id, &cert.identifiers, now())?;
                if !allowed {
                    return Err(Error::new(
                        ErrorKind::Unauthorized,
                        "the account neither holds this certificate nor controls all of its identifiers",
                    ));
                }
            }
        }
        if cert.revoked_at.is_some() || !self.core.store.revoke_certificate(&cert.serial, reason)? {
            return Err(Error::new(ErrorKind::AlreadyRevoked, format!("certificate {} is already revoked", cert.serial)));
        }
        self.core.store.certificate(&cert.serial)?.ok_or_else(|| Error::internal("certificate vanished"))
    }
}

fn list<'a>(ids: impl Iterator<Item = &'a Identifier>) -> String {
    let v: Vec<String> = ids.map(|i| i.value.clone()).collect();
    if v.is_empty() { "nothing".into() } else { v.join(", ") }
}

fn validate_contacts(contact: &[String]) -> Result<()> {
    for c in contact {
        let Some(addr) = c.strip_prefix("mailto:") else {
            return Err(Error::new(ErrorKind::InvalidContact, format!("contact {c:?}: only mailto: URLs are supported")));
        };
        let valid =
            addr.split_once('@').is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.contains(',') && !addr.contains(['?', ' ']));
        if !valid {
            return Err(Error::new(ErrorKind::InvalidContact, format!("contact {c:?} is not a valid email address")));
        }
    }
    Ok(())
}

/// Tests' common start: tenant `corp`, permitted and holding the zone
/// `corp.example`, with one account.
#[cfg(test)]
pub(crate) fn tenant_account_holding_corp_example(a: &crate::Engine) -> Account {
    let tenant = a.registry.create_tenant("corp", Some(&["corp.example".to_string()])).expect("create tenant");
    let (account, _) =
        a.ra.create_account(NewAccount {
            jwk: "{}".into(),
            thumbprint: "t".into(),
            contact: vec![],
            tos_agreed: true,
            eab: Some(ExternalBinding::for_key(&tenant.eab_kid, &tenant.eab_hmac, "t")),
            source: None,
        })
        .expect("create account");
    a.registry
        .add_resource(crate::registry::NewResource {
            tenant: "corp".into(),
            kind: "zone".into(),
            zones: vec!["corp.example".into()],
            ..Default::default()
        })
        .expect("add zone resource");
    account
}

#[cfg(test)]
mod finalize_tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    /// Order, authorization and challenge ids sort by creation (their index
    /// grows at its end) and still carry 72 random bits each.
    #[test]
    fn hot_ids_sort_by_creation_and_stay_unguessable() {
        let dir = tempfile::tempdir().unwrap();
        let e = crate::Engine::open(dir.path(), crate::Config::default()).unwrap();
        let (account, _) =
            e.ra.create_account(NewAccount {
                jwk: "{}".into(),
                thumbprint: "ids".into(),
                contact: vec![],
                tos_agreed: true,
                eab: None,
                source: None,
            })
            .unwrap();
        let mut orders = Vec::new();
        for name in ["a.example", "b.example", "c.example"] {
            std::thread::sleep(std::time::Duration::from_millis(2));
            orders.push(
                e.ra.new_order(&account, NewOrder { identifiers: vec![Identifier::dns(name)], profile: None, replaces: None }).unwrap(),
            );
        }
        let ids: Vec<&str> = orders.iter().map(|o| o.id.as_str()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        let authzs: Vec<String> = orders.iter().map(|o| o.authorizations[0].clone()).collect();
        assert!(authzs.windows(2).all(|w| w[0] < w[1]), "{authzs:?}");
        for id in ids.iter().copied().chain(authzs.iter().map(String::as_str)) {
            // 11 hex digits of milliseconds, then 9 random octets in base64url.
            assert_eq!(id.len(), 23, "{id}");
            assert!(id[..11].bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        }
        let suffixes: std::collections::BTreeSet<&str> = ids.iter().map(|id| &id[11..]).collect();
        assert_eq!(suffixes.len(), 3);
    }

    /// One account cannot fill the database: new orders per hour and pending
    /// authorizations are bounded, with a rateLimited error saying which.
    #[test]
    fn an_account_is_rate_limited() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::Config::default();
        config.rate_limits = crate::config::RateLimits { orders_per_hour: 3, pending_authorizations: 2, ..Default::default() };
        let e = crate::Engine::open(dir.path(), config).unwrap();
        let account = |tp: &str| {
            e.ra.create_account(NewAccount {
                jwk: "{}".into(),
                thumbprint: tp.into(),
                contact: vec![],
                tos_agreed: true,
                eab: None,
                source: None,
            })
            .unwrap()
            .0
        };
        let order = |a: &Account, name: &str| {
            e.ra.new_order(a, NewOrder { identifiers: vec![Identifier::dns(name)], profile: None, replaces: None })
        };
        // Pending authorizations (a public account proves every name by challenge).
        let first = account("first");
        order(&first, "a.example").unwrap();
        order(&first, "b.example").unwrap();
        let err = order(&first, "c.example").unwrap_err();
        assert_eq!(err.kind, ErrorKind::RateLimited, "{err:?}");
        assert!(err.detail.contains("2 pending authorizations"), "{err:?}");
        // Orders an hour: the refused order cost nothing; the third is the last this hour.
        let second = account("second");
        let deactivate_first_pending = || {
            for id in e.ra.orders_of(&first).unwrap() {
                let order = e.ra.order(&id).unwrap().unwrap();
                let authz = e.ra.authorization(&order.authorizations[0]).unwrap().unwrap();
                if authz.status == AuthorizationStatus::Pending {
                    e.ra.deactivate_authorization(&first, &authz).unwrap();
                    return;
                }
            }
        };
        deactivate_first_pending();
        order(&first, "c.example").unwrap();
        deactivate_first_pending();
        let err = order(&first, "d.example").unwrap_err();
        assert_eq!(err.kind, ErrorKind::RateLimited);
        assert!(err.detail.contains("at most 3 orders an hour"), "{err:?}");
        // Each account has its own allowance.
        order(&second, "a.example").unwrap();
    }

    /// Two tenants' permits may share names only when the operator says so:
    /// otherwise both intermediates could certify them.
    #[test]
    fn overlapping_permits_are_refused_unless_allowed() {
        use crate::registry::PermitOverlap;
        let dir = tempfile::tempdir().unwrap();
        let e = crate::Engine::open(dir.path(), crate::Config::default()).unwrap();
        e.registry.create_tenant("b", Some(&["b.example".to_string(), "10.20.0.0/16".to_string(), "deep.z.example".to_string()])).unwrap();
        for permit in ["www.b.example", "b.example", "z.example", "10.20.3.0/24", "10.0.0.0/8"] {
            let err = e.registry.create_tenant("c", Some(&["c.example".to_string(), permit.to_string()])).err().expect(permit);
            assert_eq!(err.conflict, Some(crate::Conflict::PermitsOverlap { tenant: "b".into() }), "{permit}: {err:?}");
            assert!(err.detail.contains("tenant b"), "{}", err.detail);
        }
        assert!(e.registry.tenants().unwrap().iter().all(|t| t.name != "c"), "a refused tenant was written");
        e.registry.create_tenant("c", Some(&["c.example".to_string(), "10.21.0.0/16".to_string()])).unwrap();
        e.registry.create_tenant_with("d", Some(&["shop.b.example".to_string()]), PermitOverlap::Allow).unwrap();
    }

    /// The operator's reuse of valid authorizations (RFC 8555 §7.1.6: orders
    /// may share them): with it, an order for a name the account proved by
    /// challenge lists that authorization and is ready at once (RFC 8555
    /// §7.4), wildcard only for wildcard; another account, or reuse off, gets
    /// a fresh pending one. Deactivating a shared authorization invalidates
    /// every order listing it, and reuse never skips the holder check.
    #[test]
    fn valid_authorizations_are_reused_only_when_the_operator_turns_it_on() {
        for reuse in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let e = crate::Engine::open(dir.path(), Config { reuse_valid_authorizations: reuse, ..Config::default() }).unwrap();
            let account = |tp: &str| {
                e.ra.create_account(NewAccount {
                    jwk: "{}".into(),
                    thumbprint: tp.into(),
                    contact: vec![],
                    tos_agreed: true,
                    eab: None,
                    source: None,
                })
                .unwrap()
                .0
            };
            let order = |a: &Account, names: &[&str]| {
                let identifiers = names.iter().map(|n| Identifier::dns(n)).collect();
                e.ra.new_order(a, NewOrder { identifiers, profile: None, replaces: None })
            };
            let authz = |id: &str| e.ra.authorization(id).unwrap().unwrap();
            let authz_of = |o: &Order, name: &str, wildcard: bool| {
                o.authorizations.iter().find(|id| authz(id).identifier.value == name && authz(id).wildcard == wildcard).cloned().unwrap()
            };
            let prove = |a: &Account, o: &Order| {
                for id in &o.authorizations {
                    let authz = authz(id);
                    if authz.status == AuthorizationStatus::Pending {
                        let ch = authz.challenges.iter().find(|c| c.kind == DNS_01).unwrap().clone();
                        assert!(e.ra.begin_challenge(a, &ch, &authz).unwrap());
                        e.ra.finish_challenge(&ch.id, Ok(())).unwrap();
                    }
                }
            };
            let status = |o: &Order| e.ra.order(&o.id).unwrap().unwrap().status;

            let alice = account("alice");
            let first = order(&alice, &["a.example", "*.w.example"]).unwrap();
            prove(&alice, &first);
            assert_eq!(status(&first), OrderStatus::Ready);
            let a_authz = authz_of(&first, "a.example", false);

            let second = order(&alice, &["a.example"]).unwrap();
            if !reuse {
                assert_eq!(second.status, OrderStatus::Pending);
                assert_ne!(second.authorizations, vec![a_authz.clone()]);
                continue;
            }
            assert_eq!((second.status, &second.authorizations), (OrderStatus::Ready, &vec![a_authz.clone()]));
            let stored = e.ra.order(&second.id).unwrap().unwrap();
            assert_eq!((stored.status, stored.authorizations), (OrderStatus::Ready, vec![a_authz.clone()]));
            assert!(second.expires <= authz(&a_authz).expires);

            // Wildcard for wildcard only; the base name is proven afresh.
            assert_eq!(order(&alice, &["*.w.example"]).unwrap().status, OrderStatus::Ready);
            assert_eq!(order(&alice, &["w.example"]).unwrap().status, OrderStatus::Pending);
            // Another account proves its own names.
            let bob = account("bob");
            assert_eq!(order(&bob, &["a.example"]).unwrap().status, OrderStatus::Pending);

            // A mixed order: the new authorization first, the reused one after;
            // ready once the new one is proven, and it issues.
            let mixed = order(&alice, &["a.example", "b.example"]).unwrap();
            assert_eq!(mixed.status, OrderStatus::Pending);
            assert_eq!(mixed.authorizations.len(), 2);
            assert_eq!(mixed.authorizations[1], a_authz);
            assert_eq!(e.ra.order(&mixed.id).unwrap().unwrap().authorizations, mixed.authorizations);
            prove(&alice, &mixed);
            let mixed = e.ra.order(&mixed.id).unwrap().unwrap();
            assert_eq!(mixed.status, OrderStatus::Ready);
            let key = KeyPair::generate().unwrap();
            let csr =
                CertificateParams::new(vec!["a.example".to_string(), "b.example".to_string()]).unwrap().serialize_request(&key).unwrap();
            assert_eq!(e.ra.finalize(&alice, &mixed, csr.der(), b"account key").unwrap().status, OrderStatus::Valid);

            // Reuse never skips the holder check: once another tenant holds the name, it is refused.
            e.registry.create_tenant("t", Some(&["a.example".to_string()])).unwrap();
            let held = e
                .registry
                .add_resource(crate::registry::NewResource {
                    tenant: "t".into(),
                    kind: "vm".into(),
                    names: vec!["a.example".into()],
                    ..Default::default()
                })
                .unwrap();
            assert_eq!(order(&alice, &["a.example"]).unwrap_err().kind, ErrorKind::RejectedIdentifier);
            e.registry.release_resource(&held.id).unwrap();

            // Deactivated, it invalidates the ready order that shares it, and is not reused again.
            e.ra.deactivate_authorization(&alice, &authz(&a_authz)).unwrap();
            assert_eq!(status(&second), OrderStatus::Invalid);
            assert_eq!(status(&first), OrderStatus::Invalid);
            assert_eq!(order(&alice, &["a.example"]).unwrap().status, OrderStatus::Pending);
        }
    }

    /// A wildcard covers every name under its base: while another tenant
    /// holds a name (or a zone) under it, nobody else gets the wildcard.
    #[test]
    fn a_wildcard_over_another_tenants_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = crate::Engine::open(dir.path(), crate::Config::default()).unwrap();
        e.registry.create_tenant("b", Some(&["b.example".to_string()])).unwrap();
        let held = e
            .registry
            .add_resource(crate::registry::NewResource {
                tenant: "b".into(),
                kind: "vm".into(),
                names: vec!["www.b.example".into()],
                ..Default::default()
            })
            .unwrap();
        let new = |thumbprint: &str| NewAccount {
            jwk: "{}".into(),
            thumbprint: thumbprint.into(),
            contact: vec![],
            tos_agreed: true,
            eab: None,
            source: None,
        };
        let (public, _) = e.ra.create_account(new("public-account")).unwrap();
        assert_eq!(public.tenant, PUBLIC_TENANT);
        let order = |names: &[&str]| {
            e.ra.new_order(
                &public,
                NewOrder { identifiers: names.iter().map(|n| Identifier::dns(n)).collect(), profile: None, replaces: None },
            )
        };
        let err = order(&["*.b.example"]).unwrap_err();
        assert_eq!(err.kind, ErrorKind::RejectedIdentifier, "{err:?}");
        assert!(err.detail.contains("covers a name held by another tenant"), "{err:?}");
        assert_eq!(order(&["www.b.example"]).unwrap_err().kind, ErrorKind::RejectedIdentifier);
        // A sibling name nobody holds is the public tenant's to prove by challenge.
        assert_eq!(order(&["other.b.example"]).unwrap().status, OrderStatus::Pending);
        // Once released, the wildcard is free again.
        e.registry.release_resource(&held.id).unwrap();
        assert_eq!(order(&["*.b.example"]).unwrap().status, OrderStatus::Pending);
    }

    /// Finalizes racing for one order, in one process and in two (two
    /// authorities on one data directory): exactly one certificate is
    /// recorded and returned, and every other finalize fails.
    #[test]
    fn racing_finalizes_issue_exactly_one_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let a = crate::Engine::open(dir.path(), Config::default()).unwrap();
        let b = crate::Engine::open(dir.path(), Config::default()).unwrap();
        let account = tenant_account_holding_corp_example(&a);
        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::new(vec!["www.corp.example".to_string()]).unwrap().serialize_request(&key).unwrap();
        for _ in 0..5 {
            let order = a
                .ra
                .new_order(&account, NewOrder { identifiers: vec![Identifier::dns("www.corp.example")], profile: None, replaces: None })
                .unwrap();
            assert_eq!(order.status, OrderStatus::Ready);
            let results: Vec<Result<Order>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..6)
                    .map(|i| {
                        let (auth, order, account, csr) = (if i % 2 == 0 { &a } else { &b }, &order, &account, csr.der());
                        s.spawn(move || auth.ra.finalize(account, order, csr, b"account key"))
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let won: Vec<&Order> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
            assert_eq!(won.len(), 1, "{results:?}");
            for e in results.iter().filter_map(|r| r.as_ref().err()) {
                assert_eq!(e.kind, ErrorKind::OrderNotReady, "{e:?}");
            }
            let recorded: Vec<String> = a
                .lifecycle
                .certificates(Some("corp"), None, 1000)
                .unwrap()
                .into_iter()
                .filter(|(c, _)| c.order_id.as_ref() == Some(&order.id))
                .map(|(c, _)| c.serial)
                .collect();
            assert_eq!(recorded, vec![won[0].certificate.clone().unwrap()]);
            let stored = a.ra.order(&order.id).unwrap().unwrap();
            assert_eq!((stored.status, stored.certificate), (OrderStatus::Valid, won[0].certificate.clone()));
        }
    }
}
