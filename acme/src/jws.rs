//! JWS (RFC 7515) as ACME uses it (RFC 8555 §6.2), strictly.
//!
//! Only the flattened JSON serialization, only four asymmetric algorithms,
//! only public JWKs (RFC 7517) of the matching key types. Everything a client
//! could get subtly wrong is rejected rather than repaired, so that one key has
//! exactly one accepted JWK encoding and therefore one RFC 7638 thumbprint.
//!
//! This module parses and verifies; the caller decides what the request means:
//! it checks the nonce against its store, the `url` against the request URL,
//! looks `kid` up as an account, and parses the payload for its endpoint.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::{agreement, digest, rand, signature};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use tenure_engine::ca::der_tlv as der;
use tenure_engine::ra::{ExternalBinding, MacAlgorithm};

use crate::problem::{Problem, ProblemType};

// ---------------------------------------------------------------------------
// base64url and JSON helpers
// ---------------------------------------------------------------------------

/// base64url without padding (RFC 7515 §2). The `URL_SAFE_NO_PAD` engine is
/// strict on decode: it rejects `=`, the `+/` alphabet, whitespace, and
/// non-zero trailing bits, so every byte string has exactly one encoding.
fn b64_decode(s: &str, what: &str) -> Result<Vec<u8>, Problem> {
    URL_SAFE_NO_PAD.decode(s).map_err(|_| Problem::malformed(format!("{what} is not unpadded base64url")))
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Parses JSON, rejecting duplicate object members at any depth.
///
/// RFC 7515 §5.2 allows "last one wins", but a duplicate `alg`, `url` or `x`
/// only ever serves to make two parsers disagree, so we refuse it.
pub(crate) fn parse_json_strict(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<NoDuplicates>(bytes).map(|v| v.0)
}

struct NoDuplicates(Value);

impl<'de> Deserialize<'de> for NoDuplicates {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDuplicatesVisitor)
    }
}

struct NoDuplicatesVisitor;

impl<'de> Visitor<'de> for NoDuplicatesVisitor {
    type Value = NoDuplicates;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates(Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates(Value::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates(Value::from(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates(Value::String(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates(Value::String(v)))
    }
    fn visit_unit<E>(self) -> Result<NoDuplicates, E> {
        Ok(NoDuplicates(Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NoDuplicates, A::Error> {
        let mut items = Vec::new();
        while let Some(NoDuplicates(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(NoDuplicates(Value::Array(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NoDuplicates, A::Error> {
        let mut obj = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let NoDuplicates(v) = map.next_value()?;
            if obj.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate member {key:?}")));
            }
            obj.insert(key, v);
        }
        Ok(NoDuplicates(Value::Object(obj)))
    }
}

// ---------------------------------------------------------------------------
// Algorithms
// ---------------------------------------------------------------------------

/// The JWS algorithms accepted on the outer (account-key) JWS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// ECDSA P-384 with SHA-384.
    ES384,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// Ed25519.
    EdDSA,
}

impl Alg {
    /// Every accepted algorithm.
    pub const ALL: [Alg; 4] = [Alg::ES256, Alg::ES384, Alg::RS256, Alg::EdDSA];

    /// The `alg` header value (RFC 7518 §3.1, RFC 8037 §3.1).
    pub fn name(self) -> &'static str {
        match self {
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::RS256 => "RS256",
            Alg::EdDSA => "EdDSA",
        }
    }

    /// Exact, case-sensitive match: JOSE names are case-sensitive.
    pub fn from_name(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.name() == name)
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// badSignatureAlgorithm naming what we accept (RFC 8555 §6.2 asks servers to
/// tell the client; the problem document has no `algorithms` field, so the
/// detail carries the list).
fn unsupported_alg(what: &str) -> Problem {
    Problem::new(ProblemType::BadSignatureAlgorithm, format!("{what} is not supported; use one of ES256, ES384, RS256, EdDSA"))
}

// ---------------------------------------------------------------------------
// JWK
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Curve {
    P256,
    P384,
}

impl Curve {
    fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
        }
    }
    /// Coordinate length in bytes; RFC 7518 §6.2.1.2 requires the full length.
    fn coord_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }
    fn alg(self) -> Alg {
        match self {
            Curve::P256 => Alg::ES256,
            Curve::P384 => Alg::ES384,
        }
    }
    fn verify_alg(self) -> &'static signature::EcdsaVerificationAlgorithm {
        match self {
            Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED,
            Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED,
        }
    }
    fn ecdh_alg(self) -> &'static agreement::Algorithm {
        match self {
            Curve::P256 => &agreement::ECDH_P256,
            Curve::P384 => &agreement::ECDH_P384,
        }
    }
    fn oid(self) -> &'static [u8] {
        match self {
            Curve::P256 => OID_P256,
            Curve::P384 => OID_P384,
        }
    }
}

/// Key material, always in canonical form: fixed-length EC coordinates and
/// Ed25519 points, minimal big-endian RSA integers. Equality is key equality.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Ec { curve: Curve, x: Vec<u8>, y: Vec<u8> },
    Rsa { n: Vec<u8>, e: Vec<u8> },
    Ed25519 { x: Vec<u8> },
}

/// A validated public JWK of a type ACME accounts may use.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Jwk {
    key: Key,
}

/// Members that carry private or symmetric key material (RFC 7518 §6.2.2,
/// §6.3.2, §6.4; RFC 8037 §2). A client sending one has leaked its key.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

fn bad_key(detail: impl Into<String>) -> Problem {
    Problem::new(ProblemType::BadPublicKey, detail)
}

fn str_member<'a>(obj: &'a Map<String, Value>, name: &str, ctx: &str) -> Result<&'a str, Problem> {
    match obj.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(Problem::malformed(format!("{ctx} member {name:?} must be a string"))),
        None => Err(Problem::malformed(format!("{ctx} is missing member {name:?}"))),
    }
}

fn b64_member(obj: &Map<String, Value>, name: &str) -> Result<Vec<u8>, Problem> {
    b64_decode(str_member(obj, name, "JWK")?, &format!("JWK member {name:?}"))
}

impl Jwk {
    /// Parses and validates a public JWK. Extra members (`alg`, `use`, `kid`,
    /// ...) are allowed by RFC 7517 and ignored; they are not part of the key.
    pub fn from_json(v: &Value) -> Result<Jwk, Problem> {
        let obj = v.as_object().ok_or_else(|| Problem::malformed("JWK must be a JSON object"))?;
        if let Some(m) = PRIVATE_MEMBERS.iter().find(|m| obj.contains_key(**m)) {
            return Err(bad_key(format!("JWK contains private key member {m:?}; send the public key only")));
        }
        let key = match str_member(obj, "kty", "JWK")? {
            "EC" => {
                let curve = match str_member(obj, "crv", "JWK")? {
                    "P-256" => Curve::P256,
                    "P-384" => Curve::P384,
                    other => {
                        return Err(bad_key(format!("EC curve {other:?} is not supported; use P-256 or P-384")));
                    }
                };
                let (x, y) = (b64_member(obj, "x")?, b64_member(obj, "y")?);
                if x.len() != curve.coord_len() || y.len() != curve.coord_len() {
                    return Err(bad_key(format!("{} coordinates must be exactly {} bytes each", curve.name(), curve.coord_len())));
                }
                check_ec_point(curve, &ec_point(&x, &y))?;
                Key::Ec { curve, x, y }
            }
            "RSA" => {
                let (n, e) = (b64_member(obj, "n")?, b64_member(obj, "e")?);
                check_rsa(&n, &e)?;
                Key::Rsa { n, e }
            }
            "OKP" => {
                match str_member(obj, "crv", "JWK")? {
                    "Ed25519" => {}
                    other => {
                        return Err(bad_key(format!("OKP curve {other:?} is not supported; use Ed25519")));
                    }
                }
                let x = b64_member(obj, "x")?;
                if x.len() != 32 {
                    return Err(bad_key("Ed25519 public key must be exactly 32 bytes"));
                }
                // Ed25519 point decoding is left to verification: ring exposes
                // no separate check, and an undecodable point verifies nothing.
                Key::Ed25519 { x }
            }
            other => {
                return Err(bad_key(format!("JWK key type {other:?} is not supported; use EC, RSA or OKP")));
            }
        };
        Ok(Jwk { key })
    }

