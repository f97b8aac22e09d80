//! RFC 8555 points found by running certbot's integration suite against
//! tenure, checked against a real `tenure serve` with instant-acme and CSRs
//! made by openssl: what a CSR cannot have (a key tenure does not certify,
//! Must-Staple) is `badCSR` and leaves the order ready, and the operator's
//! reuse of valid authorizations.

use crate::support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use instant_acme::{Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, Order, OrderStatus, RetryPolicy};
use support::dns::TestDns;
use support::{ServeOptions, Server};

/// A DER CSR for `name` made by the openssl CLI: `newkey` as `req -newkey`
/// takes it, plus any `-addext`.
fn openssl_csr(dir: &Path, name: &str, newkey: &[&str], addext: &[&str]) -> Vec<u8> {
    let out = dir.join(format!("{}.csr", newkey.join("_").replace([':', '/'], "_")));
    let mut cmd = Command::new("openssl");
    cmd.args(["req", "-new", "-nodes", "-keyout", "/dev/null", "-outform", "DER"])
        .args(["-subj", &format!("/CN={name}"), "-addext", &format!("subjectAltName=DNS:{name}")])
        .arg("-newkey")
        .args(newkey)
        .arg("-out")
        .arg(&out);
    for ext in addext {
        cmd.args(["-addext", ext]);
    }
    let status = cmd.output().expect("run openssl");
    assert!(status.status.success(), "openssl req: {}", String::from_utf8_lossy(&status.stderr));
    std::fs::read(&out).expect("the CSR openssl wrote")
}

async fn public_account(server: &Server) -> Account {
    let new = NewAccount { contact: &[], terms_of_service_agreed: true, only_return_existing: false };
    Account::builder_with_root(server.root_pem()).unwrap().create(&new, server.directory_url(), None).await.unwrap().0
}

/// A new order for `name`, its pending authorizations proven by dns-01.
async fn ready_order(account: &Account, dns: &TestDns, name: &str) -> Order {
    let mut order = account.new_order(&NewOrder::new(&[Identifier::Dns(name.into())])).await.unwrap();
    let mut authzs = order.authorizations();
    while let Some(authz) = authzs.next().await {
        let mut authz = authz.unwrap();
        if authz.status != AuthorizationStatus::Pending {
            continue;
        }
        let mut ch = authz.challenge(ChallengeType::Dns01).unwrap();
        dns.set_txt(&format!("_acme-challenge.{name}"), vec![ch.key_authorization().dns_value()]);
        ch.set_ready().await.unwrap();
    }
    assert_eq!(order.poll_ready(&RetryPolicy::new().timeout(Duration::from_secs(30))).await.unwrap(), OrderStatus::Ready);
    order
}

fn problem(err: instant_acme::Error) -> instant_acme::Problem {
    match err {
        instant_acme::Error::Api(p) => p,
        other => panic!("expected a problem document, got {other}"),
    }
}

/// RFC 8555 §7.4 and §6.7: a CSR whose key tenure does not certify is
/// `badCSR` naming the curve, a CSR asking for Must-Staple (RFC 7633) is
/// `badCSR` too; neither spoils the order, which then finalizes with a good CSR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalize_refuses_foreign_keys_and_must_staple_with_bad_csr() {
    support::install_crypto_provider();
    let dns = TestDns::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), ServeOptions::new(Some(dns.addr)));
    let account = public_account(&server).await;
    let name = "csr.example.test";
    let mut order = ready_order(&account, &dns, name).await;

    let k1 = openssl_csr(dir.path(), name, &["ec", "-pkeyopt", "ec_paramgen_curve:secp256k1"], &[]);
    let p = problem(order.finalize_csr(&k1).await.unwrap_err());
    assert_eq!(p.r#type.as_deref(), Some("urn:ietf:params:acme:error:badCSR"), "{p:?}");
    let detail = p.detail.unwrap_or_default();
    assert!(detail.contains("the CSR's key is on curve secp256k1 (1.3.132.0.10)"), "{detail}");
    assert!(detail.contains("P-256 and P-384"), "{detail}");

    let p521 = openssl_csr(dir.path(), name, &["ec", "-pkeyopt", "ec_paramgen_curve:P-521"], &[]);
    let p = problem(order.finalize_csr(&p521).await.unwrap_err());
    assert_eq!(p.r#type.as_deref(), Some("urn:ietf:params:acme:error:badCSR"), "{p:?}");
    assert!(p.detail.unwrap_or_default().contains("P-521 (1.3.132.0.35)"));

    let staple = openssl_csr(dir.path(), name, &["ec", "-pkeyopt", "ec_paramgen_curve:P-256"], &["tlsfeature=status_request"]);
    let p = problem(order.finalize_csr(&staple).await.unwrap_err());
    assert_eq!(p.r#type.as_deref(), Some("urn:ietf:params:acme:error:badCSR"), "{p:?}");
    let detail = p.detail.unwrap_or_default();
    assert!(detail.contains("tenure runs no OCSP responder; Must-Staple (RFC 7633) cannot be honoured"), "{detail}");

    // The refusals left the order ready: a good CSR (an RSA key, made by openssl) issues.
    assert_eq!(order.refresh().await.unwrap().status, OrderStatus::Ready);
    let good = openssl_csr(dir.path(), name, &["rsa:2048"], &[]);
    order.finalize_csr(&good).await.unwrap();
    order.poll_certificate(&RetryPolicy::new().timeout(Duration::from_secs(30))).await.unwrap();
}

/// The operator's `--reuse-valid-authorizations` (RFC 8555 §7.1.6, §7.4):
/// with it, a second order by the same account for a name it proved is
/// `ready` at once and lists the same authorization; without it, the second
/// order has a fresh pending authorization. Another account never shares.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_authorizations_are_reused_only_with_the_flag() {
    support::install_crypto_provider();
    let dns = TestDns::start().await;
    for reuse in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut options = ServeOptions::new(Some(dns.addr));
        if reuse {
            options.extra.push("--reuse-valid-authorizations".into());
        }
        let server = Server::start(&dir.path().join("data"), options);
        let account = public_account(&server).await;
        let name = if reuse { "reuse.example.test" } else { "fresh.example.test" };
        let mut first = ready_order(&account, &dns, name).await;
        let proven = first.state().authorizations[0].url.clone();

        let ids = [Identifier::Dns(name.into())];
        let mut second = account.new_order(&NewOrder::new(&ids)).await.unwrap();
        let state = second.state();
        let urls: Vec<&str> = state.authorizations.iter().map(|a| a.url.as_str()).collect();
        if reuse {
            assert_eq!((state.status, urls), (OrderStatus::Ready, vec![proven.as_str()]));
            // And it issues without another challenge.
            second.finalize().await.unwrap();
            second.poll_certificate(&RetryPolicy::new().timeout(Duration::from_secs(30))).await.unwrap();
        } else {
            assert_eq!(state.status, OrderStatus::Pending);
            assert_eq!(urls.len(), 1);
            assert_ne!(urls[0], proven);
            let mut authzs = second.authorizations();
            assert_eq!(authzs.next().await.unwrap().unwrap().status, AuthorizationStatus::Pending);
        }

        let other = public_account(&server).await;
        let mut theirs = other.new_order(&NewOrder::new(&ids)).await.unwrap();
        assert_eq!(theirs.state().status, OrderStatus::Pending, "another account proves the name itself");
    }
}
