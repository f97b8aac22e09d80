//! The registration authority (the RA role): every ACME state change is decided
//! here and written through the store in one transaction. The front end calls
//! these methods after it has authenticated the request; they block (SQLite,
//! signing), so async callers run them on a blocking thread.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};

use crate::ca::{self, CaMaterial, Permit};
use crate::error::{Error, ErrorKind, Result};
use crate::hsm::CaCustody;
use crate::identifier::{Identifier, IdentifierKind};
use crate::model::*;
use crate::store::Store;

mod policy;
mod registry;

pub use policy::{Decided, PluginScope};

/// The tenant of accounts registered without External Account Binding.
pub const PUBLIC_TENANT: &str = "public";

/// Lifetimes may never exceed this, whatever a profile or policy says.
pub const MAX_CERT_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// At most this many identifiers in one order.
pub const MAX_IDENTIFIERS: usize = 100;

#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub description: String,
    pub lifetime: Duration,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub profiles: Vec<Profile>,
    pub default_profile: String,
    /// How long a new order (and its authorizations) stays pending.
    pub order_lifetime: Duration,
    /// How long a valid authorization may be reused for revocation.
    pub authorization_lifetime: Duration,
    pub eab_required: bool,
    pub lifecycle: crate::lifecycle::LifecycleConfig,
    /// What one plugin decision may use (deadline, memory, answer size).
    pub plugin_limits: crate::policy::Limits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            profiles: vec![
                Profile { name: "default".into(), description: "24-hour certificates".into(), lifetime: Duration::from_secs(24 * 3600) },
                Profile { name: "shortlived".into(), description: "6-hour certificates".into(), lifetime: Duration::from_secs(6 * 3600) },
            ],
            default_profile: "default".into(),
            order_lifetime: Duration::from_secs(7 * 24 * 3600),
            authorization_lifetime: Duration::from_secs(30 * 24 * 3600),
            eab_required: false,
            lifecycle: crate::lifecycle::LifecycleConfig::default(),
            plugin_limits: crate::policy::Limits::default(),
        }
    }
}

/// What a new account request carries once the front end has checked its JWS (and EAB).
pub struct NewAccount {
    pub jwk: String,
    pub thumbprint: String,
    pub contact: Vec<String>,
    pub tos_agreed: bool,
    /// The EAB key id, verified by the front end.
    pub eab_kid: Option<String>,
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

/// A created tenant and its first EAB credentials.
pub struct TenantCreated {
    pub tenant: Tenant,
    pub eab_kid: String,
    pub eab_hmac: Vec<u8>,
}

/// The challenge types offered, in order of preference.
pub const HTTP_01: &str = "http-01";
pub const DNS_01: &str = "dns-01";
pub const TLS_ALPN_01: &str = "tls-alpn-01";

pub struct Authority {
    pub(crate) store: Arc<Store>,
    config: Config,
    policies: policy::Policies,
    data_dir: PathBuf,
    root: CaMaterial,
    issuers: RwLock<HashMap<i64, Arc<CaMaterial>>>,
    rng: SystemRandom,
    /// Where certificates say their CRLs are (`{public_url}/crl/{issuer}`).
    pub(crate) public_url: RwLock<Option<String>>,
    /// Where CA keys live (sealed software keys or an HSM token), and the
    /// key-encryption key for everything sealed at rest.
    pub(crate) custody: CaCustody,
    /// Orders being finalized by this process: one signature per order.
    finalizing: Mutex<HashSet<String>>,
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

impl Authority {
    /// Opens the data directory, initializing it on first use: the database,
    /// the root CA (written to `root.pem`), and the public tenant.
    pub fn open(data_dir: &Path, config: Config) -> Result<Authority> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| Error::internal(format!("cannot create data directory {}: {e}", data_dir.display())))?;
        let store = Arc::new(Store::open(&data_dir.join("tenure.db"))?);
        let custody = CaCustody::open(data_dir, &store)?;
        // Data directories from before sealing: seal their plain keys now.
        let resealed = store.reseal_issuer_keys(|blob| custody.reseal(blob))?;
        if resealed > 0 {
            tracing::info!(resealed, "sealed plain CA keys under the key-encryption key");
        }
        let root = match store.root()? {
            Some(r) => r,
            None => {
                let fresh = ca::new_root_with("tenure root CA", custody.new_ca_key("tenure root CA")?)?;
                store.insert_root(&fresh.cert_der, &custody.key_blob(&fresh.key)?)?
            }
        };
        let root = CaMaterial::new(root.cert_der, custody.load_key(&root.key_pkcs8)?);
        write_file_atomically(&data_dir.join("root.pem"), root.cert_pem().as_bytes(), false)?;
        let token_path = data_dir.join("admin-token");
        if !token_path.exists() {
            let mut raw = [0u8; 32];
            SystemRandom::new().fill(&mut raw).map_err(|_| Error::internal("no randomness"))?;
            write_file_atomically(&token_path, URL_SAFE_NO_PAD.encode(raw).as_bytes(), true)?;
        }
        let authority = Authority {
            store,
            config,
            policies: policy::Policies::new(data_dir.join("plugin-cache")),
            data_dir: data_dir.to_path_buf(),
            root,
            issuers: RwLock::new(HashMap::new()),
            rng: SystemRandom::new(),
            public_url: RwLock::new(None),
            custody,
            finalizing: Mutex::new(HashSet::new()),
        };
        if authority.store.tenant(PUBLIC_TENANT)?.is_none() {
            match authority.create_tenant(PUBLIC_TENANT, None) {
                Ok(_) => {}
                // Another process initialized it at the same moment.
                Err(e) if e.kind == ErrorKind::Conflict => {}
                Err(e) => return Err(e),
            }
        }
        Ok(authority)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn root_pem(&self) -> String {
        self.root.cert_pem()
    }