    /// The canonical public JWK: exactly the members RFC 7638 §3.2 hashes.
    pub fn to_json(&self) -> Value {
        match &self.key {
            Key::Ec { curve, x, y } => {
                serde_json::json!({ "kty": "EC", "crv": curve.name(), "x": b64(x), "y": b64(y) })
            }
            Key::Rsa { n, e } => serde_json::json!({ "kty": "RSA", "n": b64(n), "e": b64(e) }),
            Key::Ed25519 { x } => {
                serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "x": b64(x) })
            }
        }
    }

    /// RFC 7638 SHA-256 thumbprint, base64url. Used as the account-key
    /// identity and in key authorizations (RFC 8555 §8.1).
    pub fn thumbprint(&self) -> String {
        // Written out rather than serialized so member order and whitespace
        // can never depend on serde_json features (RFC 7638 §3.3). Values are
        // base64url or fixed names, so nothing needs escaping.
        let input = match &self.key {
            Key::Ec { curve, x, y } => format!(r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#, curve.name(), b64(x), b64(y)),
            Key::Rsa { n, e } => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64(e), b64(n)),
            Key::Ed25519 { x } => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64(x)),
        };
        b64(digest::digest(&digest::SHA256, input.as_bytes()).as_ref())
    }

    /// The one algorithm this key may sign with.
    pub fn alg(&self) -> Alg {
        match &self.key {
            Key::Ec { curve, .. } => curve.alg(),
            Key::Rsa { .. } => Alg::RS256,
            Key::Ed25519 { .. } => Alg::EdDSA,
        }
    }

    fn describe(&self) -> &'static str {
        match &self.key {
            Key::Ec { curve: Curve::P256, .. } => "EC P-256",
            Key::Ec { curve: Curve::P384, .. } => "EC P-384",
            Key::Rsa { .. } => "RSA",
            Key::Ed25519 { .. } => "Ed25519",
        }
    }

    /// Verifies a JWS signature made with this key.
    pub fn verify(&self, alg: Alg, signing_input: &[u8], sig: &[u8]) -> Result<(), Problem> {
        if alg != self.alg() {
            return Err(Problem::new(
                ProblemType::BadSignatureAlgorithm,
                format!("JWS algorithm {alg} does not match the {} key; use {}", self.describe(), self.alg()),
            ));
        }
        let result = match &self.key {
            Key::Ec { curve, x, y } => {
                // JWS ECDSA signatures are fixed-width r||s (RFC 7518 §3.4),
                // not DER; say so instead of a generic failure.
                if sig.len() != 2 * curve.coord_len() {
                    return Err(Problem::malformed(format!("{alg} signature must be {} bytes (r||s)", 2 * curve.coord_len())));
                }
                signature::UnparsedPublicKey::new(curve.verify_alg(), ec_point(x, y)).verify(signing_input, sig)
            }
            Key::Rsa { n, e } => {
                signature::RsaPublicKeyComponents { n, e }.verify(&signature::RSA_PKCS1_2048_8192_SHA256, signing_input, sig)
            }
            Key::Ed25519 { x } => {
                if sig.len() != 64 {
                    return Err(Problem::malformed("EdDSA signature must be 64 bytes"));
                }
                signature::UnparsedPublicKey::new(&signature::ED25519, x).verify(signing_input, sig)
            }
        };
        result.map_err(|_| Problem::malformed("JWS signature is invalid"))
    }

    /// DER SubjectPublicKeyInfo (RFC 5280 §4.1.2.7), byte-identical to what a
    /// certificate carries for the same key, so revocation by certificate key
    /// (RFC 8555 §7.6) can compare bytes.
    pub fn spki_der(&self) -> Vec<u8> {
        let (alg_id, key_bits) = match &self.key {
            Key::Ec { curve, x, y } => ([der(TAG_OID, OID_EC_PUBLIC_KEY), der(TAG_OID, curve.oid())].concat(), ec_point(x, y)),
            // RFC 3279 §2.3.1: rsaEncryption parameters are an explicit NULL.
            Key::Rsa { n, e } => {
                ([der(TAG_OID, OID_RSA_ENCRYPTION), der(TAG_NULL, &[])].concat(), der(TAG_SEQUENCE, &[der_uint(n), der_uint(e)].concat()))
            }
            // RFC 8410 §3: Ed25519 has no parameters at all.
            Key::Ed25519 { x } => (der(TAG_OID, OID_ED25519), x.clone()),
        };
        // BIT STRING content starts with the count of unused bits: zero.
        let bit_string = der(TAG_BIT_STRING, &[&[0u8][..], &key_bits].concat());
        der(TAG_SEQUENCE, &[der(TAG_SEQUENCE, &alg_id), bit_string].concat())
    }
}

/// SEC 1 uncompressed point, 0x04 || x || y, as ring and X.509 want it.
fn ec_point(x: &[u8], y: &[u8]) -> Vec<u8> {
    [&[0x04u8][..], x, y].concat()
}

/// Rejects points not on the curve now (badPublicKey) rather than at
/// verification (a confusing "signature invalid"). ring has no bare point
/// check, but ECDH performs full public-key validation (SP 800-56A §5.6.2.3)
/// on the peer key, so an ephemeral agreement is the check.
fn check_ec_point(curve: Curve, point: &[u8]) -> Result<(), Problem> {
    let rng = rand::SystemRandom::new();
    let ours = agreement::EphemeralPrivateKey::generate(curve.ecdh_alg(), &rng)
        .map_err(|_| Problem::internal("random number generator failed"))?;
    let peer = agreement::UnparsedPublicKey::new(curve.ecdh_alg(), point);
    agreement::agree_ephemeral(ours, &peer, |_| ()).map_err(|_| bad_key(format!("JWK is not a valid {} point", curve.name())))
}

/// Mirrors ring's RSA public-key rules so that a key we accept can verify.
fn check_rsa(n: &[u8], e: &[u8]) -> Result<(), Problem> {
    // RFC 7518 §6.3.1: minimal octets. A leading zero would give the same key
    // a second JWK and thus a second thumbprint.
    if n.first().is_none_or(|&b| b == 0) || e.first().is_none_or(|&b| b == 0) {
        return Err(bad_key("RSA n and e must be non-empty with no leading zero octets"));
    }
    let bits = n.len() * 8 - n[0].leading_zeros() as usize;
    if !(2048..=8192).contains(&bits) {
        return Err(bad_key(format!("RSA key is {bits} bits; it must be 2048 to 8192 bits")));
    }
    if n[n.len() - 1] & 1 == 0 {
        return Err(bad_key("RSA modulus must be odd"));
    }
    // ring accepts odd exponents in 3..2^33; 65537 is what everyone uses.
    let e_val = if e.len() <= 5 { e.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)) } else { u64::MAX };
    if !(3..1 << 33).contains(&e_val) || e_val & 1 == 0 {
        return Err(bad_key("RSA public exponent must be odd, at least 3 and below 2^33"));
    }
    Ok(())
}

