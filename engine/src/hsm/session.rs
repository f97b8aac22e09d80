//! One PKCS#11 token reached through its module: finding it by label,
//! sessions, logins, and the few object operations tenure needs (ECDSA P-256
//! key pairs, certificate objects, listing, zeroizing).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, CertificateType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use crate::error::{Error, ErrorKind, Result};
use crate::observe;

/// DER OID of prime256v1 (P-256), the CKA_EC_PARAMS of every key tenure makes.
pub(crate) const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// SubjectPublicKeyInfo prefix of a P-256 key, before the 65-octet point.
const P256_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01,
    0x07, 0x03, 0x42, 0x00,
];

pub(crate) fn p11(what: &str) -> impl Fn(P11Error) -> Error + '_ {
    move |e| Error::internal(format!("HSM: {what}: {e}")).caused_by(e)
}

pub(crate) fn is_rv(e: &P11Error, rv: RvError) -> bool {
    matches!(e, P11Error::Pkcs11(got, _) if *got == rv)
}

fn modules() -> Result<std::sync::MutexGuard<'static, HashMap<PathBuf, Pkcs11>>> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    MODULES.get_or_init(|| Mutex::new(HashMap::new())).lock().map_err(|_| Error::internal("HSM module lock poisoned"))
}

/// Finalizes this process's context of a module (C_Finalize: its sessions
/// close), so the next use initializes it again and re-reads its tokens. Some
/// modules (SoftHSM2) read token state once per C_Initialize; tools and tests
/// that watch tokens other processes change use this. Nothing of the module
/// may be in use in this process.
pub fn reload_module(path: &Path) -> Result<()> {
    if let Some(ctx) = modules()?.remove(path) {
        ctx.finalize().map_err(p11("finalizing the module"))?;
    }
    Ok(())
}

/// A PKCS#11 module is initialized once per process (C_Initialize may not be
/// called twice); every token of it shares the context.
fn module(path: &Path) -> Result<Pkcs11> {
    let mut modules = modules()?;
    if let Some(m) = modules.get(path) {
        return Ok(m.clone());
    }
    if !path.exists() {
        return Err(Error::malformed(format!("PKCS#11 module {} does not exist", path.display())));
    }
    let ctx = Pkcs11::new(path).map_err(|e| Error::malformed(format!("loading PKCS#11 module {}: {e}", path.display())))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) => {}
        Err(e) if is_rv(&e, RvError::CryptokiAlreadyInitialized) => {}
        Err(e) => return Err(Error::internal(format!("initializing PKCS#11 module {}: {e}", path.display()))),
    }
    modules.insert(path.to_path_buf(), ctx.clone());
    Ok(ctx)
}

/// A token, found by its label in a module.
pub struct Token {
    pub(crate) ctx: Pkcs11,
    pub(crate) slot: Slot,
    pub module: PathBuf,
    pub label: String,
    /// Open, logged-in sessions ready for reuse (signing is the hot path).
    idle: Mutex<Vec<Session>>,
}

/// What tenure shows of an object in a token; never key material.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ObjectInfo {
    pub class: String,
    pub id_hex: String,
    pub label: String,
    /// Private keys only.
    pub sensitive: Option<bool>,
    pub extractable: Option<bool>,
}

impl Token {
    pub fn open(module_path: &Path, label: &str) -> Result<Arc<Token>> {
        let ctx = module(module_path)?;
        let slots = ctx.get_slots_with_token().map_err(p11("listing slots"))?;
        for slot in slots {
            let Ok(info) = ctx.get_token_info(slot) else { continue };
            if info.label().trim_end() == label {
                return Ok(Arc::new(Token {
                    ctx,
                    slot,
                    module: module_path.to_path_buf(),
                    label: label.to_string(),
                    idle: Mutex::new(Vec::new()),
                }));
            }
        }
        Err(Error::not_found(format!("no token labelled {label:?} in {}", module_path.display())))
    }

    pub fn describe(&self) -> String {
        format!("token {:?} of {}", self.label, self.module.display())
    }

