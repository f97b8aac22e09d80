//! The one writer connection, with group commit.
//!
//! Every write transaction of the process runs on this connection, one at a
//! time, as before. What changed is when a transaction commits: a request
//! that finishes its writes while others are queued for the connection
//! leaves the SQLite transaction open, hands the connection to the next one,
//! and waits; the last of the group (no one queued, or `MAX_GROUP` members)
//! commits for all and wakes them. Each request still gets its answer only
//! once its writes are committed, so what was acknowledged survives a
//! process crash exactly as before (WAL, `synchronous=NORMAL`); what the
//! group saves is one WAL append, one set of locks and the pages several
//! requests share (interior B-tree pages, the tails of tables and indexes),
//! written once instead of once per request.
//!
//! A member's own failure rolls back only its own writes: every member after
//! the first runs inside a savepoint. A failed COMMIT fails the whole group,
//! and every member gets the error (none of them was acknowledged). A panic
//! inside a member rolls the whole group back, its waiting members get an
//! error, and the connection is usable again.
//!
//! Everything else that uses the connection (`lock_idle`: single statements,
//! the readiness probe, the checkpointer's restart) first commits the group
//! that is open, so no one but a group member ever sees uncommitted writes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use rusqlite::Connection;

use crate::error::{Error, Result};

/// At most this many requests share one commit: past it the group commits
/// even with others queued, bounding how long the first member waits.
const MAX_GROUP: usize = 32;

/// The writer connection and the group of transactions open on it.
pub(super) struct Writer {
    state: Mutex<State>,
    /// Requests waiting for `state`: while any are, a finished member leaves
    /// the group open for them.
    queued: AtomicUsize,
}

/// What the writer's mutex guards.
pub(super) struct State {
    conn: Connection,
    group: Option<Group>,
}

/// An open SQLite transaction shared by the requests that wrote in it.
struct Group {
    /// Members whose writes are in it (their savepoints released).
    members: usize,
    outcome: Arc<Outcome>,
}

/// How a group ended, for its members waiting on it.
#[derive(Default)]
struct Outcome {
    settled: Mutex<Option<std::result::Result<(), String>>>,
    done: Condvar,
}

impl Outcome {
    fn settle(&self, result: std::result::Result<(), String>) {
        let mut settled = self.settled.lock().unwrap_or_else(|p| p.into_inner());
        *settled = Some(result);
        self.done.notify_all();
    }

    fn wait(&self) -> std::result::Result<(), String> {
        let mut settled = self.settled.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(result) = settled.as_ref() {
                return result.clone();
            }
            settled = self.done.wait(settled).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// The connection with no transaction open, as `lock_idle` returns it.
pub(super) struct Idle<'w>(MutexGuard<'w, State>);

impl std::ops::Deref for Idle<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.0.conn
    }
}

impl std::ops::DerefMut for Idle<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.0.conn
    }
}

/// Rolls the whole group back if a member panics while running: its waiting
/// members learn of it, and the connection is left with no transaction.
struct PanicGuard<'g, 'w>(&'g mut MutexGuard<'w, State>);

impl Drop for PanicGuard<'_, '_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            abandon(self.0, "the write transaction was rolled back: a request sharing it failed unexpectedly");
        }
    }
}

impl Writer {
    pub(super) fn new(conn: Connection) -> Writer {
        Writer { state: Mutex::new(State { conn, group: None }), queued: AtomicUsize::new(0) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            // A panic while the connection was held: the member's guard
            // rolled its group back; anything else left open goes here.
            Err(poisoned) => {
                self.state.clear_poison();
                let mut g = poisoned.into_inner();
                abandon(&mut g, "the write transaction was rolled back after a failure");
                g
            }
        }
    }

    /// The connection with any open group committed first.
    pub(super) fn lock_idle(&self) -> Result<Idle<'_>> {
        let mut g = self.lock();
        commit(&mut g)?;
        Ok(Idle(g))
    }

    /// Runs `f` as one write transaction: its writes commit together with
    /// those of the requests queued behind it, or not at all; returns once
    /// they are committed.
    pub(super) fn transaction<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.queued.fetch_add(1, Ordering::SeqCst);
        let mut g = self.lock();
        self.queued.fetch_sub(1, Ordering::SeqCst);
        let joined = g.group.is_some();
        if joined {
            if let Err(e) = run(&g.conn, "SAVEPOINT member") {
                // The members before this one are waiting: their writes commit without it.
                let _ = commit(&mut g);
                return Err(e.into());
            }
        } else {
            run(&g.conn, "BEGIN IMMEDIATE")?;
            g.group = Some(Group { members: 0, outcome: Arc::new(Outcome::default()) });
        }
        let out = {
            let guard = PanicGuard(&mut g);
            f(&guard.0.conn)
        };
        let out = match out {
            Ok(v) => v,
            Err(e) => {
                let undone = if joined {
                    run(&g.conn, "ROLLBACK TO member").and_then(|()| run(&g.conn, "RELEASE member"))
                } else {
                    // The group holds no one else's writes yet.
                    g.group = None;
                    run(&g.conn, "ROLLBACK")
                };
                if let Err(undo) = undone {
                    abandon(&mut g, &format!("the write transaction was rolled back: {undo}"));
                } else if self.queued.load(Ordering::SeqCst) == 0 {
                    // The others' writes must not wait for a member that may never come.
                    let _ = commit(&mut g);
                }
                return Err(e);
            }
        };
        if joined && let Err(e) = run(&g.conn, "RELEASE member") {
            abandon(&mut g, &format!("the write transaction was rolled back: {e}"));
            return Err(e.into());
        }
        let Some(group) = g.group.as_mut() else {
            return Err(Error::internal("the write transaction vanished"));
        };
        group.members += 1;
        if group.members < MAX_GROUP && self.queued.load(Ordering::SeqCst) > 0 {
            // Someone is queued: they commit for us (or hand on further).
            let outcome = group.outcome.clone();
            drop(g);
            return match outcome.wait() {
                Ok(()) => Ok(out),
                Err(message) => Err(Error::internal(format!("storage: {message}"))),
            };
        }
        commit(&mut g)?;
        Ok(out)
    }
}