// Minimal DER writing for spki_der.
const TAG_SEQUENCE: u8 = 0x30;
const TAG_INTEGER: u8 = 0x02;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_NULL: u8 = 0x05;
const TAG_OID: u8 = 0x06;
/// 1.2.840.10045.2.1 id-ecPublicKey
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// 1.2.840.10045.3.1.7 prime256v1
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// 1.3.132.0.34 secp384r1
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
/// 1.2.840.113549.1.1.1 rsaEncryption
const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// 1.3.101.112 id-Ed25519
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// A non-negative INTEGER from minimal big-endian bytes: DER integers are
/// signed, so a set top bit needs a zero octet in front.
fn der_uint(minimal: &[u8]) -> Vec<u8> {
    if minimal.first().is_some_and(|&b| b & 0x80 != 0) {
        der(TAG_INTEGER, &[&[0u8][..], minimal].concat())
    } else {
        der(TAG_INTEGER, minimal)
    }
}

// ---------------------------------------------------------------------------
// Flattened JWS
// ---------------------------------------------------------------------------

/// The protected header of an ACME request (RFC 8555 §6.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protected {
    /// The signature algorithm.
    pub alg: Alg,
    /// Shape-checked (unpadded base64url) here; presence and freshness are the
    /// caller's, see [`Protected::require_nonce`].
    pub nonce: Option<String>,
    /// The URL the request is for; must equal the one it was sent to.
    pub url: String,
    /// Exactly one of `jwk` (newAccount, revocation by certificate key) and
    /// `kid` (the account URL) is present.
    pub jwk: Option<Jwk>,
    /// The account URL, for requests by an account.
    pub kid: Option<String>,
}

impl Protected {
    fn from_header(h: &Map<String, Value>) -> Result<Protected, Problem> {
        let alg = match h.get("alg") {
            Some(Value::String(name)) => Alg::from_name(name).ok_or_else(|| unsupported_alg(&format!("JWS algorithm {name:?}")))?,
            Some(_) => return Err(Problem::malformed("JWS header \"alg\" must be a string")),
            None => return Err(Problem::malformed("JWS protected header is missing \"alg\"")),
        };
        reject_extensions(h)?;

        let jwk = match h.get("jwk") {
            Some(v) => Some(Jwk::from_json(v)?),
            None => None,
        };
        let kid = match h.get("kid") {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(_) => {
                return Err(Problem::malformed("JWS header \"kid\" must be a non-empty string"));
            }
            None => None,
        };
        match (&jwk, &kid) {
            (Some(_), Some(_)) => {
                return Err(Problem::malformed("JWS header must contain exactly one of \"jwk\" and \"kid\", not both"));
            }
            (None, None) => {
                return Err(Problem::malformed("JWS header must contain exactly one of \"jwk\" and \"kid\""));
            }
            _ => {}
        }

        // RFC 8555 §6.4: a missing url is unauthorized, not malformed.
        let url = match h.get("url") {
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(Problem::malformed("JWS header \"url\" must be a string")),
            None => return Err(Problem::unauthorized("JWS protected header is missing \"url\"")),
        };

        // RFC 8555 §6.5.1: nonces are base64url; anything else cannot be one
        // of ours, and badNonce tells the client to fetch a fresh one.
        let nonce = match h.get("nonce") {
            Some(Value::String(s)) if !s.is_empty() && URL_SAFE_NO_PAD.decode(s).is_ok() => Some(s.clone()),
            Some(_) => {
                return Err(Problem::new(ProblemType::BadNonce, "JWS header \"nonce\" is not a base64url string"));
            }
            None => None,
        };

        Ok(Protected { alg, nonce, url, jwk, kid })
    }

    /// The nonce, or badNonce if absent (RFC 8555 §6.5: every JWS the client
    /// sends carries one; the EAB inner JWS is not checked with this).
    pub fn require_nonce(&self) -> Result<&str, Problem> {
        self.nonce.as_deref().ok_or_else(|| Problem::new(ProblemType::BadNonce, "JWS protected header is missing \"nonce\""))
    }

    /// RFC 8555 §6.4: the signed url must be the URL the request was sent to.
    pub fn check_url(&self, request_url: &str) -> Result<(), Problem> {
        if self.url == request_url {
            Ok(())
        } else {
            Err(Problem::unauthorized(format!("JWS header \"url\" {:?} does not match the request URL {request_url:?}", self.url)))
        }
    }
}

/// `b64` (RFC 7797) would change the signing input and `crit` would oblige us
/// to understand extensions; ACME uses neither, so both are malformed.
fn reject_extensions(h: &Map<String, Value>) -> Result<(), Problem> {
    for name in ["b64", "crit"] {
        if h.contains_key(name) {
            return Err(Problem::malformed(format!("JWS header {name:?} is not supported")));
        }
    }
    Ok(())
}

/// A parsed, not yet verified, ACME request JWS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jws {
    /// The decoded protected header.
    pub protected: Protected,
    /// The decoded payload; empty for POST-as-GET.
    pub payload: Vec<u8>,
    /// The protected header as received, for the signing input.
    pub protected_b64: String,
    /// The payload as received, for the signing input.
    pub payload_b64: String,
    /// The decoded signature.
    pub signature: Vec<u8>,
}

/// The three members of a flattened JWS (RFC 7515 §7.2.2) and nothing else:
/// RFC 8555 §6.2 forbids the unprotected header, detached payloads and
/// multiple signatures.
fn flattened_members<'a>(v: &'a Value, what: &str) -> Result<(&'a str, &'a str, &'a str), Problem> {
    let obj = v.as_object().ok_or_else(|| Problem::malformed(format!("{what} must be a flattened JWS JSON object")))?;
    if obj.contains_key("signatures") {
        return Err(Problem::malformed(format!("{what} uses the general JWS serialization; only the flattened serialization is accepted")));
    }
    if obj.contains_key("header") {
        return Err(Problem::malformed(format!("{what} has an unprotected header; it is not allowed")));
    }
    if let Some(k) = obj.keys().find(|k| !matches!(k.as_str(), "protected" | "payload" | "signature")) {
        return Err(Problem::malformed(format!("{what} has unexpected member {k:?}")));
    }
    let member = |name: &str| match obj.get(name) {
        Some(Value::String(s)) => Ok(s.as_str()),
        Some(_) => Err(Problem::malformed(format!("{what} member {name:?} must be a string"))),
        None => Err(Problem::malformed(format!("{what} is missing member {name:?}"))),
    };
    let (protected, payload, signature) = (member("protected")?, member("payload")?, member("signature")?);
    if protected.is_empty() {
        return Err(Problem::malformed(format!("{what} has an empty protected header")));
    }
    if signature.is_empty() {
        return Err(Problem::malformed(format!("{what} has an empty signature")));
    }
    Ok((protected, payload, signature))
}

/// Decodes the protected header into its JSON object.
fn decode_header(protected_b64: &str, what: &str) -> Result<Map<String, Value>, Problem> {
    let bytes = b64_decode(protected_b64, &format!("{what} protected header"))?;
    match parse_json_strict(&bytes) {
        Ok(Value::Object(h)) => Ok(h),
        Ok(_) => Err(Problem::malformed(format!("{what} protected header must be a JSON object"))),
        Err(e) => Err(Problem::malformed(format!("{what} protected header is not valid JSON: {e}"))),
    }
}

impl Jws {
    /// Parses a request body: flattened JSON serialization only, strict
    /// base64url, protected header checked as described on [`Protected`].
    pub fn parse(body: &[u8]) -> Result<Jws, Problem> {
        let v = parse_json_strict(body).map_err(|e| Problem::malformed(format!("request body is not a JSON JWS: {e}")))?;
        let (protected_b64, payload_b64, signature_b64) = flattened_members(&v, "JWS")?;
        let protected = Protected::from_header(&decode_header(protected_b64, "JWS")?)?;
        let payload = b64_decode(payload_b64, "JWS payload")?;
        let signature = b64_decode(signature_b64, "JWS signature")?;
        Ok(Jws { protected, payload, protected_b64: protected_b64.to_owned(), payload_b64: payload_b64.to_owned(), signature })
    }

