//! A tenant's intermediate that changes: `tenant update` (new permits, so a
//! new name-constrained intermediate), `tenant rotate` (a new key, the same
//! permits) and the scheduler's rotation of intermediates near their end.
//!
//! Each makes a new intermediate (its key through the CA custody, so an HSM
//! holds it as at create) with a subject of its own, and swaps it in one
//! compare-and-swap transaction: only if the tenant's issuer is still the one
//! read, so two servers never both swap. The old intermediate is not revoked:
//! its leaves verify until they expire, its CRL is still published, and the
//! renewal sweep renews them from the tenant's current intermediate (the
//! issuance path reads the tenant, and so its issuer, from the store each time).

use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use super::removal::live_tenant;
use super::service::permits_apart;
use super::{PermitOverlap, Registry, ResourceState};
use crate::PUBLIC_TENANT;
use crate::ca::{self, Permit};
use crate::core::Core;
use crate::error::{Error, ErrorKind, Result};
use crate::identifier::Identifier;
use crate::lifecycle::Lifecycle;
use crate::model::{Tenant, UnixTime, now};
use crate::store::{HeldRule, IntermediateSwap, IntermediateSwapped};

/// Resources (and their names) listed at most in a refusal.
const LISTED_MAX: usize = 10;

/// What `tenant update` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantUpdated {
    /// The tenant.
    pub tenant: String,
    /// Its permits from now on.
    pub permits: Vec<String>,
    /// Whether anything changed (the same permits change nothing).
    pub changed: bool,
    /// Its intermediate now.
    pub issuer_id: i64,
    /// The intermediate it had; its leaves inside the new permits stay valid.
    pub previous_issuer_id: i64,
    /// The new intermediate's notAfter.
    pub not_after: UnixTime,
    /// Serials of the certificates revoked (privilegeWithdrawn) for naming
    /// what the new permits leave out.
    pub revoked: Vec<String>,
    /// Notices of those revocations queued for the resources' webhooks.
    pub notices: usize,
}

/// What `tenant rotate` (or the scheduler) did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantRotated {
    /// The tenant.
    pub tenant: String,
    /// Its intermediate now.
    pub issuer_id: i64,
    /// The one replaced: not revoked, its leaves verify until they expire.
    pub previous_issuer_id: i64,
    /// The new intermediate's notAfter.
    pub not_after: UnixTime,
}

/// One pass of the scheduler's rotation.
#[derive(Debug, Clone, Default)]
pub struct RotationReport {
    /// The intermediates replaced.
    pub rotated: Vec<TenantRotated>,
    /// Replaced meanwhile by another server (its compare-and-swap won).
    pub raced: usize,
    /// Near their end, but the root ends within the window too: a new
    /// intermediate could not last longer (a new root is the operator's).
    pub blocked: usize,
    /// Failed (logged); tried again at the next pass.
    pub failed: usize,
}

