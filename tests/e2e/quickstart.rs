//! The README's local trial, run as written: `examples/try-locally.sh` starts a
//! mock DNS, a server of its own and lego, and must end with a certificate
//! that verifies against the new root.

use std::process::Command;

use crate::support::{free_port, fresh_database, on_postgres, tenure_bin};

#[test]
fn the_readme_local_trial_gets_a_verified_certificate() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/try-locally.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(script).arg("trial.tenure.test").env("TENURE", tenure_bin());
    for var in ["ACME", "ADMIN", "METRICS", "HTTP01", "DNS", "DNS_MANAGEMENT"] {
        cmd.env(var, free_port().to_string());
    }
    // On the PostgreSQL pass the script's server stores there, through the
    // environment as an operator would set it.
    if on_postgres() {
        cmd.env("TENURE_DATABASE", fresh_database());
    } else {
        cmd.env_remove("TENURE_DATABASE");
    }
    let out = cmd.output().expect("run examples/try-locally.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the local trial failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("certificate for trial.tenure.test, verified against the root"), "{stdout}");
    assert!(stdout.contains("DNS:trial.tenure.test"), "the certificate names the trial name:\n{stdout}");
}
