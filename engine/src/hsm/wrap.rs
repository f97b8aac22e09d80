//! Distribution: copying a key from one of a tenant's HSMs to another, only
//! wrapped, only after the policy allows it, only within one tenant.
//!
//! The wrap: the target token makes a one-time RSA-3072 wrapping key pair
//! (session objects; the private half never leaves the target). The source
//! imports the public half, makes a one-time AES-256 key, wraps the private
//! key under it (CKM_AES_KEY_WRAP_PAD, RFC 5649) and the AES key under the
//! target's RSA key (CKM_RSA_PKCS_OAEP). The target unwraps both. The private
//! key exists outside the tokens only as ciphertext, and only the target can
//! open it; all the one-time keys die with their sessions.

use std::path::Path;

use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use serde::Serialize;

use super::Custody;
use super::session::{self, P256_PARAMS, p11};
use super::{HsmKey, HsmSlot, KeyState};
use crate::error::{Conflict, Error, ErrorKind, Result};
use crate::model::now;
use crate::policy::{Decision, DistributionRequest};

#[derive(Debug, Clone, Serialize)]
pub struct DistributionOutcome {
    /// The copy's record in the target slot.
    pub key: HsmKey,
    /// The digests of the plugins that allowed it, in chain order.
    pub plugins: Vec<String>,
}

/// What the one decision-and-copy path did: copied, or refused (audited).
pub(super) enum Distributed {
    Copied(DistributionOutcome),
    /// The plugins or the host's rules refused; the audit record is stored.
    Denied {
        request: DistributionRequest,
        reason: String,
        plugins: Vec<String>,
    },
}

impl Custody {
    /// Copies key `key_id` from slot `from` to slot `to` (slot ids or their
    /// `hsm` resource ids). Asks `decide-distribution` of the tenant's plugin
    /// chain; whatever the plugins say, the host refuses a copy across tenants,
    /// to or from a token that is not active, or into the same token. Every
    /// attempt is audited with the plugins' digests; a refused one changes
    /// nothing in either token.
    pub fn distribute_hsm_key(&self, key_id: &str, from: &str, to: &str) -> Result<DistributionOutcome> {
        let key = self.core.store.hsm_key(key_id)?.ok_or_else(|| Error::not_found(format!("no HSM key {key_id}")))?;
        let source = self.hsm_slot(from)?;
        let target = self.hsm_slot(to)?;
        if key.slot_id != source.id {
            return Err(Error::malformed(format!("key {key_id} is not in {}", source.id)));
        }
        if key.state == KeyState::Retired {
            return Err(Error::conflict(Conflict::Custody, format!("key {key_id} is retired")));
        }
        match self.decide_and_copy(&key, &source, &target)? {
            Distributed::Copied(outcome) => Ok(outcome),
            Distributed::Denied { reason, .. } => Err(Error::new(ErrorKind::Unauthorized, format!("distribution refused: {reason}"))),
        }
    }

