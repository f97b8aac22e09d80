//! Delivering renewed certificates to their resources' targets: a file drop
//! directory and an HTTP webhook. The renewal writes the deliveries in its own
//! transaction (an outbox); this works them off, retrying with backoff.
//!
//! The engine knows no HTTP: the webhook is POSTed by a [`WebhookSender`] the
//! front end provides. The body is signed with HMAC-SHA256 under the secret in
//! `DIR/webhook-secret`: header `Tenure-Signature: t=<unix>,v1=<hex>` over
//! `"<unix>." + body`, as Stripe and GitHub do, so receivers can check it and
//! refuse replays.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::json;

use super::Lifecycle;
use crate::core::write_file_atomically;
use crate::error::{Error, Result};
use crate::model::*;

pub const SIGNATURE_HEADER: &str = "Tenure-Signature";

/// POSTs a webhook. Implemented by the front end (which owns HTTP).
pub trait WebhookSender: Send + Sync {
    /// Sends `body` (JSON) with `headers`; Ok only on a 2xx answer.
    fn post(&self, url: &str, headers: &[(String, String)], body: &[u8]) -> std::result::Result<(), String>;
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    pub delivered: usize,
    pub retrying: usize,
    pub failed: usize,
}

/// At most this many deliveries are claimed at a time, each for this long.
const CLAIM: i64 = 64;
const LEASE_SECONDS: i64 = 120;

impl Lifecycle {
    /// Works off every due delivery once. File drops are written here; webhooks
    /// go through `sender`.
    pub fn deliver_pending(&self, sender: &dyn WebhookSender) -> Result<DeliveryReport> {
        let mut report = DeliveryReport::default();
        loop {
            let claimed = self.core.store.claim_deliveries(now(), CLAIM, LEASE_SECONDS)?;
            if claimed.is_empty() {
                return Ok(report);
            }
            for d in claimed {
                let outcome = self.deliver(&d, sender);
                let cfg = &self.core.config.lifecycle;
                let retry_at = match &outcome {
                    Ok(()) => None,
                    Err(_) if d.attempts + 1 >= cfg.delivery_attempts => None,
                    Err(_) => Some(now() + backoff(cfg.delivery_backoff, d.attempts).as_secs() as i64),
                };
                match (&outcome, retry_at) {
                    (Ok(()), _) => report.delivered += 1,
                    (Err(e), Some(_)) => {
                        tracing::warn!(delivery = d.id, target = %d.target, error = %e, "delivery failed; will retry");
                        report.retrying += 1;
                    }
                    (Err(e), None) => {
                        tracing::error!(delivery = d.id, target = %d.target, error = %e, "delivery failed; giving up");
                        report.failed += 1;
                    }
                }
                self.core.store.finish_delivery(d.id, outcome, retry_at)?;
            }
        }
    }

    fn deliver(&self, d: &Delivery, sender: &dyn WebhookSender) -> std::result::Result<(), String> {
        let (cert, life) = self
            .core
            .store
            .certificate_record(&d.serial)
            .map_err(|e| e.detail)?
            .ok_or_else(|| format!("certificate {} is missing", d.serial))?;
        let chain = self.core.chain_pem(&cert).map_err(|e| e.detail)?;
        let metadata = json!({
            "serial": cert.serial,
            "predecessor": life.predecessor,
            "tenant": cert.tenant,
            "resource": d.resource_id,
            "resources": life.resources,
            "identifiers": cert.identifiers.iter().map(|i| i.value.as_str()).collect::<Vec<_>>(),
            "not_before": cert.not_before,
            "not_after": cert.not_after,
            "profile": life.profile,
        });
        match d.kind {
            DeliveryKind::File => drop_files(Path::new(&d.target), &cert.serial, &chain, &metadata).map_err(|e| e.detail),
            DeliveryKind::Webhook => {
                let mut body = metadata;
                body["event"] = "certificate.renewed".into();
                body["chain"] = chain.into();
                let body = body.to_string().into_bytes();
                let secret = self.webhook_secret().map_err(|e| e.detail)?;
                let headers = vec![
                    ("Content-Type".to_string(), "application/json".to_string()),
                    (SIGNATURE_HEADER.to_string(), sign_webhook(&secret, now(), &body)),
                ];
                sender.post(&d.target, &headers, &body)
            }
        }
    }

    /// The webhook signing secret, created with the data directory.
    pub fn webhook_secret(&self) -> Result<Vec<u8>> {
        let path = self.core.data_dir.join("webhook-secret");
        if !path.exists() {
            let mut raw = [0u8; 32];
            SystemRandom::new().fill(&mut raw).map_err(|_| Error::internal("no randomness"))?;
            // Two processes may race here: the rename makes one of them win whole.
            write_file_atomically(&path, URL_SAFE_NO_PAD.encode(raw).as_bytes(), true)?;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::internal(format!("reading {}: {e}", path.display())).caused_by(e))?;
        Ok(text.trim().as_bytes().to_vec())
    }
}

/// `t=<unix>,v1=<hex HMAC-SHA256(secret, "<unix>." + body)>`.
pub fn sign_webhook(secret: &[u8], at: UnixTime, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(format!("{at}.").as_bytes());
    ctx.update(body);
    let tag = hex::encode(ctx.sign());
    format!("t={at},v1={tag}")
}

fn backoff(base: Duration, attempts: i64) -> Duration {
    let factor = 1u32 << attempts.clamp(0, 16) as u32;
    (base * factor).min(Duration::from_secs(3600))
}