impl Registry {
    /// Gives the tenant new permits: a new intermediate constrained to them,
    /// swapped in with the permits in one transaction that also revokes
    /// (privilegeWithdrawn) every unexpired certificate of the tenant naming
    /// something the new permits leave out, whatever its issuer. Refused while
    /// the tenant holds resources outside them (release or transfer them
    /// first), and, unless `overlap` allows it, when they overlap another
    /// tenant's. The same permits change nothing.
    pub fn update_tenant(&self, name: &str, permits: &[String], overlap: PermitOverlap) -> Result<TenantUpdated> {
        let tenant = live_tenant(&*self.core.store, name)?;
        if tenant.name == PUBLIC_TENANT {
            return Err(Error::malformed("the public tenant's intermediate is unconstrained: it has no permits to change"));
        }
        if permits.is_empty() {
            return Err(Error::malformed("a tenant needs at least one permitted domain or address range"));
        }
        let parsed = permits.iter().map(|p| Permit::parse(p)).collect::<Result<Vec<_>>>()?;
        let mut normalized: Vec<String> = Vec::with_capacity(parsed.len());
        for p in parsed.iter().map(|p| p.to_string()) {
            if !normalized.contains(&p) {
                normalized.push(p);
            }
        }
        let mut same = normalized.clone();
        let mut had = tenant.permits.clone();
        same.sort();
        had.sort();
        if same == had {
            let not_after = intermediate_not_after(&self.core, tenant.issuer_id)?;
            return Ok(TenantUpdated {
                tenant: tenant.name,
                permits: tenant.permits,
                changed: false,
                issuer_id: tenant.issuer_id,
                previous_issuer_id: tenant.issuer_id,
                not_after,
                revoked: Vec::new(),
                notices: 0,
            });
        }
        // Checked here for a prompt answer, and again inside the swap's transaction.
        let held_inside = held_inside(name, &parsed);
        let live: Vec<(String, Vec<Identifier>)> = self
            .core
            .store
            .resources(Some(name))?
            .into_iter()
            .filter(|r| r.state != ResourceState::Released)
            .map(|r| {
                let ids = r.moved_to(name).identifiers();
                (r.id, ids)
            })
            .collect();
        held_inside(&live)?;
        let apart = permits_apart(name, &parsed);
        let anyone = |_: &[Tenant]| Ok(());
        let tenants_rule: &dyn Fn(&[Tenant]) -> Result<()> = match overlap {
            PermitOverlap::Refuse => &apart,
            PermitOverlap::Allow => &anyone,
        };
        let withdrawn = |ids: &[Identifier]| ids.iter().any(|id| !ca::permitted(Some(&parsed), id));
        let note = format!("tenant {name}'s permits no longer cover it");
        let (swapped, not_after) = replace(
            &self.core,
            &tenant,
            Replacement {
                permits: Some(&parsed),
                normalized: &normalized,
                tenants_rule,
                held_rule: &held_inside,
                withdrawn: &withdrawn,
                note: &note,
                days: ca::INTERMEDIATE_DAYS,
            },
        )?;
        metrics::counter!(crate::observe::INTERMEDIATES_REPLACED, "trigger" => "update").increment(1);
        tracing::info!(
            tenant = name,
            issuer = swapped.issuer_id,
            previous = tenant.issuer_id,
            revoked = swapped.revoked.len(),
            permits = %normalized.join(","),
            "tenant permits changed; new intermediate"
        );
        Ok(TenantUpdated {
            tenant: tenant.name,
            permits: normalized,
            changed: true,
            issuer_id: swapped.issuer_id,
            previous_issuer_id: tenant.issuer_id,
            not_after,
            revoked: swapped.revoked,
            notices: swapped.notices,
        })
    }

    /// Replaces the tenant's intermediate with a new one (a new key, the same
    /// permits). The old one is not revoked: its leaves verify until they
    /// expire and the renewal sweep renews them from the new one.
    pub fn rotate_intermediate(&self, name: &str) -> Result<TenantRotated> {
        let tenant = live_tenant(&*self.core.store, name)?;
        let rotated = rotate(&self.core, &tenant, ca::INTERMEDIATE_DAYS)?;
        metrics::counter!(crate::observe::INTERMEDIATES_REPLACED, "trigger" => "rotate").increment(1);
        tracing::info!(tenant = name, issuer = rotated.issuer_id, previous = rotated.previous_issuer_id, "intermediate rotated");
        Ok(rotated)
    }
}

impl Lifecycle {
    /// The scheduler's pass: rotates every live tenant's intermediate that
    /// expires within `intermediate_rotate_before`. Safe with several servers:
    /// a swap another server made first is counted as `raced`, not redone.
    pub fn rotate_expiring_intermediates(&self) -> Result<RotationReport> {
        rotate_expiring(&self.core, now(), ca::INTERMEDIATE_DAYS)
    }
}

