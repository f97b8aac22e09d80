//! Readiness: whether this server can do its work now, asked of the things
//! every request depends on. Each check does the real thing in small: a
//! write that commits, a signature by the CA keys through the signer leaves
//! use (the HSM's, when they live in one), the plugins as decisions load them.
//!
//! Every check is bounded. Each runs on a thread of its own and is given
//! [`CHECK_DEADLINE`]; one that has not answered by then is reported as
//! failing, and is not started again until it has answered (a hung HSM or
//! database costs one thread, however often readiness is asked).

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::PUBLIC_TENANT;
use crate::ca::CaMaterial;
use crate::core::Core;
use crate::error::{Error, Result};

/// How long one check may take before it counts as failing.
pub const CHECK_DEADLINE: Duration = Duration::from_secs(3);

/// How long the database probe waits for a lock held elsewhere.
const DATABASE_BOUND: Duration = Duration::from_secs(1);

/// What the CA keys sign to show they can; never a certificate or a CRL.
const PROBE_MESSAGE: &[u8] = b"tenure readiness probe: not a certificate";

/// One check's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadinessCheck {
    /// `database`, `ca-keys` or `plugins`.
    pub name: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// What was shown, or why it failed.
    pub detail: String,
    /// How long it took (the deadline, for one that did not answer).
    pub took: Duration,
}

/// Every check's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// In a fixed order: database, CA keys, plugins.
    pub checks: Vec<ReadinessCheck>,
}

impl Readiness {
    /// Whether every check passed.
    pub fn is_ready(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }
}

/// A check: what it showed, or why it failed.
type Check = fn(&Core) -> Result<String>;

/// The checks, each a name and what it runs.
const CHECKS: [(&str, Check); 3] = [("database", database), ("ca-keys", ca_keys), ("plugins", plugins)];

/// When each check that has not answered yet started (by its index in [`CHECKS`]).
#[derive(Default)]
pub(crate) struct Probes {
    running: Mutex<[Option<Instant>; CHECKS.len()]>,
}

/// Runs every check at once, each within [`CHECK_DEADLINE`].
pub(crate) fn check(core: &Arc<Core>) -> Readiness {
    let started = Instant::now();
    let (answers, answered) = mpsc::channel();
    let mut checks: Vec<Option<ReadinessCheck>> = vec![None; CHECKS.len()];
    for (i, &(name, run)) in CHECKS.iter().enumerate() {
        let since = {
            let mut running = core.probes.running.lock().unwrap_or_else(|p| p.into_inner());
            let since = running[i];
            if since.is_none() {
                running[i] = Some(Instant::now());
            }
            since
        };
        if let Some(since) = since {
            let waited = since.elapsed();
            let detail = format!("its previous probe has not answered after {} ms", waited.as_millis());
            checks[i] = Some(ReadinessCheck { name, ok: false, detail, took: waited });
            continue;
        }
        let (probing, answers) = (core.clone(), answers.clone());
        let spawned = std::thread::Builder::new().name(format!("tenure-ready-{name}")).spawn(move || {
            // Marks the probe over however it ends: one that panicked must not
            // leave the server unready until it restarts.
            struct Over<'a>(&'a Core, usize);
            impl Drop for Over<'_> {
                fn drop(&mut self) {
                    self.0.probes.running.lock().unwrap_or_else(|p| p.into_inner())[self.1] = None;
                }
            }
            let over = Over(&probing, i);
            let t = Instant::now();
            let outcome = run(&probing);
            drop(over);
            let _ = answers.send((i, outcome, t.elapsed()));
        });
        if let Err(e) = spawned {
            core.probes.running.lock().unwrap_or_else(|p| p.into_inner())[i] = None;
            checks[i] = Some(ReadinessCheck { name, ok: false, detail: format!("cannot start its probe: {e}"), took: Duration::ZERO });
        }
    }
    drop(answers);
    while checks.iter().any(Option::is_none) {
        let Some(left) = CHECK_DEADLINE.checked_sub(started.elapsed()) else { break };
        match answered.recv_timeout(left) {
            Ok((i, outcome, took)) => {
                let (ok, detail) = match outcome {
                    Ok(shown) => (true, shown),
                    Err(e) => (false, e.detail),
                };
                checks[i] = Some(ReadinessCheck { name: CHECKS[i].0, ok, detail, took });
            }
            Err(_) => break,
        }
    }
    let checks = checks
        .into_iter()
        .zip(CHECKS)
        .map(|(check, (name, _))| {
            check.unwrap_or_else(|| ReadinessCheck {
                name,
                ok: false,
                detail: format!("no answer within {} ms", CHECK_DEADLINE.as_millis()),
                took: CHECK_DEADLINE,
            })
        })
        .collect();
    Readiness { checks }
}

