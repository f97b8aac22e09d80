//! `tenure bench issue`, the load generator, against a real `tenure serve`:
//! it must count what the server really issued, answer http-01 when asked,
//! and fail loudly (non-zero exit, the first error, a wound-down run) when
//! the server refuses.

use crate::support;

use std::process::{Command, Output};

use support::dns::TestDns;
use support::{ServeOptions, Server, TenantCreds};

fn bench(server: &Server, args: &[&str]) -> (Output, serde_json::Value) {
    let out = Command::new(support::tenure_bin())
        .args(["bench", "issue", "--json", "--timeout", "30s", "--directory"])
        .arg(server.directory_url())
        .arg("--root")
        .arg(server.root_pem())
        .args(args)
        .output()
        .expect("run tenure bench issue");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let report: serde_json::Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("the last line is the JSON report ({e}):\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    (out, report)
}

/// `bench` for the tenant's accounts (bound by External Account Binding).
fn bench_as(server: &Server, creds: &TenantCreds, args: &[&str]) -> (Output, serde_json::Value) {
    let mut all = args.to_vec();
    all.extend(["--eab-kid", &creds.eab_kid, "--eab-hmac", &creds.eab_hmac]);
    bench(server, &all)
}

fn certificates_of(server: &Server, tenant: &str) -> Vec<serde_json::Value> {
    let out = support::tenure_cli(&server.data, &["cert", "list", "--tenant", tenant, "--json"]);
    out.lines().map(|l| serde_json::from_str(l).expect("cert list --json prints one JSON object per line")).collect()
}

#[test]
fn every_issuance_it_reports_is_a_certificate_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let creds = support::add_tenant(&data, "load", &["load.example.com"]);
    support::tenure_cli(&data, &["resource", "add", "--tenant", "load", "--kind", "lb", "--zone", "load.example.com"]);
    let server = Server::start(&data, ServeOptions::new(None));

    let (out, report) = bench_as(&server, &creds, &["--n", "24", "--concurrency", "4", "--accounts", "2", "--domain", "load.example.com"]);

    assert!(out.status.success(), "bench failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(report["completed"], 24);
    assert_eq!(report["failed"], 0);
    assert_eq!(report["not_started"], 0);
    assert!(report["rate"].as_f64().unwrap() > 0.0);
    let p50 = report["p50_ms"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= report["p99_ms"].as_f64().unwrap());
    // The server agrees: 24 certificates, every one for a name under the zone.
    let certs = certificates_of(&server, "load");
    assert_eq!(certs.len(), 24, "{certs:#?}");
    for c in &certs {
        let names = c["identifiers"].to_string();
        assert!(names.contains(".load.example.com"), "{names}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_answers_http01_when_the_names_are_not_held() {
    let dns = TestDns::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), ServeOptions::new(Some(dns.addr)));
    let listen = format!("127.0.0.1:{}", server.options.http01_port);
    let server = std::sync::Arc::new(server);
    let s = server.clone();
    // The mock DNS answers on this runtime, so the blocking client runs beside it.
    let (out, report) = tokio::task::spawn_blocking(move || {
        bench(
            &s,
            &[
                "--n",
                "6",
                "--concurrency",
                "3",
                "--accounts",
                "1",
                "--domain",
                "bench.example.test",
                "--challenge",
                "http-01",
                "--http01-listen",
                &listen,
            ],
        )
    })
    .await
    .unwrap();
    assert!(out.status.success(), "bench failed: {}\n{}", String::from_utf8_lossy(&out.stderr), server.log());
    assert_eq!(report["completed"], 6);
    assert_eq!(report["failed"], 0);
}

#[test]
fn a_refusing_server_fails_the_run_and_it_winds_down() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let creds = support::add_tenant(&data, "narrow", &["narrow.example.com"]);
    let server = Server::start(&data, ServeOptions::new(None));

    // Names outside the tenant's permits: every new-order is refused.
    let (out, report) =
        bench_as(&server, &creds, &["--n", "200", "--concurrency", "2", "--accounts", "1", "--domain", "elsewhere.example.org"]);

    assert!(!out.status.success(), "a run with failed issuances must exit non-zero");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("new-order") && stderr.contains("elsewhere.example.org"),
        "the first error names the step and the name: {stderr}"
    );
    assert_eq!(report["completed"], 0);
    let failed = report["failed"].as_u64().unwrap();
    assert!((1..=2).contains(&failed), "one failure per worker at most: {report}");
    assert_eq!(report["not_started"].as_u64().unwrap(), 200 - failed);
    assert!(certificates_of(&server, "narrow").is_empty());
}
