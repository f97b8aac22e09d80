//! instant-acme against a server running in this process: issuance over
//! http-01, dns-01 (with a wildcard) and an IP identifier, key rollover,
//! revocation by account, EAB binding to a constrained tenant.

use crate::support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, ExternalAccountKey, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
    RevocationRequest,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use support::dns::TestDns;
use tenure_acme::validation::{ValidationConfig, Validator};
use tenure_engine::{Config, Engine};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A minimal http-01 responder: serves key authorizations by token.
#[derive(Clone, Default)]
struct Http01 {
    tokens: Arc<Mutex<HashMap<String, String>>>,
}

impl Http01 {
    async fn start(port: u16) -> Http01 {
        let me = Http01::default();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind http-01");
        let tokens = me.tokens.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else { continue };
                let tokens = tokens.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]);
                    let path = req.split_whitespace().nth(1).unwrap_or("");
                    let token = path.strip_prefix("/.well-known/acme-challenge/").unwrap_or("");
                    let body = tokens.lock().unwrap().get(token).cloned();
                    let resp = match body {
                        Some(b) => format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}", b.len()),
                        None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
                    };
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        me
    }
    fn set(&self, token: &str, key_auth: &str) {
        self.tokens.lock().unwrap().insert(token.into(), key_auth.into());
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    engine: Engine,
    directory: String,
    root: std::path::PathBuf,
    dns: TestDns,
    http01: Http01,
}

async fn start() -> Harness {
    support::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let dns = TestDns::start().await;
    let http01_port = support::free_port();
    let http01 = Http01::start(http01_port).await;
    let engine = Engine::open(dir.path(), Config::default()).expect("open");
    let names = [tenure_engine::Identifier::ip("127.0.0.1".parse().unwrap())];
    let (chain, key) = engine.server_identity(&names).expect("server identity");
    let tls = tenure_acme::server::tls_config(chain, key).expect("tls");
    let validator = Validator::new(ValidationConfig {
        http01_port,
        tlsalpn01_port: support::free_port(),
        dns_resolver: Some(dns.addr),
        timeout: Duration::from_secs(5),
    })
    .expect("validator");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().unwrap();
    let fe = tenure_acme::FrontEnd::new(engine.ra.clone(), validator, tenure_acme::Options::default());
    tokio::spawn(tenure_acme::serve(fe, listener, tls));
    let root = dir.path().join("root.pem");
    Harness { directory: format!("https://{addr}/directory"), root, engine, dns, http01, _dir: dir }
}

impl Harness {
    async fn account(&self, eab: Option<&ExternalAccountKey>) -> Account {
        let (account, _) = Account::builder_with_root(&self.root)
            .expect("builder")
            .create(
                &NewAccount { contact: &["mailto:ops@example.test"], terms_of_service_agreed: true, only_return_existing: false },
                self.directory.clone(),
                eab,
            )
            .await
            .expect("create account");
        account
    }

    /// Drives one order to a certificate, answering `kind` challenges.
    async fn issue(&self, account: &Account, ids: &[Identifier], kind: ChallengeType) -> (String, String) {
        let mut order = account.new_order(&NewOrder::new(ids)).await.expect("new order");
        let mut authzs = order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = authz.expect("authz");
            if authz.status == AuthorizationStatus::Valid {
                continue;
            }
            let mut ch = authz.challenge(kind.clone()).expect("challenge offered");
            let key_auth = ch.key_authorization();
            match kind {
                ChallengeType::Http01 => self.http01.set(&ch.token, key_auth.as_str()),
                ChallengeType::Dns01 => {
                    let base = match ch.identifier().identifier {
                        Identifier::Dns(d) => d.clone(),
                        other => panic!("dns-01 for {other:?}"),
                    };
                    let name = format!("_acme-challenge.{base}");
                    self.dns.set_txt(&name, vec![key_auth.dns_value()]);
                }
                _ => unreachable!(),
            }
            ch.set_ready().await.expect("set ready");
        }
        let retry = RetryPolicy::new().timeout(Duration::from_secs(30));
        let status = order.poll_ready(&retry).await.expect("poll ready");
        assert_eq!(status, OrderStatus::Ready, "order state: {:?}", order.state());
        let key_pem = order.finalize().await.expect("finalize");
        let chain = order.poll_certificate(&retry).await.expect("certificate");
        (chain, key_pem)
    }
}

fn leaf_der(chain: &str) -> CertificateDer<'static> {
    CertificateDer::pem_slice_iter(chain.as_bytes()).next().expect("a certificate").expect("pem")
}

