//! Delivery targets against a real `tenure serve`, within the operator's
//! bounds: file drops only below `--delivery-root` (refused as they are set,
//! and again when delivering: another root, a link planted later); webhooks
//! only over https to public addresses unless `--webhook-allow` says
//! otherwise (a name resolving to loopback is refused when delivering, with
//! nothing sent); and each tenant's webhooks signed with its own secret, as
//! the CLI and the admin API show it, rotated by either.

use crate::admin::{call, client};
use crate::lifecycle::{Webhook, account, add_resource, cert_list, cert_show, hmac_hex, issue, server_with, wait_for};
use crate::support;

use std::path::Path;
use std::time::Duration;

use reqwest::Method as M;
use serde_json::{Value, json};
use support::Server;

/// Renewed about 4 s after issuance, and every 4 s after that.
const LIFETIME: &str = "lifetime-seconds=6";

/// Runs a `tenure` command that must fail; returns its standard error.
fn tenure_fails(data: &Path, args: &[&str]) -> String {
    let out = support::tenure_command(data).args(args).arg("--data").arg(data).output().expect("run tenure");
    assert!(!out.status.success(), "tenure {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every delivery of the certificates bound to `resource`.
fn deliveries(data: &Path, resource: &str) -> Vec<Value> {
    cert_list(data, &["--resource", resource])
        .iter()
        .flat_map(|c| cert_show(data, c["serial"].as_str().unwrap())["deliveries"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// The first delivery of the resource's certificates that was given up.
fn failed_delivery(data: &Path, resource: &str) -> Value {
    wait_for("a failed delivery", Duration::from_secs(30), || deliveries(data, resource).into_iter().find(|d| d["state"] == "failed"))
}

/// POSTs a resource through the admin API: (status, body).
async fn admin_add(server: &Server, token: &str, names: &[&str], attributes: Value) -> (u16, Value) {
    let body = json!({ "tenant": "corp", "kind": "vm", "names": names, "attributes": attributes });
    call(&client(server), token, M::POST, format!("https://{}/v1/resources", server.admin), Some(body.to_string().into_bytes())).await
}

fn admin_token(data: &Path) -> String {
    std::fs::read_to_string(data.join("admin-token")).unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_drops_stay_below_the_delivery_root() {
    support::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (root, outside) = (dir.path().join("drops"), dir.path().join("outside"));
    std::fs::create_dir(&root).unwrap();
    std::fs::create_dir(&outside).unwrap();
    let root_flag = ["--delivery-root", root.to_str().unwrap()];
    let server = server_with(&data, &[&["--renewal-interval", "0.3"][..], &root_flag].concat());
    let corp = support::add_tenant(&data, "corp", &["corp.example"]);
    let token = admin_token(&data);
    let dir_attr = |d: &Path| format!("delivery-dir={}", d.display());

    // As it is set: outside the server's root (admin API), or with no root at all (CLI).
    let (status, p) = admin_add(&server, &token, &["x.corp.example"], json!({ "delivery-dir": outside.join("x") })).await;
    assert_eq!(status, 400, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("outside the delivery root"), "{p}");
    let err = tenure_fails(
        &data,
        &["resource", "add", "--tenant", "corp", "--kind", "vm", "--name", "x.corp.example", "--attr", &dir_attr(&root.join("x"))],
    );
    assert!(err.contains("no delivery root is configured") && err.contains("--delivery-root"), "{err}");

    // Within the root: delivered.
    let ok =
        add_resource(
            &data,
            &[
                &[
                    "--tenant",
                    "corp",
                    "--kind",
                    "vm",
                    "--name",
                    "ok.corp.example",
                    "--attr",
                    LIFETIME,
                    "--attr",
                    &dir_attr(&root.join("ok")),
                ][..],
                &root_flag,
            ]
            .concat(),
        );
    // Set by a process with another root: the server refuses it when delivering.
    let elsewhere = add_resource(
        &data,
        &[
            "--tenant",
            "corp",
            "--kind",
            "vm",
            "--name",
            "elsewhere.corp.example",
            "--attr",
            LIFETIME,
            "--attr",
            &dir_attr(&outside.join("x")),
            "--delivery-root",
            outside.to_str().unwrap(),
        ],
    );
    // Below the root as it is set; a link planted afterwards leads it outside.
    let linked = add_resource(
        &data,
        &[
            &[
                "--tenant",
                "corp",
                "--kind",
                "vm",
                "--name",
                "linked.corp.example",
                "--attr",
                LIFETIME,
                "--attr",
                &dir_attr(&root.join("site/www")),
            ][..],
            &root_flag,
        ]
        .concat(),
    );
    std::os::unix::fs::symlink(&outside, root.join("site")).unwrap();

    let acct = account(&server, &corp).await;
    for name in ["ok.corp.example", "elsewhere.corp.example", "linked.corp.example"] {
        issue(&acct, &[name], None).await.unwrap();
    }
    wait_for("the drop below the root", Duration::from_secs(30), || root.join("ok/current/chain.pem").exists().then_some(()));
    let _ = ok;
    for (resource, why) in [(&elsewhere, "outside the delivery root"), (&linked, "symbolic link")] {
        let d = failed_delivery(&data, resource);
        let error = d["last_error"].as_str().unwrap();
        assert!(error.starts_with("refused: ") && error.contains(why), "{d}");
        assert_eq!(d["attempts"], 1, "a refusal is not retried: {d}");
    }
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "nothing was written outside the root");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_reach_loopback_only_when_allowed() {
    support::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hook = Webhook::start().await;
    let port = hook.url.trim_start_matches("http://127.0.0.1:").split('/').next().unwrap().to_string();
    let server = server_with(&data, &["--renewal-interval", "0.3"]);
    let corp = support::add_tenant(&data, "corp", &["corp.example"]);
    let token = admin_token(&data);

    // As it is set, without allowances: plain http, and addresses that are loopback or link-local.
    for (url, why) in [
        (hook.url.clone(), "plain http"),
        (format!("https://127.0.0.1:{port}/hook"), "a loopback address"),
        ("https://169.254.169.254/latest".to_string(), "a link-local address"),
        ("https://[::1]/hook".to_string(), "a loopback address"),
    ] {
        let (status, p) = admin_add(&server, &token, &["x.corp.example"], json!({ "delivery-webhook": url })).await;
        assert_eq!(status, 400, "{url}: {p}");
        assert!(p["detail"].as_str().unwrap().contains(why), "{url}: {p}");
    }
    // A name is judged by what it resolves to when delivering: localhost is loopback.
    let (status, r) = admin_add(
        &server,
        &token,
        &["named.corp.example"],
        json!({ "delivery-webhook": format!("https://localhost:{port}/hook"), "lifetime-seconds": "6" }),
    )
    .await;
    assert_eq!(status, 201, "{r}");
    let named = r["id"].as_str().unwrap().to_string();
    let acct = account(&server, &corp).await;
    issue(&acct, &["named.corp.example"], None).await.unwrap();
    let d = failed_delivery(&data, &named);
    let error = d["last_error"].as_str().unwrap();
    assert!(error.starts_with("refused: ") && error.contains("(host localhost)") && error.contains("a loopback address"), "{d}");
    assert!(hook.received.lock().unwrap().is_empty(), "nothing reached the receiver");

    // The operator allows the receiver (and plain http to it): delivered.
    // (The named resource goes first: under the allowance its https POSTs
    // would reach the plain receiver and wait out their timeout.)
    support::tenure_cli(&data, &["resource", "release", &named]);
    drop(server);
    let server = server_with(&data, &["--renewal-interval", "0.3", "--webhook-allow", "http://127.0.0.1"]);
    let (status, r) =
        admin_add(&server, &token, &["allowed.corp.example"], json!({ "delivery-webhook": hook.url, "lifetime-seconds": "6" })).await;
    assert_eq!(status, 201, "{r}");
    let allowed = r["id"].as_str().unwrap().to_string();
    let acct = account(&server, &corp).await;
    issue(&acct, &["allowed.corp.example"], None).await.unwrap();
    wait_for("the allowed webhook", Duration::from_secs(30), || {
        hook.received.lock().unwrap().iter().any(|(_, b)| String::from_utf8_lossy(b).contains(&allowed)).then_some(())
    });
    wait_for("the delivery marked delivered", Duration::from_secs(10), || {
        deliveries(&data, &allowed).iter().any(|d| d["state"] == "delivered").then_some(())
    });
}

/// `t` and `v1` of a `Tenure-Signature` header.
fn signature(headers: &std::collections::HashMap<String, String>) -> (String, String) {
    let sig = headers.get("tenure-signature").expect("signed webhook");
    let (t, v1) = sig.split_once(",v1=").unwrap();
    (t.strip_prefix("t=").unwrap().to_string(), v1.to_string())
}

fn signed_with(secret: &str, headers: &std::collections::HashMap<String, String>, body: &[u8]) -> bool {
    let (t, v1) = signature(headers);
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    hmac_hex(secret.as_bytes(), &signed) == v1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_signs_its_webhooks_with_its_own_secret() {
    support::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hook = Webhook::start().await;
    let allow = ["--webhook-allow", "http://127.0.0.1"];
    let server = server_with(&data, &[&["--renewal-interval", "0.3"][..], &allow].concat());
    let token = admin_token(&data);
    let c = client(&server);
    let base = format!("https://{}", server.admin);
    let hook_attr = format!("delivery-webhook={}", hook.url);
    let mut resources = Vec::new();
    for (tenant, name) in [("corp", "www.corp.example"), ("other", "www.other.example")] {
        let creds = support::add_tenant(&data, tenant, &[&name[4..]]);
        let id = add_resource(
            &data,
            &[&["--tenant", tenant, "--kind", "vm", "--name", name, "--attr", LIFETIME, "--attr", &hook_attr][..], &allow].concat(),
        );
        issue(&account(&server, &creds).await, &[name], None).await.unwrap();
        resources.push(id);
    }
    // The secrets as the operator reads them: the CLI for one, the admin API for the other.
    let corp_secret = support::tenure_cli(&data, &["tenant", "webhook-secret", "corp"]).trim().to_string();
    let (status, v) = call(&c, &token, M::GET, format!("{base}/v1/tenants/other/webhook-secret"), None).await;
    assert_eq!(status, 200, "{v}");
    let other_secret = v["webhook_secret"].as_str().unwrap().to_string();
    assert_ne!(corp_secret, other_secret);
    let (status, v) = call(&c, &token, M::GET, format!("{base}/v1/tenants/nobody/webhook-secret"), None).await;
    assert_eq!(status, 404, "{v}");

    let received_for = |resource: &str| {
        let resource = resource.to_string();
        let received = hook.received.clone();
        move || received.lock().unwrap().iter().find(|(_, b)| String::from_utf8_lossy(b).contains(&resource)).cloned()
    };
    let (h, b) = wait_for("corp's webhook", Duration::from_secs(30), received_for(&resources[0]));
    assert!(signed_with(&corp_secret, &h, &b) && !signed_with(&other_secret, &h, &b), "corp's webhook is signed with corp's secret only");
    let (h, b) = wait_for("other's webhook", Duration::from_secs(30), received_for(&resources[1]));
    assert!(signed_with(&other_secret, &h, &b) && !signed_with(&corp_secret, &h, &b), "other's webhook is signed with other's secret only");

    // Rotation (admin API): the next webhooks carry the new secret, and the CLI shows it.
    let (status, v) = call(&c, &token, M::POST, format!("{base}/v1/tenants/corp/webhook-secret/rotate"), None).await;
    assert_eq!(status, 200, "{v}");
    let rotated = v["webhook_secret"].as_str().unwrap().to_string();
    assert_ne!(rotated, corp_secret);
    assert_eq!(support::tenure_cli(&data, &["tenant", "webhook-secret", "corp"]).trim(), rotated);
    wait_for("a webhook under corp's new secret", Duration::from_secs(30), || {
        let all = hook.received.lock().unwrap().clone();
        all.iter().any(|(h, b)| String::from_utf8_lossy(b).contains(&resources[0]) && signed_with(&rotated, h, b)).then_some(())
    });
    // Rotation (CLI) prints the new one.
    let cli_rotated = support::tenure_cli(&data, &["tenant", "webhook-secret", "other", "--rotate", "--json"]);
    let cli_rotated: Value = serde_json::from_str(cli_rotated.trim()).unwrap();
    assert_ne!(cli_rotated["webhook_secret"].as_str().unwrap(), other_secret);
}