    /// RFC 7515 §5.1: ASCII(protected_b64 || '.' || payload_b64), exactly as
    /// received, never re-encoded.
    pub fn signing_input(&self) -> Vec<u8> {
        [self.protected_b64.as_bytes(), b".", self.payload_b64.as_bytes()].concat()
    }

    /// RFC 8555 §6.3: POST-as-GET has a zero-length payload. `"e30"` (`{}`)
    /// is a different request.
    pub fn is_post_as_get(&self) -> bool {
        self.payload_b64.is_empty()
    }

    /// Verifies the signature with `jwk`: the header's own key for
    /// jwk-signed requests, the account's stored key for kid-signed ones.
    pub fn verify(&self, jwk: &Jwk) -> Result<(), Problem> {
        jwk.verify(self.protected.alg, &self.signing_input(), &self.signature)
    }

    /// The payload as JSON (duplicate members rejected), for endpoints that
    /// need one; POST-as-GET has none and is malformed here.
    pub fn payload_json(&self) -> Result<Value, Problem> {
        if self.is_post_as_get() {
            return Err(Problem::malformed("JWS payload is empty; this request needs a JSON payload"));
        }
        parse_json_strict(&self.payload).map_err(|e| Problem::malformed(format!("JWS payload is not valid JSON: {e}")))
    }
}

// ---------------------------------------------------------------------------
// External Account Binding (RFC 8555 §7.3.4)
// ---------------------------------------------------------------------------

fn eab_mac_alg(h: &Map<String, Value>) -> Result<MacAlgorithm, Problem> {
    match h.get("alg").and_then(Value::as_str) {
        Some("HS256") => Ok(MacAlgorithm::Hs256),
        Some("HS384") => Ok(MacAlgorithm::Hs384),
        Some("HS512") => Ok(MacAlgorithm::Hs512),
        Some(other) => Err(Problem::new(
            ProblemType::BadSignatureAlgorithm,
            format!("external account binding algorithm {other:?} is not supported; use HS256, HS384 or HS512"),
        )),
        None => Err(Problem::malformed("external account binding header needs a string \"alg\"")),
    }
}

fn eab_kid(h: &Map<String, Value>) -> Result<String, Problem> {
    match h.get("kid") {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(Problem::malformed("external account binding header needs a non-empty string \"kid\"")),
    }
}