    /// A read-write session logged in as the user. The login is the
    /// application's (PKCS#11 logs in per token, not per session), so an
    /// "already logged in" answer is success.
    pub fn user_session(&self, pin: &str) -> Result<Session> {
        if let Some(s) = self.idle.lock().ok().and_then(|mut v| v.pop()) {
            return Ok(s);
        }
        let session = self.ctx.open_rw_session(self.slot).map_err(p11("opening a session"))?;
        match observe::hsm("login", session.login(UserType::User, Some(&AuthPin::from(pin.to_string())))) {
            Ok(()) => Ok(session),
            Err(e) if is_rv(&e, RvError::UserAlreadyLoggedIn) => Ok(session),
            Err(e) if is_rv(&e, RvError::PinIncorrect) || is_rv(&e, RvError::PinLocked) => {
                Err(Error::new(ErrorKind::Unauthorized, format!("{}: the user PIN is refused ({e})", self.describe())))
            }
            Err(e) if is_rv(&e, RvError::UserPinNotInitialized) => {
                Err(Error::conflict(crate::Conflict::Custody, format!("{}: no user PIN is set", self.describe())))
            }
            Err(e) => Err(Error::internal(format!("HSM: login to {}: {e}", self.describe()))),
        }
    }

    /// Returns a healthy session for reuse.
    pub fn give_back(&self, session: Session) {
        if let Ok(mut v) = self.idle.lock()
            && v.len() < 8
        {
            v.push(session);
        }
    }

    /// A public (not logged-in) read-only session: sees public objects only.
    pub fn public_session(&self) -> Result<Session> {
        self.ctx.open_ro_session(self.slot).map_err(p11("opening a session"))
    }

    /// Zeroizes the token: C_InitToken with the SO PIN destroys every object
    /// and the user PIN; the label is kept. Then, optionally, sets a new user PIN.
    pub fn reinitialize(&self, so_pin: &str, user_pin: Option<&str>) -> Result<()> {
        // Sessions must be closed for C_InitToken.
        if let Ok(mut v) = self.idle.lock() {
            v.clear();
        }
        let so = AuthPin::from(so_pin.to_string());
        observe::hsm("initialize", self.ctx.init_token(self.slot, &so, &self.label)).map_err(|e| {
            if is_rv(&e, RvError::PinIncorrect) {
                Error::new(ErrorKind::Unauthorized, format!("{}: the SO PIN is refused", self.describe()))
            } else {
                Error::internal(format!("HSM: initializing {}: {e}", self.describe()))
            }
        })?;
        if let Some(pin) = user_pin {
            self.init_user_pin(so_pin, pin)?;
        }
        Ok(())
    }

    /// Sets the user PIN as the SO (C_InitPIN).
    pub fn init_user_pin(&self, so_pin: &str, user_pin: &str) -> Result<()> {
        let s = self.ctx.open_rw_session(self.slot).map_err(p11("opening a session"))?;
        s.login(UserType::So, Some(&AuthPin::from(so_pin.to_string()))).map_err(p11("SO login"))?;
        let set = s.init_pin(&AuthPin::from(user_pin.to_string())).map_err(p11("setting the user PIN"));
        let _ = s.logout();
        set
    }

    /// Checks the SO PIN without changing anything.
    pub fn check_so_pin(&self, so_pin: &str) -> Result<()> {
        let s = self.ctx.open_rw_session(self.slot).map_err(p11("opening a session"))?;
        match s.login(UserType::So, Some(&AuthPin::from(so_pin.to_string()))) {
            Ok(()) => {
                let _ = s.logout();
                Ok(())
            }
            Err(e) if is_rv(&e, RvError::PinIncorrect) => {
                Err(Error::new(ErrorKind::Unauthorized, format!("{}: the SO PIN is refused", self.describe())))
            }
            Err(e) => Err(Error::internal(format!("HSM: SO login to {}: {e}", self.describe()))),
        }
    }
}

/// How a generated private key may leave the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exportability {
    /// Never (CA keys): CKA_EXTRACTABLE=false.
    Never,
    /// Only wrapped (tenant keys that may be distributed): CKA_EXTRACTABLE=true
    /// with CKA_SENSITIVE=true, so C_WrapKey works and C_GetAttributeValue
    /// of the value never does.
    WrappedOnly,
}

/// An ECDSA P-256 key pair in a token.
#[derive(Debug, Clone)]
pub struct KeyPairHandles {
    pub private: ObjectHandle,
    pub public: ObjectHandle,
    pub spki_der: Vec<u8>,
    /// The uncompressed point (65 octets).
    pub point: Vec<u8>,
}