/// A write transaction commits, within [`DATABASE_BOUND`] of waiting for locks.
fn database(core: &Core) -> Result<String> {
    let t = Instant::now();
    core.store.probe_write(DATABASE_BOUND).map_err(|e| Error::new(e.kind, format!("no write commits: {}", e.detail)))?;
    Ok(format!("a write committed in {} ms", t.elapsed().as_millis()))
}

/// The root's key and the public tenant's intermediate's each sign a probe
/// through the signer certificates use, checked against their certificates.
fn ca_keys(core: &Core) -> Result<String> {
    probe(&core.root, "the root")?;
    let public = core.tenant_of(PUBLIC_TENANT)?;
    let issuer = core.issuer(public.issuer_id)?;
    probe(&issuer, "the public tenant's intermediate")?;
    let place = if core.root.key.is_remote() { "in the CA token" } else { "in software" };
    Ok(format!("the root and the public tenant's intermediate signed a probe ({place})"))
}

/// `ca` signs [`PROBE_MESSAGE`], and the signature verifies under its certificate's key.
fn probe(ca: &CaMaterial, which: &str) -> Result<()> {
    use rcgen::PublicKeyData as _;
    use ring::signature;
    use x509_parser::prelude::FromDer as _;
    let failed = |why: String| Error::internal(format!("{which}'s key: {why}"));
    let signature = ca.sign(PROBE_MESSAGE).map_err(|e| failed(e.detail))?;
    let (_, cert) =
        x509_parser::certificate::X509Certificate::from_der(&ca.cert_der).map_err(|e| failed(format!("its certificate: {e}")))?;
    let algorithm = ca.key.signing_key()?.algorithm();
    let verifier: &dyn signature::VerificationAlgorithm = if algorithm == &rcgen::PKCS_ECDSA_P256_SHA256 {
        &signature::ECDSA_P256_SHA256_ASN1
    } else if algorithm == &rcgen::PKCS_ECDSA_P384_SHA384 {
        &signature::ECDSA_P384_SHA384_ASN1
    } else if algorithm == &rcgen::PKCS_ED25519 {
        &signature::ED25519
    } else if algorithm == &rcgen::PKCS_RSA_SHA256 {
        &signature::RSA_PKCS1_2048_8192_SHA256
    } else {
        // A key of another kind signed; there is nothing here to check it with.
        return Ok(());
    };
    signature::UnparsedPublicKey::new(verifier, &cert.public_key().subject_public_key.data)
        .verify(PROBE_MESSAGE, &signature)
        .map_err(|_| failed("its signature does not verify under its certificate".into()))
}

