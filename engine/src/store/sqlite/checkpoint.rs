//! WAL checkpoints on a thread of their own.
//!
//! SQLite's auto-checkpoint runs inside whichever commit pushes the WAL past
//! its threshold: that request copied pages and synced files while holding
//! the writer lock. The writer now never checkpoints (`wal_autocheckpoint=0`);
//! this thread does, on its own connection, with PASSIVE checkpoints that
//! wait for no one: the writer keeps appending while pages are copied.
//!
//! A PASSIVE checkpoint alone lets the WAL grow under steady load: the log
//! restarts from its beginning only when a write begins with every frame
//! copied and no reader inside the log, which a writer committing all the
//! time rarely sees. So once the log is long, the thread takes the writer's
//! lock for a moment and runs a RESTART checkpoint: the bulk is copied
//! already, what remains is the last few commits and waiting out the readers
//! in flight, and the next write starts the log over.
//!
//! Durability does not move: a commit is durable against a process crash once
//! its frames are written to the WAL, checkpointed or not.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use super::writer::Writer;

use crate::error::Result;

/// How often the WAL is checkpointed when idle or lightly written.
const INTERVAL: Duration = Duration::from_millis(250);
/// How often when the last pass copied more than `BUSY_FRAMES` frames, so
/// under load each pass stays near SQLite's usual 1000 pages.
const BUSY_INTERVAL: Duration = Duration::from_millis(50);
const BUSY_FRAMES: i64 = 1000;
/// A log this long (16 MiB of 4 KiB pages) is restarted under the writer's lock.
const RESTART_FRAMES: i64 = 4096;
/// A log this large means restarts keep failing (a long reader pins it):
/// TRUNCATE then also gives the disk space back.
const TRUNCATE_BYTES: i64 = 64 << 20;
/// How long a RESTART waits for readers still in the log while the writer
/// waits for it; past that it gives up until the next tick.
const RESTART_WAIT: Duration = Duration::from_millis(50);

struct Shared {
    stop: Mutex<bool>,
    wake: Condvar,
    /// Checkpoints that copied frames into the database, for tests.
    passes: AtomicU64,
    /// Restarts of the log, for tests.
    restarts: AtomicU64,
}

/// The checkpoint thread of one `SqliteStore`. Dropping it stops and joins the
/// thread, which closes its connection: no thread outlives the store.
pub(super) struct Checkpointer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// Held by the thread while it runs (tests watch it through a `Weak`).
    #[cfg(test)]
    alive: Arc<()>,
}

impl Checkpointer {
    /// Starts checkpointing the database at `path`; `writer` is the store's
    /// writer, locked (its connection never used) to keep commits out during a restart.
    pub(super) fn start(path: &Path, writer: Arc<Writer>) -> Result<Checkpointer> {
        let conn = Connection::open(path)?;
        // The sync flags of a checkpoint are those of the connection running it.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(RESTART_WAIT)?;
        let shared =
            Arc::new(Shared { stop: Mutex::new(false), wake: Condvar::new(), passes: AtomicU64::new(0), restarts: AtomicU64::new(0) });
        let theirs = shared.clone();
        #[cfg(test)]
        let alive = Arc::new(());
        #[cfg(test)]
        let held = alive.clone();
        let thread = std::thread::Builder::new()
            .name("tenure-checkpoint".into())
            .spawn(move || {
                #[cfg(test)]
                let _held = held;
                run(&conn, &writer, &theirs)
            })
            .map_err(|e| crate::error::Error::internal(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Checkpointer {
            shared,
            thread: Some(thread),
            #[cfg(test)]
            alive,
        })
    }

    #[cfg(test)]
    pub(super) fn passes(&self) -> (u64, u64) {
        (self.shared.passes.load(Ordering::Relaxed), self.shared.restarts.load(Ordering::Relaxed))
    }

    #[cfg(test)]
    pub(super) fn alive(&self) -> std::sync::Weak<()> {
        Arc::downgrade(&self.alive)
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        if let Ok(mut stop) = self.shared.stop.lock() {
            *stop = true;
        }
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(conn: &Connection, writer: &Writer, shared: &Shared) {
    let page_size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0)).unwrap_or(4096);
    // A WAL frame is a page and a 24-byte header.
    let truncate_frames = TRUNCATE_BYTES / (page_size + 24);
    let mut wait = INTERVAL;
    // Frames of the log copied so far, as of the last pass.
    let mut backfilled = 0;
    loop {
        {
            let Ok(stop) = shared.stop.lock() else { return };
            let Ok((stop, _)) = shared.wake.wait_timeout_while(stop, wait, |stop| !*stop) else { return };
            if *stop {
                return;
            }
        }
        wait = INTERVAL;
        let (log, done) = match checkpoint(conn, PASSIVE) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "WAL checkpoint failed; retrying later");
                continue;
            }
        };
        // `done` counts from the start of the log, which restarts at zero.
        let copied = if done >= backfilled { done - backfilled } else { done };
        backfilled = done;
        if copied > 0 {
            shared.passes.fetch_add(1, Ordering::Relaxed);
        }
        if copied > BUSY_FRAMES {
            wait = BUSY_INTERVAL;
        }
        if log >= RESTART_FRAMES {
            let mode = if log > truncate_frames { TRUNCATE } else { RESTART };
            // No commit may land between copying the last frames and the
            // next write (an open group of transactions commits first).
            let Ok(_writer) = writer.lock_idle() else { continue };
            match checkpoint(conn, mode) {
                Ok((log, done)) if log == done => {
                    shared.restarts.fetch_add(1, Ordering::Relaxed);
                    backfilled = 0;
                }
                // Busy: a reader stayed in the log past RESTART_WAIT.
                Ok((_, done)) => backfilled = done,
                Err(e) => tracing::warn!(error = %e, "WAL restart failed; retrying later"),
            }
        }
    }
}