/// Parses the inner EAB JWS of a newAccount request (RFC 8555 §7.3.4) for
/// the engine, which holds the MAC keys and verifies the MAC: everything a
/// binding must be besides a valid MAC is checked here (flattened form, a
/// protected header with an HMAC `alg`, a `kid`, this request's `url`, no
/// `nonce` or `jwk`, no extensions). The payload's key is only reported
/// (as its thumbprint): the engine trusts it once the MAC holds.
pub fn external_binding(eab: &Value, outer_url: &str) -> Result<ExternalBinding, Problem> {
    let (protected_b64, payload_b64, signature_b64) = flattened_members(eab, "externalAccountBinding")?;
    let h = decode_header(protected_b64, "externalAccountBinding")?;
    let algorithm = eab_mac_alg(&h)?;
    reject_extensions(&h)?;
    let kid = eab_kid(&h)?;
    if h.contains_key("nonce") {
        return Err(Problem::malformed("external account binding must not contain a \"nonce\""));
    }
    // The MAC key is named by kid; a jwk here would be a second, conflicting
    // key reference.
    if h.contains_key("jwk") {
        return Err(Problem::malformed("external account binding must not contain a \"jwk\" header"));
    }
    match h.get("url") {
        Some(Value::String(u)) if u == outer_url => {}
        Some(Value::String(_)) => {
            return Err(Problem::unauthorized("external account binding \"url\" does not match the request URL"));
        }
        _ => {
            return Err(Problem::malformed("external account binding header needs a string \"url\""));
        }
    }
    let mac = b64_decode(signature_b64, "external account binding signature")?;
    let signing_input = [protected_b64.as_bytes(), b".", payload_b64.as_bytes()].concat();
    let bound_key = b64_decode(payload_b64, "external account binding payload")
        .and_then(|payload| {
            parse_json_strict(&payload).map_err(|e| Problem::malformed(format!("not JSON: {e}"))).and_then(|v| Jwk::from_json(&v))
        })
        .map(|jwk| jwk.thumbprint())
        .map_err(|p| p.detail);
    Ok(ExternalBinding { kid, algorithm, signing_input, mac, bound_key })
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::PublicKeyData;
    use ring::hmac;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
    use serde_json::json;
    use x509_parser::prelude::{FromDer, SubjectPublicKeyInfo};
    use x509_parser::public_key::PublicKey;

    /// 2048-bit RSA test key, PKCS#8 DER (openssl genpkey | openssl pkcs8 -topk8).
    const RSA_2048_PKCS8: &str = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCqDIGnrN5rYBtANAbwHmBcrhnnXAK1p1g00aHK5tCzXM7KgmtBqzmlPMhbRkOF0E/9uJA19WYLVynHiPkEVBbDkQO0tDfJk5bYk9XaFWWPWTO/uXg6Q4sltomdY9DukcuyNzBXa3H+NGXvgRxZuh27+UX4Ig0atHmIkjDJXQk9sNnbVi9r1FOuTvoV4BM77GrGsT5fZ5BVvThBMTJXuxlo0Cit0LNR6uCS0YX/CbcVwysVydi9qOopqnbLtb+//wH0oMCZj1qwTp5iCnaF4mZnkhS7rSZhwK/565XVRz9QyugvGZ47QNXNaKb3RQTSdgGhY1JZh/THe5hnV8ySOeVhAgMBAAECggEABnWM57r25F59ToAjatPGjoKs+Hcr4a1KehAj7IZ9szBxaOsRCqinuwVu6VunBTJTVYSBEtGgV4ovK7WB2vacOj+8A61MSK9+3XlpGDxzlAE8CFpxzQnDg3JWchhoZ2V5lqqGvy1VQkYIgLNXabeaeUlHzXvyojrsemHuMTnj19hb5R4cYwefwxOsDQ9rVqdavXHPMHWlzCo2heJU4Y3j0or1w8rrRQIRXJYvFINJhAuheuGb24NUcl+kbZZ+p/QB5s2fxxv1yCt+c8fNUb+sRN3uhJykLupTDxem9V2Vr+7CT2AO5V/kVM8q/XtFpsodFOxia5GZ3j1CYCSz2EPmSQKBgQDV06tBt9fxfBgDHfnEO7cgAWny9fkThx504bUwhdH6jUYHpewqTYxG13/GSQ0npdqNzFOJ6n5afllzJ/78TxsRlrESgtRmbeEWqyUI9dT9/Co1kMZznkrDyIrJBBMMIW/faRa+w+AqD37Nzpi191XzRWY6UcKJBxeWn931TpJi6QKBgQDLlnGIOhwn6xV9r80SkE02bfb6WT0Za+iK1A1kNUzseW3/RjgBvg7+CIuXJascQ5Vqpr0zzgSbCZiVX+AHBexL6VD+fwi1zF5FoFKx59MY8rf7FVclXp2BMxDqiQiXcwclTAV+OlpP9vz1Qa/a5p2e2r0h6FOZgTW7N5/kTVwzuQKBgQDKGPOGe7J4JWe0moJVPHOKpoty/ZTbJhxdMG9GW1TpUNldpS8flIf+9PNpf+YVEScOWo6ijaW69iypMKZJ5qKY7yqRamJCJZxXBo9Mdr1HCS0Dz8AhyvyzKzoxX8546qmIKRU8XHnkhxy8fIXNhuYPtgo3GMubI77huFva3NZy8QKBgBK5x7+L+MMDMHrbDLXEaBW1j53/T0tjTYRXdNPewzCNCr0MLGKcpKxhBNXmNRLodHnW1FhLfsjz3QEATI7Y0J862qRN8vMl1RX6ZSDP/e6xhJKnp9hcF4imtcucxxmHDwUzNN4jZ+MrCKFWZWJxC9ZssDDKOcZIyDRsLVzGcNChAoGAMk8G8XzDy1Undtg2Qd+xBYeTVgArv9vVWgIjTr0BIqlGi7ta7BCf8LclYGJTP7w8BLdjCwaLtZlONGBYXjDw0HrQnZa2RdhN4kR5Thbzi2WLWo5BlmsCsYsqjfTNxSB28V0l6pyhFOm0SXt31x104Po9YozpQ6wm89jvmiScKuk=";

    /// The modulus of a 1024-bit RSA key (openssl genpkey ... rsa_keygen_bits:1024).
    /// Only the public half: ring refuses to load sub-2048-bit keys for signing.
    const RSA_1024_N: &str = "qWjU5nZtrSLqmvz5VdobD2RI5XyeAUapDxy6LzOtxR46GBU13gvsmTl3qzI60QQpYsj1f-LxbIv5nX6BEdlMLGwCLbUoPaOT_HzYe11yEzxVslKCQuykwd5eEY-doha2OuQ-jtO8GQWRwJWp_QstAjVsmvtAKffVECd4yPwcPvU";

    const URL: &str = "https://ca.example/acme/new-order";
    const NONCE: &str = "oFvnlFP1wIhRlYS2jTaXbA";

    /// A signing key of one of the four algorithms, plus its SPKI as rcgen
    /// (i.e. a certificate) would encode it.
    struct TestKey {
        alg: Alg,
        jwk: Value,
        spki: Vec<u8>,
        signer: Signer,
    }

    enum Signer {
        Ec(EcdsaKeyPair),
        Ed(Ed25519KeyPair),
        Rsa(RsaKeyPair),
    }

    impl TestKey {
        fn new(alg: Alg) -> TestKey {
            let rng = rand::SystemRandom::new();
            let rc = match alg {
                Alg::ES256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
                Alg::ES384 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap(),
                Alg::EdDSA => rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
                Alg::RS256 => {
                    rcgen::KeyPair::try_from(base64::engine::general_purpose::STANDARD.decode(RSA_2048_PKCS8).unwrap().as_slice()).unwrap()
                }
            };
            let pkcs8 = rc.serialize_der();
            let spki = rc.subject_public_key_info();
            let (jwk, signer) = match alg {
                Alg::ES256 | Alg::ES384 => {
                    let (ring_alg, crv, len) = if alg == Alg::ES256 {
                        (&signature::ECDSA_P256_SHA256_FIXED_SIGNING, "P-256", 32)
                    } else {
                        (&signature::ECDSA_P384_SHA384_FIXED_SIGNING, "P-384", 48)
                    };
                    let kp = EcdsaKeyPair::from_pkcs8(ring_alg, &pkcs8, &rng).unwrap();
                    let pt = kp.public_key().as_ref();
                    let jwk = json!({"kty": "EC", "crv": crv, "x": b64(&pt[1..1 + len]), "y": b64(&pt[1 + len..])});
                    (jwk, Signer::Ec(kp))
                }
                Alg::EdDSA => {
                    let kp = Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap();
                    (json!({"kty": "OKP", "crv": "Ed25519", "x": b64(kp.public_key().as_ref())}), Signer::Ed(kp))
                }
                Alg::RS256 => {
                    // Take n and e from the SPKI so the test key's JWK does not
                    // depend on the code under test.
                    let (_, info) = SubjectPublicKeyInfo::from_der(&spki).unwrap();
                    let PublicKey::RSA(rsa) = info.parsed().unwrap() else { panic!("not RSA") };
                    let strip = |b: &[u8]| b.iter().skip_while(|&&x| x == 0).copied().collect::<Vec<_>>();
                    let jwk = json!({"kty": "RSA", "n": b64(&strip(rsa.modulus)), "e": b64(&strip(rsa.exponent))});
                    (jwk, Signer::Rsa(RsaKeyPair::from_pkcs8(&pkcs8).unwrap()))
                }
            };
            TestKey { alg, jwk, spki, signer }
        }

        fn sign(&self, msg: &[u8]) -> Vec<u8> {
            let rng = rand::SystemRandom::new();
            match &self.signer {
                Signer::Ec(kp) => kp.sign(&rng, msg).unwrap().as_ref().to_vec(),
                Signer::Ed(kp) => kp.sign(msg).as_ref().to_vec(),
                Signer::Rsa(kp) => {
                    let mut sig = vec![0; kp.public().modulus_len()];
                    kp.sign(&signature::RSA_PKCS1_SHA256, &rng, msg, &mut sig).unwrap();
                    sig
                }
            }
        }

        /// A header as a client would send to newAccount (jwk) or elsewhere.
        fn jwk_header(&self) -> Value {
            json!({"alg": self.alg.name(), "nonce": NONCE, "url": URL, "jwk": self.jwk})
        }

        /// Flattened JWS over an arbitrary header and raw payload bytes.
        fn jws(&self, header: &Value, payload: &[u8]) -> Vec<u8> {
            let p = b64(header.to_string().as_bytes());
            let pl = b64(payload);
            let sig = self.sign(format!("{p}.{pl}").as_bytes());
            json!({"protected": p, "payload": pl, "signature": b64(&sig)}).to_string().into_bytes()
        }
    }

    fn raw_jws(protected: &str, payload: &str, signature: &str) -> Vec<u8> {
        json!({"protected": protected, "payload": payload, "signature": signature}).to_string().into_bytes()
    }

    fn kind(r: Result<impl fmt::Debug, Problem>) -> ProblemType {
        r.expect_err("expected a problem").kind
    }

    #[test]
    fn roundtrip_all_algorithms() {
        for alg in Alg::ALL {
            let key = TestKey::new(alg);
            let body = key.jws(&key.jwk_header(), br#"{"termsOfServiceAgreed":true}"#);
            let jws = Jws::parse(&body).unwrap();
            assert_eq!(jws.protected.alg, alg);
            assert_eq!(jws.protected.url, URL);
            assert_eq!(jws.protected.require_nonce().unwrap(), NONCE);
            assert!(jws.protected.kid.is_none());
            let jwk = jws.protected.jwk.clone().unwrap();
            assert_eq!(jwk.alg(), alg);
            jws.verify(&jwk).unwrap_or_else(|p| panic!("{alg}: {p}"));
            assert_eq!(jws.payload_json().unwrap()["termsOfServiceAgreed"], true);
            assert!(!jws.is_post_as_get());
            // The canonical JWK parses back to the same key.
            assert_eq!(Jwk::from_json(&jwk.to_json()).unwrap(), jwk);
            // Our hand-built SPKI is byte-identical to rcgen's (a certificate's).
            assert_eq!(jwk.spki_der(), key.spki, "{alg} SPKI");
        }
    }

    #[test]
    fn kid_and_post_as_get() {
        let key = TestKey::new(Alg::ES256);
        let header = json!({"alg": "ES256", "nonce": NONCE, "url": URL, "kid": "https://ca.example/acme/acct/1"});
        let jws = Jws::parse(&key.jws(&header, b"")).unwrap();
        assert!(jws.is_post_as_get());
        assert!(jws.payload.is_empty());
        assert_eq!(jws.protected.kid.as_deref(), Some("https://ca.example/acme/acct/1"));
        jws.verify(&Jwk::from_json(&key.jwk).unwrap()).unwrap();
        assert_eq!(kind(jws.payload_json()), ProblemType::Malformed);
        jws.protected.check_url(URL).unwrap();
        assert_eq!(kind(jws.protected.check_url("https://ca.example/other")), ProblemType::Unauthorized);
    }

    #[test]
    fn tampering_is_detected() {
        for alg in Alg::ALL {
            let key = TestKey::new(alg);
            let jws = Jws::parse(&key.jws(&key.jwk_header(), b"{}")).unwrap();
            let jwk = jws.protected.jwk.clone().unwrap();

            let mut bad_payload = jws.clone();
            bad_payload.payload_b64 = b64(b"{ }");
            assert_eq!(kind(bad_payload.verify(&jwk)), ProblemType::Malformed, "{alg} payload");

            let mut bad_sig = jws.clone();
            bad_sig.signature[5] ^= 1;
            let p = bad_sig.verify(&jwk).unwrap_err();
            assert_eq!((p.kind, p.detail.as_str()), (ProblemType::Malformed, "JWS signature is invalid"));

            // Same header, signed by another key of the same type (there is
            // only one fixed RSA test key, so RS256 sits this one out).
            if alg != Alg::RS256 {
                let other = TestKey::new(alg);
                let forged = Jws::parse(&other.jws(&key.jwk_header(), b"{}")).unwrap();
                assert_eq!(kind(forged.verify(&jwk)), ProblemType::Malformed, "{alg} other key");
            }
        }
    }

    #[test]
    fn ecdsa_signature_length_is_fixed() {
        let key = TestKey::new(Alg::ES256);
        let jwk = Jwk::from_json(&key.jwk).unwrap();
        let sig = key.sign(b"x");
        assert_eq!(sig.len(), 64);
        jwk.verify(Alg::ES256, b"x", &sig).unwrap();
        let p = jwk.verify(Alg::ES256, b"x", &sig[..63]).unwrap_err();
        assert_eq!(p.kind, ProblemType::Malformed);
        assert!(p.detail.contains("64 bytes"), "{}", p.detail);
    }

    #[test]
    fn alg_must_match_key() {
        let keys: Vec<TestKey> = Alg::ALL.into_iter().map(TestKey::new).collect();
        for key in &keys {
            let jwk = Jwk::from_json(&key.jwk).unwrap();
            let sig = key.sign(b"msg");
            for alg in Alg::ALL {
                let r = jwk.verify(alg, b"msg", &sig);
                if alg == key.alg {
                    r.unwrap();
                } else {
                    assert_eq!(kind(r), ProblemType::BadSignatureAlgorithm, "{} key, {alg}", key.alg);
                }
            }
        }
        // Through parse: a P-256 key in a header claiming ES384.
        let key = &keys[0];
        let mut header = key.jwk_header();
        header["alg"] = json!("ES384");
        let jws = Jws::parse(&key.jws(&header, b"{}")).unwrap();
        assert_eq!(kind(jws.verify(jws.protected.jwk.as_ref().unwrap())), ProblemType::BadSignatureAlgorithm);
    }

    #[test]
    fn unsupported_algorithms() {
        let key = TestKey::new(Alg::ES256);
        for alg in ["none", "HS256", "RS512", "ES512", "PS256", "es256", "EdDSA "] {
            let mut header = key.jwk_header();
            header["alg"] = json!(alg);
            let p = Jws::parse(&key.jws(&header, b"{}")).unwrap_err();
            assert_eq!(p.kind, ProblemType::BadSignatureAlgorithm, "{alg}");
            assert!(p.detail.contains("ES256, ES384, RS256, EdDSA"), "{}", p.detail);
        }
        let mut header = key.jwk_header();
        header.as_object_mut().unwrap().remove("alg");
        assert_eq!(kind(Jws::parse(&key.jws(&header, b"{}"))), ProblemType::Malformed);
    }

    #[test]
    fn header_rules() {
        let key = TestKey::new(Alg::ES256);
        let parse = |edit: &dyn Fn(&mut Map<String, Value>)| {
            let mut header = key.jwk_header();
            edit(header.as_object_mut().unwrap());
            Jws::parse(&key.jws(&header, b"{}"))
        };
        // Both and neither of jwk/kid.
        assert_eq!(kind(parse(&|h| _ = h.insert("kid".into(), json!("https://ca.example/acct/1")))), ProblemType::Malformed);
        assert_eq!(kind(parse(&|h| _ = h.remove("jwk"))), ProblemType::Malformed);
        assert_eq!(kind(parse(&|h| _ = h.insert("kid".into(), json!(7)))), ProblemType::Malformed);
        // RFC 8555 §6.4: missing url is unauthorized.
        assert_eq!(kind(parse(&|h| _ = h.remove("url"))), ProblemType::Unauthorized);
        assert_eq!(kind(parse(&|h| _ = h.insert("url".into(), json!(1)))), ProblemType::Malformed);
        // Extensions we do not implement.
        assert_eq!(kind(parse(&|h| _ = h.insert("b64".into(), json!(false)))), ProblemType::Malformed);
        assert_eq!(kind(parse(&|h| _ = h.insert("crit".into(), json!(["b64"])))), ProblemType::Malformed);
        // Nonce shape is badNonce; absence is the caller's to judge.
        assert_eq!(kind(parse(&|h| _ = h.insert("nonce".into(), json!("not base64!")))), ProblemType::BadNonce);
        assert_eq!(kind(parse(&|h| _ = h.insert("nonce".into(), json!("abc=")))), ProblemType::BadNonce);
        assert_eq!(kind(parse(&|h| _ = h.insert("nonce".into(), json!(12)))), ProblemType::BadNonce);
        assert_eq!(kind(parse(&|h| _ = h.insert("nonce".into(), json!("")))), ProblemType::BadNonce);
        let no_nonce = parse(&|h| _ = h.remove("nonce")).unwrap();
        assert_eq!(kind(no_nonce.protected.require_nonce()), ProblemType::BadNonce);
        // Unknown, non-critical headers are ignored (RFC 7515 §4).
        parse(&|h| _ = h.insert("typ".into(), json!("JOSE"))).unwrap();
    }

    #[test]
    fn serialization_rules() {
        let key = TestKey::new(Alg::ES256);
        let good: Value = serde_json::from_slice(&key.jws(&key.jwk_header(), b"{}")).unwrap();
        let with = |name: &str, v: Value| {
            let mut o = good.clone();
            o[name] = v;
            Jws::parse(o.to_string().as_bytes())
        };
        let without = |name: &str| {
            let mut o = good.clone();
            o.as_object_mut().unwrap().remove(name);
            Jws::parse(o.to_string().as_bytes())
        };
        Jws::parse(good.to_string().as_bytes()).unwrap();
        assert_eq!(kind(with("header", json!({"kid": "x"}))), ProblemType::Malformed);
        assert_eq!(kind(with("signatures", json!([]))), ProblemType::Malformed);
        assert_eq!(kind(with("extra", json!(1))), ProblemType::Malformed);
        assert_eq!(kind(without("payload")), ProblemType::Malformed); // detached payload
        assert_eq!(kind(without("signature")), ProblemType::Malformed);
        assert_eq!(kind(without("protected")), ProblemType::Malformed);
        assert_eq!(kind(with("payload", json!({}))), ProblemType::Malformed);

        // General serialization.
        let general = json!({"payload": good["payload"], "signatures": [{"protected": good["protected"], "signature": good["signature"]}]});
        assert_eq!(kind(Jws::parse(general.to_string().as_bytes())), ProblemType::Malformed);
        // Compact serialization and non-JSON.
        let compact = format!(
            "{}.{}.{}",
            good["protected"].as_str().unwrap(),
            good["payload"].as_str().unwrap(),
            good["signature"].as_str().unwrap()
        );
        assert_eq!(kind(Jws::parse(compact.as_bytes())), ProblemType::Malformed);
        assert_eq!(kind(Jws::parse(b"[]")), ProblemType::Malformed);
        // Duplicate members, top level and inside the protected header.
        let dup = format!(
            r#"{{"protected":"x","protected":{},"payload":{},"signature":{}}}"#,
            good["protected"], good["payload"], good["signature"]
        );
        assert_eq!(kind(Jws::parse(dup.as_bytes())), ProblemType::Malformed);
        let dup_header = format!(r#"{{"alg":"ES256","alg":"ES256","nonce":"{NONCE}","url":"{URL}","jwk":{}}}"#, key.jwk);
        assert_eq!(kind(Jws::parse(&raw_jws(&b64(dup_header.as_bytes()), "e30", "AAAA"))), ProblemType::Malformed);
        // Protected header must be a JSON object.
        assert_eq!(kind(Jws::parse(&raw_jws(&b64(b"[1]"), "e30", "AAAA"))), ProblemType::Malformed);
        assert_eq!(kind(Jws::parse(&raw_jws(&b64(b"not json"), "e30", "AAAA"))), ProblemType::Malformed);
    }

    #[test]
    fn base64url_is_strict() {
        let key = TestKey::new(Alg::ES256);
        let good: Value = serde_json::from_slice(&key.jws(&key.jwk_header(), b"{}")).unwrap();
        let p = good["protected"].as_str().unwrap();
        let s = good["signature"].as_str().unwrap();
        Jws::parse(&raw_jws(p, "e30", s)).unwrap();
        for bad in ["e30=", "e3 0", "e30\n", "e+/0", "e31"] {
            // "e31" has non-zero trailing bits: a second spelling of "{}".
            assert_eq!(kind(Jws::parse(&raw_jws(p, bad, s))), ProblemType::Malformed, "{bad:?}");
        }
        let std_alphabet = s.replace('-', "+").replace('_', "/");
        if std_alphabet != s {
            assert_eq!(kind(Jws::parse(&raw_jws(p, "e30", &std_alphabet))), ProblemType::Malformed);
        }
        assert_eq!(kind(Jws::parse(&raw_jws(&format!("{p}="), "e30", s))), ProblemType::Malformed);
    }

    #[test]
    fn rfc7638_thumbprint_example() {
        // RFC 7638 §3.1, including the non-key members it says to ignore.
        let jwk = Jwk::from_json(&json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        }))
        .unwrap();
        assert_eq!(jwk.thumbprint(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
        assert_eq!(jwk.to_json().as_object().unwrap().len(), 3);
    }

    #[test]
    fn thumbprint_matches_canonical_json() {
        // For EC and OKP, compare with the compact serde serialization of the
        // canonical JWK (serde_json sorts members by default).
        for alg in [Alg::ES256, Alg::ES384, Alg::EdDSA] {
            let jwk = Jwk::from_json(&TestKey::new(alg).jwk).unwrap();
            let expect = b64(digest::digest(&digest::SHA256, jwk.to_json().to_string().as_bytes()).as_ref());
            assert_eq!(jwk.thumbprint(), expect, "{alg}");
        }
    }

    #[test]
    fn jwk_validation() {
        let ec = TestKey::new(Alg::ES256).jwk;
        let ed = TestKey::new(Alg::EdDSA).jwk;
        let rsa = TestKey::new(Alg::RS256).jwk;
        let edit = |base: &Value, name: &str, v: Value| {
            let mut j = base.clone();
            j[name] = v;
            Jwk::from_json(&j)
        };

        // Private members.
        for m in ["d", "p", "k"] {
            assert_eq!(kind(edit(&ec, m, json!("AAAA"))), ProblemType::BadPublicKey, "{m}");
        }
        assert_eq!(kind(edit(&rsa, "qi", json!("AAAA"))), ProblemType::BadPublicKey);

        // Unsupported types and curves.
        assert_eq!(kind(edit(&ec, "kty", json!("oct"))), ProblemType::BadPublicKey);
        assert_eq!(kind(edit(&ec, "crv", json!("P-521"))), ProblemType::BadPublicKey);
        assert_eq!(kind(edit(&ed, "crv", json!("X25519"))), ProblemType::BadPublicKey);
        assert_eq!(kind(edit(&ed, "crv", json!("Ed448"))), ProblemType::BadPublicKey);

        // Wrong lengths.
        let x = b64_decode(ec["x"].as_str().unwrap(), "x").unwrap();
        assert_eq!(kind(edit(&ec, "x", json!(b64(&x[1..])))), ProblemType::BadPublicKey);
        assert_eq!(kind(edit(&ec, "x", json!(b64(&[&[0u8][..], &x].concat())))), ProblemType::BadPublicKey);
        assert_eq!(kind(edit(&ed, "x", json!(b64(&[0u8; 31])))), ProblemType::BadPublicKey);
        // Right length, not on the curve.
        let mut off = x.clone();
        off[31] ^= 1;
        assert_eq!(kind(edit(&ec, "x", json!(b64(&off)))), ProblemType::BadPublicKey);
        // A P-256 point labelled P-384 has the wrong length.
        assert_eq!(kind(edit(&ec, "crv", json!("P-384"))), ProblemType::BadPublicKey);

        // Structure.
        assert_eq!(kind(Jwk::from_json(&json!("key"))), ProblemType::Malformed);
        assert_eq!(kind(edit(&ec, "x", json!(5))), ProblemType::Malformed);
        assert_eq!(kind(edit(&ec, "x", json!("a=="))), ProblemType::Malformed);
        let mut missing = ec.clone();
        missing.as_object_mut().unwrap().remove("y");
        assert_eq!(kind(Jwk::from_json(&missing)), ProblemType::Malformed);

        // RSA: size, canonical integers, exponent.
        let small = json!({"kty": "RSA", "n": RSA_1024_N, "e": "AQAB"});
        let p = Jwk::from_json(&small).unwrap_err();
        assert_eq!(p.kind, ProblemType::BadPublicKey);
        assert!(p.detail.contains("1024 bits"), "{}", p.detail);
        let n = b64_decode(rsa["n"].as_str().unwrap(), "n").unwrap();
        assert_eq!(kind(edit(&rsa, "n", json!(b64(&[&[0u8][..], &n].concat())))), ProblemType::BadPublicKey);
        assert_eq!(kind(edit(&rsa, "e", json!(b64(&[0, 1, 0, 1])))), ProblemType::BadPublicKey);
        assert_eq!(kind(edit(&rsa, "e", json!(b64(&[1])))), ProblemType::BadPublicKey);
        assert_eq!(kind(edit(&rsa, "e", json!(b64(&[1, 0])))), ProblemType::BadPublicKey);
        assert_eq!(kind(edit(&rsa, "e", json!(b64(&[1, 0, 0, 0, 0, 1])))), ProblemType::BadPublicKey);
        Jwk::from_json(&edit(&rsa, "e", json!(b64(&[3]))).unwrap().to_json()).unwrap();
        let mut even = n.clone();
        *even.last_mut().unwrap() &= 0xfe;
        assert_eq!(kind(edit(&rsa, "n", json!(b64(&even)))), ProblemType::BadPublicKey);

        // Extra public members are ignored and dropped from the canonical form.
        let extra = edit(&ec, "use", json!("sig")).unwrap();
        assert_eq!(extra.to_json(), Jwk::from_json(&ec).unwrap().to_json());
        assert!(extra.to_json().get("use").is_none());
    }

    #[test]
    fn jwk_header_errors_surface_through_parse() {
        let key = TestKey::new(Alg::ES256);
        let mut header = key.jwk_header();
        header["jwk"]["d"] = json!("AAAA");
        assert_eq!(kind(Jws::parse(&key.jws(&header, b"{}"))), ProblemType::BadPublicKey);
        let mut header = key.jwk_header();
        header["jwk"] = json!({"kty": "RSA", "n": RSA_1024_N, "e": "AQAB"});
        header["alg"] = json!("RS256");
        assert_eq!(kind(Jws::parse(&key.jws(&header, b"{}"))), ProblemType::BadPublicKey);
    }

    #[test]
    fn der_lengths() {
        assert_eq!(der(0x04, &[0; 5])[..2], [0x04, 5]);
        assert_eq!(der(0x04, &[0; 200])[..3], [0x04, 0x81, 200]);
        assert_eq!(der(0x04, &[0; 300])[..4], [0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(der_uint(&[0x80]), [0x02, 0x02, 0x00, 0x80]);
        assert_eq!(der_uint(&[0x01, 0x00, 0x01]), [0x02, 0x03, 0x01, 0x00, 0x01]);
    }

    // --- External Account Binding ---

    const EAB_KID: &str = "kid-1";
    const EAB_KEY: &[u8] = b"an external account MAC key, 32b";
    const NEW_ACCOUNT: &str = "https://ca.example/acme/new-account";

    fn eab(header: &Value, payload: &Value, key: &[u8], alg: hmac::Algorithm) -> Value {
        let p = b64(header.to_string().as_bytes());
        let pl = b64(payload.to_string().as_bytes());
        let tag = hmac::sign(&hmac::Key::new(alg, key), format!("{p}.{pl}").as_bytes());
        json!({"protected": p, "payload": pl, "signature": b64(tag.as_ref())})
    }

    fn eab_header() -> Value {
        json!({"alg": "HS256", "kid": EAB_KID, "url": NEW_ACCOUNT})
    }

    /// The front end's parse and the engine's MAC check, as a newAccount runs them.
    fn verify_eab(eab: &Value, key: &[u8], url: &str, jwk: &Jwk) -> Result<(), Problem> {
        let binding = external_binding(eab, url)?;
        tenure_engine::ra::verify_external_binding(&binding, key, &jwk.thumbprint()).map_err(Problem::from)
    }

    #[test]
    fn eab_accepts_a_correct_binding() {
        let account = TestKey::new(Alg::ES256);
        let jwk = Jwk::from_json(&account.jwk).unwrap();
        let binding = eab(&eab_header(), &account.jwk, EAB_KEY, hmac::HMAC_SHA256);
        assert_eq!(external_binding(&binding, NEW_ACCOUNT).unwrap().kid, EAB_KID);
        verify_eab(&binding, EAB_KEY, NEW_ACCOUNT, &jwk).unwrap();

        for (name, alg) in [("HS384", hmac::HMAC_SHA384), ("HS512", hmac::HMAC_SHA512)] {
            let mut h = eab_header();
            h["alg"] = json!(name);
            verify_eab(&eab(&h, &account.jwk, EAB_KEY, alg), EAB_KEY, NEW_ACCOUNT, &jwk).unwrap();
        }
        // The payload may spell the same key with extra members.
        let mut spelled = account.jwk.clone();
        spelled["use"] = json!("sig");
        verify_eab(&eab(&eab_header(), &spelled, EAB_KEY, hmac::HMAC_SHA256), EAB_KEY, NEW_ACCOUNT, &jwk).unwrap();
    }

    #[test]
    fn eab_rejections() {
        let account = TestKey::new(Alg::ES256);
        let jwk = Jwk::from_json(&account.jwk).unwrap();
        let check = |header: &Value, payload: &Value, key: &[u8]| {
            verify_eab(&eab(header, payload, key, hmac::HMAC_SHA256), EAB_KEY, NEW_ACCOUNT, &jwk)
        };
        let with = |name: &str, v: Value| {
            let mut h = eab_header();
            h[name] = v;
            h
        };

        // Wrong MAC key.
        assert_eq!(kind(check(&eab_header(), &account.jwk, b"another key entirely")), ProblemType::Unauthorized);
        // Nonce present.
        assert_eq!(kind(check(&with("nonce", json!(NONCE)), &account.jwk, EAB_KEY)), ProblemType::Malformed);
        // url mismatch and absence.
        let other_url = with("url", json!("https://ca.example/acme/new-order"));
        assert_eq!(kind(check(&other_url, &account.jwk, EAB_KEY)), ProblemType::Unauthorized);
        let mut no_url = eab_header();
        no_url.as_object_mut().unwrap().remove("url");
        assert_eq!(kind(check(&no_url, &account.jwk, EAB_KEY)), ProblemType::Malformed);
        // Payload is another key, or not a key.
        let other = TestKey::new(Alg::ES256).jwk;
        assert_eq!(kind(check(&eab_header(), &other, EAB_KEY)), ProblemType::Unauthorized);
        assert_eq!(kind(check(&eab_header(), &json!({"kid": "x"}), EAB_KEY)), ProblemType::Malformed);
        // Asymmetric or missing algorithm.
        assert_eq!(kind(check(&with("alg", json!("ES256")), &account.jwk, EAB_KEY)), ProblemType::BadSignatureAlgorithm);
        assert_eq!(kind(check(&with("alg", json!("none")), &account.jwk, EAB_KEY)), ProblemType::BadSignatureAlgorithm);
        // A jwk header and extensions.
        assert_eq!(kind(check(&with("jwk", account.jwk.clone()), &account.jwk, EAB_KEY)), ProblemType::Malformed);
        assert_eq!(kind(check(&with("crit", json!(["b64"])), &account.jwk, EAB_KEY)), ProblemType::Malformed);
        // Missing kid.
        let mut no_kid = eab_header();
        no_kid.as_object_mut().unwrap().remove("kid");
        let binding = eab(&no_kid, &account.jwk, EAB_KEY, hmac::HMAC_SHA256);
        assert_eq!(kind(verify_eab(&binding, EAB_KEY, NEW_ACCOUNT, &jwk)), ProblemType::Malformed);
        // Serialization: unprotected header, general form, not an object.
        let mut unprotected = eab(&eab_header(), &account.jwk, EAB_KEY, hmac::HMAC_SHA256);
        unprotected["header"] = json!({});
        assert_eq!(kind(verify_eab(&unprotected, EAB_KEY, NEW_ACCOUNT, &jwk)), ProblemType::Malformed);
        assert_eq!(kind(external_binding(&json!({"signatures": []}), NEW_ACCOUNT).map(drop)), ProblemType::Malformed);
        assert_eq!(kind(external_binding(&json!("x.y.z"), NEW_ACCOUNT).map(drop)), ProblemType::Malformed);
        // Tampered payload after MACing.
        let mut tampered = eab(&eab_header(), &account.jwk, EAB_KEY, hmac::HMAC_SHA256);
        tampered["payload"] = json!(b64(other.to_string().as_bytes()));
        assert_eq!(kind(verify_eab(&tampered, EAB_KEY, NEW_ACCOUNT, &jwk)), ProblemType::Unauthorized);
        // Empty MAC key is refused outright.
        let good = eab(&eab_header(), &account.jwk, EAB_KEY, hmac::HMAC_SHA256);
        assert_eq!(kind(verify_eab(&good, b"", NEW_ACCOUNT, &jwk)), ProblemType::ServerInternal);
    }
}
