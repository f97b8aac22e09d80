//! The on-disk cache of compiled plugins: `<dir>/<digest>-<engine>.cwasm`, where
//! `<engine>` hashes `Engine::precompile_compatibility_hash` (so another wasmtime or
//! another configuration never reads a stale artefact).
//!
//! Deserializing a `.cwasm` runs its machine code unchecked, so the cache trusts only
//! files this user wrote: the directory and the file must belong to the user the
//! process runs as and be writable by no one else. (Whoever can write there as that
//! user could run code as tenure anyway.)

use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

pub(super) struct DiskCache {
    dir: PathBuf,
    engine_hash: String,
    uid: u32,
}

fn private(meta: &fs::Metadata, uid: u32) -> bool {
    meta.uid() == uid && meta.mode() & 0o022 == 0
}

impl DiskCache {
    pub fn open(dir: &Path, engine: &Engine) -> Result<Self, String> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create plugin cache {}: {e}", dir.display()))?;
        // Our uid, as the owner of a file we create (std has no geteuid).
        let probe = dir.join(format!(".probe-{}", std::process::id()));
        let uid = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&probe)
            .and_then(|f| f.metadata())
            .map(|m| m.uid())
            .map_err(|e| format!("plugin cache {} is not writable: {e}", dir.display()))?;
        let _ = fs::remove_file(&probe);
        let meta = fs::metadata(dir).map_err(|e| format!("plugin cache {}: {e}", dir.display()))?;
        if !private(&meta, uid) {
            return Err(format!("plugin cache {} must belong to uid {uid} and be writable by no one else", dir.display()));
        }
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(DiskCache { dir: dir.to_owned(), engine_hash: format!("{:016x}", h.finish()), uid })
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_hash))
    }

    /// The cached compilation of `digest`, if there is one we can trust.
    pub fn get(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.path(digest);
        let meta = fs::symlink_metadata(&path).ok()?;
        if !meta.is_file() || !private(&meta, self.uid) {
            tracing::warn!(path = %path.display(), "ignoring a plugin cache file we did not write");
            return None;
        }
        // SAFETY: the file is one this user wrote from `Component::serialize` (checked
        // above as far as the file system can tell), for this engine configuration
        // (its name), and wasmtime checks the header's compatibility again.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "dropping an unusable plugin cache file");
                let _ = fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores a compilation; a failure only costs a recompilation later.
    pub fn put(&self, digest: &str, component: &Component) {
        let path = self.path(digest);
        let tmp = self.dir.join(format!(".{digest}.{}.tmp", std::process::id()));
        let result = component.serialize().map_err(|e| e.to_string()).and_then(|bytes| {
            let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(|e| e.to_string())?;
            f.write_all(&bytes).and_then(|_| f.sync_all()).map_err(|e| e.to_string())?;
            // Atomic: a concurrent reader sees the old file or the whole new one.
            fs::rename(&tmp, &path).map_err(|e| e.to_string())
        });
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            tracing::warn!(path = %path.display(), error = %e, "could not cache a compiled plugin");
        }
    }
}
