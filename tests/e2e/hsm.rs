//! Key custody in HSMs, against SoftHSM2: CA keys in a token behind a real
//! `tenure serve` (full ACME issuance), rekey in place, distribution (denied,
//! allowed, cross-tenant; by attribute at allocation and on `hsm sync`),
//! release with zeroization and grace period.
//!
//! Every test of this binary shares one SoftHSM2 configuration (a module is
//! initialized once per process, and SoftHSM2 finds its tokens then), so all
//! tokens are created up front, one set per test, under a temporary
//! `SOFTHSM2_CONF` that the `tenure` processes inherit.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use instant_acme::{Account, ExternalAccountKey, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy};
use support::{ServeOptions, Server};
use tenure_engine::hsm::{self, Token, session};
use tenure_engine::policy::builtin::built_plugin_path;

const SO_PIN: &str = "so-secret-1234";
const CA_PIN: &str = "ca-user-1234";
/// Tokens created for the tests; each test uses only its own.
const TOKENS: &[&str] = &[
    "ca-issue",
    "rekey",
    "rekey-policy",
    "dist-a",
    "dist-b",
    "dist-rival",
    "sync-a",
    "sync-b",
    "sync-c",
    "sync-d",
    "release",
    "provision",
];

struct SoftHsm {
    module: PathBuf,
    dir: PathBuf,
}

fn module_path() -> Option<PathBuf> {
    let candidates = [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
        "/usr/lib64/pkcs11/libsofthsm2.so",
    ];
    if let Ok(p) = std::env::var("SOFTHSM2_MODULE") {
        return Some(PathBuf::from(p));
    }
    candidates.iter().map(PathBuf::from).find(|p| p.exists())
}

