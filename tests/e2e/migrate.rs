//! `tenure migrate`: a single-node deployment on SQLite moves into PostgreSQL
//! and carries on there. Every certificate a client received is downloadable
//! from the moved deployment, unchanged; the tenant's EAB key still binds new
//! accounts; the row counts the command prints match the SQLite database.

use crate::support;

use std::time::Duration;

use instant_acme::{Account, AccountCredentials, ExternalAccountKey, Identifier, NewAccount, NewOrder, OrderStatus};
use support::{ServeOptions, Server};

const ZONE: &str = "moving.example.com";

async fn issue(account: &Account, name: &str) -> (String, String) {
    let ids = [Identifier::Dns(name.to_string())];
    let mut order = account.new_order(&NewOrder::new(&ids)).await.expect("new order");
    assert_eq!(order.state().status, OrderStatus::Ready, "the tenant holds the zone");
    order.finalize().await.expect("finalize");
    loop {
        if let Some(chain) = order.certificate().await.expect("download") {
            return (order.url().to_string(), chain);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn count(db: &std::path::Path, table: &str) -> i64 {
    let out = std::process::Command::new("sqlite3").arg(db).arg(format!("SELECT count(*) FROM {table}")).output().expect("sqlite3");
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_deployment_moves_into_postgres_and_keeps_every_certificate_and_eab_key() {
    support::install_crypto_provider();
    if support::on_postgres() {
        // The PostgreSQL pass has its own database per directory; this test
        // makes the SQLite deployment it moves itself, in the SQLite pass.
        eprintln!("covered by the SQLite pass (it moves a SQLite deployment)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let creds = support::add_tenant(&data, "mover", &[ZONE]);
    support::tenure_cli(&data, &["resource", "add", "--tenant", "mover", "--kind", "lb", "--zone", ZONE]);
    let options = ServeOptions::new(None);
    let server = Server::start(&data, options.clone());
    let listen = server.listen;
    let hmac = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&creds.eab_hmac).unwrap()
    };
    let eab = ExternalAccountKey::new(creds.eab_kid.clone(), &hmac);
    let new = NewAccount { contact: &[], terms_of_service_agreed: true, only_return_existing: false };
    let (account, credentials) =
        Account::builder_with_root(server.root_pem()).unwrap().create(&new, server.directory_url(), Some(&eab)).await.expect("account");
    let credentials = serde_json::to_string(&credentials).unwrap();
    let mut received = Vec::new();
    for i in 0..5 {
        received.push(issue(&account, &format!("n{i}.{ZONE}")).await);
    }
    drop(account);
    server.kill();

    let db = data.join("tenure.db");
    let url = support::fresh_database();
    let out = support::tenure_command(&data).args(["migrate", "--json", "--from"]).arg(&data).args(["--to", &url]).output().unwrap();
    assert!(out.status.success(), "migrate: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!report["database"].as_str().unwrap().is_empty());
    for table in ["certificates", "accounts", "orders", "tenants", "eab_keys", "issuers", "resources", "audit"] {
        assert_eq!(report["tables"][table].as_i64(), Some(count(&db, table)), "{table}: {report}");
    }
    assert!(report["tables"]["certificates"].as_i64().unwrap() >= 5);

    // Moving twice into the same database is refused, and changes nothing.
    let again = support::tenure_command(&data).args(["migrate", "--from"]).arg(&data).args(["--to", &url]).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("holds a CA already"), "{}", String::from_utf8_lossy(&again.stderr));

    // The same directory (its ca-key.kek, admin token, root.pem) serves the moved deployment.
    let mut moved = options.clone();
    moved.extra.extend(["--database".to_string(), url.clone()]);
    let server = Server::start_on(&data, moved, listen);
    let c: AccountCredentials = serde_json::from_str(&credentials).unwrap();
    let account = Account::builder_with_root(server.root_pem()).unwrap().from_credentials(c).await.expect("the account moved");
    for (order_url, chain) in &received {
        let mut order =
            account.order(order_url.clone()).await.unwrap_or_else(|e| panic!("order {order_url} after the move: {e}\n{}", server.log()));
        assert_eq!(order.state().status, OrderStatus::Valid);
        assert_eq!(&order.certificate().await.expect("download").expect("a certificate"), chain, "{order_url} changed in the move");
    }
    // The EAB key still binds a new account, which gets certificates from the moved CA.
    let (fresh, _) = Account::builder_with_root(server.root_pem())
        .unwrap()
        .create(&new, server.directory_url(), Some(&eab))
        .await
        .unwrap_or_else(|e| panic!("EAB after the move: {e}\n{}", server.log()));
    let (_, chain) = issue(&fresh, &format!("after.{ZONE}")).await;
    support::openssl_verify(&server.root_pem(), &chain, dir.path());
    // The CLI reads the moved deployment too.
    let listed = support::tenure_command(&data).args(["cert", "list", "--json", "--database", &url, "--data"]).arg(&data).output().unwrap();
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    assert_eq!(String::from_utf8_lossy(&listed.stdout).lines().count(), received.len() + 1);
}
