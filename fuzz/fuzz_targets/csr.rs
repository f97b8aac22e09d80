//! `ca::parse_csr` (finalize's CSR) on arbitrary DER. Byte 0 even: the rest is the CSR.
//! Byte 0 odd: the rest is a certificationRequestInfo, which the target wraps and signs
//! with a fixed P-256 key, so that inputs that keep that key get past the signature
//! check to the names. Nothing may panic; an accepted CSR names at least one
//! identifier, each in normal form, once.

#![no_main]

use std::sync::OnceLock;

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use tenure_engine::Identifier;
use tenure_engine::ca::{der_tlv as der, parse_csr};

/// `seeds.py --keys`: the P-256 key whose public half the odd seeds carry.
const P256_PKCS8: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgg0i3/1HyQ48lA4TfhQQrJmdGVdgibLNkgFG6GP5la9qhRANCAAT8fEnFvpKWr/WNSZAgCkCVkUXpputz2/e8m/he+JjBQ1MCcb4heAQkTz54PUf5J8GYnH+GA3m7w62gc97IEU1V";

fn key() -> &'static (EcdsaKeyPair, SystemRandom) {
    static KEY: OnceLock<(EcdsaKeyPair, SystemRandom)> = OnceLock::new();
    KEY.get_or_init(|| {
        let rng = SystemRandom::new();
        let der = base64::engine::general_purpose::STANDARD.decode(P256_PKCS8).expect("base64");
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &der, &rng).expect("a fixed P-256 key");
        (key, rng)
    })
}

/// CertificationRequest ::= SEQUENCE { info, ecdsa-with-SHA256, BIT STRING signature }.
fn signed(info: &[u8]) -> Vec<u8> {
    let (key, rng) = key();
    let Ok(sig) = key.sign(rng, info) else { return Vec::new() };
    let alg = der(0x30, &der(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]));
    let bits = der(0x03, &[&[0u8][..], sig.as_ref()].concat());
    der(0x30, &[info, &alg, &bits].concat())
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let request = if mode & 1 == 0 { rest.to_vec() } else { signed(rest) };
    let Ok(csr) = parse_csr(&request) else { return };
    assert!(!csr.identifiers.is_empty(), "an accepted CSR names nothing");
    for (i, id) in csr.identifiers.iter().enumerate() {
        let again = Identifier::parse(id.kind.as_str(), &id.value).expect("a CSR's identifier parses");
        assert_eq!(&again, id, "a CSR's identifier is not in normal form");
        assert!(!csr.identifiers[..i].contains(id), "a CSR's identifier is listed twice");
    }
});
