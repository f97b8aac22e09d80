//! Delivering renewed certificates to their resources' targets: a file drop
//! directory and an HTTP webhook. The renewal writes the deliveries in its own
//! transaction (an outbox); this works them off, retrying with backoff.
//!
//! Targets are the operator's to bound: a file drop lies below the configured
//! delivery root, a webhook goes where [`super::webhook`] allows. A target
//! outside those bounds fails at once, with the reason recorded on the
//! delivery (retrying would not change the answer).
//!
//! The engine knows no HTTP: the webhook is POSTed by a [`WebhookSender`] the
//! front end provides, to the addresses checked here. The body is signed with
//! HMAC-SHA256 under the tenant's own secret: header
//! `Tenure-Signature: t=<unix>,v1=<hex>` over `"<unix>." + body`, as Stripe
//! and GitHub do, so receivers can check it and refuse replays.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use ring::hmac;
use serde_json::json;

use super::webhook::{self, WebhookTarget};
use super::{DELIVERY_DIR_ATTRIBUTE, DELIVERY_WEBHOOK_ATTRIBUTE, Lifecycle, LifecycleConfig};
use crate::core::write_file_atomically;
use crate::error::{Error, ErrorKind, Result};
use crate::model::*;

pub const SIGNATURE_HEADER: &str = "Tenure-Signature";

/// POSTs a webhook. Implemented by the front end (which owns HTTP).
pub trait WebhookSender: Send + Sync {
    /// Sends `body` (JSON) with `headers` to `target.url`, connecting only to
    /// `target.addrs` (never resolving the host again: the addresses are the
    /// ones checked) and following no redirect; Ok only on a 2xx answer.
    fn post(&self, target: &WebhookTarget, headers: &[(String, String)], body: &[u8]) -> std::result::Result<(), String>;
}

/// Why a delivery did not happen: refused by the operator's bounds (final),
/// or failed on the way (retried).
#[derive(Debug)]
enum Failure {
    Refused(String),
    Failed(String),
}

impl Failure {
    fn detail(self) -> String {
        match self {
            Failure::Refused(why) => format!("refused: {why}"),
            Failure::Failed(why) => why,
        }
    }
}