/// The counter of intermediates replaced, by what replaced them (update, rotate, schedule).
fn rotate_expiring(core: &Core, at: UnixTime, days: i64) -> Result<RotationReport> {
    let window = core.config.lifecycle.intermediate_rotate_before.as_secs().min(i64::MAX as u64) as i64;
    let horizon = at.saturating_add(window);
    let root_not_after = unix(ca::cert_info(&core.root.cert_der)?.not_after);
    let mut report = RotationReport::default();
    for current in core.store.current_intermediates_ending(horizon)? {
        let not_after = match current.not_after {
            Some(t) => t,
            None => match ca::cert_info(&current.cert_der) {
                Ok(info) => {
                    // Kept, so the next pass selects the row only near its end.
                    let not_after = unix(info.not_after);
                    core.store.set_issuer_not_after(current.issuer_id, not_after)?;
                    not_after
                }
                Err(e) => {
                    tracing::error!(tenant = %current.tenant, issuer = current.issuer_id, error = %e, "cannot read the intermediate's validity");
                    report.failed += 1;
                    continue;
                }
            },
        };
        if not_after > horizon {
            continue;
        }
        if root_not_after <= horizon {
            // A new intermediate ends with the root: rotating would only repeat each pass.
            tracing::warn!(tenant = %current.tenant, issuer = current.issuer_id, "the intermediate expires soon, but so does the root: make a new root");
            report.blocked += 1;
            continue;
        }
        let Some(read) = core.store.tenant(&current.tenant)? else { continue };
        // The swap is conditional on the issuer judged near its end.
        let tenant = Tenant { issuer_id: current.issuer_id, ..read };
        match rotate(core, &tenant, days) {
            Ok(r) => {
                metrics::counter!(crate::observe::INTERMEDIATES_REPLACED, "trigger" => "schedule").increment(1);
                tracing::info!(
                    tenant = %r.tenant,
                    issuer = r.issuer_id,
                    previous = r.previous_issuer_id,
                    previous_not_after = not_after,
                    "intermediate rotated before it expires"
                );
                report.rotated.push(r);
            }
            Err(e) if e.kind == ErrorKind::Conflict => {
                tracing::debug!(tenant = %current.tenant, detail = %e.detail, "intermediate rotated elsewhere meanwhile");
                report.raced += 1;
            }
            Err(e) => {
                tracing::error!(tenant = %current.tenant, error = %e, "intermediate rotation failed; tried again next pass");
                report.failed += 1;
            }
        }
    }
    Ok(report)
}

/// A new intermediate with the tenant's permits, swapped in if its issuer is
/// still `tenant.issuer_id`.
fn rotate(core: &Core, tenant: &Tenant, days: i64) -> Result<TenantRotated> {
    let parsed = tenant.permits.iter().map(|p| Permit::parse(p)).collect::<Result<Vec<_>>>()?;
    // The public tenant's intermediate is unconstrained; any other has permits.
    let permits = if tenant.name == PUBLIC_TENANT && parsed.is_empty() { None } else { Some(parsed.as_slice()) };
    let (swapped, not_after) = replace(
        core,
        tenant,
        Replacement {
            permits,
            normalized: &tenant.permits,
            tenants_rule: &|_| Ok(()),
            held_rule: &|_| Ok(()),
            withdrawn: &|_| false,
            note: "",
            days,
        },
    )?;
    Ok(TenantRotated { tenant: tenant.name.clone(), issuer_id: swapped.issuer_id, previous_issuer_id: tenant.issuer_id, not_after })
}

/// What replaces an intermediate, and what the swap checks and revokes.
struct Replacement<'a> {
    permits: Option<&'a [Permit]>,
    normalized: &'a [String],
    tenants_rule: &'a dyn Fn(&[Tenant]) -> Result<()>,
    held_rule: HeldRule<'a>,
    withdrawn: &'a dyn Fn(&[Identifier]) -> bool,
    note: &'a str,
    /// The new intermediate's validity (tests make short ones).
    days: i64,
}