    /// The bearer token of the admin API (created at init, `DIR/admin-token`).
    pub fn admin_token(&self) -> Result<String> {
        let path = self.data_dir.join("admin-token");
        std::fs::read_to_string(&path)
            .map(|s| s.trim().to_string())
            .map_err(|e| Error::internal(format!("reading {}: {e}", path.display())))
    }

    pub fn root_pem_path(&self) -> PathBuf {
        self.data_dir.join("root.pem")
    }

    /// A TLS identity for the ACME server itself, chaining to the root:
    /// (certificate chain DER, private key PKCS#8 DER).
    pub fn server_identity(&self, names: &[Identifier]) -> Result<(Vec<Vec<u8>>, Vec<u8>)> {
        let (cert, key) = ca::server_certificate(&self.root, names)?;
        Ok((vec![cert], key))
    }

    // ---- tenants ------------------------------------------------------------

    /// Creates a tenant, its name-constrained intermediate and an EAB key.
    /// `permits` = None only for the public tenant (an unconstrained intermediate).
    pub fn create_tenant(&self, name: &str, permits: Option<&[String]>) -> Result<TenantCreated> {
        validate_tenant_name(name)?;
        let parsed = match permits {
            Some(list) => {
                if list.is_empty() {
                    return Err(Error::malformed("a tenant needs at least one --permit (a domain or an address range)"));
                }
                Some(list.iter().map(|p| Permit::parse(p)).collect::<Result<Vec<_>>>()?)
            }
            None => None,
        };
        let common_name = format!("tenure {name} CA");
        let key = self.custody.new_ca_key(&common_name)?;
        let intermediate = ca::new_intermediate_with(&self.root, &common_name, parsed.as_deref(), key)?;
        let key_blob = self.custody.key_blob(&intermediate.key)?;
        let eab_kid = format!("{name}-{}", self.random_id(9));
        let mut eab_hmac = vec![0u8; 32];
        self.rng.fill(&mut eab_hmac).map_err(|_| Error::internal("no randomness"))?;
        let normalized: Vec<String> = parsed.iter().flatten().map(|p| p.to_string()).collect();
        let tenant = self.store.insert_tenant(name, &normalized, &intermediate.cert_der, &key_blob, Some((&eab_kid, &eab_hmac)))?;
        Ok(TenantCreated { tenant, eab_kid, eab_hmac })
    }

    pub fn tenant(&self, name: &str) -> Result<Option<Tenant>> {
        self.store.tenant(name)
    }

    pub fn tenants(&self) -> Result<Vec<Tenant>> {
        self.store.tenants()
    }

    /// The tenant and HMAC key of an EAB key id.
    pub fn eab_key(&self, kid: &str) -> Result<Option<(String, Vec<u8>)>> {
        self.store.eab_key(kid)
    }

