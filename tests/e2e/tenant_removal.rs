//! `tenure tenant remove`: a relying party checking the published CRLs
//! (`openssl verify -crl_check_all`, the root's CRL and the intermediate's)
//! sees the removed tenant's leaves fail and another tenant's pass; the
//! tenant's account is deactivated, the tenant listed as removed, its name
//! not reused, and a second removal changes nothing.

use std::path::Path;
use std::process::Command;

use crate::lifecycle::{account, add_resource, issue, serial_of, server_with};
use crate::support;
use support::Server;
use support::crl::{crl_pem_file, crl_url, fetch, openssl_verify_with_crls};

/// The root's CRL URL beside an intermediate's (`…/crl/{issuer}`).
fn root_crl_url(intermediate_crl: &str, root: i64) -> String {
    let (base, _) = intermediate_crl.rsplit_once("/crl/").expect("a CRL URL");
    format!("{base}/crl/{root}")
}

/// `openssl verify -crl_check_all` of the chain's leaf with the root's and the
/// intermediate's CRLs (DER, as served): (passed, what openssl said, the root
/// CRL as text).
fn verify_all(server: &Server, chain: &str, root_crl: &[u8], inter_crl: &[u8], work: &Path) -> (bool, String, String) {
    let (root, inter) = (crl_pem_file(root_crl, work, "root-crl"), crl_pem_file(inter_crl, work, "inter-crl"));
    let text = Command::new("openssl").args(["crl", "-noout", "-text", "-in"]).arg(&root).output().unwrap();
    let (passed, said) = openssl_verify_with_crls(server, chain, &[root, inter], true, work);
    (passed, said, String::from_utf8_lossy(&text.stdout).into_owned())
}