pub fn generate_p256(session: &Session, id: &[u8], label: &str, export: Exportability) -> Result<KeyPairHandles> {
    let public_template = [
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::EcParams(P256_PARAMS.to_vec()),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    let private_template = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(export == Exportability::WrappedOnly),
        Attribute::Sign(true),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    let (public, private) =
        observe::hsm("generate", session.generate_key_pair(&Mechanism::EccKeyPairGen, &public_template, &private_template))
            .map_err(p11("generating an ECDSA P-256 key pair"))?;
    let point = read_point(session, public)?;
    Ok(KeyPairHandles { private, public, spki_der: spki_of_point(&point), point })
}

pub fn spki_of_point(point: &[u8]) -> Vec<u8> {
    let mut spki = P256_SPKI_PREFIX.to_vec();
    spki.extend_from_slice(point);
    spki
}

/// CKA_EC_POINT is a DER OCTET STRING around the point (some modules give the
/// bare point); returns the bare uncompressed point.
pub fn read_point(session: &Session, public: ObjectHandle) -> Result<Vec<u8>> {
    let attrs = session.get_attributes(public, &[AttributeType::EcPoint]).map_err(p11("reading the public key"))?;
    let raw = attrs
        .into_iter()
        .find_map(|a| if let Attribute::EcPoint(p) = a { Some(p) } else { None })
        .ok_or_else(|| Error::internal("HSM: public key without CKA_EC_POINT"))?;
    let point = match raw.as_slice() {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 => rest.to_vec(),
        p if p.len() == 65 && p[0] == 0x04 => p.to_vec(),
        _ => return Err(Error::internal("HSM: CKA_EC_POINT is not an uncompressed P-256 point")),
    };
    Ok(point)
}

/// Finds the one object of `class` with CKA_ID `id`.
pub fn find_by_id(session: &Session, class: ObjectClass, id: &[u8]) -> Result<Option<ObjectHandle>> {
    let found = session.find_objects(&[Attribute::Class(class), Attribute::Id(id.to_vec())]).map_err(p11("finding an object"))?;
    Ok(found.into_iter().next())
}

/// ECDSA over SHA-256: the digest is computed here (CKM_ECDSA is the mechanism
/// every module has) and the token's raw r||s becomes a DER ECDSA-Sig-Value.
pub fn sign_p256_sha256(session: &Session, key: ObjectHandle, msg: &[u8]) -> Result<Vec<u8>> {
    let digest = ring::digest::digest(&ring::digest::SHA256, msg);
    let raw = observe::hsm("sign", session.sign(&Mechanism::Ecdsa, key, digest.as_ref())).map_err(p11("signing"))?;
    ecdsa_raw_to_der(&raw)
}

/// r||s (each half the length) to SEQUENCE { INTEGER r, INTEGER s }.
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Result<Vec<u8>> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) || raw.len() > 132 {
        return Err(Error::internal("HSM: malformed ECDSA signature"));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let int = |v: &[u8]| {
        let v = &v[v.iter().position(|&b| b != 0).unwrap_or(v.len().saturating_sub(1))..];
        let mut out = vec![0x02];
        let pad = v.first().is_some_and(|b| b & 0x80 != 0);
        out.push((v.len() + pad as usize) as u8);
        if pad {
            out.push(0);
        }
        out.extend_from_slice(v);
        out
    };
    let (r, s) = (int(r), int(s));
    let body_len = r.len() + s.len();
    let mut der = vec![0x30];
    if body_len >= 0x80 {
        der.push(0x81);
    }
    der.push(body_len as u8);
    der.extend(r);
    der.extend(s);
    Ok(der)
}

/// Writes an X.509 certificate object next to its key (same CKA_ID), so
/// software that reads the token finds the pair.
pub fn write_certificate(session: &Session, id: &[u8], label: &str, cert_der: &[u8]) -> Result<ObjectHandle> {
    let (subject, issuer, serial) = cert_names(cert_der)?;
    session
        .create_object(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::CertificateType(CertificateType::X_509),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Id(id.to_vec()),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Subject(subject),
            Attribute::Issuer(issuer),
            Attribute::SerialNumber(serial),
            Attribute::Value(cert_der.to_vec()),
        ])
        .map_err(p11("writing the certificate object"))
}