fn sans(chain: &str) -> Vec<String> {
    let der = leaf_der(chain);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parse");
    let mut out = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for n in &ext.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::DNSName(d) => out.push(d.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(ip) => out.push(format!("{ip:?}")),
                _ => out.push("other".into()),
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn http01_issuance_verifies_with_openssl() {
    let h = start().await;
    let account = h.account(None).await;
    let ids = [Identifier::Dns("www.example.test".into()), Identifier::Dns("example.test".into())];
    let (chain, _) = h.issue(&account, &ids, ChallengeType::Http01).await;
    assert_eq!(sans(&chain), vec!["example.test", "www.example.test"]);
    let work = tempfile::tempdir().unwrap();
    support::openssl_verify(&h.root, &chain, work.path());
}

#[tokio::test]
async fn dns01_issuance_with_wildcard() {
    let h = start().await;
    let account = h.account(None).await;
    let ids = [Identifier::Dns("*.wild.example.test".into())];
    let (chain, _) = h.issue(&account, &ids, ChallengeType::Dns01).await;
    assert_eq!(sans(&chain), vec!["*.wild.example.test"]);
}

#[tokio::test]
async fn ip_identifier_over_http01() {
    let h = start().await;
    let account = h.account(None).await;
    let ids = [Identifier::Ip("127.0.0.1".parse().unwrap())];
    let (chain, _) = h.issue(&account, &ids, ChallengeType::Http01).await;
    assert_eq!(sans(&chain).len(), 1);
}

#[tokio::test]
async fn failed_challenge_invalidates_the_order() {
    let h = start().await;
    let account = h.account(None).await;
    let ids = [Identifier::Dns("nobody-home.example.test".into())];
    let mut order = account.new_order(&NewOrder::new(&ids)).await.expect("order");
    let mut authzs = order.authorizations();
    let mut authz = authzs.next().await.unwrap().unwrap();
    // No responder has the token: the server must see a 404 and fail.
    authz.challenge(ChallengeType::Http01).unwrap().set_ready().await.unwrap();
    let retry = RetryPolicy::new().timeout(Duration::from_secs(30));
    let status = order.poll_ready(&retry).await.unwrap_or(OrderStatus::Invalid);
    assert_eq!(status, OrderStatus::Invalid);
}

#[tokio::test]
async fn key_rollover_then_issue_and_revoke() {
    let h = start().await;
    let mut account = h.account(None).await;
    let old = account.key_thumbprint().to_string();
    let _credentials = account.update_key().await.expect("key change");
    assert_ne!(account.key_thumbprint(), old);
    let ids = [Identifier::Dns("rolled.example.test".into())];
    let (chain, _) = h.issue(&account, &ids, ChallengeType::Http01).await;
    let der = leaf_der(&chain);
    account
        .revoke(&RevocationRequest { certificate: &der, reason: Some(instant_acme::RevocationReason::Superseded) })
        .await
        .expect("revoke");
    let err = account.revoke(&RevocationRequest { certificate: &der, reason: None }).await.unwrap_err();
    assert!(err.to_string().contains("alreadyRevoked"), "{err}");
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let serial = hex(cert.raw_serial());
    let stored = h.engine.ra.certificate(&serial).unwrap().expect("stored");
    assert_eq!(stored.revocation_reason, Some(4));
}

#[tokio::test]
async fn eab_binds_the_account_to_a_constrained_tenant() {
    let h = start().await;
    let created = h.engine.registry.create_tenant("acme-corp", Some(&["corp.example".to_string()])).expect("tenant");
    let eab = ExternalAccountKey::new(created.eab_kid.clone(), &created.eab_hmac);
    let account = h.account(Some(&eab)).await;

    let ids = [Identifier::Dns("api.corp.example".into())];
    let (chain, _) = h.issue(&account, &ids, ChallengeType::Http01).await;
    let work = tempfile::tempdir().unwrap();
    support::openssl_verify(&h.root, &chain, work.path());
    // Issued by the tenant's intermediate, whose constraints name corp.example.
    let inter = CertificateDer::pem_slice_iter(chain.as_bytes()).nth(1).unwrap().unwrap();
    let (_, inter) = x509_parser::parse_x509_certificate(&inter).unwrap();
    let nc = inter.name_constraints().unwrap().expect("nameConstraints");
    assert!(nc.critical);

    let outside = [Identifier::Dns("evil.example".into())];
    let err = account.new_order(&NewOrder::new(&outside)).await.err().expect("refused");
    assert!(err.to_string().contains("rejectedIdentifier"), "{err}");

    // A wrong HMAC key is refused.
    let bad = ExternalAccountKey::new(created.eab_kid.clone(), b"not the key at all, 32 bytes....");
    let r = Account::builder_with_root(&h.root)
        .unwrap()
        .create(&NewAccount { contact: &[], terms_of_service_agreed: true, only_return_existing: false }, h.directory.clone(), Some(&bad))
        .await;
    assert!(r.is_err());
}

fn hex(bytes: &[u8]) -> String {
    let trimmed: &[u8] = {
        let mut b = bytes;
        while b.len() > 1 && b[0] == 0 {
            b = &b[1..];
        }
        b
    };
    trimmed.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn finalize_refuses_a_csr_that_differs_from_the_order() {
    let h = start().await;
    let account = h.account(None).await;
    let ids = [Identifier::Dns("csr.example.test".into())];
    let mut order = account.new_order(&NewOrder::new(&ids)).await.expect("order");
    let mut authzs = order.authorizations();
    let mut authz = authzs.next().await.unwrap().unwrap();
    let mut ch = authz.challenge(ChallengeType::Http01).unwrap();
    h.http01.set(&ch.token, ch.key_authorization().as_str());
    ch.set_ready().await.unwrap();
    let retry = RetryPolicy::new().timeout(Duration::from_secs(30));
    assert_eq!(order.poll_ready(&retry).await.unwrap(), OrderStatus::Ready);

    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["csr.example.test".into(), "extra.example.test".into()]).unwrap();
    let csr = params.serialize_request(&key).unwrap();
    let err = order.finalize_csr(csr.der()).await.unwrap_err();
    assert!(err.to_string().contains("badCSR"), "{err}");
    // The order is still ready: a correct CSR then succeeds.
    let params = rcgen::CertificateParams::new(vec!["csr.example.test".into()]).unwrap();
    let csr = params.serialize_request(&key).unwrap();
    order.finalize_csr(csr.der()).await.expect("finalize");
    order.poll_certificate(&retry).await.expect("certificate");
}