/// The serial of the chain's intermediate (second certificate), hex as openssl prints it.
fn intermediate_serial(chain: &str) -> String {
    let second = chain.split_inclusive("-----END CERTIFICATE-----\n").nth(1).expect("an intermediate in the chain");
    let der = x509_parser::pem::parse_x509_pem(second.as_bytes()).unwrap().1.contents;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    cert.tbs_certificate.raw_serial().iter().skip_while(|b| **b == 0).map(|b| format!("{b:02X}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_tenants_leaves_fail_crl_checks_and_its_intermediate_is_on_the_root_crl() {
    support::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = server_with(&data, &["--renewal-interval", "3600"]);
    let a = support::add_tenant(&data, "a", &["a.example"]);
    let b = support::add_tenant(&data, "b", &["b.example"]);
    add_resource(&data, &["--tenant", "a", "--kind", "vm", "--name", "www.a.example"]);
    add_resource(&data, &["--tenant", "b", "--kind", "vm", "--name", "www.b.example"]);
    let (acct_a, acct_b) = (account(&server, &a).await, account(&server, &b).await);
    let leaf_a = issue(&acct_a, &["www.a.example"], None).await.unwrap();
    let leaf_b = issue(&acct_b, &["www.b.example"], None).await.unwrap();
    let (url_a, url_b) = (crl_url(&leaf_a), crl_url(&leaf_b));
    // The root is the first issuer a data directory makes (`tenure init`);
    // removal names it, checked below.
    let root_url = root_crl_url(&url_a, 1);

    // Before: both leaves pass with every CRL of their chains.
    let root_crl = fetch(&server, &root_url).await;
    for (leaf, url) in [(&leaf_a, &url_a), (&leaf_b, &url_b)] {
        let (ok, said, _) = verify_all(&server, leaf, &root_crl, &fetch(&server, url).await, dir.path());
        assert!(ok, "not removed yet: {said}");
    }

    // Without --yes nothing happens, and the refusal says what removal does.
    let out = support::tenure_command(&data).args(["tenant", "remove", "a", "--data"]).arg(&data).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("--yes") && said.contains("revoked") && said.contains("cannot be undone"), "{said}");
    let listed = support::tenure_cli(&data, &["tenant", "list", "--json"]);
    assert!(listed.lines().all(|l| l.contains("\"removed_at\":null")), "{listed}");

    let out = support::tenure_cli(&data, &["tenant", "remove", "a", "--yes", "--json"]);
    let removed: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(removed["tenant"], "a");
    assert_eq!(removed["root_issuer"], 1, "{removed}");
    assert_eq!(removed["already_removed"], false);
    assert_eq!(removed["resources_released"], 1, "{removed}");
    assert_eq!(removed["certificates_revoked"], 1, "{removed}");
    assert_eq!(removed["intermediates_revoked"], 1, "{removed}");
    assert_eq!(removed["accounts_deactivated"], 1, "{removed}");
    assert_eq!(removed["hsm_slots_released"], serde_json::json!([]));

    // After, at once: A's leaf fails (revoked), A's intermediate is on the
    // root's CRL; B's leaf still passes with the same root CRL.
    let root_crl = fetch(&server, &root_url).await;
    let (ok, said, root_text) = verify_all(&server, &leaf_a, &root_crl, &fetch(&server, &url_a).await, dir.path());
    assert!(!ok && said.contains("revoked"), "a removed tenant's leaf must fail -crl_check_all: {said}");
    assert!(root_text.contains(&intermediate_serial(&leaf_a)), "the root's CRL lists A's intermediate: {root_text}");
    assert!(!root_text.contains(&intermediate_serial(&leaf_b)), "and not B's: {root_text}");
    assert!(root_text.contains("Cessation Of Operation"), "{root_text}");
    let (ok, said, _) = verify_all(&server, &leaf_b, &root_crl, &fetch(&server, &url_b).await, dir.path());
    assert!(ok, "another tenant's leaf stays valid: {said}");
    let shown = crate::lifecycle::cert_show(&data, &serial_of(&leaf_a));
    assert_eq!((shown["status"].as_str(), shown["revocation_reason"].as_u64()), (Some("revoked"), Some(5)), "{shown}");

    // A's account is deactivated: no new order.
    let refused = issue(&acct_a, &["www.a.example"], None).await.unwrap_err();
    assert!(refused.contains("deactivated"), "{refused}");
    issue(&acct_b, &["www.b.example"], None).await.expect("B goes on");

    // Listed as removed, with the time; the name is not given again.
    let listed = support::tenure_cli(&data, &["tenant", "list", "--json"]);
    let row: serde_json::Value = serde_json::from_str(listed.lines().find(|l| l.contains("\"tenant\":\"a\"")).unwrap()).unwrap();
    assert_eq!(row["removed_at"], removed["removed_at"], "{listed}");
    let table = support::tenure_cli(&data, &["tenant", "list"]);
    assert!(table.lines().next().is_some_and(|h| h.contains("REMOVED")), "{table}");
    let a_row = table.lines().find(|l| l.starts_with("a ")).unwrap();
    assert!(a_row.trim_end().ends_with('Z'), "an RFC 3339 time: {table}");
    let out = support::tenure_command(&data).args(["tenant", "add", "a", "--permit", "a.example", "--data"]).arg(&data).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("was removed at") && said.contains("names are not reused"), "{said}");
    let out = support::tenure_command(&data)
        .args(["resource", "add", "--tenant", "a", "--kind", "vm", "--name", "new.a.example", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("was removed at"));

    // Again: finishes nothing, counts nothing.
    let out = support::tenure_cli(&data, &["tenant", "remove", "a", "--yes", "--json"]);
    let again: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(again["already_removed"], true);
    assert_eq!(again["removed_at"], removed["removed_at"]);
    for count in ["resources_released", "certificates_revoked", "intermediates_revoked", "accounts_deactivated"] {
        assert_eq!(again[count], 0, "{count}: {again}");
    }
    let text = support::tenure_cli(&data, &["tenant", "remove", "a", "--yes"]);
    assert!(text.contains("was removed at") && text.contains("/crl/1"), "{text}");
}

/// A SoftHSM2 configuration of this test's own, with one token `label`
/// (the `hsm` module's tokens are its own; the `tenure` processes get this
/// configuration through their environment, this process loads no module).
fn own_softhsm(dir: &Path, label: &str, so_pin: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let module = [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    ]
    .iter()
    .map(std::path::PathBuf::from)
    .chain(std::env::var_os("SOFTHSM2_MODULE").map(std::path::PathBuf::from))
    .find(|p| p.exists())
    .expect("SoftHSM2 is installed (apt-get install softhsm2; scripts/test does it)");
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(&conf, format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", tokens.display())).unwrap();
    let out = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args(["--init-token", "--free", "--label", label, "--so-pin", so_pin, "--pin", "unused-user-pin"])
        .output()
        .expect("softhsm2-util runs");
    assert!(out.status.success(), "init token {label}: {}", String::from_utf8_lossy(&out.stderr));
    (module, conf)
}

/// A removed tenant's HSM token is zeroized and back in the pool; a second
/// removal has nothing left to release.
#[test]
fn removal_returns_the_tenants_hsm_tokens_to_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (module, conf) = own_softhsm(dir.path(), "removal", "so-secret-1234");
    std::fs::write(dir.path().join("so-pin"), "so-secret-1234").unwrap();
    let cli = |args: &[&str]| -> serde_json::Value {
        let out =
            support::tenure_command(&data).env("SOFTHSM2_CONF", &conf).args(args).arg("--json").arg("--data").arg(&data).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        serde_json::from_str(text.lines().next().unwrap_or("null")).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
    };
    support::add_tenant(&data, "vault", &["vault.example"]);
    let so_pin = dir.path().join("so-pin");
    let slot =
        cli(&["hsm", "pool", "add", "--module", module.to_str().unwrap(), "--token", "removal", "--so-pin-file", so_pin.to_str().unwrap()]);
    let slot = slot["id"].as_str().unwrap().to_string();
    let allocated = cli(&["hsm", "allocate", "--tenant", "vault"]);
    assert_eq!((allocated["id"].as_str(), allocated["state"].as_str()), (Some(slot.as_str()), Some("handed-over")), "{allocated}");

    let removed = cli(&["tenant", "remove", "vault", "--yes"]);
    assert_eq!(removed["hsm_slots_released"], serde_json::json!([slot]), "{removed}");
    assert_eq!(removed["hsm_slot_failures"], serde_json::json!([]), "{removed}");
    assert_eq!(removed["resources_released"], 1, "the token's registry resource: {removed}");
    let pool = cli(&["hsm", "pool", "list"]);
    assert_eq!((pool["id"].as_str(), pool["state"].as_str()), (Some(slot.as_str()), Some("free")), "{pool}");
    assert!(pool["tenant"].is_null(), "{pool}");

    let again = cli(&["tenant", "remove", "vault", "--yes"]);
    assert_eq!(again["hsm_slots_released"], serde_json::json!([]), "{again}");
    assert_eq!(again["resources_released"], 0, "{again}");
}