/// Runs one checkpoint; returns SQLite's (frames in the log, frames of it
/// copied into the database so far).
fn checkpoint(conn: &Connection, pragma: &str) -> rusqlite::Result<(i64, i64)> {
    conn.query_row(pragma, [], |r| Ok((r.get(1)?, r.get(2)?)))
}

const PASSIVE: &str = "PRAGMA wal_checkpoint(PASSIVE)";
const RESTART: &str = "PRAGMA wal_checkpoint(RESTART)";
const TRUNCATE: &str = "PRAGMA wal_checkpoint(TRUNCATE)";

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use crate::store::SettingsStore;
    use crate::store::SqliteStore as Store;

    fn size(p: &std::path::Path) -> u64 {
        std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
    }

    #[test]
    fn checkpoints_in_the_background_and_stops_with_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let wal = dir.path().join("t.db-wal");
        let store = Store::open(&db).unwrap();
        // 4 MiB in one commit: far past SQLite's own 1000-page threshold,
        // which the writer no longer acts on.
        store.set_setting("big", &vec![7u8; 4 << 20]).unwrap();
        assert!(size(&wal) > 4 << 20, "the commit is in the WAL");
        // The committing request does not checkpoint: the writer's auto-checkpoint is off.
        // (Not read off the file sizes: this thread's first pass may already have run.)
        let auto: i64 = store.writer.lock_idle().unwrap().query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0)).unwrap();
        assert_eq!(auto, 0, "the writer checkpoints on commit");

        let cp = store.checkpointer.as_ref().unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while cp.passes().0 == 0 && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(cp.passes().0 > 0, "no checkpoint within 5 s");
        assert!(size(&db) > 4 << 20, "the pages reached the database file");

        let alive = cp.alive();
        drop(store);
        assert!(alive.upgrade().is_none(), "the thread ended with the store");
        // SQLite removes the WAL when its last connection closes: none is left open.
        assert!(!wal.exists(), "a connection outlived the store");
        assert_eq!(Store::open(&db).unwrap().setting("big").unwrap().map(|v| v.len()), Some(4 << 20));
    }

    #[test]
    fn a_long_log_starts_over_instead_of_growing() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let wal = dir.path().join("t.db-wal");
        let store = Store::open(&db).unwrap();
        let cp = store.checkpointer.as_ref().unwrap();
        let chunk = vec![1u8; 20 << 20];
        for round in 1..=2u64 {
            // Past RESTART_FRAMES in one commit.
            store.set_setting(&format!("k{round}"), &chunk).unwrap();
            let deadline = Instant::now() + std::time::Duration::from_secs(10);
            while cp.passes().1 < round && Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            assert!(cp.passes().1 >= round, "no restart in round {round}");
        }
        // Without restarts the second commit would have been appended (40 MiB).
        assert!(size(&wal) < 30 << 20, "the WAL grew to {} bytes", size(&wal));
        assert_eq!(store.setting("k1").unwrap().map(|v| v.len()), Some(20 << 20));
    }
}
