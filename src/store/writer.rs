//! Group commit of audit records.
//!
//! Every check's audit row must be committed before its verdict is sent. Committing each row in
//! its own transaction costs one fsync (SQLite WAL with full sync) or one round trip and WAL flush
//! (PostgreSQL) per check, serialised on the database's write lock. The [`AuditWriter`] instead
//! takes the rows of concurrent checks from a queue and commits all that are waiting in one
//! transaction; each caller is answered only when the transaction holding its row has committed.
//!
//! Failure is per transaction: when a commit fails because the database is unavailable (disk full,
//! read-only file, server down), every request in that transaction gets the error and none of
//! their rows exists. When it fails on one record's data (a duplicate reference, a key that no
//! longer exists), the records are retried one per transaction, so a bad record fails alone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{AuditRecord, Store, StoreError};

/// Most records in one transaction.
pub const MAX_BATCH: usize = 256;

/// Records waiting for the writer, beyond which callers wait to enqueue (back-pressure).
const QUEUE: usize = 4096;

/// The handle of the group-commit task. Cheap to clone; the task ends when every handle is
/// dropped and the queue is empty.
#[derive(Clone)]
pub struct AuditWriter {
    queue: mpsc::Sender<Job>,
    stats: Arc<Stats>,
    target: Arc<str>,
}

struct Job {
    record: AuditRecord,
    done: oneshot::Sender<Result<(), StoreError>>,
}

#[derive(Default)]
struct Stats {
    commits: AtomicU64,
    rows: AtomicU64,
}

/// Counters of the writer since it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterStats {
    /// Transactions committed.
    pub commits: u64,
    /// Rows committed.
    pub rows: u64,
}

impl AuditWriter {
    /// Starts the writer task on the current tokio runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn spawn(store: Store) -> AuditWriter {
        let (queue, jobs) = mpsc::channel(QUEUE);
        let stats = Arc::new(Stats::default());
        let target = store.target().into();
        tokio::spawn(run(store, jobs, Arc::clone(&stats)));
        AuditWriter {
            queue,
            stats,
            target,
        }
    }

    /// Inserts `record`; returns once the transaction holding it has committed (`Ok`) or failed.
    /// Errors as [`Store::insert_audit`]; [`StoreError::Unavailable`] also when the writer has
    /// stopped.
    pub async fn insert(&self, record: AuditRecord) -> Result<(), StoreError> {
        let (done, answer) = oneshot::channel();
        // Only if the writer task died (a panic): the row cannot be written.
        let stopped = || StoreError::Unavailable {
            target: self.target.to_string(),
            cause: sqlx::Error::WorkerCrashed,
        };
        self.queue
            .send(Job { record, done })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Transactions and rows committed so far.
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            commits: self.stats.commits.load(Ordering::Relaxed),
            rows: self.stats.rows.load(Ordering::Relaxed),
        }
    }
}

async fn run(store: Store, mut jobs: mpsc::Receiver<Job>, stats: Arc<Stats>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        commit(&store, std::mem::take(&mut batch), &stats).await;
    }
}

/// Commits `jobs` in one transaction and answers each; on a data error, one by one.
async fn commit(store: &Store, jobs: Vec<Job>, stats: &Stats) {
    let (records, answers): (Vec<AuditRecord>, Vec<_>) =
        jobs.into_iter().map(|j| (j.record, j.done)).unzip();
    let committed = |rows: usize| {
        stats.commits.fetch_add(1, Ordering::Relaxed);
        stats.rows.fetch_add(rows as u64, Ordering::Relaxed);
    };
    match store.insert_audit_batch(&records).await {
        Ok(()) => {
            committed(records.len());
            for done in answers {
                let _ = done.send(Ok(()));
            }
        }
        Err(err) if records.len() > 1 && !err.is_unavailable() => {
            for (record, done) in records.iter().zip(answers) {
                let result = store.insert_audit(record).await;
                if result.is_ok() {
                    committed(1);
                }
                let _ = done.send(result);
            }
        }
        Err(err) if records.len() == 1 => {
            if let Some(done) = answers.into_iter().next() {
                let _ = done.send(Err(err));
            }
        }
        Err(err) => {
            let shared = Arc::new(err);
            for done in answers {
                let _ = done.send(Err(StoreError::Batch(Arc::clone(&shared))));
            }
        }
    }
}