    /// The one path of a distribution, whoever asks (`distribute_hsm_key`,
    /// `distribute_to_holder`): the tenant's `decide-distribution`, the host's
    /// rules over it, then the wrapped copy and its record (with the audit
    /// record) in one transaction; a denial is audited alone. `key` must be in
    /// `source` and not retired (the callers check).
    pub(super) fn decide_and_copy(&self, key: &HsmKey, source: &HsmSlot, target: &HsmSlot) -> Result<Distributed> {
        let (Some(source_res), Some(target_res)) = (&source.resource_id, &target.resource_id) else {
            return Err(Error::conflict(Conflict::Custody, "both HSMs must be allocated to a tenant"));
        };
        let source_res = self.core.store.resource(source_res)?.ok_or_else(|| Error::internal("source hsm resource missing"))?;
        let target_res = self.core.store.resource(target_res)?.ok_or_else(|| Error::internal("target hsm resource missing"))?;
        let tenant = source_res.tenant.clone();
        let request = DistributionRequest {
            tenant: tenant.clone(),
            key_id: key.id.clone(),
            source_hsm: source_res.id.clone(),
            target_hsm: target_res.id.clone(),
        };
        let mut decided = self.core.decide_distribution(&tenant, &request)?;
        // Host rules, after the plugins and over them: no plugin can open these.
        let host_refusal = if target_res.tenant != tenant {
            Some(format!("{} belongs to another tenant: keys are never distributed across tenants", target_res.id))
        } else if source_res.id == target_res.id {
            Some("source and target are the same HSM".to_string())
        } else if let Err(e) =
            self.usable_hsm_resource(&source_res.id, &tenant).and_then(|_| self.usable_hsm_resource(&target_res.id, &tenant))
        {
            Some(e.detail)
        } else {
            None
        };
        if let Some(reason) = host_refusal {
            decided.overrule(reason);
        }
        if let Decision::Deny(reason) = &decided.decision {
            // Audited and notified (the target's webhook) in one transaction: never silent.
            let notice = serde_json::json!({
                "tenant": request.tenant,
                "key_id": request.key_id,
                "source_hsm": request.source_hsm,
                "target_hsm": request.target_hsm,
                "reason": reason,
            });
            self.core.store.record_denial_notice(&decided.audit, &target_res.id, crate::lifecycle::events::DISTRIBUTION_DENIED, &notice)?;
            return Ok(Distributed::Denied { request, reason: reason.clone(), plugins: decided.audit.plugins.clone() });
        }

        let (src_token, src_pin) = self.tenant_token(source)?;
        let (dst_token, dst_pin) = self.tenant_token(target)?;
        let src = self.tenant_session(source, &src_token, &src_pin)?;
        let dst = self.tenant_session(target, &dst_token, &dst_pin)?;
        if session::find_by_id(&dst, ObjectClass::PRIVATE_KEY, &key.cka_id)?.is_some() {
            return Err(Error::conflict(Conflict::Custody, format!("{} holds key {} already", target.id, key.id)));
        }
        let copied = crate::observe::hsm("copy", copy_wrapped(&src, &dst, key)).and_then(|()| {
            let copy = HsmKey {
                id: format!("key_{}", self.core.random_id(9)),
                slot_id: target.id.clone(),
                state: KeyState::Active,
                retire_after: None,
                replaces: None,
                origin: "distributed".into(),
                source_key: Some(key.id.clone()),
                created_at: now(),
                ..key.clone()
            };
            self.core.store.record_hsm_distribution(&copy, &decided.audit)?;
            Ok(copy)
        });
        if copied.is_err() {
            // Leave the target as it was.
            let _ = session::destroy_by_id(&dst, &key.cka_id);
        }
        src_token.give_back(src);
        dst_token.give_back(dst);
        Ok(Distributed::Copied(DistributionOutcome { key: copied?, plugins: decided.audit.plugins.clone() }))
    }
}

fn oaep() -> Mechanism<'static> {
    // SHA-1/MGF1-SHA-1 is the OAEP every module (SoftHSM2 included) unwraps with;
    // it only protects a one-time AES key here.
    Mechanism::RsaPkcsOaep(PkcsOaepParams::new(MechanismType::SHA1, PkcsMgfType::MGF1_SHA1, PkcsOaepSource::empty()))
}

fn attr_bytes(session: &Session, h: ObjectHandle, t: AttributeType) -> Result<Vec<u8>> {
    let attrs = session.get_attributes(h, &[t]).map_err(p11("reading an attribute"))?;
    attrs
        .into_iter()
        .find_map(|a| match a {
            Attribute::Modulus(v) | Attribute::PublicExponent(v) => Some(v),
            _ => None,
        })
        .ok_or_else(|| Error::internal("HSM: attribute missing"))
}

