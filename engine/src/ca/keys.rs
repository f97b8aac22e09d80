//! Subject key types, and which of them this CA certifies.

use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519};
use x509_parser::prelude::FromDer as _;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::error::{Error, ErrorKind};

pub(super) const RSA_MIN_BITS: u32 = 2048;
pub(super) const RSA_MAX_BITS: u32 = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    EcdsaP256,
    EcdsaP384,
    Rsa(u32 /* bits */),
    /// Recognised so the refusal can name it; leaf keys are ECDSA and RSA only.
    Ed25519,
}

impl KeyType {
    /// Whether a leaf certificate may carry this key.
    pub fn allowed_for_leaf(self) -> bool {
        !matches!(self, KeyType::Ed25519)
    }

    /// Reads a DER SubjectPublicKeyInfo and returns its type if a leaf may carry it.
    pub fn of_leaf_spki(spki_der: &[u8]) -> Result<KeyType, Error> {
        let (rest, spki) = SubjectPublicKeyInfo::from_der(spki_der)
            .map_err(|e| Error::new(ErrorKind::BadPublicKey, format!("unparsable public key: {e}")))?;
        if !rest.is_empty() {
            return Err(Error::new(ErrorKind::BadPublicKey, "trailing data after the public key"));
        }
        leaf_key_type(&spki).map_err(|refused| Error::new(ErrorKind::BadPublicKey, refused.detail("the public key")))
    }
}

/// What a leaf may carry, for refusals.
fn accepted_keys() -> String {
    format!("tenure certifies ECDSA keys on P-256 and P-384 and RSA keys of {RSA_MIN_BITS} to {RSA_MAX_BITS} bits")
}

/// Why a key is refused, in words ("is on curve secp256k1 (1.3.132.0.10)");
/// the caller names the key and picks the error kind (a CSR's key is
/// `badCSR`, RFC 8555 §7.4; an account key `badPublicKey`, §6.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct KeyRefusal(String);

impl KeyRefusal {
    /// "<whose key> <why>; <what is accepted>".
    pub(super) fn detail(&self, whose: &str) -> String {
        format!("{whose} {}; {}", self.0, accepted_keys())
    }
}

/// A name for the OIDs of curves and key algorithms a client may plausibly
/// send, so a refusal says more than a dotted number.
fn oid_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "1.3.132.0.35" => "P-521",
        "1.3.132.0.10" => "secp256k1",
        "1.3.132.0.33" => "P-224",
        "1.2.840.10045.3.1.1" => "P-192",
        "1.3.36.3.3.2.8.1.1.7" => "brainpoolP256r1",
        "1.3.36.3.3.2.8.1.1.11" => "brainpoolP384r1",
        "1.3.36.3.3.2.8.1.1.13" => "brainpoolP512r1",
        "1.2.156.10197.1.301" => "SM2",
        "1.3.101.110" => "X25519",
        "1.3.101.111" => "X448",
        "1.3.101.113" => "Ed448",
        "1.2.840.10040.4.1" => "DSA",
        "1.2.840.113549.1.1.10" => "RSASSA-PSS",
        _ => return None,
    })
}

/// "name (oid)", or the bare OID when it has no name here.
fn named(oid: &x509_parser::oid_registry::Oid<'_>) -> String {
    let id = oid.to_id_string();
    match oid_name(&id) {
        Some(name) => format!("{name} ({id})"),
        None => id,
    }
}

/// Classifies a key and applies the leaf policy: ECDSA P-256/P-384 with an
/// uncompressed point, RSA 2048..=8192 bits with an odd exponent >= 3.
pub(super) fn leaf_key_type(spki: &SubjectPublicKeyInfo<'_>) -> Result<KeyType, KeyRefusal> {
    let refuse = |why: String| Err(KeyRefusal(why));
    let alg = &spki.algorithm.algorithm;
    let key_type = if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let Some(curve) = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()) else {
            return refuse("is an ECDSA key without a named curve".into());
        };
        let (key_type, point_len) = if curve == OID_EC_P256 {
            (KeyType::EcdsaP256, 65)
        } else if curve == OID_NIST_EC_P384 {
            (KeyType::EcdsaP384, 97)
        } else {
            return refuse(format!("is on curve {}", named(&curve)));
        };
        let point = &spki.subject_public_key.data;
        if point.len() != point_len || point.first() != Some(&0x04) {
            return refuse("is not an uncompressed point of its curve".into());
        }
        key_type
    } else if *alg == OID_PKCS1_RSAENCRYPTION {
        let Ok(PublicKey::RSA(rsa)) = spki.parsed() else {
            return refuse("is a malformed RSA key".into());
        };
        let bits = bit_length(rsa.modulus);
        if !(RSA_MIN_BITS as usize..=RSA_MAX_BITS as usize).contains(&bits) {
            return refuse(format!("is an RSA key of {bits} bits"));
        }
        let exponent_ok = rsa.try_exponent().is_ok_and(|e| e >= 3 && e % 2 == 1);
        if !exponent_ok {
            return refuse("is an RSA key whose public exponent is even or below 3".into());
        }
        KeyType::Rsa(bits as u32)
    } else if *alg == OID_SIG_ED25519 {
        KeyType::Ed25519
    } else {
        return refuse(format!("is of algorithm {}", named(alg)));
    };
    if !key_type.allowed_for_leaf() {
        return refuse(format!("is an {key_type:?} key"));
    }
    Ok(key_type)
}

/// Bits in a big-endian unsigned integer, ignoring leading zero octets
/// (x509-parser's own key_size assumes exactly one).
fn bit_length(be: &[u8]) -> usize {
    match be.iter().position(|&b| b != 0) {
        Some(i) => (be.len() - i) * 8 - be[i].leading_zeros() as usize,
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_length_ignores_padding() {
        assert_eq!(bit_length(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(bit_length(&[0x01, 0x00]), 9);
        assert_eq!(bit_length(&[0, 0]), 0);
    }

    #[test]
    fn leaf_key_types() {
        use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519, PublicKeyData};
        let spki = |alg| KeyPair::generate_for(alg).unwrap().subject_public_key_info();
        assert_eq!(KeyType::of_leaf_spki(&spki(&PKCS_ECDSA_P256_SHA256)).unwrap(), KeyType::EcdsaP256);
        assert_eq!(KeyType::of_leaf_spki(&spki(&PKCS_ECDSA_P384_SHA384)).unwrap(), KeyType::EcdsaP384);
        let ed = KeyType::of_leaf_spki(&spki(&PKCS_ED25519)).unwrap_err();
        assert_eq!(ed.kind, ErrorKind::BadPublicKey);
        assert_eq!(KeyType::of_leaf_spki(b"junk").unwrap_err().kind, ErrorKind::BadPublicKey);
    }
}
