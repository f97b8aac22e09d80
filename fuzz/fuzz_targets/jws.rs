//! A request body through the JWS path of `request::authenticate`: flattened-JWS
//! parsing, the protected-header rules, the key (the header's `jwk`, or the account a
//! `kid` names, from a fixed set of two), the signature, the payload as JSON and, on a
//! newAccount, the external account binding. Nothing may panic; a JWK that parses must
//! survive its own canonical encoding and give a well-formed SubjectPublicKeyInfo.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tenure_acme::jws::{self, Jwk, Jws};
use x509_parser::prelude::{FromDer, SubjectPublicKeyInfo};

const BASE: &str = "https://ca.test/acme";

/// The accounts `kid` may name: the public halves of `seeds.py`'s fixed keys.
fn accounts() -> &'static [(String, Jwk)] {
    static KEYS: OnceLock<Vec<(String, Jwk)>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let p256 = r#"{"kty":"EC","crv":"P-256","x":"_HxJxb6Slq_1jUmQIApAlZFF6abrc9v3vJv4XviYwUM","y":"UwJxviF4BCRPPng9R_knwZicf4YDebvDraBz3sgRTVU"}"#;
        let ed25519 = r#"{"kty":"OKP","crv":"Ed25519","x":"hGoZ6UuS9Sb1ijNZXaktcDd6Ose-5XsmxL1TdQ1VLEU"}"#;
        [p256, ed25519]
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let v: Value = serde_json::from_str(k).expect("a fixed JWK");
                (format!("{BASE}/acct/{}", i + 1), Jwk::from_json(&v).expect("a fixed JWK"))
            })
            .collect()
    })
}

fn check_jwk(jwk: &Jwk) {
    let again = Jwk::from_json(&jwk.to_json()).expect("a parsed JWK's canonical form parses");
    assert_eq!(&again, jwk);
    assert_eq!(again.thumbprint(), jwk.thumbprint());
    let spki = jwk.spki_der();
    let (rest, _) = SubjectPublicKeyInfo::from_der(&spki).expect("spki_der is a SubjectPublicKeyInfo");
    assert!(rest.is_empty(), "spki_der has trailing bytes");
}

fuzz_target!(|data: &[u8]| {
    let Ok(jws) = Jws::parse(data) else { return };
    let p = &jws.protected;
    let _ = p.require_nonce();
    let _ = p.check_url(&format!("{BASE}/new-account"));
    let key = match (&p.jwk, &p.kid) {
        (Some(jwk), None) => {
            check_jwk(jwk);
            jwk.clone()
        }
        (None, Some(kid)) => match accounts().iter().find(|(url, _)| url == kid) {
            Some((_, key)) => key.clone(),
            None => return,
        },
        _ => panic!("Jws::parse let through a header without exactly one of jwk and kid"),
    };
    if jws.verify(&key).is_err() {
        return;
    }
    if jws.is_post_as_get() {
        assert!(jws.payload_json().is_err());
        return;
    }
    let Ok(payload) = jws.payload_json() else { return };
    if let Some(eab) = payload.get("externalAccountBinding") {
        let _ = jws::external_binding(eab, &p.url);
    }
});