    pub(crate) fn issuer(&self, id: i64) -> Result<Arc<CaMaterial>> {
        if let Some(found) = self.issuers.read().ok().and_then(|m| m.get(&id).cloned()) {
            return Ok(found);
        }
        let rec = self.store.issuer(id)?.ok_or_else(|| Error::internal(format!("issuer {id} is missing")))?;
        let material = Arc::new(CaMaterial::new(rec.cert_der, self.custody.load_key(&rec.key_pkcs8)?));
        if let Ok(mut m) = self.issuers.write() {
            m.insert(id, material.clone());
        }
        Ok(material)
    }

    /// The issuing intermediate's certificate (DER), for chains.
    pub fn issuer_certificate(&self, id: i64) -> Result<Vec<u8>> {
        Ok(self.issuer(id)?.cert_der.clone())
    }

    // ---- accounts -----------------------------------------------------------

    pub fn account(&self, id: &str) -> Result<Option<Account>> {
        self.store.account(id)
    }

    pub fn account_by_thumbprint(&self, thumbprint: &str) -> Result<Option<Account>> {
        self.store.account_by_thumbprint(thumbprint)
    }

    /// Registers an account, or returns the one already holding the key (`false`).
    pub fn create_account(&self, req: NewAccount) -> Result<(Account, bool)> {
        validate_contacts(&req.contact)?;
        let tenant = match &req.eab_kid {
            Some(kid) => {
                let (tenant, _) =
                    self.store.eab_key(kid)?.ok_or_else(|| Error::new(ErrorKind::Unauthorized, format!("unknown EAB key id {kid:?}")))?;
                tenant
            }
            None if self.config.eab_required => {
                return Err(Error::new(ErrorKind::ExternalAccountRequired, "this server requires External Account Binding"));
            }
            None => PUBLIC_TENANT.to_string(),
        };
        let account = Account {
            id: self.random_id(12),
            thumbprint: req.thumbprint,
            jwk: req.jwk,
            status: AccountStatus::Valid,
            contact: req.contact,
            tenant,
            eab_kid: req.eab_kid,
            tos_agreed: req.tos_agreed,
            created_at: now(),
        };
        self.store.insert_account(&account)
    }

    pub fn update_contact(&self, account: &Account, contact: Vec<String>) -> Result<Account> {
        validate_contacts(&contact)?;
        self.store.update_account_contact(&account.id, &contact)?;
        Ok(Account { contact, ..account.clone() })
    }

    pub fn deactivate_account(&self, account: &Account) -> Result<Account> {
        self.store.deactivate_account(&account.id)?;
        Ok(Account { status: AccountStatus::Deactivated, ..account.clone() })
    }

    /// Key rollover (RFC 8555 §7.3.5). A new key already in use is a Conflict
    /// whose detail is the id of the account holding it.
    pub fn change_key(&self, account: &Account, new_jwk: String, new_thumbprint: String) -> Result<Account> {
        self.store.change_account_key(&account.id, &account.thumbprint, &new_thumbprint, &new_jwk)?;
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
                if !self.config.profiles.iter().any(|x| x.name == p) {
                    return Err(Error::new(ErrorKind::InvalidProfile, format!("unknown profile {p:?}")));
                }
                p
            }
            None => self.config.default_profile.clone(),
        };
        let identifiers: Vec<Identifier> = req.identifiers.into_iter().collect::<BTreeSet<_>>().into_iter().collect();
        self.check_identifiers_permitted(&account.tenant, &identifiers)?;
        self.check_not_held_by_others(&account.tenant, &identifiers)?;
        if let Some(cert_id) = &req.replaces {
            self.replaced_certificate(account, &identifiers, cert_id)?;
        }