fn softhsm() -> &'static SoftHsm {
    static HSM: OnceLock<SoftHsm> = OnceLock::new();
    HSM.get_or_init(|| {
        let module = module_path().expect("SoftHSM2 is installed (apt-get install softhsm2; scripts/test does it)");
        let dir = tempfile::Builder::new().prefix("tenure-softhsm").tempdir().unwrap().keep();
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(&conf, format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", tokens.display()))
            .unwrap();
        // Set before any thread of this process loads the module; the tenure
        // processes inherit it.
        unsafe { std::env::set_var("SOFTHSM2_CONF", &conf) };
        for label in TOKENS {
            let pin = if *label == "ca-issue" { CA_PIN } else { "unused-user-pin" };
            let out = Command::new("softhsm2-util")
                .args(["--init-token", "--free", "--label", label, "--so-pin", SO_PIN, "--pin", pin])
                .output()
                .expect("softhsm2-util runs");
            assert!(out.status.success(), "init token {label}: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::fs::write(dir.join("so-pin"), SO_PIN).unwrap();
        std::fs::write(dir.join("ca-pin"), format!("{CA_PIN}\n")).unwrap();
        SoftHsm { module, dir }
    })
}

fn cli(data: &Path, args: &[&str]) -> String {
    support::tenure_cli(data, args)
}

fn cli_json(data: &Path, args: &[&str]) -> serde_json::Value {
    let mut args = args.to_vec();
    args.push("--json");
    let out = cli(data, &args);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// Runs a CLI command expected to fail; returns its stderr.
fn cli_fails(data: &Path, args: &[&str]) -> String {
    let out = support::tenure_command(data)
        .env(support::PLUGIN_DEADLINE.0, support::PLUGIN_DEADLINE.1)
        .args(args)
        .arg("--data")
        .arg(data)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} should fail: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn pool_add(data: &Path, label: &str) -> String {
    support::ensure_init(data);
    let h = softhsm();
    let so = h.dir.join("so-pin");
    let v = cli_json(
        data,
        &["hsm", "pool", "add", "--module", h.module.to_str().unwrap(), "--token", label, "--so-pin-file", so.to_str().unwrap()],
    );
    v["id"].as_str().unwrap().to_string()
}

struct Allocated {
    id: String,
    resource: String,
    pin: String,
}

fn allocate(data: &Path, tenant: &str) -> Allocated {
    let v = cli_json(data, &["hsm", "allocate", "--tenant", tenant]);
    assert_eq!(v["state"], "handed-over");
    Allocated {
        id: v["id"].as_str().unwrap().into(),
        resource: v["resource"].as_str().unwrap().into(),
        pin: v["user_pin"].as_str().unwrap().into(),
    }
}

/// Runs `f`, which looks at tokens from this process, alone and with fresh
/// token state: SoftHSM2 reads a token once per C_Initialize, and the tenure
/// processes change them meanwhile. Nothing opened in `f` may outlive it.
fn inspect<T>(f: impl FnOnce() -> T) -> T {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _alone = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    session::reload_module(&softhsm().module).unwrap();
    f()
}

fn token(label: &str) -> std::sync::Arc<Token> {
    Token::open(&softhsm().module, label).unwrap()
}

/// Every object the tenant sees in its token, logged in with its PIN.
fn tenant_objects(label: &str, pin: &str) -> Vec<hsm::ObjectInfo> {
    inspect(|| {
        let t = token(label);
        let s = t.user_session(pin).unwrap();
        session::list_objects(&s).unwrap()
    })
}

/// The certificate object with CKA_ID `id`, read without logging in (it is public).
fn read_certificate(label: &str, id: &[u8]) -> Option<Vec<u8>> {
    inspect(|| session::read_certificate(&token(label).public_session().unwrap(), id).unwrap())
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// Signs with a key in a tenant token (as the tenant) and verifies the signature
/// against `spki` with ring.
fn signs_verifiably(label: &str, pin: &str, cka_id: &[u8], spki: &[u8]) -> Result<(), String> {
    let msg = b"data signed inside the HSM";
    let sig = inspect(|| hsm::sign_with(&softhsm().module, label, pin, cka_id, msg)).map_err(|e| e.to_string())?;
    use x509_parser::prelude::FromDer as _;
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki).unwrap();
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, &spki.subject_public_key.data)
        .verify(msg, &sig)
        .map_err(|_| "signature does not verify".to_string())
}

fn key_spki(key: &serde_json::Value, cert_der: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).unwrap();
    (unhex(key["cka_id"].as_str().unwrap()), cert.public_key().raw.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_issuance_with_ca_keys_in_the_token() {
    let h = softhsm();
    support::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut options = ServeOptions::new(None);
    options.extra = vec![
        "--hsm-module".into(),
        h.module.to_string_lossy().into_owned(),
        "--hsm-token".into(),
        "ca-issue".into(),
        "--hsm-pin-file".into(),
        h.dir.join("ca-pin").to_string_lossy().into_owned(),
    ];
    let server = Server::start(&data, options);

    // The CLI finds the CA token from the data directory: the tenant's intermediate goes there too.
    let corp = support::add_tenant(&data, "corp", &["corp.example"]);
    cli(&data, &["resource", "add", "--tenant", "corp", "--kind", "vm", "--name", "www.corp.example"]);
    let hmac = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&corp.eab_hmac).unwrap();
    let eab = ExternalAccountKey::new(corp.eab_kid.clone(), &hmac);
    let (account, _) = Account::builder_with_root(server.root_pem())
        .unwrap()
        .create(
            &NewAccount { contact: &[], terms_of_service_agreed: true, only_return_existing: false },
            server.directory_url(),
            Some(&eab),
        )
        .await
        .unwrap();
    let mut order = account.new_order(&NewOrder::new(&[Identifier::Dns("www.corp.example".into())])).await.unwrap();
    assert_eq!(order.state().status, OrderStatus::Ready);
    order.finalize().await.unwrap();
    let chain = order.poll_certificate(&RetryPolicy::new().timeout(Duration::from_secs(20))).await.unwrap();
    support::openssl_verify(&server.root_pem(), &chain, dir.path());

    // Root, public intermediate, corp intermediate: three private keys, all
    // non-extractable and sensitive; nothing else private in the token.
    let objects = tenant_objects("ca-issue", CA_PIN);
    let private: Vec<_> = objects.iter().filter(|o| o.class == "private-key").collect();
    assert_eq!(private.len(), 3, "{objects:?}");
    for k in &private {
        assert_eq!(k.extractable, Some(false), "{k:?}");
        assert_eq!(k.sensitive, Some(true), "{k:?}");
    }
    // The intermediate that signed the leaf has its key in the token: its
    // public key is one of the token's public keys.
    let pems: Vec<_> = x509_parser::pem::Pem::iter_from_buffer(chain.as_bytes()).map(|p| p.unwrap()).collect();
    let (_, inter) = x509_parser::parse_x509_certificate(&pems[1].contents).unwrap();
    let point = inter.public_key().subject_public_key.data.to_vec();
    let found = inspect(|| {
        let t = token("ca-issue");
        let s = t.user_session(CA_PIN).unwrap();
        s.find_objects(&[cryptoki::object::Attribute::EcPoint([vec![0x04, 0x41], point].concat())]).unwrap()
    });
    assert_eq!(found.len(), 1, "the issuing intermediate's public key is in the token");
    drop(server);
}

#[test]
fn rekey_in_place_keeps_serving_and_writes_the_certificate() {
    softhsm();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    support::add_tenant(&data, "corp", &["corp.example"]);
    pool_add(&data, "rekey");
    let slot = allocate(&data, "corp");
    let vm = cli_json(
        &data,
        &["resource", "add", "--tenant", "corp", "--kind", "vm", "--name", "www.corp.example", "--attr", &format!("hsm={}", slot.resource)],
    );
    let vm = vm["id"].as_str().unwrap();

    let first = cli_json(&data, &["hsm", "rekey", vm, "--overlap-seconds", "2"]);
    assert!(first["replaced"].is_null());
    let second = cli_json(&data, &["hsm", "rekey", vm, "--overlap-seconds", "2"]);
    assert_eq!(second["replaced"], first["key"]["id"]);

    // The certificate objects are readable from the token, next to their keys.
    let mut keys = Vec::new();
    for k in [&first["key"], &second["key"]] {
        let cka_id = unhex(k["cka_id"].as_str().unwrap());
        let der = read_certificate("rekey", &cka_id).expect("certificate object in the token");
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(format!("{:?}", san.value.general_names), r#"[DNSName("www.corp.example")]"#);
        assert_eq!(cert.serial.to_str_radix(16), k["cert_serial"].as_str().unwrap());
        keys.push(key_spki(k, &der));
    }
    // During the overlap both keys sign.
    for (id, spki) in &keys {
        signs_verifiably("rekey", &slot.pin, id, spki).unwrap();
    }
    std::thread::sleep(Duration::from_secs(3));
    let out = cli(&data, &["hsm", "sweep"]);
    assert!(out.contains("1 keys retired"), "{out}");
    assert!(signs_verifiably("rekey", &slot.pin, &keys[0].0, &keys[0].1).is_err(), "the old key is gone");
    signs_verifiably("rekey", &slot.pin, &keys[1].0, &keys[1].1).unwrap();
    let info = cli_json(&data, &["hsm", "keys", &slot.id]);
    let states: Vec<_> = info["keys"].as_array().unwrap().iter().map(|k| k["state"].as_str().unwrap().to_string()).collect();
    assert_eq!(states, ["retired", "active"]);
    // `hsm keys` shows the token's public objects only: no private key without the tenant's PIN.
    assert!(info["objects"].as_array().unwrap().iter().all(|o| o["class"] != "private-key"));
}

/// Provisioning into the HSM (issue 13): a resource with `certificate=auto`
/// and `hsm=…` gets its key generated in the tenant's token (sensitive, not
/// extractable) and its certificate written beside it, by the server, with no
/// request; the sweep renews it in place with a new key, the old one retiring
/// after the overlap; `hsm keys` numbers the generations.
#[test]
fn provisioning_generates_the_key_in_the_token_and_the_sweep_rekeys_it() {
    softhsm();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    support::add_tenant(&data, "corp", &["corp.example"]);
    pool_add(&data, "provision");
    let slot = allocate(&data, "corp");
    let mut options = ServeOptions::new(None);
    options.extra = vec!["--renewal-interval".into(), "0.3".into()];
    let _server = Server::start(&data, options);
    let hsm_attr = format!("hsm={}", slot.resource);
    let vm = cli_json(
        &data,
        &[
            "resource",
            "add",
            "--tenant",
            "corp",
            "--kind",
            "vm",
            "--name",
            "db.corp.example",
            "--attr",
            "certificate=auto",
            "--attr",
            &hsm_attr,
            "--attr",
            "lifetime-seconds=6",
        ],
    );
    let vm = vm["id"].as_str().unwrap().to_string();
    let certs = || -> Vec<serde_json::Value> {
        cli(&data, &["cert", "list", "--resource", &vm, "--json"]).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while certs().is_empty() {
        assert!(std::time::Instant::now() < deadline, "not provisioned");
        std::thread::sleep(Duration::from_millis(200));
    }
    let first = certs().pop().unwrap();
    assert_eq!(
        (first["trigger"].as_str(), first["key_source"].as_str(), first["generation"].as_i64()),
        (Some("provisioning"), Some("hsm"), Some(1))
    );

    // Generated in the token: sensitive (its value is never readable, by the
    // operator or anyone), leaving only wrapped for the tenant's own tokens
    // (distribution); the certificate beside it.
    let objects = tenant_objects("provision", &slot.pin);
    let private: Vec<_> = objects.iter().filter(|o| o.class == "private-key").collect();
    assert_eq!(private.len(), 1, "{objects:?}");
    assert_eq!(private[0].sensitive, Some(true), "{:?}", private[0]);
    let info = cli_json(&data, &["hsm", "keys", &slot.id]);
    let key = &info["keys"][0];
    assert_eq!(key["cert_serial"], first["serial"]);
    let der = read_certificate("provision", &unhex(key["cka_id"].as_str().unwrap())).expect("the certificate beside the key");
    let (cka_id, spki) = key_spki(key, &der);
    signs_verifiably("provision", &slot.pin, &cka_id, &spki).unwrap();

    // The sweep renews it in place: a new key, the old one retiring (both sign meanwhile).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let second = loop {
        if let Some(c) = certs().into_iter().find(|c| c["predecessor"] == first["serial"]) {
            break c;
        }
        assert!(std::time::Instant::now() < deadline, "not renewed by the sweep");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!((second["key_source"].as_str(), second["generation"].as_i64()), (Some("hsm"), Some(2)));
    let info = cli_json(&data, &["hsm", "keys", &slot.id]);
    let keys = info["keys"].as_array().unwrap();
    let by_serial = |serial: &serde_json::Value| keys.iter().find(|k| k["cert_serial"] == *serial).unwrap().clone();
    let (old, new) = (by_serial(&first["serial"]), by_serial(&second["serial"]));
    assert_eq!((old["state"].as_str(), new["state"].as_str()), (Some("retiring"), Some("active")));
    assert_eq!(new["replaces"], old["id"]);
    assert_eq!(info["generations"][old["id"].as_str().unwrap()], 1);
    assert_eq!(info["generations"][new["id"].as_str().unwrap()], 2);
    let der = read_certificate("provision", &unhex(new["cka_id"].as_str().unwrap())).unwrap();
    let (cka_id, spki) = key_spki(&new, &der);
    signs_verifiably("provision", &slot.pin, &cka_id, &spki).unwrap();
    // For people: a table whose GEN column numbers the generations.
    let human = cli(&data, &["hsm", "keys", &slot.id]);
    let gen_of = |key: &serde_json::Value| {
        human.lines().find(|l| l.starts_with(key["id"].as_str().unwrap())).and_then(|l| l.split_whitespace().nth(1)).map(str::to_string)
    };
    assert!(human.lines().any(|l| l.starts_with("KEY") && l.contains("GEN")), "{human}");
    assert_eq!((gen_of(&old).as_deref(), gen_of(&new).as_deref()), (Some("1"), Some("2")), "{human}");
}

/// A rekey is an issuance like any other (issue 11): the tenant's plugins
/// decide (decide-renewal, trigger rekey), the certificate is audited, listed,
/// carries the CRL distribution point, and is revoked (and in its issuer's
/// CRL) when its resource is released. A plugin that denies renewal stops it
/// with its reason, and nothing is generated or issued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_is_decided_audited_listed_and_revoked_with_its_resource() {
    softhsm();
    support::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    support::add_tenant(&data, "corp", &["corp.example"]);
    pool_add(&data, "rekey-policy");
    let slot = allocate(&data, "corp");
    // A server sets the public URL its certificates point their CRL at.
    let server = Server::start(&data, ServeOptions::new(None));
    let vm = cli_json(
        &data,
        &["resource", "add", "--tenant", "corp", "--kind", "vm", "--name", "app.corp.example", "--attr", &format!("hsm={}", slot.resource)],
    );
    let vm = vm["id"].as_str().unwrap().to_string();

    // A tenant plugin that denies: the rekey fails with the plugin's reason; nothing is made.
    let deny = built_plugin_path("deny-all");
    let deny_digest = cli(&data, &["plugin", "install", deny.to_str().unwrap(), "--tenant", "corp"]).trim().to_string();
    let err = cli_fails(&data, &["hsm", "rekey", &vm]);
    assert!(err.contains("policy denied the rekey"), "{err}");
    assert!(tenant_objects("rekey-policy", &slot.pin).is_empty(), "a denied rekey generates no key");
    let certs = |resource: &str| -> Vec<serde_json::Value> {
        cli(&data, &["cert", "list", "--resource", resource, "--json"]).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    assert!(certs(&vm).is_empty(), "a denied rekey issues nothing");
    let audit = || -> Vec<serde_json::Value> {
        cli(&data, &["audit", "--tenant", "corp", "--json"])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|r: &serde_json::Value| r["hook"] == "renewal")
            .collect()
    };
    let denied = audit();
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0]["outcome"], "deny");
    assert_eq!(denied[0]["input"]["trigger"], "rekey");
    assert!(denied[0]["plugins"].as_array().unwrap().iter().any(|d| d == deny_digest.as_str()), "{denied:?}");
    let reason = denied[0]["reason"].as_str().unwrap();
    assert!(err.contains(reason), "the CLI says the plugin's reason {reason:?}: {err}");

    // Without it, the default chain allows: the certificate is issued through the issuance path.
    cli(&data, &["plugin", "remove", "--tenant", "corp"]);
    let rekeyed = cli_json(&data, &["hsm", "rekey", &vm]);
    let serial = rekeyed["serial"].as_str().unwrap().to_string();
    assert_eq!(rekeyed["key"]["cert_serial"], serial.as_str());
    let listed = certs(&vm);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["serial"], serial.as_str());
    let shown = cli_json(&data, &["cert", "show", &serial, "--pem"]);
    assert_eq!(shown["trigger"], "rekey");
    assert_eq!(shown["status"], "valid");
    let bound: Vec<&str> = shown["resources"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    assert!(bound.contains(&vm.as_str()) && bound.contains(&slot.resource.as_str()), "{bound:?}");
    let allowed = audit();
    assert_eq!(allowed.len(), 2);
    assert_eq!(allowed[1]["outcome"], "allow");
    assert_eq!(
        shown["policy"],
        allowed[1]["plugins"].as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect::<Vec<_>>().join(",")
    );
    let chain = shown["pem"].as_str().unwrap().to_string();
    // The certificate object in the token is this certificate.
    let cka_id = unhex(rekeyed["key"]["cka_id"].as_str().unwrap());
    assert_eq!(read_certificate("rekey-policy", &cka_id).unwrap(), support::crl::leaf_der(&chain));

    // It carries its issuer's CRL distribution point, and passes -crl_check while held.
    let url = support::crl::crl_url(&chain);
    assert!(url.starts_with(&format!("https://localhost:{}/crl/", server.listen.port())), "{url}");
    let (ok, said) = support::crl::openssl_crl_verify(&server, &chain, &support::crl::fetch(&server, &url).await, dir.path());
    assert!(ok, "a held certificate verifies: {said}");

    // The sweep renews it into the token with a fresh key (`renew --now` runs the sweep's path).
    let renewed: serde_json::Value = serde_json::from_str(cli(&data, &["renew", "--now", "--resource", &vm, "--json"]).trim()).unwrap();
    assert_eq!(renewed["renewed"], 1, "{renewed}");
    let listed = certs(&vm);
    let successor = listed.iter().find(|c| c["predecessor"] == serial.as_str()).expect("a successor");
    assert_eq!(successor["trigger"], "rekey");
    let successor_chain =
        cli_json(&data, &["cert", "show", successor["serial"].as_str().unwrap(), "--pem"])["pem"].as_str().unwrap().to_string();
    let new_spki = x509_parser::parse_x509_certificate(&support::crl::leaf_der(&successor_chain)).unwrap().1.public_key().raw.to_vec();
    let old_spki = x509_parser::parse_x509_certificate(&support::crl::leaf_der(&chain)).unwrap().1.public_key().raw.to_vec();
    assert_ne!(new_spki, old_spki, "renewed with a fresh key");
    assert_eq!(cli_json(&data, &["cert", "show", &serial])["renewal"], "renewed");

    // Releasing the resource revokes it, and the issuer's CRL lists it.
    cli(&data, &["resource", "release", &vm]);
    let shown = cli_json(&data, &["cert", "show", &serial]);
    assert_eq!(shown["status"], "revoked");
    assert_eq!(shown["revocation_reason"], 5);
    let (ok, said) = support::crl::openssl_crl_verify(&server, &chain, &support::crl::fetch(&server, &url).await, dir.path());
    assert!(!ok && said.contains("revoked"), "a released resource's certificate fails -crl_check: {said}");
    drop(server);
}

#[test]
fn distribution_only_wrapped_only_allowed_only_within_a_tenant() {
    softhsm();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    support::add_tenant(&data, "corp", &["corp.example"]);
    support::add_tenant(&data, "rival", &["rival.example"]);
    for label in ["dist-a", "dist-b", "dist-rival"] {
        pool_add(&data, label);
    }
    let a = allocate(&data, "corp");
    let b = allocate(&data, "corp");
    let r = allocate(&data, "rival");
    // A token never changes tenant by transfer (the old tenant knows its PIN).
    let err = cli_fails(&data, &["resource", "transfer", &b.resource, "--to", "rival"]);
    assert!(err.contains("is an HSM"), "{err}");
    let vm = cli_json(
        &data,
        &["resource", "add", "--tenant", "corp", "--kind", "vm", "--name", "db.corp.example", "--attr", &format!("hsm={}", a.resource)],
    );
    let key = cli_json(&data, &["hsm", "rekey", vm["id"].as_str().unwrap()]);
    let key_id = key["key"]["id"].as_str().unwrap();
    let cka_id = unhex(key["key"]["cka_id"].as_str().unwrap());
    let spki = key_spki(&key["key"], &read_certificate("dist-a", &cka_id).unwrap()).1;
    assert!(tenant_objects("dist-b", &b.pin).is_empty());

    // The default policy (control-or-challenge) does not allow distribution.
    let err = cli_fails(&data, &["hsm", "distribute", key_id, "--from", &a.id, "--to", &b.id]);
    assert!(err.contains("distribution refused"), "{err}");
    assert!(tenant_objects("dist-b", &b.pin).is_empty(), "a denied distribution leaves the target untouched");

    // registry-control allows it between two active HSMs of the tenant.
    let digest =
        cli(&data, &["plugin", "install", built_plugin_path("registry-control").to_str().unwrap(), "--operator"]).trim().to_string();
    let done = cli_json(&data, &["hsm", "distribute", key_id, "--from", &a.resource, "--to", &b.resource]);
    assert_eq!(done["key"]["slot_id"], b.id.as_str());
    assert_eq!(done["plugins"][0], digest.as_str());
    signs_verifiably("dist-b", &b.pin, &cka_id, &spki).expect("the copy signs, verifiably with the original public key");
    let copied = tenant_objects("dist-b", &b.pin);
    let private = copied.iter().find(|o| o.class == "private-key").expect("a private key in the target");
    assert_eq!(private.sensitive, Some(true));
    assert!(copied.iter().any(|o| o.class == "certificate"));
    assert!(copied.iter().all(|o| o.class != "secret-key"), "no transport key is left behind: {copied:?}");

    // Across tenants: refused even with a plugin that allows everything.
    let allow_all =
        cli(&data, &["plugin", "install", built_plugin_path("allow-distribution").to_str().unwrap(), "--operator"]).trim().to_string();
    let err = cli_fails(&data, &["hsm", "distribute", key_id, "--from", &a.id, "--to", &r.id]);
    assert!(err.contains("another tenant"), "{err}");
    assert!(tenant_objects("dist-rival", &r.pin).is_empty());

    // Every attempt is audited with the plugins' digests.
    let audit: Vec<serde_json::Value> = cli(&data, &["audit", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| r["hook"] == "distribution")
        .collect();
    let outcomes: Vec<_> = audit.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["deny", "allow", "deny"]);
    assert_eq!(audit[1]["plugins"][0], digest.as_str());
    assert_eq!(audit[2]["plugins"][0], allow_all.as_str());
    assert!(audit[2]["reason"].as_str().unwrap().contains("the plugins allowed it"));
}

/// Issue 13: a token allocated to a tenant receives, wrapped, the keys the
/// tenant's policy says it should also hold, one `decide-distribution` each
/// (here: same `key-group` attribute as the key's HSM); a refusal is returned
/// and audited with the plugin's reason, a token error fails only its own key,
/// nothing is copied twice, and `hsm sync` reruns it after the attributes change.
#[test]
fn allocation_distributes_the_keys_the_policy_allows_by_attribute() {
    softhsm();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    support::add_tenant(&data, "corp", &["corp.example"]);
    for label in ["sync-a", "sync-b", "sync-c", "sync-d"] {
        pool_add(&data, label);
    }
    let allocate_in = |group: &str, extra: &[&str]| {
        let attr = format!("key-group={group}");
        let mut args = vec!["hsm", "allocate", "--tenant", "corp", "--attr", &attr];
        args.extend_from_slice(extra);
        let v = cli_json(&data, &args);
        let s = |k: &str| v[k].as_str().unwrap().to_string();
        (Allocated { id: s("id"), resource: s("resource"), pin: s("user_pin") }, v["distribution"].as_array().unwrap().clone(), v)
    };
    let (a, nothing, _) = allocate_in("g1", &[]);
    assert!(nothing.is_empty(), "the tenant's first token has nothing to receive: {nothing:?}");
    let attrs = cli(&data, &["resource", "list", "--tenant", "corp", "--json"]);
    assert!(attrs.lines().any(|l| l.contains(&a.resource) && l.contains(r#""key-group":"g1""#)), "{attrs}");
    // tenure's own attributes of an hsm resource are not the caller's to set.
    let err = cli_fails(&data, &["hsm", "allocate", "--tenant", "corp", "--attr", "token=mine"]);
    assert!(err.contains("tenure's own"), "{err}");

    let vm = cli_json(
        &data,
        &["resource", "add", "--tenant", "corp", "--kind", "vm", "--name", "kv.corp.example", "--attr", &format!("hsm={}", a.resource)],
    );
    let key = cli_json(&data, &["hsm", "rekey", vm["id"].as_str().unwrap()]);
    let key_id = key["key"]["id"].as_str().unwrap().to_string();
    let cka_id = unhex(key["key"]["cka_id"].as_str().unwrap());
    let spki = key_spki(&key["key"], &read_certificate("sync-a", &cka_id).unwrap()).1;
    let digest =
        cli(&data, &["plugin", "install", built_plugin_path("distribute-by-attribute").to_str().unwrap(), "--operator"]).trim().to_string();

    // Same key group: copied at allocation, wrapped, and it signs as the original.
    let (b, attempts, _) = allocate_in("g1", &[]);
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0]["outcome"], "copied");
    assert_eq!(attempts[0]["source_key"], key_id.as_str());
    assert_eq!(attempts[0]["source_hsm"], a.resource.as_str());
    assert_eq!(attempts[0]["key"]["slot_id"], b.id.as_str());
    assert_eq!(attempts[0]["plugins"][0], digest.as_str());
    signs_verifiably("sync-b", &b.pin, &cka_id, &spki).expect("the copy signs, verifiably with the original public key");
    let copied = tenant_objects("sync-b", &b.pin);
    assert_eq!(copied.iter().filter(|o| o.class == "private-key").count(), 1, "{copied:?}");
    assert!(copied.iter().all(|o| o.class != "private-key" || o.sensitive == Some(true)));
    assert!(copied.iter().all(|o| o.class != "secret-key"), "no transport key is left behind: {copied:?}");

    // Another key group: refused, with everything a notification needs, and nothing in the token.
    let (c, attempts, _) = allocate_in("g2", &[]);
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    let denied = &attempts[0];
    assert_eq!(denied["outcome"], "denied");
    assert_eq!(denied["tenant"], "corp");
    assert_eq!(denied["key_id"], key_id.as_str());
    assert_eq!(denied["source_hsm"], a.resource.as_str());
    assert_eq!(denied["target_hsm"], c.resource.as_str());
    let reason = denied["reason"].as_str().unwrap();
    assert!(reason.contains("key-group differs") && reason.contains("\"g2\""), "{reason}");
    assert!(tenant_objects("sync-c", &c.pin).is_empty(), "a denied distribution leaves the target untouched");
    let audit: Vec<serde_json::Value> = cli(&data, &["audit", "--tenant", "corp", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| r["hook"] == "distribution")
        .collect();
    let outcomes: Vec<_> = audit.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["allow", "deny"]);
    assert_eq!(audit[1]["reason"], reason);
    assert_eq!(audit[1]["input"]["target-hsm"], c.resource.as_str());
    assert_eq!(audit[1]["plugins"][0], digest.as_str());

    // A tenant-only token: tenure cannot log in to it, so it gets nothing, and says so.
    let (_, attempts, v) = allocate_in("g1", &["--tenant-only"]);
    assert!(attempts.is_empty());
    assert!(v["distribution_skipped"].as_str().unwrap().contains("tenant-only"), "{v}");

    // Again: nothing is copied twice.
    // JSON Lines, as every list: no attempt, no line.
    assert_eq!(cli(&data, &["hsm", "sync", &b.resource, "--json"]), "");
    assert!(cli(&data, &["hsm", "sync", &b.id]).contains("nothing to distribute"));
    // B gets a key of its own (rekeys are the default chain's to allow, so the
    // operator plugin steps aside meanwhile), and the tenant changes A's PIN.
    cli(&data, &["plugin", "remove", "--operator"]);
    let vm2 = cli_json(
        &data,
        &["resource", "add", "--tenant", "corp", "--kind", "vm", "--name", "kv2.corp.example", "--attr", &format!("hsm={}", b.resource)],
    );
    let key2 = cli_json(&data, &["hsm", "rekey", vm2["id"].as_str().unwrap()]);
    let key2_id = key2["key"]["id"].as_str().unwrap().to_string();
    let cka_id2 = unhex(key2["key"]["cka_id"].as_str().unwrap());
    let spki2 = key_spki(&key2["key"], &read_certificate("sync-b", &cka_id2).unwrap()).1;
    cli(&data, &["plugin", "install", built_plugin_path("distribute-by-attribute").to_str().unwrap(), "--operator"]);
    inspect(|| token("sync-a").init_user_pin(SO_PIN, "tenant-changed-1234").unwrap());

    // C joins g1: the change itself queues a redistribution (the server works it off within a
    // second; `renew --now` here), which offers both keys from where they were made (never B's
    // copy of A's key): A's fails (tenure's PIN is refused), B's is copied.
    cli(&data, &["resource", "set-attr", &c.resource, "--attr", "key-group=g1"]);
    let done = cli_json(&data, &["renew", "--now"]);
    assert_eq!(done["distributed"], 1, "{done}");
    signs_verifiably("sync-c", &c.pin, &cka_id2, &spki2).expect("the copy in C signs");
    let keys = cli_json(&data, &["hsm", "keys", &c.id]);
    let keys = keys["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0]["origin"], "distributed");
    assert_eq!(keys[0]["source_key"], key2_id.as_str());
    // A rerun (`hsm sync`) tries only the key still missing: A's, which fails again.
    let again: Vec<serde_json::Value> =
        cli(&data, &["hsm", "sync", &c.resource, "--json"]).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0]["outcome"], "failed");
    assert_eq!(again[0]["key_id"], key_id.as_str());
    assert_eq!(again[0]["source_hsm"], a.resource.as_str());
    assert!(again[0]["error"].as_str().unwrap().contains("user PIN"), "{}", again[0]);
}

#[test]
fn release_zeroizes_after_an_optional_grace_period() {
    softhsm();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    support::add_tenant(&data, "corp", &["corp.example"]);
    let id = pool_add(&data, "release");
    let empty_token = || {
        // The SO sets a fresh user PIN (the release removed it) and the user sees nothing.
        inspect(|| {
            let t = token("release");
            t.init_user_pin(SO_PIN, "inspect-1234").unwrap();
            session::list_objects(&t.user_session("inspect-1234").unwrap()).unwrap()
        })
    };

    // With a grace period: keys kept (the resource suspended), zeroized once it is over.
    let slot = allocate(&data, "corp");
    assert_eq!(slot.id, id);
    // The pool is empty now, and says so.
    let err = cli_fails(&data, &["hsm", "allocate", "--tenant", "corp"]);
    assert!(err.contains("no free token"), "{err}");
    let vm = cli_json(
        &data,
        &["resource", "add", "--tenant", "corp", "--kind", "vm", "--name", "a.corp.example", "--attr", &format!("hsm={}", slot.resource)],
    );
    cli(&data, &["hsm", "rekey", vm["id"].as_str().unwrap()]);
    assert_eq!(tenant_objects("release", &slot.pin).len(), 3, "key pair and certificate");
    let released = cli_json(&data, &["hsm", "release", &slot.id, "--grace-seconds", "1"]);
    assert_eq!(released["state"], "releasing");
    let resource = cli(&data, &["resource", "list", "--tenant", "corp", "--json"]);
    assert!(resource.lines().any(|l| l.contains(&slot.resource) && l.contains("\"suspended\"")), "{resource}");
    assert_eq!(tenant_objects("release", &slot.pin).len(), 3, "kept during the grace period");
    let err = cli_fails(&data, &["hsm", "rekey", vm["id"].as_str().unwrap()]);
    assert!(err.contains("suspended") || err.contains("no credential"), "{err}");
    std::thread::sleep(Duration::from_secs(2));
    let out = cli(&data, &["hsm", "sweep"]);
    assert!(out.starts_with("1 tokens zeroized"), "{out}");
    assert!(empty_token().is_empty(), "the token has no objects after release");
    let pool = cli(&data, &["hsm", "pool", "list", "--json"]);
    assert!(pool.contains("\"state\":\"free\""), "{pool}");

    // Straight away: allocated again (re-initialized), a key made, released, empty.
    let again = allocate(&data, "corp");
    assert_eq!(again.id, id);
    assert!(tenant_objects("release", &again.pin).is_empty(), "allocation starts from an empty token");
    let vm = cli_json(
        &data,
        &["resource", "add", "--tenant", "corp", "--kind", "vm", "--name", "b.corp.example", "--attr", &format!("hsm={}", again.resource)],
    );
    cli(&data, &["hsm", "rekey", vm["id"].as_str().unwrap()]);
    // The tenure operator cannot use the tenant's old PIN: it is gone with the allocation.
    assert!(inspect(|| token("release").user_session(&slot.pin).map(drop)).is_err());
    let released = cli_json(&data, &["hsm", "release", &again.resource]);
    assert_eq!(released["state"], "free");
    assert!(empty_token().is_empty(), "the token has no objects after release");
    let events = cli(&data, &["resource", "list", "--tenant", "corp", "--json"]);
    assert!(events.lines().filter(|l| l.contains("\"kind\":\"hsm\"")).all(|l| l.contains("\"released\"")), "{events}");
}
