//! Plugin signing: the public keys a tenant registers to sign its own policy
//! plugins, their ids, and the check of a plugin's detached signature against
//! them. A signature is verified once, when the plugin is installed; the id
//! of the key that verified it is stored beside the plugin and copied into
//! every audit record of a decision the plugin takes part in.
//!
//! - **Keys**: PEM `PUBLIC KEY` (SubjectPublicKeyInfo), Ed25519 or ECDSA
//!   P-256, nothing else.
//! - **Key id**: `sha256:` and the first 32 hex digits of the SHA-256 of the
//!   key's SubjectPublicKeyInfo DER, so a tenant computes it itself:
//!   `openssl pkey -pubin -in key.pub -outform DER | sha256sum | cut -c1-32`.
//! - **Signatures**: detached, over the exact bytes of the component. Ed25519:
//!   the raw 64 bytes (`openssl pkeyutl -sign -rawin -inkey key.pem -in
//!   plugin.wasm -out plugin.sig`); ECDSA P-256: over SHA-256, DER-encoded
//!   (`openssl dgst -sha256 -sign key.pem -out plugin.sig plugin.wasm`).

use base64::Engine as _;
use ring::digest::{SHA256, digest};
use ring::signature::{ECDSA_P256_SHA256_ASN1, ED25519, UnparsedPublicKey};
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519};
use x509_parser::prelude::FromDer as _;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::error::{Error, Result};

/// The largest public key file accepted (a P-256 or Ed25519 PEM is ~180 bytes).
pub const MAX_PUBLIC_KEY_PEM: usize = 16 * 1024;

/// The largest detached signature accepted (Ed25519: 64 bytes; ECDSA P-256 DER: at most 72).
pub const MAX_SIGNATURE: usize = 512;

/// Keys one tenant may register at once: enough for rotation and a few
/// signers, few enough that verifying against each stays cheap.
pub const MAX_KEYS_PER_TENANT: usize = 16;

/// The hex digits of the SHA-256 kept in a key id (128 bits).
const KEY_ID_HEX: usize = 32;

const PEM_BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
const PEM_END: &str = "-----END PUBLIC KEY-----";

/// What a plugin signing key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum KeyAlgorithm {
    /// Ed25519 (RFC 8032); the signature is the raw 64 bytes.
    #[serde(rename = "ed25519")]
    Ed25519,
    /// ECDSA on P-256 over SHA-256; the signature is DER (RFC 3279).
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
}

impl KeyAlgorithm {
    /// Its name as listed (`ed25519`, `ecdsa-p256`).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::Ed25519 => "ed25519",
            KeyAlgorithm::EcdsaP256 => "ecdsa-p256",
        }
    }
}

/// A public key a tenant registered to sign its plugins.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TenantKey {
    /// The tenant whose plugins it signs.
    pub tenant: String,
    /// `sha256:` + the first 32 hex digits of SHA-256(SubjectPublicKeyInfo DER).
    pub key_id: String,
    /// `ed25519` or `ecdsa-p256`.
    pub algorithm: KeyAlgorithm,
    /// Unix seconds.
    pub created_at: i64,
    /// The key as PEM `PUBLIC KEY`.
    pub public_key_pem: String,
}

/// A parsed plugin signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKey {
    /// Its algorithm.
    pub algorithm: KeyAlgorithm,
    /// Its SubjectPublicKeyInfo, DER: what is stored and what the id hashes.
    pub spki_der: Vec<u8>,
    /// The key itself as `ring` verifies with it (Ed25519: 32 bytes; P-256: the uncompressed point).
    raw: Vec<u8>,
}