fn cert_names(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    use x509_parser::prelude::FromDer as _;
    let (_, cert) =
        x509_parser::certificate::X509Certificate::from_der(der).map_err(|e| Error::internal(format!("certificate for the token: {e}")))?;
    // CKA_SERIAL_NUMBER is the DER INTEGER.
    let raw = cert.tbs_certificate.raw_serial();
    let mut serial = vec![0x02, raw.len() as u8];
    serial.extend_from_slice(raw);
    Ok((cert.subject().as_raw().to_vec(), cert.issuer().as_raw().to_vec(), serial))
}

/// Reads the DER of the certificate object with CKA_ID `id`, if any (public object).
pub fn read_certificate(session: &Session, id: &[u8]) -> Result<Option<Vec<u8>>> {
    let Some(h) = find_by_id(session, ObjectClass::CERTIFICATE, id)? else { return Ok(None) };
    let attrs = session.get_attributes(h, &[AttributeType::Value]).map_err(p11("reading a certificate"))?;
    Ok(attrs.into_iter().find_map(|a| if let Attribute::Value(v) = a { Some(v) } else { None }))
}

/// Every object the session can see, described (never their values).
pub fn list_objects(session: &Session) -> Result<Vec<ObjectInfo>> {
    let handles = session.find_objects(&[]).map_err(p11("listing objects"))?;
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        let attrs = session
            .get_attributes(h, &[AttributeType::Class, AttributeType::Id, AttributeType::Label])
            .map_err(p11("reading object attributes"))?;
        let mut info =
            ObjectInfo { class: "other".into(), id_hex: String::new(), label: String::new(), sensitive: None, extractable: None };
        let mut is_private = false;
        for a in attrs {
            match a {
                Attribute::Class(c) => {
                    is_private = c == ObjectClass::PRIVATE_KEY;
                    info.class = match c {
                        ObjectClass::PRIVATE_KEY => "private-key",
                        ObjectClass::PUBLIC_KEY => "public-key",
                        ObjectClass::SECRET_KEY => "secret-key",
                        ObjectClass::CERTIFICATE => "certificate",
                        _ => "other",
                    }
                    .into()
                }
                Attribute::Id(v) => info.id_hex = hex(&v),
                Attribute::Label(v) => info.label = String::from_utf8_lossy(&v).into_owned(),
                _ => {}
            }
        }
        if is_private {
            let attrs = session
                .get_attributes(h, &[AttributeType::Sensitive, AttributeType::Extractable])
                .map_err(p11("reading key attributes"))?;
            for a in attrs {
                match a {
                    Attribute::Sensitive(b) => info.sensitive = Some(b),
                    Attribute::Extractable(b) => info.extractable = Some(b),
                    _ => {}
                }
            }
        }
        out.push(info);
    }
    Ok(out)
}

/// Destroys every object with CKA_ID `id` (key pair and certificate).
pub fn destroy_by_id(session: &Session, id: &[u8]) -> Result<usize> {
    let handles = session.find_objects(&[Attribute::Id(id.to_vec())]).map_err(p11("finding objects"))?;
    let n = handles.len();
    for h in handles {
        observe::hsm("destroy", session.destroy_object(h)).map_err(p11("destroying an object"))?;
    }
    Ok(n)
}

pub(crate) fn hex(b: &[u8]) -> String {
    ::hex::encode(b)
}

pub(crate) fn unhex(s: &str) -> Result<Vec<u8>> {
    ::hex::decode(s).map_err(|e| Error::malformed(format!("{s:?} is not hex")).caused_by(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_signature_to_der() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x80; // r needs a leading zero
        raw[32] = 0x00;
        raw[33] = 0x01; // s has a leading zero to strip
        let der = ecdsa_raw_to_der(&raw).unwrap();
        assert_eq!(der[0], 0x30);
        assert_eq!(&der[2..5], &[0x02, 33, 0x00]);
        let s_at = 2 + 2 + 33;
        assert_eq!(&der[s_at..s_at + 3], &[0x02, 31, 0x01]);
        assert_eq!(der[1] as usize, der.len() - 2);
        assert!(ecdsa_raw_to_der(&[1, 2, 3]).is_err());
        assert_eq!(unhex(&hex(&[0, 255, 16])).unwrap(), vec![0, 255, 16]);
    }
}
