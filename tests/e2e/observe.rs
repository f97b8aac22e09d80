//! The operations listener of a real `tenure serve --config FILE`: `/metrics`
//! counts every certificate stored and every policy decision, `/healthz`
//! answers, and `/readyz` turns 503 naming the database while another
//! process holds the lock its probe needs, and 200 again once it lets go.

use crate::lifecycle::{add_resource, issue};
use crate::support;

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::Server;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// How many certificates the test issues.
const N: usize = 3;

/// `GET path` over plain HTTP/1.1: (status, body).
async fn get(at: SocketAddr, path: &str) -> (u16, String) {
    request(at, "GET", path).await
}

async fn request(at: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(at).await.unwrap_or_else(|e| panic!("connect to {at}: {e}"));
    let head = format!("{method} {path} HTTP/1.1\r\nhost: {at}\r\nconnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut raw)).await.expect("an answer in time").unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status line: {text}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// The sum of a metric's samples that carry every one of `labels` (0 when there are none).
fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// Polls `/readyz` until it answers `status`; returns the body.
async fn ready_becomes(at: SocketAddr, status: u16, server: &Server) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (got, body) = get(at, "/readyz").await;
        if got == status {
            return body;
        }
        assert!(Instant::now() < deadline, "/readyz stayed {got} (waiting for {status}): {body}\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Another process holding the lock the readiness probe's write needs, until dropped.
struct HeldLock {
    release: Option<mpsc::Sender<()>>,
    holder: Option<std::thread::JoinHandle<()>>,
}

impl HeldLock {
    /// SQLite: `sqlite3` holding `BEGIN EXCLUSIVE` on the data directory's
    /// database (as root, a chmod would not stop the server writing).
    /// PostgreSQL: a transaction holding the probe's row `FOR UPDATE`.
    fn take(data: &Path) -> HeldLock {
        let (release, released) = mpsc::channel::<()>();
        let (held, is_held) = mpsc::channel::<()>();
        let holder = match support::database_of(data) {
            Some(url) => std::thread::spawn(move || {
                let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect to the test database");
                let mut tx = client.transaction().unwrap();
                let rows = tx.query("SELECT key FROM settings WHERE key = 'readiness-probe' FOR UPDATE", &[]).unwrap();
                assert_eq!(rows.len(), 1, "the probe wrote its row before");
                held.send(()).unwrap();
                let _ = released.recv();
                tx.rollback().unwrap();
            }),
            None => {
                let mut sqlite = std::process::Command::new("sqlite3")
                    .arg(data.join("tenure.db"))
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .expect("sqlite3");
                let mut stdin = sqlite.stdin.take().unwrap();
                let mut stdout = BufReader::new(sqlite.stdout.take().unwrap());
                std::thread::spawn(move || {
                    // A busy timeout: the server may be writing at that moment.
                    writeln!(stdin, ".timeout 10000\nBEGIN EXCLUSIVE;\nSELECT 'locked';").unwrap();
                    let mut line = String::new();
                    stdout.read_line(&mut line).unwrap();
                    assert_eq!(line.trim(), "locked", "sqlite3 holds the write lock");
                    held.send(()).unwrap();
                    let _ = released.recv();
                    let _ = writeln!(stdin, "ROLLBACK;");
                    drop(stdin);
                    let _ = sqlite.wait();
                })
            }
        };
        is_held.recv_timeout(Duration::from_secs(30)).expect("the lock is taken");
        HeldLock { release: Some(release), holder: Some(holder) }
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(holder) = self.holder.take() {
            let _ = holder.join();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_issuance_and_readiness_follows_the_database() {
    support::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let local = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let (listen, admin, ops) = (local(support::free_port()), local(support::free_port()), local(support::free_port()));
    // The listeners from the file, as an operator would run it.
    let file = dir.path().join("tenure.toml");
    std::fs::write(
        &file,
        format!(
            "data = {data:?}\nlisten = \"{listen}\"\nadmin-listen = \"{admin}\"\nmetrics-listen = \"{ops}\"\n\
             http01-port = {}\ntlsalpn01-port = {}\n",
            support::free_port(),
            support::free_port()
        ),
    )
    .unwrap();
    let server = Server::start_with_args(&data, &["--config".as_ref(), file.as_os_str()], listen, admin);
    assert!(server.metrics.is_none(), "the file names the metrics listener");

    // Health: the process answers; only GET and HEAD, only these paths, no bodies.
    assert_eq!(get(ops, "/healthz").await, (200, "ok\n".to_string()));
    assert_eq!(request(ops, "HEAD", "/healthz").await.0, 200);
    assert_eq!(request(ops, "POST", "/metrics").await.0, 405);
    assert_eq!(get(ops, "/elsewhere").await.0, 404);

    let corp = support::add_tenant(&data, "corp", &["corp.example"]);
    let names: Vec<String> = (0..N).map(|i| format!("w{i}.corp.example")).collect();
    for name in &names {
        add_resource(&data, &["--tenant", "corp", "--kind", "vm", "--name", name]);
    }
    let account = support::eab_account(&server, &corp).await;

    let (status, before) = get(ops, "/metrics").await;
    assert_eq!(status, 200, "{before}");
    let issued = [("tenant", "corp"), ("trigger", "acme-finalize")];
    let allowed = [("hook", "issuance"), ("outcome", "allow")];
    for name in &names {
        issue(&account, &[name.as_str()], None).await.unwrap_or_else(|e| panic!("issuing {name}: {e}\n{}", server.log()));
    }
    let (_, after) = get(ops, "/metrics").await;

    // Exactly one count per certificate stored; at least one decision each (new-order and finalize).
    let moved = |metric: &str, labels: &[(&str, &str)]| sample(&after, metric, labels) - sample(&before, metric, labels);
    assert_eq!(moved("tenure_certificates_issued_total", &issued), N as f64, "{after}");
    assert!(moved("tenure_policy_decisions_total", &allowed) >= N as f64, "{after}");
    assert!(moved("tenure_policy_decision_seconds_count", &[("hook", "issuance")]) >= N as f64, "{after}");
    assert!(after.contains("# TYPE tenure_policy_decision_seconds histogram"), "{after}");
    assert!(sample(&after, "tenure_policy_decision_seconds_bucket", &[("hook", "issuance"), ("le", "+Inf")]) >= N as f64, "{after}");
    for gauge in ["tenure_renewals_due", "tenure_deliveries_pending", "tenure_provisioning_pending"] {
        assert!(after.lines().any(|l| l.starts_with(&format!("{gauge} "))), "{gauge} in {after}");
    }

    // Ready: every check passes, and says what it showed.
    let body = ready_becomes(ops, 200, &server).await;
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], true, "{body}");
    let names: Vec<&str> = ready["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["database", "ca-keys", "plugins"], "{body}");

    // Another process holds the lock the probe's write needs: unready, naming the database.
    let held = HeldLock::take(&data);
    let body = ready_becomes(ops, 503, &server).await;
    let unready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(unready["ready"], false, "{body}");
    let database = unready["checks"].as_array().unwrap().iter().find(|c| c["name"] == "database").unwrap();
    assert_eq!(database["ok"], false, "{body}");
    assert!(database["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
    // The process itself still answers.
    assert_eq!(get(ops, "/healthz").await.0, 200);

    // Let go: ready again.
    drop(held);
    let body = ready_becomes(ops, 200, &server).await;
    assert!(body.contains("\"ready\":true"), "{body}");
}
