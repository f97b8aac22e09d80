//! Durability under load: a `tenure serve` process is SIGKILLed while many
//! issuances are in flight; after a restart on the same data directory, every
//! certificate a client had received is still there and downloadable.
//! (WAL with synchronous=NORMAL: a commit is in the OS's hands before the
//! response leaves, so a process crash loses nothing that was answered.)

use crate::support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use instant_acme::{Account, AccountCredentials, ExternalAccountKey, Identifier, NewAccount, NewOrder, OrderStatus};
use support::{ServeOptions, Server};

const ZONE: &str = "durable.example.com";
const ACCOUNTS: usize = 4;
const CONCURRENCY: usize = 16;
/// Kill once this many certificates have been received.
const KILL_AFTER: usize = 150;

/// What a client holds after one issuance: which account, the order URL, the chain.
struct Received {
    account: usize,
    order_url: String,
    chain: String,
}

async fn issue(account: &Account, name: &str) -> Result<(String, String), instant_acme::Error> {
    let ids = [Identifier::Dns(name.to_string())];
    let mut order = account.new_order(&NewOrder::new(&ids)).await?;
    // The tenant holds the zone: the order is ready at once.
    if order.state().status != OrderStatus::Ready {
        return Err(instant_acme::Error::Str("order not ready"));
    }
    order.finalize().await?;
    loop {
        if let Some(chain) = order.certificate().await? {
            return Ok((order.url().to_string(), chain));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_received_before_sigkill_survive_the_restart() {
    support::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let creds = support::add_tenant(&data, "durable", &[ZONE]);
    support::tenure_cli(&data, &["resource", "add", "--tenant", "durable", "--kind", "lb", "--zone", ZONE]);
    let options = ServeOptions::new(None);
    let server = Server::start(&data, options.clone());
    let listen = server.listen;
    let directory = server.directory_url();

    let hmac = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&creds.eab_hmac).unwrap()
    };
    let eab = ExternalAccountKey::new(creds.eab_kid.clone(), &hmac);
    let mut accounts = Vec::new();
    let mut credentials: Vec<String> = Vec::new();
    for _ in 0..ACCOUNTS {
        let (account, c) = Account::builder_with_root(server.root_pem())
            .unwrap()
            .create(&NewAccount { contact: &[], terms_of_service_agreed: true, only_return_existing: false }, directory.clone(), Some(&eab))
            .await
            .expect("create account");
        accounts.push(account);
        credentials.push(serde_json::to_string(&c).unwrap());
    }

    let received: Arc<Mutex<Vec<Received>>> = Arc::default();
    let mut workers = Vec::new();
    for w in 0..CONCURRENCY {
        let (accounts, received) = (accounts.clone(), received.clone());
        workers.push(tokio::spawn(async move {
            let mut i = 0;
            // Until the server dies: then every request fails and the worker stops.
            loop {
                let a = (w + i) % accounts.len();
                let name = format!("w{w}-{i}.{ZONE}");
                i += 1;
                match issue(&accounts[a], &name).await {
                    Ok((order_url, chain)) => received.lock().unwrap().push(Received { account: a, order_url, chain }),
                    Err(_) => return,
                }
            }
        }));
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    while received.lock().unwrap().len() < KILL_AFTER {
        assert!(Instant::now() < deadline, "the load did not reach {KILL_AFTER} certificates:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // SIGKILL with issuances in flight: no shutdown path runs.
    server.kill();
    for w in workers {
        let _ = tokio::time::timeout(Duration::from_secs(30), w).await.expect("workers stop once the server is gone");
    }
    let received = std::mem::take(&mut *received.lock().unwrap());
    assert!(received.len() >= KILL_AFTER);

    let server = Server::start_on(&data, options, listen);
    // Fresh clients: the old connections died with the process.
    let mut accounts = Vec::new();
    for c in &credentials {
        let c: AccountCredentials = serde_json::from_str(c).unwrap();
        accounts.push(Account::builder_with_root(server.root_pem()).unwrap().from_credentials(c).await.expect("restore account"));
    }
    for r in &received {
        let mut order = accounts[r.account]
            .order(r.order_url.clone())
            .await
            .unwrap_or_else(|e| panic!("order {} lost after the restart: {e}\n{}", r.order_url, server.log()));
        assert_eq!(order.state().status, OrderStatus::Valid, "order {} after the restart", r.order_url);
        let chain = order.certificate().await.expect("download").expect("a valid order has a certificate");
        assert_eq!(chain, r.chain, "the certificate of {} changed across the restart", r.order_url);
    }
    eprintln!("{} certificates received before SIGKILL, all downloadable after the restart", received.len());
}