/// Makes the tenant's next intermediate and swaps it in; (the swap, its notAfter).
fn replace(core: &Core, tenant: &Tenant, r: Replacement<'_>) -> Result<(IntermediateSwapped, UnixTime)> {
    // Checked before the key is made as well as in the swap: a key made in an
    // HSM for a change that is then refused would stay in the token.
    (r.tenants_rule)(&core.store.tenants()?)?;
    let generation = core.store.intermediate_count(&tenant.name)? + 1;
    let key = core.ca_keys.new_ca_key(&ca::tenant_ca_name(&tenant.name, generation))?;
    let intermediate = ca::new_tenant_intermediate(&core.root, &tenant.name, generation, r.permits, key, r.days)?;
    let not_after = unix(ca::cert_info(&intermediate.cert_der)?.not_after);
    let key_blob = core.ca_keys.key_blob(&intermediate.key)?;
    let swapped = core.store.swap_intermediate(&IntermediateSwap {
        tenant: &tenant.name,
        expected_issuer: tenant.issuer_id,
        permits: r.normalized,
        cert_der: &intermediate.cert_der,
        key: &key_blob,
        not_after,
        tenants_rule: r.tenants_rule,
        held_rule: r.held_rule,
        withdrawn: r.withdrawn,
        note: r.note,
    })?;
    Ok((swapped, not_after))
}

/// Refuses while a live resource of the tenant holds something outside
/// `permits`, naming the first few.
fn held_inside<'a>(tenant: &'a str, permits: &'a [Permit]) -> impl Fn(&[(String, Vec<Identifier>)]) -> Result<()> + 'a {
    move |held| {
        let outside: Vec<(&str, Vec<&str>)> = held
            .iter()
            .filter_map(|(id, ids)| {
                let out: Vec<&str> = ids.iter().filter(|i| !ca::permitted(Some(permits), i)).map(|i| i.value.as_str()).collect();
                (!out.is_empty()).then_some((id.as_str(), out))
            })
            .collect();
        if outside.is_empty() {
            return Ok(());
        }
        let listed: Vec<String> = outside
            .iter()
            .take(LISTED_MAX)
            .map(|(id, names)| {
                let shown = names.iter().take(LISTED_MAX).copied().collect::<Vec<_>>().join(", ");
                let more = if names.len() > LISTED_MAX { format!(" and {} more", names.len() - LISTED_MAX) } else { String::new() };
                format!("{id} ({shown}{more})")
            })
            .collect();
        let more = if outside.len() > LISTED_MAX { format!(" and {} more", outside.len() - LISTED_MAX) } else { String::new() };
        Err(Error::conflict(
            crate::Conflict::ResourceState,
            format!(
                "tenant {tenant} holds resources outside the new permits: {}{more}; release them or transfer them to another tenant first",
                listed.join("; ")
            ),
        ))
    }
}

/// The stored (or read) notAfter of an issuer.
fn intermediate_not_after(core: &Core, issuer_id: i64) -> Result<UnixTime> {
    let issuer = core.store.issuer(issuer_id)?.ok_or_else(|| Error::internal(format!("issuer {issuer_id} is missing")))?;
    Ok(unix(ca::cert_info(&issuer.cert_der)?.not_after))
}