        // The policy chain decides before anything is stored.
        let profile_lifetime = self.profile_lifetime(&profile)?;
        let request = crate::policy::IssuanceRequest {
            tenant: account.tenant.clone(),
            account: Some(account.id.clone()),
            trigger: crate::policy::Trigger::AcmeOrder,
            identifiers: identifiers.clone(),
            key: None,
            profile: profile.clone(),
            requested_lifetime_seconds: profile_lifetime.as_secs().max(1),
            resource: None,
        };
        let decided = self.decide_issuance(&account.tenant, Some(&account.id), &request)?;
        let grant = match &decided.decision {
            crate::policy::Decision::Allow(g) => g.clone(),
            crate::policy::Decision::Deny(reason) => {
                // The denial is audited even though nothing else is written.
                self.store.record_audit(&decided.audit)?;
                return Err(Error::new(ErrorKind::Unauthorized, format!("policy denied the order: {reason}")));
            }
        };
        let granted: BTreeSet<&Identifier> = grant.identifiers.iter().collect();
        let refused: Vec<String> = identifiers.iter().filter(|i| !granted.contains(i)).map(|i| i.value.clone()).collect();
        if !refused.is_empty() {
            let mut audit = decided.audit.clone();
            audit.outcome = "deny".into();
            audit.reason = Some(format!("the grant leaves out {}", refused.join(", ")));
            self.store.record_audit(&audit)?;
            return Err(Error::new(ErrorKind::RejectedIdentifier, format!("policy does not grant {}", refused.join(", "))));
        }
        let profile = match &grant.profile {
            Some(p) if self.config.profiles.iter().any(|x| &x.name == p) => p.clone(),
            Some(p) => return Err(Error::internal(format!("policy chose the unknown profile {p:?}"))),
            None => profile,
        };
        let lifetime_seconds = (grant.lifetime_seconds as i64).min(self.profile_lifetime(&profile)?.as_secs() as i64).max(1);
        let by_control: BTreeSet<Identifier> = grant.authorize_by_control.iter().map(|i| i.authorization_target()).collect();