/// Writes `DIR/<serial>/{chain.pem,metadata.json}`, then points the symlink
/// `DIR/current` at it by rename: a reader of `current/` sees the old pair or
/// the new one, never a mix.
/// Directories a file drop may never write into: the system's own.
const SYSTEM_DIRECTORIES: &[&str] =
    &["/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/root", "/sbin", "/sys", "/usr"];

/// A `delivery-dir` as written: an absolute path of plain components (no
/// `.`, `..`), not `/` and not inside a system directory.
pub fn check_delivery_dir(dir: &str) -> Result<()> {
    use std::path::Component;
    let path = Path::new(dir);
    let bad = |why: &str| Err(Error::malformed(format!("delivery-dir {dir:?} {why}")));
    if !path.is_absolute() {
        return bad("must be an absolute path");
    }
    if path.components().any(|c| matches!(c, Component::ParentDir | Component::CurDir)) || dir.contains("/./") {
        return bad("must not contain . or .. components");
    }
    if path.components().count() < 2 {
        return bad("must not be the root directory");
    }
    if let Some(system) = SYSTEM_DIRECTORIES.iter().find(|s| path.starts_with(s)) {
        return bad(&format!("lies inside the system directory {system}"));
    }
    Ok(())
}

/// Refuses a drop directory reached through a symbolic link (an existing
/// ancestor that is one), so a link planted in the path cannot redirect
/// tenure's writes.
fn check_no_symlinks(dir: &Path) -> Result<()> {
    for ancestor in dir.ancestors() {
        match std::fs::symlink_metadata(ancestor) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::malformed(format!(
                    "delivery-dir {} goes through the symbolic link {}; give the real path",
                    dir.display(),
                    ancestor.display()
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

fn drop_files(dir: &Path, serial: &str, chain: &str, metadata: &serde_json::Value) -> Result<()> {
    let io = |what: &Path, e: std::io::Error| Error::internal(format!("file drop {}: {e}", what.display())).caused_by(e);
    check_delivery_dir(&dir.to_string_lossy())?;
    check_no_symlinks(dir)?;
    let version = dir.join(serial);
    std::fs::create_dir_all(&version).map_err(|e| io(&version, e))?;
    write_file_atomically(&version.join("chain.pem"), chain.as_bytes(), false)?;
    let meta = serde_json::to_vec_pretty(metadata).map_err(|e| Error::internal(e.to_string()))?;
    write_file_atomically(&version.join("metadata.json"), &meta, false)?;
    let link = dir.join("current");
    // `current` is tenure's symlink; anything else of that name is someone's file.
    if let Ok(m) = std::fs::symlink_metadata(&link)
        && !m.file_type().is_symlink()
    {
        return Err(Error::malformed(format!("{} exists and is not tenure's symlink; refusing to replace it", link.display())));
    }
    let tmp = dir.join(format!(".current-{serial}"));
    let _ = std::fs::remove_file(&tmp);
    #[cfg(unix)]
    std::os::unix::fs::symlink(serial, &tmp).map_err(|e| io(&tmp, e))?;
    #[cfg(not(unix))]
    return Err(Error::internal("file drops need symlinks (Unix)"));
    std::fs::rename(&tmp, &link).map_err(|e| io(&link, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_over_timestamp_and_body() {
        let sig = sign_webhook(b"secret", 1700000000, b"{}");
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"secret");
        let expect = hex::encode(hmac::sign(&key, b"1700000000.{}"));
        assert_eq!(sig, format!("t=1700000000,v1={expect}"));
    }

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        let base = Duration::from_secs(5);
        assert_eq!(backoff(base, 0), Duration::from_secs(5));
        assert_eq!(backoff(base, 3), Duration::from_secs(40));
        assert_eq!(backoff(base, 40), Duration::from_secs(3600));
    }

    #[test]
    fn delivery_dirs_are_checked() {
        check_delivery_dir("/srv/certs/www").unwrap();
        for bad in ["srv/certs", "/srv/../etc", "/srv/./x", "/", "/etc/ssl", "/usr/local/certs", "/proc/self"] {
            assert_eq!(check_delivery_dir(bad).unwrap_err().kind, crate::ErrorKind::Malformed, "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        let through = dir.path().join("link").join("drop");
        let err = drop_files(&through, "a1", "chain", &json!({})).unwrap_err();
        assert!(err.detail.contains("symbolic link"), "{err:?}");
        assert!(!real.join("drop").exists(), "nothing written through the link");
        // A file of someone else's named `current` is not replaced.
        std::fs::write(real.join("current"), b"mine").unwrap();
        let err = drop_files(&real, "a1", "chain", &json!({})).unwrap_err();
        assert!(err.detail.contains("not tenure's symlink"), "{err:?}");
        assert_eq!(std::fs::read(real.join("current")).unwrap(), b"mine");
    }

    #[test]
    fn file_drop_swaps_current_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let meta = json!({"serial": "a1"});
        drop_files(dir.path(), "a1", "CHAIN-1", &meta).unwrap();
        drop_files(dir.path(), "b2", "CHAIN-2", &json!({"serial": "b2"})).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("current/chain.pem")).unwrap(), "CHAIN-2");
        assert!(std::fs::read_to_string(dir.path().join("current/metadata.json")).unwrap().contains("b2"));
        assert_eq!(std::fs::read_to_string(dir.path().join("a1/chain.pem")).unwrap(), "CHAIN-1");
    }
}