/// The wrap protocol of this module's doc, for one ECDSA key (and its public
/// key and certificate objects, which are public anyway).
fn copy_wrapped(src: &Session, dst: &Session, key: &HsmKey) -> Result<()> {
    let private = session::find_by_id(src, ObjectClass::PRIVATE_KEY, &key.cka_id)?
        .ok_or_else(|| Error::internal(format!("key {} is missing from its token", key.id)))?;

    // 1. The target's one-time wrapping key.
    let (rsa_pub, rsa_priv) = dst
        .generate_key_pair(
            &Mechanism::RsaPkcsKeyPairGen,
            &[
                Attribute::Token(false),
                Attribute::Wrap(true),
                Attribute::Encrypt(true),
                Attribute::ModulusBits(3072.into()),
                Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
            ],
            &[
                Attribute::Token(false),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Unwrap(true),
                Attribute::Decrypt(true),
            ],
        )
        .map_err(p11("making the target's wrapping key"))?;
    let modulus = attr_bytes(dst, rsa_pub, AttributeType::Modulus)?;
    let exponent = attr_bytes(dst, rsa_pub, AttributeType::PublicExponent)?;

    // 2. In the source: the target's public key, a one-time AES key, the two wraps.
    let wrapping_pub = src
        .create_object(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Token(false),
            Attribute::Wrap(true),
            Attribute::Encrypt(true),
            Attribute::Modulus(modulus),
            Attribute::PublicExponent(exponent),
        ])
        .map_err(p11("importing the target's wrapping key"))?;
    let transport = src
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::ValueLen(32.into()),
                Attribute::Sensitive(true),
                Attribute::Extractable(true),
                Attribute::Wrap(true),
                Attribute::Encrypt(true),
            ],
        )
        .map_err(p11("making the transport key"))?;
    let wrapped_key = src.wrap_key(&Mechanism::AesKeyWrapPad, transport, private).map_err(p11("wrapping the key"));
    let wrapped_transport = src.wrap_key(&oaep(), wrapping_pub, transport).map_err(p11("wrapping the transport key"));
    let _ = src.destroy_object(transport);
    let _ = src.destroy_object(wrapping_pub);
    let (wrapped_key, wrapped_transport) = (wrapped_key?, wrapped_transport?);

    // 3. In the target: unwrap the transport key, then the private key as a token object.
    let transport = dst
        .unwrap_key(
            &oaep(),
            rsa_priv,
            &wrapped_transport,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(false),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Unwrap(true),
                Attribute::Decrypt(true),
            ],
        )
        .map_err(p11("unwrapping the transport key"));
    let _ = dst.destroy_object(rsa_priv);
    let _ = dst.destroy_object(rsa_pub);
    let transport = transport?;
    let unwrapped = dst
        .unwrap_key(
            &Mechanism::AesKeyWrapPad,
            transport,
            &wrapped_key,
            &[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(KeyType::EC),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(true),
                Attribute::Sign(true),
                Attribute::Id(key.cka_id.clone()),
                Attribute::Label(key.label.as_bytes().to_vec()),
            ],
        )
        .map_err(p11("unwrapping the key"));
    let _ = dst.destroy_object(transport);
    unwrapped?;

    // 4. The public objects beside it.
    let point = key.spki.get(key.spki.len().saturating_sub(65)..).unwrap_or_default();
    let mut ec_point = vec![0x04, 0x41];
    ec_point.extend_from_slice(point);
    dst.create_object(&[
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::EC),
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::EcParams(P256_PARAMS.to_vec()),
        Attribute::EcPoint(ec_point),
        Attribute::Id(key.cka_id.clone()),
        Attribute::Label(key.label.as_bytes().to_vec()),
    ])
    .map_err(p11("writing the public key"))?;
    if let Some(cert) = &key.cert_der {
        session::write_certificate(dst, &key.cka_id, &key.label, cert)?;
    }
    Ok(())
}

/// Signs with a key in a token the caller is logged in to (the tenant's side:
/// tests and tools holding the user PIN), ECDSA P-256 with SHA-256, DER.
pub fn sign_with(module: &Path, token_label: &str, user_pin: &str, cka_id: &[u8], msg: &[u8]) -> Result<Vec<u8>> {
    let token = session::Token::open(module, token_label)?;
    let s = token.user_session(user_pin)?;
    let key = session::find_by_id(&s, ObjectClass::PRIVATE_KEY, cka_id)?.ok_or_else(|| Error::not_found("no such key in the token"))?;
    session::sign_p256_sha256(&s, key, msg)
}
