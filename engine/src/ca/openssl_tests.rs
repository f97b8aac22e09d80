//! The hierarchy as an independent verifier sees it: `openssl verify` must
//! accept what we issue and reject a leaf that breaks the intermediate's
//! nameConstraints, even one signed behind issue_leaf's back.

use std::path::Path;
use std::process::Command;

use rcgen::{CertificateParams, IsCa, Issuer, KeyPair, PublicKeyData};

use super::issue::tests::{dns, hierarchy, ip, request};
use super::{CaMaterial, issue_leaf, server_certificate, to_pem};
use crate::identifier::Identifier;

/// Runs `openssl verify` on root -> intermediate -> leaf; returns (ok, output).
fn verify(dir: &Path, root: &CaMaterial, inter: &CaMaterial, leaf_der: &[u8]) -> (bool, String) {
    std::fs::write(dir.join("root.pem"), root.cert_pem()).unwrap();
    std::fs::write(dir.join("inter.pem"), inter.cert_pem()).unwrap();
    std::fs::write(dir.join("leaf.pem"), to_pem("CERTIFICATE", leaf_der)).unwrap();
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(["verify", "-x509_strict", "-purpose", "sslserver", "-CAfile", "root.pem", "-untrusted", "inter.pem", "leaf.pem"])
        .output()
        .expect("openssl must be installed for these tests");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Signs a leaf with the intermediate's key directly, skipping every check.
fn forged_leaf(inter: &CaMaterial, names: &[&str]) -> Vec<u8> {
    let key = inter.key.signing_key().unwrap();
    let issuer = Issuer::from_ca_cert_der(&inter.cert_der.as_slice().into(), key).unwrap();
    let mut params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.distinguished_name = rcgen::DistinguishedName::new();
    let subject = KeyPair::generate().unwrap();
    params.signed_by(&subject, &issuer).unwrap().der().to_vec()
}

fn assert_constraint_violation(ok: bool, out: &str) {
    assert!(!ok, "openssl accepted an out-of-constraint leaf: {out}");
    let out_lc = out.to_ascii_lowercase();
    assert!(out_lc.contains("subtree violation") || out_lc.contains("name constraints"), "openssl failed for another reason: {out}");
}

#[test]
fn openssl_accepts_issued_chain_and_enforces_constraints() {
    let dir = tempfile::tempdir().unwrap();
    let (root, inter) = hierarchy(&["example.com", "192.0.2.0/24"]);
    let spki = KeyPair::generate().unwrap().subject_public_key_info();

    let ids = [dns("www.example.com"), dns("*.example.com"), ip("192.0.2.10")];
    let leaf = issue_leaf(&crate::issuance::LeafSigning::for_tests(), &inter, &request(&spki, &ids)).unwrap();
    let (ok, out) = verify(dir.path(), &root, &inter, &leaf.der);
    assert!(ok, "openssl rejected a good chain: {out}");

    // Constraints are real: the same intermediate's signature over a foreign
    // name (or address) does not verify.
    for names in [&["www.example.org"][..], &["notexample.com"], &["www.example.com", "198.51.100.1"]] {
        let (ok, out) = verify(dir.path(), &root, &inter, &forged_leaf(&inter, names));
        assert_constraint_violation(ok, &out);
    }
    // ... while a forged but in-constraint leaf does (the forgery itself is sound).
    let (ok, out) = verify(dir.path(), &root, &inter, &forged_leaf(&inter, &["a.example.com"]));
    assert!(ok, "{out}");
}

#[test]
fn openssl_enforces_the_exclusion_of_unpermitted_types() {
    let dir = tempfile::tempdir().unwrap();
    // No DNS permit: without the zero-length dNSName exclusion, RFC 5280
    // would leave every DNS name open to this intermediate.
    let (root, inter) = hierarchy(&["10.0.0.0/8"]);
    let (ok, out) = verify(dir.path(), &root, &inter, &forged_leaf(&inter, &["www.example.org"]));
    assert_constraint_violation(ok, &out);

    let spki = KeyPair::generate().unwrap().subject_public_key_info();
    let leaf = issue_leaf(&crate::issuance::LeafSigning::for_tests(), &inter, &request(&spki, &[ip("10.20.30.40")])).unwrap();
    let (ok, out) = verify(dir.path(), &root, &inter, &leaf.der);
    assert!(ok, "{out}");

    // And the converse: a DNS-only tenant cannot certify addresses.
    let (root, inter) = hierarchy(&["example.com"]);
    let (ok, out) = verify(dir.path(), &root, &inter, &forged_leaf(&inter, &["www.example.com", "10.0.0.1"]));
    assert_constraint_violation(ok, &out);
}

#[test]
fn openssl_accepts_the_server_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (root, _) = hierarchy(&["example.com"]);
    let names: [Identifier; 2] = [dns("acme.tenure.test"), ip("127.0.0.1")];
    let (der, _) = server_certificate(&root, &names).unwrap();
    std::fs::write(dir.path().join("root.pem"), root.cert_pem()).unwrap();
    std::fs::write(dir.path().join("server.pem"), to_pem("CERTIFICATE", &der)).unwrap();
    let out = Command::new("openssl")
        .current_dir(dir.path())
        .args(["verify", "-x509_strict", "-purpose", "sslserver", "-CAfile", "root.pem", "server.pem"])
        .output()
        .expect("openssl must be installed for these tests");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}
