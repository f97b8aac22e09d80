//! Removing a tenant (`tenure tenant remove`, admin `DELETE /v1/tenants/{name}`).
//!
//! The registry is the home: a tenant is the registry's, and what removal
//! changes is all in the store but the HSM tokens. Those are zeroized after
//! the transaction commits, through the pool's own release path (a token
//! cannot join a database transaction); the tenant is removed by then, so no
//! new token can be allocated to it meanwhile. A token whose release failed
//! is named in the result, and running removal again finishes it: the store
//! part changes only what is left, so nothing is revoked or counted twice.
//!
//! A removed tenant's row stays, so the audit log, resource events and
//! certificates keep its name; the name is never given to a new tenant.

use serde::Serialize;

use crate::PUBLIC_TENANT;
use crate::error::{Conflict, Error, Result};
use crate::hsm::{Custody, SlotState};
use crate::model::{Tenant, UnixTime};
use crate::registry::Registry;
use crate::store::{Storage, TenantRemoval};

/// RFC 5280 §5.3.1 reason 5: the tenant ceased operating here.
pub const CESSATION_OF_OPERATION: u8 = 5;

/// What `Registry::remove_tenant` did.
#[derive(Debug, Clone, Serialize)]
pub struct TenantRemoved {
    /// The tenant.
    pub tenant: String,
    /// What the store's transaction changed (this run's changes only).
    #[serde(flatten)]
    pub removal: TenantRemoval,
    /// The root's issuer id: its CRL (`/crl/{id}`) lists the revoked intermediates.
    pub root_issuer: i64,
    /// HSM tokens zeroized and returned to the pool by this run.
    pub hsm_slots_released: Vec<String>,
    /// HSM tokens whose release failed: removal again retries them.
    pub hsm_slot_failures: Vec<HsmSlotFailure>,
}

/// An HSM token removal could not release.
#[derive(Debug, Clone, Serialize)]
pub struct HsmSlotFailure {
    /// The slot.
    pub slot: String,
    /// Why.
    pub error: String,
}

impl TenantRemoved {
    /// Whether anything is left to finish (a token not yet released).
    pub fn complete(&self) -> bool {
        self.hsm_slot_failures.is_empty()
    }
}

impl Registry {
    /// Removes a tenant: its resources released, its certificates and every
    /// intermediate revoked (cessationOfOperation; the root's CRL lists the
    /// intermediates), its accounts deactivated, its EAB keys, plugin,
    /// plugin-signing keys and token deleted, all in one transaction; then
    /// its HSM tokens zeroized and returned to the pool. Running it again on
    /// a removed tenant finishes what was left. The public tenant (where
    /// accounts without EAB go) cannot be removed.
    pub fn remove_tenant(&self, name: &str) -> Result<TenantRemoved> {
        if name == PUBLIC_TENANT {
            return Err(Error::malformed("the public tenant cannot be removed: accounts registered without EAB belong to it"));
        }
        let removal = self.core.store.remove_tenant(name, CESSATION_OF_OPERATION)?;
        tracing::info!(
            tenant = name,
            resources = removal.resources_released,
            certificates = removal.certificates_revoked,
            intermediates = removal.intermediates_revoked,
            accounts = removal.accounts_deactivated,
            again = removal.already_removed,
            "tenant removed"
        );
        let custody = Custody { core: self.core.clone() };
        let (mut released, mut failures) = (Vec::new(), Vec::new());
        let slots = self.core.store.hsm_slots()?;
        for slot in slots.iter().filter(|s| s.tenant.as_deref() == Some(name) && s.state != SlotState::Free) {
            match custody.hsm_release(&slot.id, None) {
                Ok(_) => released.push(slot.id.clone()),
                // Another process (a server's maintenance) freed it meanwhile.
                Err(_) if self.core.store.hsm_slot(&slot.id)?.is_some_and(|s| s.state == SlotState::Free) => {}
                Err(e) => {
                    tracing::warn!(tenant = name, slot = %slot.id, error = %e, "removed tenant's HSM token not released");
                    failures.push(HsmSlotFailure { slot: slot.id.clone(), error: e.to_string() });
                }
            }
        }
        let root_issuer = self.core.store.root()?.ok_or_else(|| Error::internal("the root CA is missing"))?.id;
        Ok(TenantRemoved { tenant: name.to_string(), removal, root_issuer, hsm_slots_released: released, hsm_slot_failures: failures })
    }
}

/// The tenant `name` for new work (resources, accounts, orders, plugins,
/// tokens, HSM tokens): NotFound if there is none, Conflict if it was removed.
/// Reads of history (audit, certificates, events) use `TenantStore::tenant`,
/// which returns removed tenants too.
pub fn live_tenant(store: &dyn Storage, name: &str) -> Result<Tenant> {
    let tenant = store.tenant(name)?.ok_or_else(|| Error::not_found(format!("no tenant {name:?}")))?;
    refuse_removed(&tenant)?;
    Ok(tenant)
}