/// A check's Malformed answer is a refusal; anything else a failure.
fn refusal(e: Error) -> Failure {
    if e.kind == ErrorKind::Malformed { Failure::Refused(e.detail) } else { Failure::Failed(e.detail) }
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
                let cfg = &self.core.config.lifecycle;
                let (outcome, retry_at) = match self.deliver(&d, sender) {
                    Ok(()) => (Ok(()), None),
                    Err(Failure::Failed(e)) if d.attempts + 1 < cfg.delivery_attempts => {
                        (Err(e), Some(now() + backoff(cfg.delivery_backoff, d.attempts).as_secs() as i64))
                    }
                    Err(f) => (Err(f.detail()), None),
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

    fn deliver(&self, d: &Delivery, sender: &dyn WebhookSender) -> std::result::Result<(), Failure> {
        let failed = |e: Error| Failure::Failed(e.detail);
        let cfg = &self.core.config.lifecycle;
        // The bounds first: a refused target costs no certificate read.
        let target = match d.kind {
            DeliveryKind::File => {
                check_file_target(&d.target, cfg.delivery_root.as_deref()).map_err(refusal)?;
                None
            }
            DeliveryKind::Webhook => {
                Some(webhook::webhook_target(&d.target, &cfg.webhook_allow, &webhook::system_resolve).map_err(refusal)?)
            }
        };
        let Some(serial) = d.serial.as_deref().filter(|_| d.payload.is_none()) else {
            return self.send_notice(d, target, sender);
        };
        let (cert, life) = self
            .core
            .store
            .certificate_record(serial)
            .map_err(failed)?
            .ok_or_else(|| Failure::Failed(format!("certificate {serial} is missing")))?;
        let chain = self.core.chain_pem(&cert).map_err(failed)?;
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
            "generation": life.generation,
            "key_source": life.key_source.as_str(),
        });
        match target {
            None => drop_files(Path::new(&d.target), &cert.serial, &chain, d.key_age.as_deref(), &metadata).map_err(failed),
            Some(target) => {
                let mut body = metadata;
                body["event"] = d.event.clone().into();
                body["chain"] = chain.into();
                if let Some(key) = &d.key_age {
                    body["key_age"] = key.clone().into();
                }
                self.post_signed(&cert.tenant, &target, body, sender)
            }
        }
    }

    /// A notice (an event that carries no certificate): its payload, the
    /// event's name and the resource, POSTed like a certificate's webhook.
    /// Notices go to webhooks only.
    fn send_notice(&self, d: &Delivery, target: Option<WebhookTarget>, sender: &dyn WebhookSender) -> std::result::Result<(), Failure> {
        let Some(target) = target else {
            return Err(Failure::Refused(format!("{} is a notice; notices go to webhooks only", d.event)));
        };
        let resource = self.core.store.resource(&d.resource_id).map_err(|e| Failure::Failed(e.detail))?;
        let tenant = resource.map(|r| r.tenant).ok_or_else(|| Failure::Failed(format!("resource {} is missing", d.resource_id)))?;
        let mut body = d.payload.clone().filter(|p| p.is_object()).unwrap_or_else(|| json!({}));
        body["event"] = d.event.clone().into();
        body["resource"] = d.resource_id.clone().into();
        body["tenant"] = tenant.clone().into();
        if let Some(serial) = &d.serial {
            body["serial"] = serial.clone().into();
        }
        self.post_signed(&tenant, &target, body, sender)
    }

    /// POSTs `body`, signed with the tenant's webhook secret.
    fn post_signed(
        &self,
        tenant: &str,
        target: &WebhookTarget,
        body: serde_json::Value,
        sender: &dyn WebhookSender,
    ) -> std::result::Result<(), Failure> {
        let body = body.to_string().into_bytes();
        let secret = webhook::tenant_secret(&self.core, tenant).map_err(|e| Failure::Failed(e.detail))?;
        let headers = vec![
            ("Content-Type".to_string(), "application/json".to_string()),
            (SIGNATURE_HEADER.to_string(), sign_webhook(secret.as_bytes(), now(), &body)),
        ];
        sender.post(target, &headers, &body).map_err(Failure::Failed)
    }
}

/// A resource's delivery attributes as they are set (the registry): each
/// target within the bounds `cfg` sets, as far as can be known before
/// delivering.
pub(crate) fn check_targets(cfg: &LifecycleConfig, attributes: &BTreeMap<String, String>) -> Result<()> {
    if let Some(dir) = attributes.get(DELIVERY_DIR_ATTRIBUTE).filter(|d| !d.is_empty()) {
        check_file_target(dir, cfg.delivery_root.as_deref())?;
    }
    if let Some(url) = attributes.get(DELIVERY_WEBHOOK_ATTRIBUTE).filter(|u| !u.is_empty()) {
        webhook::check_webhook_url(url, &cfg.webhook_allow)?;
    }
    Ok(())
}