/// The policy host starts and the plugins decisions use load. A tenant's own
/// plugin that does not load fails only that tenant's decisions (closed), so
/// it is named here but does not make the server unready; the host, a
/// built-in or the operator's plugin not loading fails every decision, and does.
fn plugins(core: &Core) -> Result<String> {
    let (loaded, faults) = core.plugin_faults()?;
    if faults.is_empty() {
        return Ok(format!("{loaded} plugins loaded"));
    }
    Ok(format!("{loaded} plugins loaded; failing only their tenants' decisions: {}", faults.join("; ")))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::{Config, Engine};

    fn engine_on(dir: &std::path::Path, database: Option<&str>) -> Engine {
        let database = database.map(|url| crate::config::DatabaseUrl::parse(url).unwrap());
        Engine::open(dir, Config { database, ..Config::default() }).unwrap()
    }

    fn check<'a>(r: &'a super::Readiness, name: &str) -> &'a super::ReadinessCheck {
        r.checks.iter().find(|c| c.name == name).unwrap()
    }

    /// A fresh server is ready: a write commits, the CA keys sign, the
    /// built-in plugins load.
    #[test]
    fn a_fresh_server_is_ready() {
        let tmp = tempfile::tempdir().unwrap();
        let engine = engine_on(tmp.path(), None);
        let r = engine.readiness();
        assert!(r.is_ready(), "{r:?}");
        assert_eq!(r.checks.iter().map(|c| c.name).collect::<Vec<_>>(), ["database", "ca-keys", "plugins"]);
        assert!(check(&r, "plugins").detail.contains("2 plugins loaded"), "{r:?}");
    }

    /// Another process holding SQLite's write lock makes the server unready
    /// within about a second (not the requests' busy timeout), naming the
    /// database; once it lets go the server is ready again.
    #[test]
    fn a_held_write_lock_fails_the_database_check_quickly() {
        let tmp = tempfile::tempdir().unwrap();
        let engine = engine_on(tmp.path(), None);
        let other = rusqlite::Connection::open(tmp.path().join("tenure.db")).unwrap();
        other.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let t = Instant::now();
        let r = engine.readiness();
        assert!(t.elapsed() < Duration::from_millis(2500), "took {:?}", t.elapsed());
        assert!(!r.is_ready());
        let db = check(&r, "database");
        assert!(!db.ok && db.detail.contains("no write commits"), "{db:?}");
        assert!(check(&r, "ca-keys").ok && check(&r, "plugins").ok, "{r:?}");
        other.execute_batch("ROLLBACK").unwrap();
        assert!(engine.readiness().is_ready());
        // The requests' own busy timeout is left as it was.
        engine.registry.create_tenant("corp", Some(&["corp.example".to_string()])).unwrap();
    }

    /// On PostgreSQL a lock on the probe's row fails the check within the
    /// bound, and the server is ready again once it is released.
    #[test]
    fn a_held_lock_fails_the_database_check_on_postgres() {
        let Some(url) = crate::store::pg::testdb::fresh() else { return };
        let tmp = tempfile::tempdir().unwrap();
        let engine = engine_on(tmp.path(), Some(&url));
        assert!(engine.readiness().is_ready());
        let mut other = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let mut tx = other.transaction().unwrap();
        tx.execute("LOCK TABLE settings IN ACCESS EXCLUSIVE MODE", &[]).unwrap();
        let t = Instant::now();
        let r = engine.readiness();
        assert!(t.elapsed() < Duration::from_millis(3500), "took {:?}", t.elapsed());
        assert!(!check(&r, "database").ok, "{r:?}");
        tx.rollback().unwrap();
        // The probe that was stuck answers first; then all is well again.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !engine.readiness().is_ready() {
            assert!(Instant::now() < deadline, "not ready again");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A tenant plugin that no longer loads is named, but fails only its
    /// tenant's decisions; the server stays ready.
    #[test]
    fn a_broken_tenant_plugin_is_named_but_leaves_the_server_ready() {
        let tmp = tempfile::tempdir().unwrap();
        let engine = engine_on(tmp.path(), None);
        engine.registry.create_tenant("corp", Some(&["corp.example".to_string()])).unwrap();
        engine.core.store.install_plugin("tenant:corp", "0000", b"not wasm").unwrap();
        let r = engine.readiness();
        assert!(r.is_ready(), "{r:?}");
        assert!(check(&r, "plugins").detail.contains("tenant:corp"), "{r:?}");
    }
}
