//! Shared pieces of the end-to-end tests: a real `tenure serve` process, free
//! ports, a mock DNS server, and a bare ACME client for what no client sends.
#![allow(dead_code)]

pub mod crl;
pub mod dns;
pub mod raw;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

/// A port nobody listens on right now, for a server to bind soon after.
///
/// Not one the kernel hands out: ports from bind(0) lie in the ephemeral
/// range (32768-60999 on Linux), where any outgoing connection of any test
/// may take it before the server binds ("Address already in use"). These
/// come from below that range, from a counter (no two tests of this process
/// get the same one) starting at a place set by the process id.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(u32::MAX, std::process::id().wrapping_mul(7919) % SPAN, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..SPAN {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN)
}

pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The tenure binary under test.
pub fn tenure_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tenure")
}

/// Tests run side by side on two cores: a decision preempted past the
/// production 100 ms would be denied for the machine's sake, not the plugin's.
pub const PLUGIN_DEADLINE: (&str, &str) = ("TENURE_PLUGIN_DEADLINE_MS", "2000");

/// Whether this run of the suite stores on PostgreSQL (`TENURE_E2E_BACKEND=postgres`,
/// as `scripts/test` runs it a second time) rather than on SQLite.
pub fn on_postgres() -> bool {
    std::env::var("TENURE_E2E_BACKEND").as_deref() == Ok("postgres")
}

/// The URL of the test cluster (`TENURE_TEST_POSTGRES`, started by
/// `scripts/test`). A test that needs it fails without it: none skips silently.
pub fn test_cluster() -> String {
    std::env::var("TENURE_TEST_POSTGRES")
        .ok()
        .filter(|u| !u.is_empty())
        .expect("TENURE_TEST_POSTGRES must name a PostgreSQL cluster (scripts/test starts one)")
}

/// A fresh, empty database on the test cluster; its URL.
pub fn fresh_database() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let admin = test_cluster();
    let name = format!("tenure_e2e_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
    // On a thread of its own: the synchronous client may not block a tokio worker (async tests call this).
    let cluster = admin.clone();
    let db = name.clone();
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&cluster, postgres::NoTls).expect("connect to the test cluster");
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {db}")).expect("drop a stale test database");
        c.batch_execute(&format!("CREATE DATABASE {db}")).expect("create a test database");
    })
    .join()
    .expect("creating a test database");
    let (base, _) = admin.rsplit_once('/').expect("TENURE_TEST_POSTGRES ends in /DATABASE");
    format!("{base}/{name}")
}

/// The database of a data directory in this run: none on SQLite (the file in
/// the directory); on PostgreSQL one database per directory, made on first use.
pub fn database_of(data: &Path) -> Option<String> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static DATABASES: Mutex<Option<HashMap<PathBuf, String>>> = Mutex::new(None);
    if !on_postgres() {
        return None;
    }
    let mut map = DATABASES.lock().unwrap_or_else(|p| p.into_inner());
    let map = map.get_or_insert_with(HashMap::new);
    Some(map.entry(data.to_path_buf()).or_insert_with(fresh_database).clone())
}

/// A `tenure` command for a data directory: pointed at the directory's
/// database (through the environment, as an operator would set it).
pub fn tenure_command(data: &Path) -> Command {
    let mut cmd = Command::new(tenure_bin());
    if let Some(url) = database_of(data) {
        cmd.env("TENURE_DATABASE", url);
    }
    cmd
}