        let t = now();
        let expires = t + self.config.order_lifetime.as_secs() as i64;
        let order_id = self.random_id(12);
        // One authorization per name to prove: a wildcard and its base share one
        // target but need different challenges, so they stay separate.
        let mut targets: Vec<(Identifier, bool)> = identifiers.iter().map(|i| (i.authorization_target(), i.is_wildcard())).collect();
        targets.dedup();
        let authzs: Vec<Authorization> = targets
            .into_iter()
            .map(|(identifier, wildcard)| {
                let authz_id = self.random_id(12);
                let kinds: &[&str] = match (identifier.kind, wildcard) {
                    (_, true) => &[DNS_01],
                    (IdentifierKind::Dns, false) => &[HTTP_01, DNS_01, TLS_ALPN_01],
                    (IdentifierKind::Ip, false) => &[HTTP_01, TLS_ALPN_01],
                };
                let challenges = kinds
                    .iter()
                    .map(|k| Challenge {
                        id: self.random_id(12),
                        authz_id: authz_id.clone(),
                        kind: k.to_string(),
                        token: self.random_id(32),
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
        let all_valid = authzs.iter().all(|a| a.status == AuthorizationStatus::Valid);
        let order = Order {
            id: order_id,
            account_id: account.id.clone(),
            status: if all_valid { OrderStatus::Ready } else { OrderStatus::Pending },
            expires,
            identifiers,
            profile,
            error: None,
            certificate: None,
            replaces: req.replaces,
            created_at: t,
            authorizations: authzs.iter().map(|a| a.id.clone()).collect(),
            lifetime_seconds: Some(lifetime_seconds),
        };
        self.store.insert_order(&order, &authzs, Some(&decided.audit))?;
        Ok(order)
    }

    /// Refuses identifiers outside the tenant's intermediate's constraints, at
    /// newOrder already, so nothing is validated that could never be issued.
    fn check_identifiers_permitted(&self, tenant_name: &str, identifiers: &[Identifier]) -> Result<()> {
        let tenant = self.store.tenant(tenant_name)?.ok_or_else(|| Error::internal(format!("tenant {tenant_name:?} is missing")))?;
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
    /// issued what someone else controls, whatever its plugins say.
    fn check_not_held_by_others(&self, tenant: &str, identifiers: &[Identifier]) -> Result<()> {
        for id in identifiers {
            let holders = self.store.resources_holding(None, id)?;
            if holders.iter().any(|r| r.tenant != tenant) {
                return Err(Error::new(ErrorKind::RejectedIdentifier, format!("{} is held by another tenant", id.value)));
            }
        }
        Ok(())
    }

    /// The order as a client should see it now (pending past expiry is invalid).
    pub fn order(&self, id: &str) -> Result<Option<Order>> {
        Ok(self.store.order(id)?.map(|mut o| {
            if matches!(o.status, OrderStatus::Pending | OrderStatus::Ready) && o.expires <= now() {
                o.status = OrderStatus::Invalid;
            }
            o
        }))
    }

    pub fn orders_of(&self, account: &Account) -> Result<Vec<String>> {
        self.store.order_ids_of_account(&account.id)
    }

    pub fn authorization(&self, id: &str) -> Result<Option<Authorization>> {
        Ok(self.store.authorization(id)?.map(|mut a| {
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
        self.store.deactivate_authorization(&authz.id)?;
        self.authorization(&authz.id)?.ok_or_else(|| Error::internal("authorization vanished"))
    }

    pub fn challenge(&self, id: &str) -> Result<Option<(Challenge, Authorization)>> {
        self.store.challenge(id)
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
        self.store.begin_challenge(&challenge.id)
    }

    /// Records what validating a challenge found.
    pub fn finish_challenge(&self, challenge_id: &str, outcome: std::result::Result<(), RecordedError>) -> Result<()> {
        self.store.finish_challenge(challenge_id, outcome)
    }

    /// Challenges that were being validated when the server last stopped.
    pub fn interrupted_challenges(&self) -> Result<Vec<(Challenge, Authorization, Account)>> {
        let mut out = Vec::new();
        for (ch, authz) in self.store.processing_challenges()? {
            if let Some(acct) = self.store.account(&authz.account_id)? {
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
        let tenant =
            self.store.tenant(&account.tenant)?.ok_or_else(|| Error::internal(format!("tenant {:?} is missing", account.tenant)))?;
        let mut lifetime = self.profile_lifetime(&order.profile)?;
        if let Some(granted) = order.lifetime_seconds {
            lifetime = lifetime.min(Duration::from_secs(granted.max(1) as u64));
        }

        // The chain decides again with what newOrder could not know: the key,
        // and the registry as it is now (a resource may have been released).
        let request = crate::policy::IssuanceRequest {
            tenant: account.tenant.clone(),
            account: Some(account.id.clone()),
            trigger: crate::policy::Trigger::AcmeFinalize,
            identifiers: order.identifiers.clone(),
            key: Some(crate::policy::KeyInfo {
                key_type: match csr.key_type {
                    ca::KeyType::EcdsaP256 => crate::policy::KeyType::EcdsaP256,
                    ca::KeyType::EcdsaP384 => crate::policy::KeyType::EcdsaP384,
                    ca::KeyType::Rsa(_) => crate::policy::KeyType::Rsa,
                    ca::KeyType::Ed25519 => crate::policy::KeyType::Ed25519,
                },
                bits: match csr.key_type {
                    ca::KeyType::EcdsaP256 => 256,
                    ca::KeyType::EcdsaP384 => 384,
                    ca::KeyType::Rsa(bits) => bits,
                    ca::KeyType::Ed25519 => 255,
                },
            }),
            profile: order.profile.clone(),
            requested_lifetime_seconds: lifetime.as_secs().max(1),
            resource: None,
        };
        let decided = self.decide_issuance(&account.tenant, Some(&account.id), &request)?;
        match &decided.decision {
            crate::policy::Decision::Allow(g) => {
                let granted: BTreeSet<&Identifier> = g.identifiers.iter().collect();
                if let Some(missing) = order.identifiers.iter().find(|i| !granted.contains(i)) {
                    let mut audit = decided.audit.clone();
                    audit.outcome = "deny".into();
                    audit.reason = Some(format!("the grant leaves out {}", missing.value));
                    self.store.record_audit(&audit)?;
                    return Err(Error::new(ErrorKind::Unauthorized, format!("policy no longer grants {}", missing.value)));
                }
                // Names authorized by control at newOrder must still be held now.
                let still_held: BTreeSet<Identifier> = g.authorize_by_control.iter().map(|i| i.authorization_target()).collect();
                let lost: Vec<String> = self
                    .store
                    .authorizations_of_order(&order.id)?
                    .into_iter()
                    .filter(|a| !a.challenges.iter().any(|c| c.status == ChallengeStatus::Valid))
                    .filter(|a| !still_held.contains(&a.identifier))
                    .map(|a| a.identifier.value)
                    .collect();
                if !lost.is_empty() {
                    let mut audit = decided.audit.clone();
                    audit.outcome = "deny".into();
                    audit.reason = Some(format!("no longer held: {}", lost.join(", ")));
                    self.store.record_audit(&audit)?;
                    return Err(Error::new(
                        ErrorKind::Unauthorized,
                        format!("authorized by control, but no longer held: {}", lost.join(", ")),
                    ));
                }
                lifetime = lifetime.min(Duration::from_secs(g.lifetime_seconds.max(1)));
            }
            crate::policy::Decision::Deny(reason) => {
                self.store.record_audit(&decided.audit)?;
                return Err(Error::new(ErrorKind::Unauthorized, format!("policy denied issuance: {reason}")));
            }
        }

        // One finalize per order signs: a second one arriving meanwhile is
        // refused here, without a commit of its own (the order used to be
        // marked `processing` in a transaction before signing). The order
        // stays `ready` in the database while signing; complete_order records
        // the certificate only if it still is, in the same transaction that
        // makes it valid, so even finalizes in two processes record exactly one
        // certificate, and a crash before that commit leaves a ready order to
        // finalize again instead of one stuck in `processing`.
        let _claim = {
            let mut set = self.finalizing.lock().unwrap_or_else(|p| p.into_inner());
            if !set.insert(order.id.clone()) {
                return Err(Error::new(ErrorKind::OrderNotReady, "the order is already being finalized"));
            }
            FinalizeClaim { set: &self.finalizing, order_id: order.id.clone() }
        };
        (|| {
            let issued_at = now();
            let leaf = self.sign_leaf(tenant.issuer_id, &csr.spki_der, &order.identifiers, lifetime)?;
            let cert = Certificate {
                serial: leaf.serial_hex.clone(),
                account_id: account.id.clone(),
                order_id: order.id.clone(),
                tenant: tenant.name.clone(),
                issuer_id: tenant.issuer_id,
                der: leaf.der,
                identifiers: order.identifiers.clone(),
                not_before: unix(leaf.not_before),
                not_after: unix(leaf.not_after),
                revoked_at: None,
                revocation_reason: None,
            };
            let binding = self.binding_of(&tenant.name, &order.identifiers)?;
            let life = CertificateLifecycle {
                profile: order.profile.clone(),
                // Tenure renews only what the registry shows held, name by name;
                // a name proven by challenge is the client's to renew.
                renewal: if binding.all_held { RenewalState::Scheduled } else { RenewalState::Client },
                resources: binding.resources,
                renew_at: Some(self.config.lifecycle.renew_at(issued_at, lifetime)),
                note: None,
                predecessor: match &order.replaces {
                    Some(cert_id) => Some(self.replaced_certificate(account, &order.identifiers, cert_id)?.serial),
                    None => None,
                },
                successor: None,
                policy: decided.audit.plugins.join(","),
            };
            self.store.complete_order(&cert, &life, Some(&decided.audit))
        })()?;
        self.order(&order.id)?.ok_or_else(|| Error::internal("order vanished"))
    }

    /// Signs a leaf for `spki` under the issuer, valid for `lifetime` from now
    /// (backdated a minute for clients whose clocks run slightly behind), with
    /// the issuer's CRL distribution point once the public URL is known.
    pub(crate) fn sign_leaf(&self, issuer_id: i64, spki: &[u8], identifiers: &[Identifier], lifetime: Duration) -> Result<ca::IssuedLeaf> {
        let issuer = self.issuer(issuer_id)?;
        let not_before = SystemTime::now() - Duration::from_secs(60);
        let not_after = not_before + lifetime + Duration::from_secs(60);
        ca::issue_leaf(&issuer, &ca::LeafRequest { spki_der: spki, identifiers, not_before, not_after, crl_url: self.crl_url(issuer_id)? })
    }

    pub(crate) fn profile_lifetime(&self, name: &str) -> Result<Duration> {
        let p = self
            .config
            .profiles
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| Error::new(ErrorKind::InvalidProfile, format!("unknown profile {name:?}")))?;
        Ok(p.lifetime.min(MAX_CERT_LIFETIME))
    }

    // ---- certificates ---------------------------------------------------------

    pub fn certificate(&self, serial: &str) -> Result<Option<Certificate>> {
        self.store.certificate(serial)
    }

    /// The PEM chain a client downloads: leaf, then its intermediate.
    pub fn certificate_chain_pem(&self, cert: &Certificate) -> Result<String> {
        let issuer = self.issuer(cert.issuer_id)?;
        Ok(format!("{}{}", ca::to_pem("CERTIFICATE", &cert.der), ca::to_pem("CERTIFICATE", &issuer.cert_der)))
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
                let allowed =
                    cert.account_id == account_id || self.store.account_holds_authorizations(account_id, &cert.identifiers, now())?;
                if !allowed {
                    return Err(Error::new(
                        ErrorKind::Unauthorized,
                        "the account neither holds this certificate nor controls all of its identifiers",
                    ));
                }
            }
        }
        if cert.revoked_at.is_some() || !self.store.revoke_certificate(&cert.serial, reason)? {
            return Err(Error::new(ErrorKind::AlreadyRevoked, format!("certificate {} is already revoked", cert.serial)));
        }
        self.store.certificate(&cert.serial)?.ok_or_else(|| Error::internal("certificate vanished"))
    }

    // ---- helpers ----------------------------------------------------------------

    /// A random URL-safe id with `bytes` bytes of entropy.
    pub fn random_id(&self, bytes: usize) -> String {
        let mut buf = vec![0u8; bytes];
        // SystemRandom only fails if the OS has no randomness, where nothing is safe.
        if self.rng.fill(&mut buf).is_err() {
            panic!("the operating system's random number generator failed");
        }
        URL_SAFE_NO_PAD.encode(buf)
    }
}

fn list<'a>(ids: impl Iterator<Item = &'a Identifier>) -> String {
    let v: Vec<String> = ids.map(|i| i.value.clone()).collect();
    if v.is_empty() { "nothing".into() } else { v.join(", ") }
}

fn unix(t: SystemTime) -> UnixTime {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn validate_tenant_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::malformed(format!("tenant name {name:?} must be 1-63 characters of lowercase letters, digits, '-' and '_'")))
    }
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

/// Writes a file by rename so readers never see it half-written; `secret` makes it 0600.
pub fn write_file_atomically(path: &Path, contents: &[u8], secret: bool) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let io = |e: std::io::Error| Error::internal(format!("writing {}: {e}", path.display()));
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if secret {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(io)?;
        f.write_all(contents).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod finalize_tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    /// Finalizes racing for one order, in one process and in two (two
    /// authorities on one data directory): exactly one certificate is
    /// recorded and returned, and every other finalize fails.
    #[test]
    fn racing_finalizes_issue_exactly_one_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let a = Authority::open(dir.path(), Config::default()).unwrap();
        let b = Authority::open(dir.path(), Config::default()).unwrap();
        let account = tenant_account_holding_corp_example(&a);
        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::new(vec!["www.corp.example".to_string()]).unwrap().serialize_request(&key).unwrap();
        for _ in 0..5 {
            let order = a
                .new_order(&account, NewOrder { identifiers: vec![Identifier::dns("www.corp.example")], profile: None, replaces: None })
                .unwrap();
            assert_eq!(order.status, OrderStatus::Ready);
            let results: Vec<Result<Order>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..6)
                    .map(|i| {
                        let (auth, order, account, csr) = (if i % 2 == 0 { &a } else { &b }, &order, &account, csr.der());
                        s.spawn(move || auth.finalize(account, order, csr, b"account key"))
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
                .certificates(Some("corp"), None, 1000)
                .unwrap()
                .into_iter()
                .filter(|(c, _)| c.order_id == order.id)
                .map(|(c, _)| c.serial)
                .collect();
            assert_eq!(recorded, vec![won[0].certificate.clone().unwrap()]);
            let stored = a.order(&order.id).unwrap().unwrap();
            assert_eq!((stored.status, stored.certificate), (OrderStatus::Valid, won[0].certificate.clone()));
        }
    }
}

/// Tests' common start: tenant `corp`, permitted and holding the zone
/// `corp.example`, with one account.
#[cfg(test)]
pub(crate) fn tenant_account_holding_corp_example(a: &Authority) -> Account {
    let tenant = a.create_tenant("corp", Some(&["corp.example".to_string()])).expect("create tenant");
    let (account, _) = a
        .create_account(NewAccount {
            jwk: "{}".into(),
            thumbprint: "t".into(),
            contact: vec![],
            tos_agreed: true,
            eab_kid: Some(tenant.eab_kid),
        })
        .expect("create account");
    a.add_resource(crate::registry::NewResource {
        tenant: "corp".into(),
        kind: "zone".into(),
        zones: vec!["corp.example".into()],
        ..Default::default()
    })
    .expect("add zone resource");
    account
}