/// Refuses a removed tenant for new work.
pub fn refuse_removed(tenant: &Tenant) -> Result<()> {
    match tenant.removed_at {
        Some(at) => Err(Error::conflict(
            Conflict::ResourceState,
            format!("tenant {} was removed at {}; it takes no new work", tenant.name, rfc3339(at)),
        )),
        None => Ok(()),
    }
}

/// Refuses a new tenant named as a removed one.
pub(crate) fn refuse_reused_name(store: &dyn Storage, name: &str) -> Result<()> {
    match store.tenant(name)? {
        Some(Tenant { removed_at: Some(at), .. }) => Err(Error::conflict(
            Conflict::TenantExists,
            format!("tenant {name} was removed at {}; names are not reused so its history stays unambiguous", rfc3339(at)),
        )),
        _ => Ok(()),
    }
}

/// Unix seconds as RFC 3339 in UTC, to the second.
pub(crate) fn rfc3339(unix: UnixTime) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute(), t.second()),
        Err(_) => format!("{unix} (Unix time)"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rcgen::{CertificateParams, KeyPair};
    use x509_parser::prelude::*;

    use super::*;
    use crate::Engine;
    use crate::config::{Config, DatabaseUrl};
    use crate::error::ErrorKind;
    use crate::identifier::Identifier;
    use crate::model::{Account, AccountStatus, AuthorizationStatus, Certificate, RenewalState};
    use crate::ra::{ExternalBinding, NewAccount, NewOrder};
    use crate::registry::{NewResource, ResourceState};

    /// An engine on SQLite, and one on PostgreSQL when a test cluster is configured.
    fn engines() -> Vec<(tempfile::TempDir, Engine)> {
        let mut out = Vec::new();
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path(), Config::default()).unwrap();
        out.push((dir, e));
        if let Some(url) = crate::store::pg::testdb::fresh() {
            let dir = tempfile::tempdir().unwrap();
            let e = Engine::open(dir.path(), Config { database: Some(DatabaseUrl::parse(&url).unwrap()), ..Config::default() }).unwrap();
            out.push((dir, e));
        }
        out
    }

    /// A tenant permitted `NAME.example` and `NAME.test`, holding the zone
    /// `NAME.example`, with an account; its EAB key id.
    fn tenant(a: &Engine, name: &str) -> (Account, String, Vec<u8>) {
        let t = a.registry.create_tenant(name, Some(&[format!("{name}.example"), format!("{name}.test")])).unwrap();
        let (account, _) =
            a.ra.create_account(NewAccount {
                jwk: "{}".into(),
                thumbprint: format!("thumb-{name}"),
                contact: vec![],
                tos_agreed: true,
                eab: Some(ExternalBinding::for_key(&t.eab_kid, &t.eab_hmac, &format!("thumb-{name}"))),
                source: None,
            })
            .unwrap();
        a.registry
            .add_resource(NewResource {
                tenant: name.into(),
                kind: "zone".into(),
                zones: vec![format!("{name}.example")],
                ..Default::default()
            })
            .unwrap();
        (account, t.eab_kid, t.eab_hmac)
    }

    /// A certificate through ACME; names the registry does not show held are
    /// proven by a challenge (recorded valid here).
    fn issue(a: &Engine, account: &Account, names: &[&str]) -> Certificate {
        let identifiers: Vec<Identifier> = names.iter().map(|n| Identifier::dns(n)).collect();
        let order = a.ra.new_order(account, NewOrder { identifiers, profile: None, replaces: None }).unwrap();
        for id in &order.authorizations {
            let authz = a.ra.authorization(id).unwrap().unwrap();
            if authz.status == AuthorizationStatus::Pending {
                let ch = authz.challenges[0].clone();
                assert!(a.ra.begin_challenge(account, &ch, &authz).unwrap());
                a.ra.finish_challenge(&ch.id, Ok(())).unwrap();
            }
        }
        let order = a.ra.order(&order.id).unwrap().unwrap();
        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap().serialize_request(&key).unwrap();
        let done = a.ra.finalize(account, &order, csr.der(), b"account key").unwrap();
        a.ra.certificate(&done.certificate.unwrap()).unwrap().unwrap()
    }

    /// (CRL number, serials listed with their reasons) of an issuer's CRL, as served.
    fn crl(a: &Engine, issuer_id: i64) -> (String, Vec<(String, u8)>) {
        let der = a.ra.crl(issuer_id).unwrap();
        let (_, crl) = CertificateRevocationList::from_der(&der).unwrap();
        let listed =
            crl.iter_revoked_certificates().map(|r| (hex::encode(r.raw_serial()), r.reason_code().map_or(0, |(_, c)| c.0))).collect();
        (crl.crl_number().map(|n| n.to_string()).unwrap_or_default(), listed)
    }

    fn serial_of(der: &[u8]) -> String {
        hex::encode(X509Certificate::from_der(der).unwrap().1.raw_serial())
    }

    fn strip(hex: &str) -> &str {
        hex.trim_start_matches('0')
    }

    /// Removal revokes, releases and deactivates exactly the tenant's things
    /// (nothing of another tenant's), in one go; again, it changes nothing
    /// and counts nothing; the root's CRL lists the intermediate at once.
    #[test]
    fn removal_takes_exactly_the_tenants_things_once() {
        for (_dir, a) in engines() {
            let (corp, corp_kid, corp_hmac) = tenant(&a, "corp");
            let (other, _, _) = tenant(&a, "other");
            let bound = issue(&a, &corp, &["www.corp.example"]);
            let unbound = issue(&a, &corp, &["www.corp.test"]);
            let theirs = issue(&a, &other, &["www.other.example"]);
            a.core.store.install_plugin("tenant:corp", "digest", b"not wasm").unwrap();
            a.core.store.install_plugin("tenant:other", "digest", b"not wasm").unwrap();
            let generation = a.core.store.plugin_generation().unwrap();
            let corp_issuer = a.registry.tenant("corp").unwrap().unwrap().issuer_id;
            let other_issuer = a.registry.tenant("other").unwrap().unwrap().issuer_id;
            // A rotation leaves the tenant two intermediates: both are revoked.
            let rotated = a.registry.rotate_intermediate("corp").unwrap();
            let newer_issuer = a.registry.tenant("corp").unwrap().unwrap().issuer_id;
            assert_ne!(newer_issuer, corp_issuer, "{rotated:?}");
            let root = a.core.store.root().unwrap().unwrap();
            let (before_number, before) = crl(&a, root.id);
            assert!(before.is_empty(), "{before:?}");
            assert_eq!(crl(&a, root.id).0, before_number, "an unchanged root CRL is served from the store");

            let removed = a.registry.remove_tenant("corp").unwrap();
            let r = &removed.removal;
            assert!(!r.already_removed);
            assert_eq!(
                (r.resources_released, r.certificates_revoked, r.intermediates_revoked, r.accounts_deactivated, r.eab_keys_deleted),
                (1, 2, 2, 1, 1),
                "{r:?}"
            );
            assert!(r.plugin_removed && removed.complete());
            assert!(a.core.store.plugin_generation().unwrap() > generation, "servers reload");
            assert!(a.core.store.plugin_wasm("tenant:corp").unwrap().is_none());
            assert!(a.core.store.plugin_wasm("tenant:other").unwrap().is_some());

            for cert in [&bound, &unbound] {
                let (c, life) = a.core.store.certificate_record(&cert.serial).unwrap().unwrap();
                assert_eq!(c.revocation_reason, Some(CESSATION_OF_OPERATION), "{}", c.serial);
                assert_eq!(life.renewal, RenewalState::Stopped);
            }
            assert!(a.ra.certificate(&theirs.serial).unwrap().unwrap().revoked_at.is_none());
            assert_eq!(a.ra.account(&corp.id).unwrap().unwrap().status, AccountStatus::Deactivated);
            assert_eq!(a.ra.account(&other.id).unwrap().unwrap().status, AccountStatus::Valid);
            assert!(a.core.store.eab_key(&corp_kid).unwrap().is_none());
            for res in a.registry.resources(Some("corp")).unwrap() {
                assert_eq!(res.state, ResourceState::Released);
                let last = a.registry.resource_events(&res.id).unwrap().pop().unwrap();
                assert_eq!((last.kind.as_str(), last.detail["revoked_certificates"].as_u64()), ("released", Some(1)));
            }
            assert!(a.registry.resources(Some("other")).unwrap().iter().all(|r| r.state == ResourceState::Active));
            let listed = a.registry.tenants().unwrap();
            let gone = listed.iter().find(|t| t.name == "corp").unwrap();
            assert_eq!(gone.removed_at, Some(r.removed_at));
            assert!(listed.iter().find(|t| t.name == "other").unwrap().removed_at.is_none());
            // History stays: the audit log keeps the tenant's decisions.
            assert!(!a.registry.audit(Some("corp"), 100).unwrap().is_empty());

            // The root's CRL lists the intermediate, regenerated at once; the
            // intermediate's CRL keeps being published and lists its leaves.
            let (after_number, listed) = crl(&a, root.id);
            assert_ne!(after_number, before_number);
            let corp_serial = serial_of(&a.core.store.issuer(corp_issuer).unwrap().unwrap().cert_der);
            let other_serial = serial_of(&a.core.store.issuer(other_issuer).unwrap().unwrap().cert_der);
            let newer_serial = serial_of(&a.core.store.issuer(newer_issuer).unwrap().unwrap().cert_der);
            let mut expected = vec![strip(&corp_serial).to_string(), strip(&newer_serial).to_string()];
            let mut got: Vec<String> = listed.iter().map(|(s, _)| strip(s).to_string()).collect();
            expected.sort();
            got.sort();
            assert_eq!(got, expected, "both of the tenant's intermediates, nothing else");
            assert!(listed.iter().all(|(_, reason)| *reason == CESSATION_OF_OPERATION), "{listed:?}");
            assert!(listed.iter().all(|(s, _)| strip(s) != strip(&other_serial)));
            let (_, leaves) = crl(&a, corp_issuer);
            assert_eq!(leaves.len(), 2, "{leaves:?}");
            assert!(crl(&a, other_issuer).1.is_empty());

            // Again: nothing more is done or counted.
            let again = a.registry.remove_tenant("corp").unwrap();
            assert!(again.removal.already_removed);
            assert_eq!(again.removal.removed_at, r.removed_at);
            assert_eq!(
                TenantRemoval { removed_at: r.removed_at, already_removed: true, ..Default::default() },
                again.removal,
                "a second run changes nothing"
            );
            assert_eq!(crl(&a, root.id).0, after_number, "nothing new for the root's CRL");

            // Gone for new work; its name is not reused.
            let Err(reuse) = a.registry.create_tenant("corp", Some(&["corp.example".into()])) else { panic!("the name was reused") };
            assert_eq!(reuse.conflict, Some(Conflict::TenantExists));
            assert!(reuse.detail.contains("was removed at") && reuse.detail.contains("names are not reused"), "{}", reuse.detail);
            let add = a
                .registry
                .add_resource(NewResource {
                    tenant: "corp".into(),
                    kind: "vm".into(),
                    names: vec!["x.corp.example".into()],
                    ..Default::default()
                })
                .unwrap_err();
            assert_eq!(add.kind, ErrorKind::Conflict, "{add:?}");
            assert!(add.detail.contains("was removed at"), "{}", add.detail);
            let theirs_resource = a.registry.resources(Some("other")).unwrap().remove(0);
            let transfer = a.registry.transfer_resource(&theirs_resource.id, "corp").unwrap_err();
            assert!(transfer.detail.contains("was removed at"), "{}", transfer.detail);
            let eab =
                a.ra.create_account(NewAccount {
                    jwk: "{}".into(),
                    thumbprint: "new".into(),
                    contact: vec![],
                    tos_agreed: true,
                    eab: Some(ExternalBinding::for_key(&corp_kid, &corp_hmac, "new")),
                    source: None,
                })
                .unwrap_err();
            assert_eq!(eab.kind, ErrorKind::Unauthorized, "{eab:?}");
            let Err(hsm) = a.custody.hsm_allocate("corp", false, BTreeMap::new()) else { panic!("a removed tenant got a token") };
            assert!(hsm.detail.contains("was removed at"), "{}", hsm.detail);
            assert_eq!(a.registry.remove_tenant(crate::PUBLIC_TENANT).unwrap_err().kind, ErrorKind::Malformed);
            // Its names are free for a new tenant (its intermediates are revoked).
            assert!(a.registry.create_tenant("corp-next", Some(&["corp.example".into()])).is_ok());
            assert_eq!(a.registry.remove_tenant("nobody").unwrap_err().kind, ErrorKind::NotFound);
        }
    }

    /// A token whose release fails is named, the rest of the removal stands,
    /// and removal again tries it again (counting nothing else twice).
    #[test]
    fn a_failed_token_release_is_reported_and_retried() {
        for (_dir, a) in engines() {
            tenant(&a, "corp");
            // A slot whose module does not exist: its release cannot zeroize it.
            a.core.store.insert_hsm_slot("hsm_gone", "/nonexistent/libpkcs11.so", "gone", b"not sealed").unwrap();
            let claimed = a.core.store.claim_free_hsm_slot("corp").unwrap().unwrap();
            assert_eq!(claimed.id, "hsm_gone");

            let first = a.registry.remove_tenant("corp").unwrap();
            assert!(!first.complete());
            assert_eq!(first.hsm_slot_failures.iter().map(|f| f.slot.as_str()).collect::<Vec<_>>(), ["hsm_gone"]);
            assert_eq!((first.removal.resources_released, first.removal.accounts_deactivated), (1, 1));
            assert!(a.registry.tenant("corp").unwrap().unwrap().removed_at.is_some());

            let again = a.registry.remove_tenant("corp").unwrap();
            assert!(again.removal.already_removed && !again.complete());
            assert_eq!((again.removal.resources_released, again.removal.accounts_deactivated), (0, 0));
            assert_eq!(again.hsm_slot_failures.len(), 1);
        }
    }
}