/// Runs a `tenure` CLI command against a data directory and returns stdout.
pub fn tenure_cli(data: &Path, args: &[&str]) -> String {
    let out =
        tenure_command(data).env(PLUGIN_DEADLINE.0, PLUGIN_DEADLINE.1).args(args).arg("--data").arg(data).output().expect("run tenure");
    assert!(
        out.status.success(),
        "tenure {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A tenant created with `tenure tenant add --json`.
pub struct TenantCreds {
    pub tenant: String,
    pub eab_kid: String,
    pub eab_hmac: String,
}

/// `tenure init` unless the directory holds a CA already (every command but
/// `init` and `serve` refuses a directory without one).
pub fn ensure_init(data: &Path) {
    if !data.join("root.pem").exists() {
        tenure_cli(data, &["init"]);
    }
}

pub fn add_tenant(data: &Path, name: &str, permits: &[&str]) -> TenantCreds {
    add_tenant_with(data, name, permits, &[])
}

/// A tenant whose permits overlap another's, as the operator allows explicitly
/// (a resource can then move between them).
pub fn add_overlapping_tenant(data: &Path, name: &str, permits: &[&str]) -> TenantCreds {
    add_tenant_with(data, name, permits, &["--allow-overlap"])
}

fn add_tenant_with(data: &Path, name: &str, permits: &[&str], flags: &[&str]) -> TenantCreds {
    ensure_init(data);
    let mut args = vec!["tenant", "add", name];
    args.extend_from_slice(flags);
    for p in permits {
        args.push("--permit");
        args.push(p);
    }
    args.push("--json");
    let out = tenure_cli(data, &args);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("tenant add --json prints JSON");
    TenantCreds {
        tenant: v["tenant"].as_str().expect("tenant").to_string(),
        eab_kid: v["eab_kid"].as_str().expect("eab_kid").to_string(),
        eab_hmac: v["eab_hmac"].as_str().expect("eab_hmac").to_string(),
    }
}

/// An instant-acme account of the tenant, bound by External Account Binding.
pub async fn eab_account(server: &Server, creds: &TenantCreds) -> instant_acme::Account {
    use base64::Engine as _;
    let hmac = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&creds.eab_hmac).expect("EAB HMAC is base64url");
    let eab = instant_acme::ExternalAccountKey::new(creds.eab_kid.clone(), &hmac);
    let new = instant_acme::NewAccount { contact: &[], terms_of_service_agreed: true, only_return_existing: false };
    let (account, _) = instant_acme::Account::builder_with_root(server.root_pem())
        .expect("root certificate")
        .create(&new, server.directory_url(), Some(&eab))
        .await
        .expect("new account");
    account
}

/// Ports and resolver a server validates against.
#[derive(Clone)]
pub struct ServeOptions {
    pub http01_port: u16,
    pub tlsalpn01_port: u16,
    pub dns_resolver: Option<SocketAddr>,
    pub extra: Vec<String>,
}

impl ServeOptions {
    pub fn new(dns: Option<SocketAddr>) -> Self {
        ServeOptions { http01_port: free_port(), tlsalpn01_port: free_port(), dns_resolver: dns, extra: Vec::new() }
    }
}

/// A running `tenure serve`; killed when dropped.
pub struct Server {
    pub child: Child,
    pub data: PathBuf,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub options: ServeOptions,
    /// The operations listener (`/metrics`, `/healthz`, `/readyz`), when the
    /// harness chose its address (a caller that names one knows it).
    pub metrics: Option<SocketAddr>,
    log: PathBuf,
}

impl Server {
    pub fn start(data: &Path, options: ServeOptions) -> Server {
        Self::start_on(data, options, SocketAddr::from(([127, 0, 0, 1], free_port())))
    }

    pub fn start_on(data: &Path, options: ServeOptions, listen: SocketAddr) -> Server {
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = data.with_extension(format!("{}.log", listen.port()));
        let log_file = std::fs::File::create(&log).expect("server log");
        let mut cmd = tenure_command(data);
        cmd.arg("serve")
            .arg("--data")
            .arg(data)
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--admin-listen")
            .arg(admin.to_string())
            .arg("--http01-port")
            .arg(options.http01_port.to_string())
            .arg("--tlsalpn01-port")
            .arg(options.tlsalpn01_port.to_string())
            .env(PLUGIN_DEADLINE.0, PLUGIN_DEADLINE.1);
        if let Some(dns) = options.dns_resolver {
            cmd.arg("--dns-resolver").arg(dns.to_string());
        }
        // A port of its own: servers of tests side by side would all take the default.
        let metrics = (!options.extra.iter().any(|a| a.starts_with("--metrics-listen"))).then(|| {
            let at = SocketAddr::from(([127, 0, 0, 1], free_port()));
            cmd.arg("--metrics-listen").arg(at.to_string());
            at
        });
        cmd.args(&options.extra);
        cmd.env("TENURE_LOG", "tenure=debug,tenure_acme=debug,tenure_engine=debug,info");
        let child = spawn_until_listening(cmd, log_file, &log);
        Server { child, data: data.to_path_buf(), listen, admin, options, metrics, log }
    }

    pub fn directory_url(&self) -> String {
        format!("https://{}/directory", self.listen)
    }

    pub fn root_pem(&self) -> PathBuf {
        self.data.join("root.pem")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// Starts `cmd` (a `tenure serve`) with its standard error in `log_file` and
/// returns once it prints its directory line, which means the listener is bound;
/// panics with the log (at `log`) if it exits first or takes over a minute.
fn spawn_until_listening(mut cmd: Command, log_file: std::fs::File, log: &Path) -> Child {
    let mut child = cmd.stdout(Stdio::piped()).stderr(log_file).spawn().expect("start tenure serve");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("ACME directory:") {
                let _ = tx.send(line);
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if rx.recv_timeout(Duration::from_millis(100)).is_ok() {
            return child;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("tenure serve exited with {status}:\n{}", std::fs::read_to_string(log).unwrap_or_default());
        }
        assert!(Instant::now() < deadline, "tenure serve did not start in time");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts `openssl verify` accepts `chain_pem` (leaf first) against the root.
pub fn openssl_verify(root: &Path, chain_pem: &str, work: &Path) {
    let certs: Vec<&str> = chain_pem.split_inclusive("-----END CERTIFICATE-----\n").collect();
    assert!(certs.len() >= 2, "the chain must hold a leaf and its intermediate:\n{chain_pem}");
    let leaf = work.join("leaf.pem");
    let untrusted = work.join("untrusted.pem");
    std::fs::write(&leaf, certs[0]).expect("write leaf");
    std::fs::write(&untrusted, certs[1..].concat()).expect("write chain");
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(root)
        .arg("-untrusted")
        .arg(&untrusted)
        .arg(&leaf)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl verify failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Server {
    /// `tenure serve ARGS…` where the arguments (or a `--config` file among them)
    /// set the listeners, which the caller names; waits for the ACME directory line.
    pub fn start_with_args(data: &Path, args: &[&std::ffi::OsStr], listen: SocketAddr, admin: SocketAddr) -> Server {
        let log = data.with_extension(format!("{}.log", listen.port()));
        let log_file = std::fs::File::create(&log).expect("server log");
        // A metrics port of its own unless the arguments or the file name one:
        // servers of tests side by side would all take the default.
        let named = |a: &&std::ffi::OsStr| a.to_string_lossy().starts_with("--metrics-listen");
        let in_file =
            args.windows(2).any(|w| w[0] == "--config" && std::fs::read_to_string(w[1]).is_ok_and(|text| text.contains("metrics-listen")));
        let metrics = (!args.iter().any(named) && !in_file).then(|| SocketAddr::from(([127, 0, 0, 1], free_port())));
        let mut cmd = tenure_command(data);
        cmd.arg("serve")
            .args(args)
            .args(metrics.map(|at| format!("--metrics-listen={at}")))
            .env(PLUGIN_DEADLINE.0, PLUGIN_DEADLINE.1)
            .env("TENURE_LOG", "tenure=debug,info");
        let child = spawn_until_listening(cmd, log_file, &log);
        let options = ServeOptions { http01_port: 0, tlsalpn01_port: 0, dns_resolver: None, extra: Vec::new() };
        Server { child, data: data.to_path_buf(), listen, admin, options, metrics, log }
    }
}