/// A file drop directory: well formed, reached through no symbolic link, and
/// below the delivery root.
fn check_file_target(dir: &str, root: Option<&Path>) -> Result<()> {
    check_delivery_dir(dir)?;
    check_no_symlinks(Path::new(dir))?;
    check_under_root(Path::new(dir), root)
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

/// `base` doubled per attempt, up to an hour: deliveries' and provisioning's retries.
pub(super) fn backoff(base: Duration, attempts: i64) -> Duration {
    let factor = 1u32 << attempts.clamp(0, 16) as u32;
    (base * factor).min(Duration::from_secs(3600))
}

/// Directories a file drop may never write into: the system's own.
const SYSTEM_DIRECTORIES: &[&str] =
    &["/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/root", "/sbin", "/sys", "/usr"];

/// A `delivery-dir` as written: an absolute path of plain components (no
/// `.`, `..`), not `/` and not inside a system directory.
pub fn check_delivery_dir(dir: &str) -> Result<()> {
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

/// `dir` (well formed) must lie strictly below the delivery root. Its
/// longest existing part is canonicalized (resolving any symbolic link, `..`
/// cannot occur) and compared with the canonical root, so no link, wherever it
/// was planted, leads a drop outside.
fn check_under_root(dir: &Path, root: Option<&Path>) -> Result<()> {
    let Some(root) = root else {
        return Err(Error::malformed(format!("delivery-dir {}: file delivery is off (no delivery root is configured)", dir.display())));
    };
    let real_root = std::fs::canonicalize(root)
        .map_err(|e| Error::internal(format!("the delivery root {} cannot be resolved: {e}", root.display())).caused_by(e))?;
    let mut existing = dir;
    let mut missing: Vec<&std::ffi::OsStr> = Vec::new();
    while std::fs::symlink_metadata(existing).is_err() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name);
                existing = parent;
            }
            _ => break,
        }
    }
    let mut real: PathBuf = std::fs::canonicalize(existing)
        .map_err(|e| Error::malformed(format!("delivery-dir {}: {} cannot be resolved: {e}", dir.display(), existing.display())))?;
    real.extend(missing.iter().rev());
    if real == real_root || !real.starts_with(&real_root) || real.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(Error::malformed(format!(
            "delivery-dir {} lies outside the delivery root {} (it must be a directory below it)",
            dir.display(),
            root.display()
        )));
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

