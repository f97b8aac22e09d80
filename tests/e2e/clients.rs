//! Black-box runs of real ACME clients (certbot, lego) against a real
//! `tenure serve` process, plus a restart in the middle of an order.

use crate::support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use support::dns::TestDns;
use support::{ServeOptions, Server};
use tokio::process::Command;

/// Fails the test with the client's output and the server's log unless the client succeeded.
pub(crate) fn ok(out: &Output, what: &str, server: &Server) {
    assert!(
        out.status.success(),
        "{what} failed\nstdout:\n{}\nstderr:\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
}

fn certbot(server: &Server, work: &Path) -> Command {
    let mut cmd = Command::new("certbot");
    cmd.env("REQUESTS_CA_BUNDLE", server.root_pem())
        .arg("--non-interactive")
        .arg("--server")
        .arg(server.directory_url())
        .arg("--config-dir")
        .arg(work.join("conf"))
        .arg("--work-dir")
        .arg(work.join("work"))
        .arg("--logs-dir")
        .arg(work.join("logs"));
    cmd
}

/// lego against the server, for `domain`, keeping its state in `work`; the caller adds
/// the challenge, account options and the command.
pub(crate) fn lego(server: &Server, work: &Path, domain: &str) -> Command {
    let mut cmd = Command::new("lego");
    cmd.env("LEGO_CA_CERTIFICATES", server.root_pem())
        .arg("--server")
        .arg(server.directory_url())
        .arg("--accept-tos")
        .arg("--email")
        .arg("lego@example.test")
        .arg("--path")
        .arg(work)
        .arg("--domains")
        .arg(domain);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certbot_standalone_http01_then_revoke_by_certificate_key() {
    let dns = TestDns::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), ServeOptions::new(Some(dns.addr)));
    let work = dir.path().join("certbot");
    let domain = "certbot.example.test";

    let out = certbot(&server, &work)
        .arg("certonly")
        .arg("--standalone")
        .arg("--agree-tos")
        .arg("--email")
        .arg("certbot@example.test")
        .arg("--preferred-challenges")
        .arg("http")
        .arg("--http-01-port")
        .arg(server.options.http01_port.to_string())
        .arg("--http-01-address")
        .arg("127.0.0.1")
        .arg("-d")
        .arg(domain)
        .output()
        .await
        .unwrap();
    ok(&out, "certbot certonly", &server);
    let live = work.join("conf/live").join(domain);
    let chain = std::fs::read_to_string(live.join("fullchain.pem")).unwrap();
    support::openssl_verify(&server.root_pem(), &chain, dir.path());

    // Revocation signed with the certificate's own key (no account involved).
    let out = certbot(&server, &work)
        .arg("revoke")
        .arg("--cert-path")
        .arg(live.join("cert.pem"))
        .arg("--key-path")
        .arg(live.join("privkey.pem"))
        .arg("--reason")
        .arg("keycompromise")
        .arg("--no-delete-after-revoke")
        .output()
        .await
        .unwrap();
    ok(&out, "certbot revoke --key-path", &server);

    // Revoking again says alreadyRevoked.
    let out = certbot(&server, &work)
        .arg("revoke")
        .arg("--cert-path")
        .arg(live.join("cert.pem"))
        .arg("--no-delete-after-revoke")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // Debian's certbot 2.1 trips over josepy while printing the error, so
    // read the server's answer from certbot's own log.
    let log = std::fs::read_to_string(work.join("logs/letsencrypt.log")).unwrap_or_default();
    assert!(log.contains("urn:ietf:params:acme:error:alreadyRevoked"), "{text}\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lego_http01_and_tlsalpn01() {
    let dns = TestDns::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), ServeOptions::new(Some(dns.addr)));

    let work = dir.path().join("lego-http");
    let out = lego(&server, &work, "lego-http.example.test")
        .arg("--http")
        .arg("--http.port")
        .arg(format!("127.0.0.1:{}", server.options.http01_port))
        .arg("run")
        .output()
        .await
        .unwrap();
    ok(&out, "lego --http run", &server);
    let chain = std::fs::read_to_string(work.join("certificates/lego-http.example.test.crt")).unwrap();
    support::openssl_verify(&server.root_pem(), &chain, dir.path());

    let work = dir.path().join("lego-tls");
    let out = lego(&server, &work, "lego-tls.example.test")
        .arg("--key-type")
        .arg("rsa2048")
        .arg("--tls")
        .arg("--tls.port")
        .arg(format!("127.0.0.1:{}", server.options.tlsalpn01_port))
        .arg("run")
        .output()
        .await
        .unwrap();
    ok(&out, "lego --tls run", &server);
    let chain = std::fs::read_to_string(work.join("certificates/lego-tls.example.test.crt")).unwrap();
    support::openssl_verify(&server.root_pem(), &chain, dir.path());

    // lego revokes with its account key.
    let out = lego(&server, &work, "lego-tls.example.test").arg("revoke").output().await.unwrap();
    ok(&out, "lego revoke", &server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_survives_a_restart_and_completes() {
    use instant_acme::{Account, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy};
    support::install_crypto_provider();
    let dns = TestDns::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let options = ServeOptions::new(Some(dns.addr));
    let server = Server::start(&data, options.clone());
    let listen = server.listen;
    let directory = server.directory_url();
    let root = server.root_pem();

    let (account, credentials) = Account::builder_with_root(&root)
        .unwrap()
        .create(&NewAccount { contact: &[], terms_of_service_agreed: true, only_return_existing: false }, directory.clone(), None)
        .await
        .unwrap();
    let ids = [Identifier::Dns("restart.example.test".into())];
    let order = account.new_order(&NewOrder::new(&ids)).await.unwrap();
    let order_url = order.url().to_string();

    // SIGKILL between newOrder and the challenge: nothing may be lost.
    server.kill();
    let server = Server::start_on(&data, options, listen);

    let account = Account::builder_with_root(&root).unwrap().from_credentials(credentials).await.unwrap();
    let mut order = account.order(order_url).await.unwrap();
    let mut authzs = order.authorizations();
    let mut authz = authzs.next().await.unwrap().unwrap();
    let mut ch = authz.challenge(ChallengeType::Dns01).unwrap();
    dns.set_txt("_acme-challenge.restart.example.test", vec![ch.key_authorization().dns_value()]);
    ch.set_ready().await.unwrap();
    let retry = RetryPolicy::new().timeout(Duration::from_secs(30));
    assert_eq!(order.poll_ready(&retry).await.unwrap(), OrderStatus::Ready);
    order.finalize().await.unwrap();
    let chain = order.poll_certificate(&retry).await.unwrap();
    support::openssl_verify(&root, &chain, dir.path());
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_added_by_the_cli_while_serving_is_effective_at_once() {
    use base64::Engine as _;
    use instant_acme::{Account, ChallengeType, ExternalAccountKey, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy};
    support::install_crypto_provider();
    let dns = TestDns::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, ServeOptions::new(Some(dns.addr)));

    let creds = support::add_tenant(&data, "shop", &["shop.example", "10.9.0.0/16"]);
    assert_eq!(creds.tenant, "shop");
    let hmac = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&creds.eab_hmac).unwrap();
    let eab = ExternalAccountKey::new(creds.eab_kid.clone(), &hmac);
    let (account, _) = Account::builder_with_root(server.root_pem())
        .unwrap()
        .create(
            &NewAccount { contact: &[], terms_of_service_agreed: true, only_return_existing: false },
            server.directory_url(),
            Some(&eab),
        )
        .await
        .unwrap();

    let outside = [Identifier::Dns("www.not-the-shop.example".into())];
    let err = account.new_order(&NewOrder::new(&outside)).await.err().expect("refused");
    assert!(err.to_string().contains("rejectedIdentifier"), "{err}");
    let outside_ip = [Identifier::Ip("10.10.0.1".parse().unwrap())];
    let err = account.new_order(&NewOrder::new(&outside_ip)).await.err().expect("refused");
    assert!(err.to_string().contains("rejectedIdentifier"), "{err}");

    let ids = [Identifier::Dns("www.shop.example".into())];
    let mut order = account.new_order(&NewOrder::new(&ids)).await.unwrap();
    let mut authzs = order.authorizations();
    let mut authz = authzs.next().await.unwrap().unwrap();
    let mut ch = authz.challenge(ChallengeType::Dns01).unwrap();
    dns.set_txt("_acme-challenge.www.shop.example", vec![ch.key_authorization().dns_value()]);
    ch.set_ready().await.unwrap();
    let retry = RetryPolicy::new().timeout(Duration::from_secs(30));
    assert_eq!(order.poll_ready(&retry).await.unwrap(), OrderStatus::Ready);
    order.finalize().await.unwrap();
    let chain = order.poll_certificate(&retry).await.unwrap();
    support::openssl_verify(&server.root_pem(), &chain, dir.path());
}