/// Runs one of the transaction statements, prepared once per connection.
fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// Commits the open group, if any, and tells its members how it went.
fn commit(g: &mut MutexGuard<'_, State>) -> Result<()> {
    let Some(group) = g.group.take() else { return Ok(()) };
    match run(&g.conn, "COMMIT") {
        Ok(()) => {
            group.outcome.settle(Ok(()));
            Ok(())
        }
        Err(e) => {
            if !g.conn.is_autocommit() {
                let _ = run(&g.conn, "ROLLBACK");
            }
            group.outcome.settle(Err(format!("commit failed: {e}")));
            Err(e.into())
        }
    }
}

/// Rolls back whatever is open and fails the group's waiting members.
fn abandon(g: &mut MutexGuard<'_, State>, why: &str) {
    if !g.conn.is_autocommit() {
        let _ = run(&g.conn, "ROLLBACK");
    }
    if let Some(group) = g.group.take() {
        group.outcome.settle(Err(why.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    fn writer() -> Arc<Writer> {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (v TEXT PRIMARY KEY)").unwrap();
        Arc::new(Writer { state: Mutex::new(State { conn, group: None }), queued: AtomicUsize::new(0) })
    }

    fn insert(c: &Connection, v: &str) -> Result<()> {
        c.execute("INSERT INTO t (v) VALUES (?1)", [v])?;
        Ok(())
    }

    fn rows(w: &Writer) -> Vec<String> {
        let c = w.lock_idle().unwrap();
        let mut st = c.prepare("SELECT v FROM t ORDER BY v").unwrap();
        st.query_map([], |r| r.get(0)).unwrap().collect::<rusqlite::Result<_>>().unwrap()
    }

    /// Runs `first` as a member that finishes only once another request is
    /// queued for the writer, and `second` as that request: they share a group.
    fn grouped<A: Send + 'static, B: Send + 'static>(
        w: &Arc<Writer>,
        first: impl FnOnce(&Connection) -> Result<A> + Send + 'static,
        second: impl FnOnce(&Connection) -> Result<B> + Send + 'static,
    ) -> (std::thread::Result<Result<A>>, std::thread::Result<Result<B>>) {
        let (wa, wb) = (w.clone(), w.clone());
        let (started_tx, started) = std::sync::mpsc::channel();
        let a = std::thread::spawn(move || {
            let theirs = wa.clone();
            wa.transaction(move |c| {
                started_tx.send(()).unwrap();
                let out = first(c)?;
                let deadline = Instant::now() + Duration::from_secs(10);
                while theirs.queued.load(Ordering::SeqCst) == 0 {
                    assert!(Instant::now() < deadline, "the second request never queued");
                    std::thread::yield_now();
                }
                Ok(out)
            })
        });
        started.recv().unwrap();
        let b = std::thread::spawn(move || wb.transaction(second));
        (a.join(), b.join())
    }

    #[test]
    fn queued_requests_commit_together_and_each_returns_after_the_commit() {
        let w = writer();
        let (a, b) = grouped(&w, |c| insert(c, "a"), |c| insert(c, "b"));
        a.unwrap().unwrap();
        b.unwrap().unwrap();
        assert_eq!(rows(&w), ["a", "b"]);
        assert!(w.state.lock().unwrap().group.is_none(), "nothing left open");
    }

    #[test]
    fn a_members_failure_undoes_only_its_own_writes() {
        let w = writer();
        let (a, b) = grouped(
            &w,
            |c| insert(c, "kept"),
            |c| {
                insert(c, "undone")?;
                Err::<(), _>(Error::malformed("refused"))
            },
        );
        a.unwrap().unwrap();
        assert!(b.unwrap().is_err());
        assert_eq!(rows(&w), ["kept"]);
        // A conflict inside the group (the same key again) fails only its request.
        let (a, b) = grouped(&w, |c| insert(c, "x"), |c| insert(c, "kept"));
        a.unwrap().unwrap();
        assert!(b.unwrap().is_err());
        assert_eq!(rows(&w), ["kept", "x"]);
    }

    #[test]
    fn a_panicking_member_fails_its_group_and_leaves_the_writer_usable() {
        let w = writer();
        let (a, b) = grouped(
            &w,
            |c| insert(c, "a"),
            |c| -> Result<()> {
                insert(c, "b")?;
                panic!("a bug in a request");
            },
        );
        let err = a.unwrap().unwrap_err();
        assert!(err.to_string().contains("rolled back"), "{err}");
        assert!(b.is_err(), "the panic propagates to its own thread");
        assert!(rows(&w).is_empty(), "the whole group was rolled back: nothing unacknowledged is kept");
        w.transaction(|c| insert(c, "after")).unwrap();
        assert_eq!(rows(&w), ["after"]);
    }

    #[test]
    fn many_threads_lose_nothing() {
        let w = writer();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        w.transaction(|c| insert(c, &format!("{t}-{i:03}"))).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(rows(&w).len(), 1600);
    }
}
