//! Shadow scoring (`--shadow-model-set`): every checked picture is scored again with a second
//! model set, off the answer's path, and the score is stored in the audit row
//! (`shadow_model`, `shadow_p_real`, `shadow_live`, `shadow_reason`) so that `livecheck report`
//! can show how often the two sets agree before the second one is switched on.
//!
//! Never in the way of answers:
//! - the handler only hands the picture over (a bounded queue, [`QUEUE`] pictures); when the
//!   queue is full the picture is not shadow-scored (`livecheck_shadow_total{outcome="dropped"}`)
//!   rather than held;
//! - one worker thread scores, at the lowest CPU priority (`nice` 19 on Linux), so it uses only
//!   CPU the checks leave idle;
//! - the audit row was committed before the answer; the shadow score is an UPDATE of it later,
//!   and a failure to write it is logged and counted, never reported to the client.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};

use bytes::Bytes;
use uuid::Uuid;

use super::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::store::{ShadowScore, Store};

/// Pictures waiting for the shadow worker at most (each holds its image bytes).
pub const QUEUE: usize = 8;

struct Job {
    reference: Uuid,
    bytes: Bytes,
}

/// The model set `--shadow-model-set` loaded (a pipeline, shown by its hash).
#[derive(Clone)]
pub struct ShadowSet(pub Arc<Pipeline>);

impl std::fmt::Debug for ShadowSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShadowSet({})", self.0.model_hash())
    }
}

/// The shadow scorer of one application.
pub struct Shadow {
    tx: SyncSender<Job>,
    metrics: Metrics,
    pause: Arc<(Mutex<bool>, Condvar)>,
}

impl Shadow {
    /// Starts the worker thread; results are written through `store` on `runtime`.
    pub fn spawn(
        pipeline: Arc<Pipeline>,
        store: Store,
        metrics: Metrics,
        runtime: tokio::runtime::Handle,
    ) -> std::io::Result<Shadow> {
        let (tx, rx) = sync_channel(QUEUE);
        let pause = Arc::new((Mutex::new(false), Condvar::new()));
        let worker = Worker {
            pipeline,
            store,
            metrics: metrics.clone(),
            runtime,
            pause: pause.clone(),
        };
        std::thread::Builder::new()
            .name("livecheck-shadow".into())
            .spawn(move || worker.run(rx))?;
        Ok(Shadow { tx, metrics, pause })
    }

    /// Hand a checked picture over (never waits).
    pub fn submit(&self, reference: Uuid, bytes: Bytes) {
        match self.tx.try_send(Job { reference, bytes }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.count("dropped"),
            Err(TrySendError::Disconnected(_)) => self.count("failed"),
        }
    }

    fn count(&self, outcome: &str) {
        self.metrics.shadow.with_label_values(&[outcome]).inc();
    }

    /// Hold the worker before its next picture until the guard is dropped (tests use it to show
    /// that answers never wait for shadow scoring).
    #[doc(hidden)]
    pub fn pause(&self) -> PauseGuard {
        *self.pause.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
        PauseGuard(self.pause.clone())
    }
}

#[doc(hidden)]
pub struct PauseGuard(Arc<(Mutex<bool>, Condvar)>);

impl Drop for PauseGuard {
    fn drop(&mut self) {
        *self.0 .0.lock().unwrap_or_else(|e| e.into_inner()) = false;
        self.0 .1.notify_all();
    }
}

struct Worker {
    pipeline: Arc<Pipeline>,
    store: Store,
    metrics: Metrics,
    runtime: tokio::runtime::Handle,
    pause: Arc<(Mutex<bool>, Condvar)>,
}

impl Worker {
    fn run(self, rx: Receiver<Job>) {
        lower_priority();
        // Ends when the application (and its sender) is dropped.
        while let Ok(job) = rx.recv() {
            {
                let (lock, cvar) = &*self.pause;
                let mut paused = lock.lock().unwrap_or_else(|e| e.into_inner());
                while *paused {
                    paused = cvar.wait(paused).unwrap_or_else(|e| e.into_inner());
                }
            }
            let outcome = match self.pipeline.check(&job.bytes) {
                Ok(v) => {
                    let score = ShadowScore {
                        model: self.pipeline.model_hash().to_owned(),
                        p_real: f64::from(v.p_real),
                        live: v.live,
                        reason: v.reason,
                    };
                    match self
                        .runtime
                        .block_on(self.store.set_shadow_score(job.reference, &score))
                    {
                        Ok(()) => "scored",
                        Err(e) => {
                            tracing::warn!(reference = %job.reference, error = %e, "shadow score not stored");
                            "failed"
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(reference = %job.reference, error = %e, "shadow scoring failed");
                    "failed"
                }
            };
            self.metrics.shadow.with_label_values(&[outcome]).inc();
        }
    }
}

/// Lowest scheduling priority for the calling thread (Linux: `setpriority` on the thread id,
/// which is per-thread there). Elsewhere the thread keeps the normal priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread's own id; no memory is passed.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        if libc::setpriority(libc::PRIO_PROCESS, tid, 19) != 0 {
            tracing::debug!("shadow worker keeps the normal priority");
        }
    }
}
