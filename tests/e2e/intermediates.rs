//! A tenant's intermediate that changes, seen by a real client and by
//! `openssl verify`: `tenant update` adds a name (lego then gets it) and
//! removes one (its certificate is revoked and the old intermediate's CRL
//! says so); `tenant rotate` issues from a new intermediate while the old
//! leaf still verifies, CRLs of every issuer checked (`-crl_check_all`).

use crate::support;

use std::path::Path;
use std::process::Output;

use crate::clients::ok;
use support::crl::{crl_pem_file, crl_url, fetch, openssl_crl_verify, openssl_verify_with_crls};
use support::dns::TestDns;
use support::{ServeOptions, Server, TenantCreds};

/// lego for `domain` on an account of the tenant (EAB), answering http-01
/// where a challenge is asked (names the registry does not show held).
async fn lego(server: &Server, creds: &TenantCreds, work: &Path, domain: &str) -> Output {
    crate::clients::lego(server, work, domain)
        .arg("--eab")
        .arg("--kid")
        .arg(&creds.eab_kid)
        .arg("--hmac")
        .arg(&creds.eab_hmac)
        .arg("--http")
        .arg("--http.port")
        .arg(format!("127.0.0.1:{}", server.options.http01_port))
        .arg("run")
        .output()
        .await
        .unwrap()
}

/// The chain lego stored for `domain`.
fn chain_of(work: &Path, domain: &str) -> String {
    std::fs::read_to_string(work.join(format!("certificates/{domain}.crt"))).unwrap()
}

/// (issuer name, intermediate certificate PEM) of a leaf-first chain.
fn issuer_of(chain: &str) -> (String, String) {
    let certs: Vec<&str> = chain.split_inclusive("-----END CERTIFICATE-----\n").collect();
    let der = support::crl::leaf_der(chain);
    let (_, leaf) = x509_parser::parse_x509_certificate(&der).unwrap();
    (leaf.issuer().to_string(), certs[1..].concat())
}

fn serial_of(chain: &str) -> String {
    let der = support::crl::leaf_der(chain);
    let (_, leaf) = x509_parser::parse_x509_certificate(&der).unwrap();
    leaf.raw_serial().iter().map(|b| format!("{b:02x}")).collect()
}

fn add_zone(data: &Path, tenant: &str, zone: &str) {
    support::tenure_cli(data, &["resource", "add", "--tenant", tenant, "--kind", "zone", "--zone", zone]);
}

/// `tenure tenant update` adds a name: lego, refused it before, gets a
/// certificate for it from the tenant's new intermediate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_adds_a_name_a_client_then_gets() {
    support::install_crypto_provider();
    let dns = TestDns::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let creds = support::add_tenant(&data, "corp", &["corp.example"]);
    add_zone(&data, "corp", "corp.example");
    let server = Server::start(&data, ServeOptions::new(Some(dns.addr)));

    let before = lego(&server, &creds, &dir.path().join("lego-before"), "www.shop.example").await;
    assert!(!before.status.success(), "a name outside the permits is refused");
    let said = String::from_utf8_lossy(&before.stderr);
    assert!(said.contains("rejectedIdentifier") || said.contains("outside"), "{said}");

    let out = support::tenure_cli(&data, &["tenant", "update", "corp", "--permit", "corp.example", "--permit", "shop.example", "--json"]);
    let updated: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(updated["changed"], true, "{updated}");
    assert_eq!(updated["permits"], serde_json::json!(["corp.example", "shop.example"]));
    assert_eq!(updated["revoked"], serde_json::json!([]), "nothing lay outside: {updated}");

    let work = dir.path().join("lego-after");
    let after = lego(&server, &creds, &work, "www.shop.example").await;
    ok(&after, "lego after tenant update", &server);
    let chain = chain_of(&work, "www.shop.example");
    support::openssl_verify(&server.root_pem(), &chain, dir.path());
    let (issuer, _) = issuer_of(&chain);
    assert!(issuer.contains("tenure corp CA 2"), "issued by the new intermediate: {issuer}");
    let url = crl_url(&chain);
    assert!(url.ends_with(&format!("/crl/{}", updated["issuer_id"])), "{url}");
}

