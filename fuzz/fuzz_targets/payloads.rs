//! A JWS payload as every ACME request type of `payloads.rs`, and what the handlers
//! do next with the members they parse: the EAB of a newAccount, keyChange's old key,
//! newOrder's identifiers, finalize's CSR, revokeCert's certificate. Nothing may
//! panic; an identifier that parses must be in normal form (parsing it again gives it
//! back unchanged).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tenure_acme::jws::{self, Jwk};
use tenure_acme::payloads::{
    AccountUpdate, AuthorizationUpdate, ChallengeResponse, Finalize, KeyChange, NewAccount, NewOrder, RevokeCert, parse,
};
use tenure_acme::problem::Problem;
use tenure_engine::Identifier;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = parse::<NewAccount>(data)
        && let Some(eab) = &p.external_account_binding
    {
        let _ = jws::external_binding(eab, "https://ca.test/acme/new-account");
    }
    let _ = parse::<AccountUpdate>(data);
    if let Ok(p) = parse::<KeyChange>(data) {
        let _ = Jwk::from_json(&p.old_key);
    }
    if let Ok(p) = parse::<NewOrder>(data) {
        for item in &p.identifiers {
            match Identifier::parse(&item.kind, &item.value) {
                Ok(id) => {
                    let again = Identifier::parse(id.kind.as_str(), &id.value).expect("a normalized identifier parses");
                    assert_eq!(again, id, "identifier normalization is not idempotent");
                    let _ = id.authorization_target();
                }
                Err(e) => {
                    let _ = Problem::from(e);
                }
            }
        }
    }
    if let Ok(p) = parse::<Finalize>(data)
        && let Ok(der) = p.csr_der()
    {
        let _ = tenure_engine::ca::parse_csr(&der);
    }
    let _ = parse::<ChallengeResponse>(data);
    let _ = parse::<AuthorizationUpdate>(data);
    if let Ok(p) = parse::<RevokeCert>(data)
        && let Ok(der) = p.certificate_der()
    {
        let _ = tenure_engine::ca::cert_info(&der);
    }
});