impl SigningKey {
    /// Reads a PEM `PUBLIC KEY` (one block, nothing else but whitespace).
    pub fn from_pem(pem: &str) -> Result<SigningKey> {
        if pem.len() > MAX_PUBLIC_KEY_PEM {
            return Err(Error::malformed(format!(
                "the public key file is {} bytes; a plugin signing key's PEM is at most {MAX_PUBLIC_KEY_PEM} bytes",
                pem.len()
            )));
        }
        let text = pem.trim();
        let Some(first) = text.lines().next() else {
            return Err(Error::malformed("the public key file is empty; expected a PEM PUBLIC KEY"));
        };
        let first = first.trim();
        if first != PEM_BEGIN {
            return Err(Error::malformed(match first.strip_prefix("-----BEGIN ").and_then(|l| l.strip_suffix("-----")) {
                Some(label) if label.contains("PRIVATE KEY") => {
                    format!("this is a private key ({label}); register the public key only: openssl pkey -in key.pem -pubout -out key.pub")
                }
                Some("RSA PUBLIC KEY") => "RSA keys cannot sign plugins; use an Ed25519 or ECDSA P-256 key".to_string(),
                Some(label) => format!("expected a PEM PUBLIC KEY (SubjectPublicKeyInfo), found a PEM {label}"),
                None => {
                    "expected a PEM PUBLIC KEY (SubjectPublicKeyInfo): the text does not start with -----BEGIN PUBLIC KEY-----".to_string()
                }
            }));
        }
        let Some(body) = text.strip_prefix(PEM_BEGIN).and_then(|t| t.strip_suffix(PEM_END)) else {
            return Err(Error::malformed(
                "the PEM PUBLIC KEY does not end with -----END PUBLIC KEY----- (or more follows it: give one key)",
            ));
        };
        if body.contains("-----") {
            return Err(Error::malformed("the file holds more than one PEM block; give one PUBLIC KEY"));
        }
        let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|e| Error::malformed(format!("the PEM PUBLIC KEY is not valid base64: {e}")))?;
        SigningKey::from_spki_der(&der)
    }

    /// Reads a DER SubjectPublicKeyInfo: Ed25519 or ECDSA P-256 (uncompressed point).
    pub fn from_spki_der(der: &[u8]) -> Result<SigningKey> {
        let (rest, spki) = SubjectPublicKeyInfo::from_der(der)
            .map_err(|e| Error::malformed(format!("the public key is not a SubjectPublicKeyInfo: {e}")))?;
        if !rest.is_empty() {
            return Err(Error::malformed("trailing data after the public key"));
        }
        let alg = &spki.algorithm.algorithm;
        let point = spki.subject_public_key.data.to_vec();
        let algorithm = if *alg == OID_SIG_ED25519 {
            if point.len() != 32 {
                return Err(Error::malformed(format!("an Ed25519 public key is 32 bytes, this one {}", point.len())));
            }
            KeyAlgorithm::Ed25519
        } else if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok());
            match curve {
                Some(c) if c == OID_EC_P256 => {}
                Some(c) => {
                    return Err(Error::malformed(format!(
                        "the ECDSA key is on curve {}; plugin signing keys are Ed25519 or ECDSA P-256",
                        c.to_id_string()
                    )));
                }
                None => return Err(Error::malformed("the ECDSA key names no curve; plugin signing keys are Ed25519 or ECDSA P-256")),
            }
            if point.len() != 65 || point[0] != 0x04 {
                return Err(Error::malformed("the P-256 public key is not an uncompressed point"));
            }
            KeyAlgorithm::EcdsaP256
        } else if *alg == OID_PKCS1_RSAENCRYPTION {
            return Err(Error::malformed("RSA keys cannot sign plugins; use an Ed25519 or ECDSA P-256 key"));
        } else {
            return Err(Error::malformed(format!(
                "a key of algorithm {} cannot sign plugins; use an Ed25519 or ECDSA P-256 key",
                alg.to_id_string()
            )));
        };
        Ok(SigningKey { algorithm, spki_der: der.to_vec(), raw: point })
    }

    /// Its id: `sha256:` + the first 32 hex digits of SHA-256(SPKI DER).
    pub fn key_id(&self) -> String {
        key_id(&self.spki_der)
    }

    /// The key as PEM `PUBLIC KEY`, 64 columns, as openssl writes it.
    pub fn to_pem(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.spki_der);
        let mut pem = String::with_capacity(b64.len() + 64);
        pem.push_str(PEM_BEGIN);
        pem.push('\n');
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str(PEM_END);
        pem.push('\n');
        pem
    }

    /// Whether `signature` is this key's signature over exactly `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        let alg: &dyn ring::signature::VerificationAlgorithm = match self.algorithm {
            KeyAlgorithm::Ed25519 => &ED25519,
            KeyAlgorithm::EcdsaP256 => &ECDSA_P256_SHA256_ASN1,
        };
        UnparsedPublicKey::new(alg, &self.raw).verify(message, signature).is_ok()
    }
}

