//! SQLite's connection for checks: one connection, held by the store itself rather than lent by
//! a sqlx pool.
//!
//! Why not a pool of one: sqlx returns a pooled connection through a task it spawns on every
//! release, and that task pings the connection's worker thread before the connection can be used
//! again (`sqlx-core` 0.8, `Floating::return_to_pool`, unconditional). A check uses the connection
//! twice (the re-submission lookup, then its audit row in the group-commit batch), so the pool
//! cost two spawned tasks and two extra round trips to that thread per check, each a pair of
//! cross-thread wake-ups. Here the connection waits behind an async mutex instead.
//!
//! What the pool gave and this keeps:
//! - it is opened on first use (after the migrations), and again after it was discarded;
//! - waiting for it is bounded by the store's acquire timeout ([`sqlx::Error::PoolTimedOut`]);
//! - a connection that failed for a database fault is discarded by the caller
//!   ([`HotGuard::discard`]), so the next use opens a fresh one;
//! - after [`HotSqlite::close`], every use fails with [`sqlx::Error::PoolClosed`].

use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{Mutex, MutexGuard};

/// The connection, or the reason there is none.
enum Slot {
    /// Not opened yet, or discarded after a fault: the next use opens one.
    Empty,
    Open(SqliteConnection),
    /// [`HotSqlite::close`] was called.
    Closed,
}

/// One SQLite connection shared by the checks, used by one of them at a time.
pub(super) struct HotSqlite {
    slot: Mutex<Slot>,
    options: SqliteConnectOptions,
    /// Longest wait for the connection (the other user's statement) or for opening it.
    acquire_timeout: Duration,
}

/// The connection, held until this guard is dropped.
pub(super) struct HotGuard<'a> {
    slot: MutexGuard<'a, Slot>,
}

impl HotSqlite {
    pub(super) fn new(options: SqliteConnectOptions, acquire_timeout: Duration) -> HotSqlite {
        HotSqlite {
            slot: Mutex::new(Slot::Empty),
            options,
            acquire_timeout,
        }
    }

    /// Waits for the connection (opening it if there is none), within the acquire timeout.
    pub(super) async fn acquire(&self) -> Result<HotGuard<'_>, sqlx::Error> {
        let deadline = tokio::time::Instant::now() + self.acquire_timeout;
        let mut slot = tokio::time::timeout_at(deadline, self.slot.lock())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?;
        match &*slot {
            Slot::Open(_) => {}
            Slot::Closed => return Err(sqlx::Error::PoolClosed),
            Slot::Empty => {
                let conn = tokio::time::timeout_at(deadline, self.options.connect())
                    .await
                    .map_err(|_| sqlx::Error::PoolTimedOut)??;
                *slot = Slot::Open(conn);
            }
        }
        Ok(HotGuard { slot })
    }

    /// Closes the connection (waiting for its current user); later uses fail with
    /// [`sqlx::Error::PoolClosed`].
    pub(super) async fn close(&self) {
        let mut slot = self.slot.lock().await;
        if let Slot::Open(conn) = std::mem::replace(&mut *slot, Slot::Closed) {
            let _ = conn.close().await;
        }
    }
}

impl HotGuard<'_> {
    /// The connection.
    pub(super) fn conn(&mut self) -> &mut SqliteConnection {
        match &mut *self.slot {
            Slot::Open(conn) => conn,
            // `HotSqlite::acquire` hands out a guard only over an open connection, and only
            // `discard` (which consumes the guard) empties it.
            Slot::Empty | Slot::Closed => {
                unreachable!("a HotGuard always holds an open connection")
            }
        }
    }

    /// Drops the connection after a database fault (a stale read-only WAL, an I/O error, a
    /// crashed worker thread): the next [`HotSqlite::acquire`] opens a fresh one.
    pub(super) async fn discard(mut self) {
        if let Slot::Open(conn) = std::mem::replace(&mut *self.slot, Slot::Empty) {
            let _ = conn.close().await;
        }
    }
}
