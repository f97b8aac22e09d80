//! Signing throughput of a CA key in an HSM (SoftHSM2 over PKCS#11) against the
//! same kind of key in software (ring): one ECDSA P-256 signature over a
//! certificate-sized message, then one whole signed structure (a CRL of ten
//! entries: build, sign) by an intermediate whose key is in each place. (Leaves
//! are signed only on the issuance path, decide → sign → record; a CRL costs
//! the same key operation and about the same building.)
//!
//!     cargo bench -p tenure-engine --bench signing
//!
//! Needs softhsm2-util and the SoftHSM2 module (set SOFTHSM2_MODULE to override
//! where it is looked for); makes a throwaway token under a temporary SOFTHSM2_CONF.

use std::hint::black_box;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use rcgen::SigningKey as _;
use tenure_engine::ca::{self, CaKey, CaMaterial, CrlEntry, Permit};
use tenure_engine::hsm::{CA_HSM_SETTING, CaCustody, CaHsmConfig};
use tenure_engine::store::{SettingsStore, SqliteStore};

const SIGNATURES: usize = 3_000;
const ISSUANCES: usize = 1_000;

fn module() -> PathBuf {
    if let Ok(p) = std::env::var("SOFTHSM2_MODULE") {
        return PathBuf::from(p);
    }
    ["/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("SoftHSM2 module not found (apt-get install softhsm2)")
}

fn report(label: &str, mut samples: Vec<Duration>) {
    let total: Duration = samples.iter().sum();
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let pct = |p: f64| us(samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)]);
    println!(
        "{label:<40} {:>8.0}/s   p50 {:>7.1} µs   p99 {:>7.1} µs   (n = {}, one thread)",
        samples.len() as f64 / total.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        samples.len()
    );
}

fn time(n: usize, mut f: impl FnMut()) -> Vec<Duration> {
    for _ in 0..n / 10 {
        f();
    }
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(&conf, format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", tokens.display())).unwrap();
    // Single-threaded here, before the module is loaded.
    unsafe { std::env::set_var("SOFTHSM2_CONF", &conf) };
    let ok = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", "bench", "--so-pin", "so-bench", "--pin", "user-bench"])
        .output()
        .expect("softhsm2-util")
        .status
        .success();
    assert!(ok, "softhsm2-util --init-token failed");
    std::fs::write(dir.path().join("pin"), "user-bench").unwrap();

    let store = SqliteStore::open_in_memory().unwrap();
    let config = CaHsmConfig { module: module(), token: "bench".into(), pin_file: dir.path().join("pin") };
    store.set_setting(CA_HSM_SETTING, &serde_json::to_vec(&config).unwrap()).unwrap();
    let custody = CaCustody::open(dir.path(), &store).unwrap();

    let hsm_key = custody.new_ca_key("bench CA").unwrap();
    let soft_key = CaKey::generate_software().unwrap();
    let tbs = vec![0x5au8; 400]; // about a leaf's TBSCertificate

    println!("ECDSA P-256 signature over {} octets:", tbs.len());
    let soft = soft_key.signing_key().unwrap();
    report(
        "  software (ring)",
        time(SIGNATURES, || {
            black_box(soft.sign(black_box(&tbs)).unwrap());
        }),
    );
    let hsm = hsm_key.signing_key().unwrap();
    report(
        "  HSM (SoftHSM2 via PKCS#11)",
        time(SIGNATURES, || {
            black_box(hsm.sign(black_box(&tbs)).unwrap());
        }),
    );

    println!("CRL of ten entries (build, sign):");
    let permits = [Permit::parse("example.com").unwrap()];
    let serials: Vec<String> = (0..10).map(|i| format!("{:032x}", 0x1000 + i)).collect();
    for (label, root_key, inter_key) in [
        ("  software CA keys", CaKey::generate_software().unwrap(), soft_key.clone()),
        ("  HSM CA keys", custody.new_ca_key("bench root").unwrap(), hsm_key.clone()),
    ] {
        let root = ca::new_root_with("bench root", root_key).unwrap();
        let inter: CaMaterial = ca::new_intermediate_with(&root, "bench intermediate", Some(&permits), inter_key).unwrap();
        let mut number = 0u64;
        report(
            label,
            time(ISSUANCES, || {
                let now = SystemTime::now();
                let entries: Vec<CrlEntry<'_>> =
                    serials.iter().map(|s| CrlEntry { serial_hex: s, revoked_at: now - Duration::from_secs(60), reason: 5 }).collect();
                number += 1;
                black_box(ca::sign_crl(&inter, number, now, now + Duration::from_secs(86400), &entries).unwrap());
            }),
        );
    }
}