fn unix(t: std::time::SystemTime) -> UnixTime {
    t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs().min(i64::MAX as u64) as i64
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair};
    use x509_parser::prelude::FromDer as _;

    use super::*;
    use crate::Engine;
    use crate::config::{Config, DatabaseUrl};
    use crate::model::{Account, RenewalState};
    use crate::ra::{ExternalBinding, NewAccount, NewOrder};
    use crate::registry::NewResource;

    /// An engine on SQLite, and one on PostgreSQL when a test cluster is configured.
    fn engines(config: Config) -> Vec<(tempfile::TempDir, Engine)> {
        let mut out = Vec::new();
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path(), config.clone()).unwrap();
        out.push((dir, e));
        if let Some(url) = crate::store::pg::testdb::fresh() {
            let dir = tempfile::tempdir().unwrap();
            let e = Engine::open(dir.path(), Config { database: Some(DatabaseUrl::parse(&url).unwrap()), ..config }).unwrap();
            out.push((dir, e));
        }
        out
    }

    /// Tenant `corp` (corp.example, shop.example) holding the zone
    /// corp.example, and an account of it.
    fn corp(a: &Engine) -> Account {
        let t = a.registry.create_tenant("corp", Some(&["corp.example".to_string(), "shop.example".to_string()])).unwrap();
        let (account, _) =
            a.ra.create_account(NewAccount {
                jwk: "{}".into(),
                thumbprint: "t".into(),
                contact: vec![],
                tos_agreed: true,
                eab: Some(ExternalBinding::for_key(&t.eab_kid, &t.eab_hmac, "t")),
                source: None,
            })
            .unwrap();
        a.registry
            .add_resource(NewResource {
                tenant: "corp".into(),
                kind: "zone".into(),
                zones: vec!["corp.example".into()],
                ..Default::default()
            })
            .unwrap();
        account
    }

    /// A certificate for `names` through ACME; names the registry does not
    /// show held are proven by a challenge (recorded valid here).
    fn issue(a: &Engine, account: &Account, names: &[&str]) -> Result<crate::model::Certificate> {
        let identifiers: Vec<Identifier> = names.iter().map(|n| Identifier::dns(n)).collect();
        let order = a.ra.new_order(account, NewOrder { identifiers, profile: None, replaces: None })?;
        for id in &order.authorizations {
            let authz = a.ra.authorization(id)?.unwrap();
            if authz.status == crate::model::AuthorizationStatus::Pending {
                let ch = authz.challenges[0].clone();
                assert!(a.ra.begin_challenge(account, &ch, &authz)?);
                a.ra.finish_challenge(&ch.id, Ok(()))?;
            }
        }
        let order = a.ra.order(&order.id)?.unwrap();
        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap().serialize_request(&key).unwrap();
        let done = a.ra.finalize(account, &order, csr.der(), b"account key")?;
        Ok(a.ra.certificate(&done.certificate.unwrap())?.unwrap())
    }

    fn subject_and_key(a: &Engine, issuer_id: i64) -> (Vec<u8>, Vec<u8>) {
        let rec = a.core.store.issuer(issuer_id).unwrap().unwrap();
        let (_, c) = x509_parser::certificate::X509Certificate::from_der(&rec.cert_der).unwrap();
        (c.subject().as_raw().to_vec(), c.public_key().raw.to_vec())
    }

    /// Update: a new issuer with a subject of its own and the new permits;
    /// exactly the certificates naming what they leave out are revoked
    /// (privilegeWithdrawn, renewal stopped, on the old issuer's CRL);
    /// refused while a resource lies outside; new certificates come from the
    /// new intermediate; the same permits change nothing.
    #[test]
    fn update_swaps_issuer_and_permits_and_revokes_only_what_it_leaves_out() {
        for (_dir, a) in engines(Config::default()) {
            let account = corp(&a);
            let old = a.registry.tenant("corp").unwrap().unwrap();
            let held = issue(&a, &account, &["www.corp.example"]).unwrap();
            let proven = issue(&a, &account, &["www.shop.example"]).unwrap();
            let both = issue(&a, &account, &["api.corp.example", "api.shop.example"]).unwrap();

            let shop = a
                .registry
                .add_resource(NewResource {
                    tenant: "corp".into(),
                    kind: "vm".into(),
                    names: vec!["db.shop.example".into()],
                    ..Default::default()
                })
                .unwrap();
            let refused = a.registry.update_tenant("corp", &["corp.example".into()], PermitOverlap::Refuse).unwrap_err();
            assert_eq!(refused.kind, ErrorKind::Conflict, "{refused:?}");
            assert!(refused.detail.contains(&shop.id) && refused.detail.contains("db.shop.example"), "{}", refused.detail);
            assert!(refused.detail.contains("release them or transfer them"), "{}", refused.detail);
            let unchanged = a.registry.tenant("corp").unwrap().unwrap();
            assert_eq!((unchanged.issuer_id, &unchanged.permits), (old.issuer_id, &old.permits));
            assert_eq!(a.core.store.intermediate_count("corp").unwrap(), 1);
            a.registry.release_resource(&shop.id).unwrap();

            // Overlapping another tenant's permits is refused unless allowed.
            a.registry.create_tenant("other", Some(&["other.example".to_string()])).unwrap();
            let overlap =
                a.registry.update_tenant("corp", &["corp.example".into(), "x.other.example".into()], PermitOverlap::Refuse).unwrap_err();
            assert!(matches!(overlap.conflict, Some(crate::Conflict::PermitsOverlap { .. })), "{overlap:?}");

            let updated = a.registry.update_tenant("corp", &["corp.example".into()], PermitOverlap::Refuse).unwrap();
            assert!(updated.changed);
            assert_eq!(updated.permits, vec!["corp.example".to_string()]);
            assert_eq!(updated.previous_issuer_id, old.issuer_id);
            assert_ne!(updated.issuer_id, old.issuer_id);
            let mut revoked = updated.revoked.clone();
            revoked.sort();
            let mut expected = vec![proven.serial.clone(), both.serial.clone()];
            expected.sort();
            assert_eq!(revoked, expected);
            let now_tenant = a.registry.tenant("corp").unwrap().unwrap();
            assert_eq!((now_tenant.issuer_id, now_tenant.permits.clone()), (updated.issuer_id, vec!["corp.example".to_string()]));

            for serial in &expected {
                let (c, life) = a.lifecycle.certificate_record(serial).unwrap().unwrap();
                assert_eq!(c.revocation_reason, Some(9), "{serial}");
                assert!(matches!(life.renewal, RenewalState::Stopped), "{serial}: {:?}", life.renewal);
            }
            let (c, _) = a.lifecycle.certificate_record(&held.serial).unwrap().unwrap();
            assert!(c.revoked_at.is_none(), "a certificate inside the new permits stays valid");
            let listed: Vec<String> =
                a.core.store.revoked_certificates(old.issuer_id, now()).unwrap().into_iter().map(|r| r.serial).collect();
            assert_eq!(listed.len(), 2, "{listed:?}");
            assert!(a.core.crl(old.issuer_id).is_ok());

            let (old_subject, old_key) = subject_and_key(&a, old.issuer_id);
            let (new_subject, new_key) = subject_and_key(&a, updated.issuer_id);
            assert_ne!(old_subject, new_subject, "each generation has a subject of its own");
            assert_ne!(old_key, new_key);

            let fresh = issue(&a, &account, &["new.corp.example"]).unwrap();
            assert_eq!(fresh.issuer_id, updated.issuer_id, "new certificates come from the new intermediate");
            assert!(issue(&a, &account, &["www.shop.example"]).is_err(), "a name the permits left out is refused");

            let again = a.registry.update_tenant("corp", &["corp.example".into()], PermitOverlap::Refuse).unwrap();
            assert!(!again.changed && again.issuer_id == updated.issuer_id && again.revoked.is_empty(), "{again:?}");
            assert_eq!(
                a.registry.update_tenant("nobody", &["x.example".into()], PermitOverlap::Refuse).unwrap_err().kind,
                ErrorKind::NotFound
            );
            assert!(a.registry.update_tenant("corp", &[], PermitOverlap::Refuse).is_err());
            assert!(a.registry.update_tenant(PUBLIC_TENANT, &["x.example".into()], PermitOverlap::Refuse).is_err());
        }
    }

    /// Rotate: a new key and subject, the same permits; the old leaves stay
    /// valid and the sweep renews them from the new intermediate. A swap
    /// against an issuer read before another swap loses cleanly.
    #[test]
    fn rotate_keeps_permits_and_old_certificates_and_a_stale_swap_loses() {
        let mut config = Config::default();
        config.lifecycle.renewal_fraction = 1.0;
        for (_dir, a) in engines(config.clone()) {
            let account = corp(&a);
            let old = a.registry.tenant("corp").unwrap().unwrap();
            let leaf = issue(&a, &account, &["www.corp.example"]).unwrap();

            let rotated = a.registry.rotate_intermediate("corp").unwrap();
            assert_eq!(rotated.previous_issuer_id, old.issuer_id);
            let now_tenant = a.registry.tenant("corp").unwrap().unwrap();
            assert_eq!(now_tenant.permits, old.permits);
            assert_eq!(now_tenant.issuer_id, rotated.issuer_id);
            assert_ne!(subject_and_key(&a, old.issuer_id), subject_and_key(&a, rotated.issuer_id));
            let (c, _) = a.lifecycle.certificate_record(&leaf.serial).unwrap().unwrap();
            assert!(c.revoked_at.is_none(), "rotation revokes nothing");
            assert!(rotated.not_after > now() + 4 * 365 * 86400);

            // The stale read (the old issuer) loses, and leaves nothing behind.
            let err = rotate(&a.core, &old, ca::INTERMEDIATE_DAYS).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Conflict, "{err:?}");
            assert_eq!(a.core.store.intermediate_count("corp").unwrap(), 2);
            assert_eq!(a.registry.tenant("corp").unwrap().unwrap().issuer_id, rotated.issuer_id);

            // The sweep renews the old intermediate's leaf from the current one.
            std::thread::sleep(std::time::Duration::from_millis(1100));
            let report = a.lifecycle.sweep_renewals().unwrap();
            assert_eq!(report.renewed, 1, "{report:?}");
            let successor = a
                .lifecycle
                .certificates(Some("corp"), None, 10)
                .unwrap()
                .into_iter()
                .find(|(_, l)| l.predecessor.as_deref() == Some(leaf.serial.as_str()))
                .unwrap();
            assert_eq!(successor.0.issuer_id, rotated.issuer_id);
        }
    }

    /// The scheduler's pass rotates only the intermediate within the window,
    /// once; a leaf asked to outlive a short intermediate ends with it.
    #[test]
    fn automatic_rotation_picks_only_the_intermediate_near_its_end() {
        for (dir, a) in engines(Config::default()) {
            let account = corp(&a);
            a.registry.create_tenant("other", Some(&["other.example".to_string()])).unwrap();
            let first = a.lifecycle.rotate_expiring_intermediates().unwrap();
            assert!(first.rotated.is_empty() && first.failed == 0, "{first:?}");

            // corp's intermediate now ends in a day: inside the 90-day window.
            let corp_tenant = a.registry.tenant("corp").unwrap().unwrap();
            let short = rotate(&a.core, &corp_tenant, 1).unwrap();
            assert!(short.not_after <= now() + 86400);
            std::thread::sleep(std::time::Duration::from_millis(1100));
            let leaf = issue(&a, &account, &["www.corp.example"]).unwrap();
            assert_eq!(leaf.issuer_id, short.issuer_id);
            assert!(leaf.not_after <= short.not_after, "the leaf ends with its issuer");
            let (_, life) = a.lifecycle.certificate_record(&leaf.serial).unwrap().unwrap();
            assert!(life.renew_at.unwrap() < leaf.not_after);

            let other_before = a.registry.tenant("other").unwrap().unwrap().issuer_id;
            let pass = a.lifecycle.rotate_expiring_intermediates().unwrap();
            assert_eq!(pass.rotated.len(), 1, "{pass:?}");
            assert_eq!(pass.rotated[0].tenant, "corp");
            assert_eq!(pass.rotated[0].previous_issuer_id, short.issuer_id);
            assert_eq!(a.registry.tenant("other").unwrap().unwrap().issuer_id, other_before);
            let again = a.lifecycle.rotate_expiring_intermediates().unwrap();
            assert!(again.rotated.is_empty(), "{again:?}");
            let names: std::collections::BTreeSet<Vec<u8>> = [corp_tenant.issuer_id, short.issuer_id, pass.rotated[0].issuer_id]
                .into_iter()
                .map(|id| subject_and_key(&a, id).0)
                .collect();
            assert_eq!(names.len(), 3, "three generations, three subjects");

            // Two servers' passes at once (two engines on one store): one rotation.
            let current = a.registry.tenant("corp").unwrap().unwrap();
            rotate(&a.core, &current, 1).unwrap();
            let generations = a.core.store.intermediate_count("corp").unwrap();
            let b = Engine::open(dir.path(), a.core.config.clone()).unwrap();
            let (ra, rb) = std::thread::scope(|s| {
                let ha = s.spawn(|| a.lifecycle.rotate_expiring_intermediates().unwrap());
                let hb = s.spawn(|| b.lifecycle.rotate_expiring_intermediates().unwrap());
                (ha.join().unwrap(), hb.join().unwrap())
            });
            assert_eq!(ra.rotated.len() + rb.rotated.len(), 1, "{ra:?} {rb:?}");
            assert_eq!(ra.failed + rb.failed, 0, "{ra:?} {rb:?}");
            assert_eq!(a.core.store.intermediate_count("corp").unwrap(), generations + 1);
        }
    }
}