/// Writes `DIR/<serial>/{chain.pem,metadata.json}` (and `key.pem.age`, the
/// key encrypted to its recipient, for a key tenure generated), then points
/// the symlink `DIR/current` at it by rename: a reader of `current/` sees the
/// old set or the new one, never a mix.
fn drop_files(dir: &Path, serial: &str, chain: &str, key_age: Option<&str>, metadata: &serde_json::Value) -> Result<()> {
    let io = |what: &Path, e: std::io::Error| Error::internal(format!("file drop {}: {e}", what.display())).caused_by(e);
    // Checked again right before writing: the tree may have changed since.
    check_delivery_dir(&dir.to_string_lossy())?;
    check_no_symlinks(dir)?;
    let version = dir.join(serial);
    std::fs::create_dir_all(&version).map_err(|e| io(&version, e))?;
    if let Some(key) = key_age {
        // Written first: `chain.pem` present means the set is whole.
        write_file_atomically(&version.join("key.pem.age"), key.as_bytes(), false)?;
    }
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
pub(crate) mod tests {
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
        let err = drop_files(&through, "a1", "chain", None, &json!({})).unwrap_err();
        assert!(err.detail.contains("symbolic link"), "{err:?}");
        assert!(!real.join("drop").exists(), "nothing written through the link");
        // A file of someone else's named `current` is not replaced.
        std::fs::write(real.join("current"), b"mine").unwrap();
        let err = drop_files(&real, "a1", "chain", None, &json!({})).unwrap_err();
        assert!(err.detail.contains("not tenure's symlink"), "{err:?}");
        assert_eq!(std::fs::read(real.join("current")).unwrap(), b"mine");
    }

    #[test]
    fn drops_must_lie_below_the_delivery_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("www")).unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let check = |d: &Path, root: Option<&Path>| check_file_target(&d.to_string_lossy(), root);
        check(&root.join("www"), Some(&root)).unwrap();
        check(&root.join("not/yet/made"), Some(&root)).unwrap();
        for (d, why) in [
            (outside.clone(), "outside the delivery root"),
            (root.clone(), "outside the delivery root"),
            (dir.path().join("rootless"), "outside the delivery root"),
        ] {
            let err = check(&d, Some(&root)).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Malformed);
            assert!(err.detail.contains(why), "{}: {}", d.display(), err.detail);
        }
        // No root configured: file delivery is off.
        let err = check(&root.join("www"), None).unwrap_err();
        assert!(err.detail.contains("no delivery root is configured"), "{}", err.detail);
        // A link inside the root that leads out of it.
        std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
        let err = check(&root.join("escape/www"), Some(&root)).unwrap_err();
        assert!(err.detail.contains("symbolic link"), "{}", err.detail);
        // A root named through a link is compared by its real path.
        std::os::unix::fs::symlink(&root, dir.path().join("root-link")).unwrap();
        check(&root.join("www"), Some(&dir.path().join("root-link"))).unwrap();
        assert!(check(&outside, Some(&dir.path().join("root-link"))).is_err());
        // Containment compares whole components: root2 is not below root.
        std::fs::create_dir(dir.path().join("root2")).unwrap();
        assert!(check(&dir.path().join("root2/x"), Some(&root)).is_err());
    }

    /// One POST a sender was asked for: where, the headers, the body.
    pub(crate) type Post = (WebhookTarget, Vec<(String, String)>, Vec<u8>);

    /// What a sender was asked to POST.
    #[derive(Default)]
    pub(crate) struct Recorder(pub(crate) std::sync::Mutex<Vec<Post>>);

    impl WebhookSender for Recorder {
        fn post(&self, target: &WebhookTarget, headers: &[(String, String)], body: &[u8]) -> std::result::Result<(), String> {
            self.0.lock().unwrap().push((target.clone(), headers.to_vec(), body.to_vec()));
            Ok(())
        }
    }

    /// An engine with tenant `name` holding `zone` with the delivery targets,
    /// and one certificate for it; returns the resource id.
    fn tenant_with_targets(e: &crate::Engine, name: &str, zone: &str, dir: &Path, hook: &str) -> String {
        use crate::ra::{ExternalBinding, NewAccount, NewOrder};
        let tenant = e.registry.create_tenant(name, Some(&[zone.to_string()])).unwrap();
        let (account, _) =
            e.ra.create_account(NewAccount {
                jwk: "{}".into(),
                thumbprint: name.into(),
                contact: vec![],
                tos_agreed: true,
                eab: Some(ExternalBinding::for_key(&tenant.eab_kid, &tenant.eab_hmac, name)),
                source: None,
            })
            .unwrap();
        let attributes = [
            (crate::lifecycle::DELIVERY_DIR_ATTRIBUTE.to_string(), dir.display().to_string()),
            (crate::lifecycle::DELIVERY_WEBHOOK_ATTRIBUTE.to_string(), hook.to_string()),
        ];
        let resource = e
            .registry
            .add_resource(crate::registry::NewResource {
                tenant: name.into(),
                kind: "zone".into(),
                zones: vec![zone.into()],
                attributes: attributes.into_iter().collect(),
                ..Default::default()
            })
            .unwrap();
        let www = format!("www.{zone}");
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = rcgen::CertificateParams::new(vec![www.clone()]).unwrap().serialize_request(&key).unwrap();
        let order =
            e.ra.new_order(&account, NewOrder { identifiers: vec![crate::Identifier::dns(&www)], profile: None, replaces: None }).unwrap();
        e.ra.finalize(&account, &order, csr.der(), b"account key").unwrap();
        resource.id
    }

    /// Deliveries within the bounds arrive (the webhook pinned to the checked
    /// addresses, signed with the tenant's own secret); outside them, they
    /// fail at once with the reason recorded and nothing sent or written.
    #[test]
    fn deliveries_keep_to_the_bounds_and_sign_per_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let root = dir.path().join("drops");
        std::fs::create_dir(&root).unwrap();
        let mut config = crate::Config::default();
        config.lifecycle.delivery_root = Some(root.clone());
        config.lifecycle.webhook_allow = vec!["localhost".parse().unwrap(), "127.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()];
        let e = crate::Engine::open(&data, config).unwrap();
        let hook = "https://localhost:9/hook";
        let corp = tenant_with_targets(&e, "corp", "corp.example", &root.join("corp"), hook);
        let other = tenant_with_targets(&e, "other", "other.example", &root.join("other"), hook);
        e.lifecycle.renew_resource_now(&corp).unwrap();
        e.lifecycle.renew_resource_now(&other).unwrap();

        let sent = Recorder::default();
        let report = e.lifecycle.deliver_pending(&sent).unwrap();
        assert_eq!(report, DeliveryReport { delivered: 4, retrying: 0, failed: 0 });
        assert!(root.join("corp/current/chain.pem").exists() && root.join("other/current/chain.pem").exists());
        let posts = sent.0.lock().unwrap().clone();
        assert_eq!(posts.len(), 2);
        let mut secrets = Vec::new();
        for (target, headers, body) in &posts {
            assert_eq!(target.host, "localhost");
            assert!(!target.addrs.is_empty() && target.addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 9), "{target:?}");
            let tenant = serde_json::from_slice::<serde_json::Value>(body).unwrap()["tenant"].as_str().unwrap().to_string();
            let secret = e.registry.webhook_secret(&tenant).unwrap();
            let sig = &headers.iter().find(|(k, _)| k == SIGNATURE_HEADER).unwrap().1;
            let at: UnixTime = sig.strip_prefix("t=").unwrap().split(',').next().unwrap().parse().unwrap();
            assert_eq!(sig, &sign_webhook(secret.as_bytes(), at, body), "signed with {tenant}'s secret");
            secrets.push(secret);
        }
        assert_ne!(secrets[0], secrets[1], "each tenant has its own secret");
        let rotated = e.registry.rotate_webhook_secret("corp").unwrap();
        assert!(!secrets.contains(&rotated));
        assert_eq!(e.registry.webhook_secret("corp").unwrap(), rotated);
        assert_eq!(e.registry.webhook_secret("nobody").unwrap_err().kind, ErrorKind::NotFound);

        // The same data directory under narrower bounds (another root, no
        // allowances): both targets of the next renewal are refused.
        drop(e);
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let mut config = crate::Config::default();
        config.lifecycle.delivery_root = Some(elsewhere);
        let e = crate::Engine::open(&data, config).unwrap();
        let before = std::fs::read_link(root.join("corp/current")).unwrap();
        e.lifecycle.renew_resource_now(&corp).unwrap();
        let sent = Recorder::default();
        let report = e.lifecycle.deliver_pending(&sent).unwrap();
        assert_eq!(report, DeliveryReport { delivered: 0, retrying: 0, failed: 2 }, "refusals are final");
        assert!(sent.0.lock().unwrap().is_empty(), "nothing was POSTed");
        assert_eq!(std::fs::read_link(root.join("corp/current")).unwrap(), before, "nothing was dropped");
        let deliveries: Vec<Delivery> = e
            .lifecycle
            .certificates(Some("corp"), None, 100)
            .unwrap()
            .iter()
            .flat_map(|(c, _)| e.lifecycle.deliveries_of(&c.serial).unwrap())
            .filter(|d| d.state != DeliveryState::Delivered)
            .collect();
        assert_eq!(deliveries.len(), 2, "{deliveries:?}");
        for d in deliveries {
            assert_eq!((d.state, d.attempts), (DeliveryState::Failed, 1));
            let why = d.last_error.unwrap();
            let expect = if d.kind == DeliveryKind::File { "outside the delivery root" } else { "a loopback address" };
            assert!(why.starts_with("refused: ") && why.contains(expect), "{why}");
        }
        // And the registry refuses such targets as they are set.
        let err = e
            .registry
            .add_resource(crate::registry::NewResource {
                tenant: "corp".into(),
                kind: "vm".into(),
                names: vec!["api.corp.example".into()],
                attributes: [(crate::lifecycle::DELIVERY_DIR_ATTRIBUTE.to_string(), root.join("api").display().to_string())]
                    .into_iter()
                    .collect(),
                ..Default::default()
            })
            .unwrap_err();
        assert!(err.detail.contains("outside the delivery root"), "{}", err.detail);
    }

    #[test]
    fn file_drop_swaps_current_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let meta = json!({"serial": "a1"});
        drop_files(dir.path(), "a1", "CHAIN-1", None, &meta).unwrap();
        drop_files(dir.path(), "b2", "CHAIN-2", Some("AGE"), &json!({"serial": "b2"})).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("current/chain.pem")).unwrap(), "CHAIN-2");
        assert!(std::fs::read_to_string(dir.path().join("current/metadata.json")).unwrap().contains("b2"));
        assert_eq!(std::fs::read_to_string(dir.path().join("a1/chain.pem")).unwrap(), "CHAIN-1");
    }
}