/// The id of a key, from its SubjectPublicKeyInfo DER.
pub fn key_id(spki_der: &[u8]) -> String {
    let hex = hex::encode(digest(&SHA256, spki_der));
    format!("sha256:{}", &hex[..KEY_ID_HEX])
}

/// Refuses a signature too large to be one (before any work on it).
pub fn check_signature_size(signature: &[u8]) -> Result<()> {
    if signature.is_empty() {
        return Err(Error::malformed("the plugin signature is empty"));
    }
    if signature.len() > MAX_SIGNATURE {
        return Err(Error::malformed(format!(
            "the plugin signature is {} bytes; an Ed25519 or ECDSA P-256 signature is at most {MAX_SIGNATURE}",
            signature.len()
        )));
    }
    Ok(())
}

/// The id of the first of `keys` under which `signature` verifies over `wasm`.
pub fn signer_among<'a>(keys: impl IntoIterator<Item = &'a SigningKey>, wasm: &[u8], signature: &[u8]) -> Option<String> {
    keys.into_iter().find(|k| k.verifies(wasm, signature)).map(SigningKey::key_id)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};

    /// Signs a message.
    type Sign = Box<dyn Fn(&[u8]) -> Vec<u8> + Send + Sync>;

    /// A test signer: its public key as PEM, and a function that signs.
    pub(crate) struct TestSigner {
        pub pem: String,
        sign: Sign,
    }

    impl TestSigner {
        pub(crate) fn sign(&self, message: &[u8]) -> Vec<u8> {
            (self.sign)(message)
        }
    }

    fn pem_of(spki: &[u8]) -> String {
        SigningKey { algorithm: KeyAlgorithm::Ed25519, spki_der: spki.to_vec(), raw: vec![] }.to_pem()
    }

    /// A fresh Ed25519 signer.
    pub(crate) fn ed25519() -> TestSigner {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        // SPKI for Ed25519: a fixed 12-byte prefix and the 32-byte key (RFC 8410).
        let mut spki = vec![0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
        spki.extend_from_slice(pair.public_key().as_ref());
        TestSigner { pem: pem_of(&spki), sign: Box::new(move |m| pair.sign(m).as_ref().to_vec()) }
    }

    /// A fresh ECDSA P-256 signer (DER signatures).
    pub(crate) fn p256() -> TestSigner {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        // SPKI for P-256: id-ecPublicKey, prime256v1, the uncompressed point (RFC 5480).
        let mut spki = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").unwrap();
        spki.extend_from_slice(pair.public_key().as_ref());
        TestSigner { pem: pem_of(&spki), sign: Box::new(move |m| pair.sign(&SystemRandom::new(), m).unwrap().as_ref().to_vec()) }
    }

    // Made with `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024` and `-pubout`.
    const RSA_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCuuxPvsYAj9Pr4bmIkYfPkU1KQ
yGbLrAM64zoF2ommepiJ0eEt05q8Bdu9ugjIQcFge3vvOD85ngZqVuqQz7XHF8/Q
w4FvGXwMF5kLPeBXdN2eCanzBXqADtyl6XZiyWscQN6abCVSYEF1nNTcmU/Wypvk
V6VdxphUiua+OWtlrwIDAQAB
-----END PUBLIC KEY-----
";

    #[test]
    fn keys_parse_and_refuse_precisely() {
        for signer in [ed25519(), p256()] {
            let key = SigningKey::from_pem(&signer.pem).unwrap();
            // Round trip: the PEM written is the PEM read.
            assert_eq!(key.to_pem(), signer.pem);
            assert_eq!(SigningKey::from_pem(&format!("\n  {}  \n", signer.pem)).unwrap(), key);
        }
        assert_eq!(SigningKey::from_pem(&ed25519().pem).unwrap().algorithm, KeyAlgorithm::Ed25519);
        assert_eq!(SigningKey::from_pem(&p256().pem).unwrap().algorithm, KeyAlgorithm::EcdsaP256);
        let refused = |pem: &str| SigningKey::from_pem(pem).unwrap_err().detail;
        assert!(refused(RSA_PEM).contains("RSA keys cannot sign plugins"), "{}", refused(RSA_PEM));
        assert!(refused("").contains("empty"));
        assert!(refused("garbage").contains("does not start with -----BEGIN PUBLIC KEY-----"));
        assert!(refused("-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n").contains("not valid base64"));
        assert!(refused("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").contains("not a SubjectPublicKeyInfo"));
        assert!(refused("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").contains("private key"));
        assert!(refused("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").contains("found a PEM CERTIFICATE"));
        let two = format!("{}{}", ed25519().pem, ed25519().pem);
        assert!(refused(&two).contains("more than one PEM block"), "{}", refused(&two));
        let huge = format!("{}{}", ed25519().pem, " ".repeat(MAX_PUBLIC_KEY_PEM));
        assert!(refused(&huge).contains("at most 16384 bytes"));
        // A P-384 key: named, refused.
        let p384 = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEaVNTzCY1Fq6UqidKP1TJxSQoYnF8+SM4
Jm+K+FcsrawO2vBCMzb/r2bD1Yygo8DORQe8T/tl0BNjDDlfIrzOiNh1/LyusHiE
v/sn5VNYg90xXMq2QV9NeIvNPLGDtta5
-----END PUBLIC KEY-----
";
        assert!(refused(p384).contains("on curve 1.3.132.0.34"), "{}", refused(p384));
    }

    #[test]
    fn key_ids_are_stable_and_documented() {
        let signer = ed25519();
        let key = SigningKey::from_pem(&signer.pem).unwrap();
        let id = key.key_id();
        assert_eq!(id, SigningKey::from_pem(&signer.pem).unwrap().key_id());
        // As documented: sha256: and the first 32 hex digits of SHA-256(SPKI DER).
        assert_eq!(id, format!("sha256:{}", &hex::encode(digest(&SHA256, &key.spki_der))[..32]));
        assert_eq!(id.len(), "sha256:".len() + 32);
        assert_ne!(id, SigningKey::from_pem(&ed25519().pem).unwrap().key_id());
    }

    #[test]
    fn signatures_verify_under_the_right_key_only() {
        let wasm = b"\0asm\x0d\0\x01\0 a component".to_vec();
        for (signer, other) in [(ed25519(), p256()), (p256(), ed25519()), (ed25519(), ed25519()), (p256(), p256())] {
            let key = SigningKey::from_pem(&signer.pem).unwrap();
            let wrong = SigningKey::from_pem(&other.pem).unwrap();
            let sig = signer.sign(&wasm);
            assert!(key.verifies(&wasm, &sig));
            assert!(!wrong.verifies(&wasm, &sig));
            let mut tampered = wasm.clone();
            tampered[9] ^= 1;
            assert!(!key.verifies(&tampered, &sig));
            assert!(!key.verifies(&wasm, &sig[1..]));
            assert_eq!(signer_among([&wrong, &key], &wasm, &sig), Some(key.key_id()));
            assert_eq!(signer_among([&wrong], &wasm, &sig), None);
        }
        assert!(check_signature_size(&[0; MAX_SIGNATURE + 1]).unwrap_err().detail.contains("at most"));
        assert!(check_signature_size(&[]).unwrap_err().detail.contains("empty"));
        assert!(check_signature_size(&[0; 64]).is_ok());
    }
}