/// `tenure tenant update` removes a name: the certificate naming it is
/// revoked (privilegeWithdrawn) and fails `openssl verify -crl_check` with
/// its intermediate's CRL from the server; one inside the permits passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_removes_a_name_and_its_certificate_is_revoked() {
    support::install_crypto_provider();
    let dns = TestDns::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let creds = support::add_tenant(&data, "corp", &["corp.example", "shop.example"]);
    add_zone(&data, "corp", "corp.example");
    let server = Server::start(&data, ServeOptions::new(Some(dns.addr)));

    let shop_work = dir.path().join("lego-shop");
    ok(&lego(&server, &creds, &shop_work, "www.shop.example").await, "lego www.shop.example", &server);
    let corp_work = dir.path().join("lego-corp");
    ok(&lego(&server, &creds, &corp_work, "www.corp.example").await, "lego www.corp.example", &server);
    let (shop, corp) = (chain_of(&shop_work, "www.shop.example"), chain_of(&corp_work, "www.corp.example"));

    let out = support::tenure_cli(&data, &["tenant", "update", "corp", "--permit", "corp.example", "--json"]);
    let updated: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(updated["revoked"], serde_json::json!([serial_of(&shop)]), "{updated}");

    let shown = support::tenure_cli(&data, &["cert", "show", &serial_of(&shop), "--json"]);
    assert!(shown.contains("\"revoked_at\":") && !shown.contains("\"revoked_at\":null"), "{shown}");
    let crl = fetch(&server, &crl_url(&shop)).await;
    let (passed, said) = openssl_crl_verify(&server, &shop, &crl, dir.path());
    assert!(!passed && said.contains("revoked"), "the withdrawn name's certificate fails -crl_check: {said}");
    assert!(said.contains("Privilege Withdrawn"), "{said}");
    let (passed, said) = openssl_crl_verify(&server, &corp, &crl, dir.path());
    assert!(passed, "a certificate inside the new permits still verifies: {said}");

    // The name is refused from now on.
    let again = lego(&server, &creds, &dir.path().join("lego-again"), "api.shop.example").await;
    assert!(!again.status.success(), "a withdrawn name is refused");
}

/// `tenure tenant rotate`: a new issuance chains to a new intermediate (a
/// name and key of its own) and verifies; the old leaf still verifies with
/// the old intermediate, with every issuer's current CRL (`-crl_check_all`:
/// root, old and new intermediates, in one file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_issues_from_a_new_intermediate_and_the_old_leaf_still_verifies() {
    support::install_crypto_provider();
    let dns = TestDns::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let creds = support::add_tenant(&data, "corp", &["corp.example"]);
    add_zone(&data, "corp", "corp.example");
    let server = Server::start(&data, ServeOptions::new(Some(dns.addr)));

    let old_work = dir.path().join("lego-old");
    ok(&lego(&server, &creds, &old_work, "a.corp.example").await, "lego before rotation", &server);
    let old = chain_of(&old_work, "a.corp.example");

    let out = support::tenure_cli(&data, &["tenant", "rotate", "corp", "--json"]);
    let rotated: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_ne!(rotated["issuer_id"], rotated["previous_issuer_id"], "{rotated}");
    let list = support::tenure_cli(&data, &["tenant", "list", "--json"]);
    assert!(list.contains("\"corp.example\""), "permits kept: {list}");

    let new_work = dir.path().join("lego-new");
    ok(&lego(&server, &creds, &new_work, "b.corp.example").await, "lego after rotation", &server);
    let new = chain_of(&new_work, "b.corp.example");
    support::openssl_verify(&server.root_pem(), &new, dir.path());
    let ((old_issuer, old_inter), (new_issuer, new_inter)) = (issuer_of(&old), issuer_of(&new));
    assert_ne!(old_issuer, new_issuer, "a subject per intermediate");
    assert_ne!(old_inter, new_inter);
    let spki = |pem: &str| {
        let der = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap().1.contents;
        let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
        c.public_key().raw.to_vec()
    };
    assert_ne!(spki(&old_inter), spki(&new_inter), "a key per intermediate");
    assert!(crl_url(&new).ends_with(&format!("/crl/{}", rotated["issuer_id"])));

    // The old leaf, not revoked: it verifies with its intermediate and every current CRL.
    support::openssl_verify(&server.root_pem(), &old, dir.path());
    let (old_url, new_url) = (crl_url(&old), crl_url(&new));
    let root_url = format!("{}/1", old_url.rsplit_once('/').unwrap().0);
    let mut crls = Vec::new();
    for (i, url) in [&root_url, &old_url, &new_url].into_iter().enumerate() {
        crls.push(crl_pem_file(&fetch(&server, url).await, dir.path(), &format!("crl-{i}")));
    }
    for (name, chain) in [("old", &old), ("new", &new)] {
        let (passed, said) = openssl_verify_with_crls(&server, chain, &crls, true, dir.path());
        assert!(passed, "the {name} leaf passes -crl_check_all with every issuer's CRL: {said}");
    }
}
