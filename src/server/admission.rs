//! Admission of checks by expected waiting time.
//!
//! A check whose image bytes are in hand waits for one of the CPU slots
//! ([`super::AppConfig::max_concurrent_checks`]). It is admitted while the wait it can expect stays
//! within [`super::AppConfig::max_queue_wait`], estimated from the checks already waiting and a
//! moving average of recent service times; beyond that it is shed at once with 503 and a
//! `Retry-After` of the expected wait. A small fixed queue (the old 2 running + 8 queued) shed 98 %
//! of a 16-client burst on two cores although each of those requests would have been served in
//! well under a second, and the clients' immediate retries then spent the CPU on 503s.
//!
//! The same estimate is consulted before a check's body is read ([`Admission::check`]), so a shed
//! request costs no decoding. [`super::AppConfig::max_queued_checks`] stays as a hard ceiling on
//! waiting checks whatever the estimate says (memory, and a wrong estimate).
//!
//! Work on a slot runs on the controller's own threads, one per slot ([`Running::run`]). They
//! were tokio's blocking pool, which starts a new thread whenever none is idle at the instant of
//! the call: a slot freed at the end of a check was taken by the next one before its thread was
//! back in the pool, so checks wandered over many threads, and every one of them kept its own
//! copy of the pipeline's thread-local scratch (decoder, engine, crops) and its own allocator
//! pages. A fixed thread per slot keeps exactly `slots` copies warm.
//!
//! A check on a quiet server borrows an idle slot for its classifiers ([`Admission`]'s
//! [`Spare`] implementation): the slot is lent only while no admitted check is waiting for one,
//! and only for the classifiers' part of the check, so a check that arrives meanwhile waits at
//! most that long. At one client, a check ran on one core while the other was idle.
//!
//! Nothing here reads a clock except [`Running`]'s drop: the estimate is driven by
//! [`Admission::record_service`], so the tests feed it service times directly.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::pipeline::Spare;

/// A closure for a slot thread.
type Job = Box<dyn FnOnce() + Send>;

/// Why work given to [`Running::run`] has no result.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("the work panicked: {0}")]
    Panicked(String),
    #[error("the slot threads have stopped")]
    Stopped,
}

/// Weight of the newest service time in the moving average: about the last 10 checks count.
const EWMA_ALPHA: f64 = 0.1;

/// Why a check was not admitted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shed {
    /// The expected wait is over the bound.
    WaitTooLong { expected: Duration },
    /// The hard ceiling on waiting checks is reached.
    QueueFull,
}

impl Shed {
    /// Seconds a client should wait before retrying: the expected wait, rounded up, 1 to 30.
    pub fn retry_after_secs(&self) -> u64 {
        match self {
            Shed::WaitTooLong { expected } => expected.as_secs_f64().ceil().clamp(1.0, 30.0) as u64,
            Shed::QueueFull => 1,
        }
    }
}

/// The admission controller: CPU slots, the waiting count and the service-time estimate.
#[derive(Clone)]
pub struct Admission {
    shared: Arc<Shared>,
}

struct Shared {
    cpu: Arc<Semaphore>,
    /// The slot threads' queue; they stop when the controller and every [`Running`] are gone.
    jobs: flume::Sender<Job>,
    slots: usize,
    max_wait: Duration,
    max_waiting: usize,
    state: Mutex<State>,
}

struct State {
    /// Admitted checks not yet on a CPU slot.
    waiting: usize,
    /// Moving average of the time a check holds its CPU slot, in seconds.
    service_s: f64,
}

/// An admitted check waiting for its CPU slot. Dropping it (the client went away) gives its place
/// back.
pub struct Ticket {
    shared: Arc<Shared>,
    waiting: bool,
}

/// A check on a CPU slot. Dropping it frees the slot and records how long it was held.
pub struct Running {
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
    started: Instant,
    timed: bool,
}

impl Running {
    /// Work that is not a check (a capture pre-check, a few milliseconds): it holds the slot like
    /// a check, but its time does not enter the service-time estimate, which must stay the
    /// checks' own.
    pub fn untimed(mut self) -> Running {
        self.timed = false;
        self
    }

    /// Runs `work` on a slot thread, then frees the slot (before the result is handed back, as
    /// the slot is what the next check waits for). A panic in `work` is caught and returned.
    /// Dropping the future does not stop `work`: like a check whose client left, it finishes and
    /// its result is dropped.
    pub async fn run<T, F>(self, work: F) -> Result<T, SlotError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let jobs = self.shared.jobs.clone();
        let job: Job = Box::new(move || {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(work));
            drop(self);
            let _ = tx.send(outcome.map_err(|panic| {
                SlotError::Panicked(super::error::panic_message(panic.as_ref()).to_owned())
            }));
        });
        jobs.send(job).map_err(|_| SlotError::Stopped)?;
        rx.await.map_err(|_| SlotError::Stopped)?
    }
}

impl Admission {
    /// `slots` CPU slots (at least 1), shedding beyond `max_wait` of expected waiting or when
    /// more than `max_waiting` checks would be waiting for a slot. `initial_service` is the estimate before the first check
    /// finishes. Starts one thread per slot (named `livecheck-cpu`); fails only if the system
    /// refuses a thread.
    pub fn new(
        slots: usize,
        max_wait: Duration,
        max_waiting: usize,
        initial_service: Duration,
    ) -> std::io::Result<Admission> {
        let slots = slots.clamp(1, Semaphore::MAX_PERMITS);
        let (jobs, queue) = flume::unbounded::<Job>();
        for _ in 0..slots {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name("livecheck-cpu".into())
                .spawn(move || {
                    // Ends when every sender (the controller and each `Running`) is gone.
                    while let Ok(job) = queue.recv() {
                        job();
                    }
                })?;
        }
        Ok(Admission {
            shared: Arc::new(Shared {
                cpu: Arc::new(Semaphore::new(slots)),
                jobs,
                slots,
                max_wait,
                max_waiting,
                state: Mutex::new(State {
                    waiting: 0,
                    service_s: initial_service.as_secs_f64(),
                }),
            }),
        })
    }

    /// The wait a check arriving now can expect before it gets a CPU slot: none while a slot is
    /// free for it, otherwise one service time for every `slots` checks ahead of it.
    pub fn expected_wait(&self) -> Duration {
        self.shared.expected_wait(&self.shared.lock())
    }

    /// Would a check arriving now be admitted? (Nothing is reserved.)
    pub fn check(&self) -> Result<(), Shed> {
        self.shared.decide(&self.shared.lock())
    }

    /// Admits a check (it then counts as waiting until [`Ticket::start`]) or sheds it.
    pub fn try_admit(&self) -> Result<Ticket, Shed> {
        let mut state = self.shared.lock();
        self.shared.decide(&state)?;
        state.waiting += 1;
        Ok(Ticket {
            shared: Arc::clone(&self.shared),
            waiting: true,
        })
    }

    /// Folds one observed service time into the estimate.
    pub fn record_service(&self, took: Duration) {
        self.shared.record(took);
    }

    /// Admitted checks waiting for a CPU slot.
    pub fn waiting(&self) -> usize {
        self.shared.lock().waiting
    }

    /// Checks on a CPU slot now.
    pub fn running(&self) -> usize {
        self.shared.slots - self.shared.cpu.available_permits()
    }

    /// The current service-time estimate.
    pub fn service_estimate(&self) -> Duration {
        Duration::from_secs_f64(self.shared.lock().service_s)
    }

    /// An idle CPU slot for a running check's second thread: only while no admitted check
    /// waits for a slot, so that lending never delays a check that was already waiting.
    fn lend(&self) -> Option<OwnedSemaphorePermit> {
        let state = self.shared.lock();
        if state.waiting > 0 {
            return None;
        }
        Arc::clone(&self.shared.cpu).try_acquire_owned().ok()
    }
}

/// A pointer to the `beside` closure of [`Spare::join`], sent to a slot thread.
struct Beside(*mut (dyn FnMut() + Send + 'static));

// SAFETY: it points to a `dyn FnMut() + Send`, and only the slot thread that receives it calls
// it, while `join` waits (see there).
unsafe impl Send for Beside {}

impl Spare for Admission {
    fn join(&self, here: &mut dyn FnMut(), beside: &mut (dyn FnMut() + Send)) {
        // `beside` handed to an idle slot's thread, or `None` (no idle slot, or the slot
        // threads stopped: a job refused by the queue is dropped unrun).
        let sent = self.lend().and_then(|permit| {
            let (done, finished) = std::sync::mpsc::sync_channel::<std::thread::Result<()>>(1);
            let ptr: *mut (dyn FnMut() + Send + '_) = &mut *beside;
            // SAFETY: only the lifetime is erased. `join` does not return (nor unwind: `here`
            // runs under `catch_unwind`) until the job has either run `beside` to its end (it
            // reports on `done` after the call) or been dropped without calling it (`done` is
            // dropped with it and `recv` fails), so the pointer is never used after `beside`'s
            // borrow ends.
            let ptr: *mut (dyn FnMut() + Send + 'static) = unsafe { std::mem::transmute(ptr) };
            let job = Beside(ptr);
            let job: Job = Box::new(move || {
                let job = job;
                // SAFETY: see above; this thread is the only user of the pointer while `join`
                // waits.
                let ran = std::panic::catch_unwind(AssertUnwindSafe(|| unsafe { (*job.0)() }));
                drop(permit);
                let _ = done.send(ran);
            });
            self.shared.jobs.send(job).ok().map(|()| finished)
        });
        let Some(finished) = sent else {
            here();
            beside();
            return;
        };
        let mine = std::panic::catch_unwind(AssertUnwindSafe(here));
        match finished.recv() {
            Ok(Ok(())) => {}
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            // The job was dropped unrun (the slot threads stopped): run it here.
            Err(_) => beside(),
        }
        if let Err(panic) = mine {
            std::panic::resume_unwind(panic);
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Two numbers, each updated in one statement: a panic elsewhere cannot leave them
        // inconsistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Checks that would wait for a slot if one more arrived now, the newcomer included (0: a
    /// slot is free for it).
    fn queue_with_newcomer(&self, state: &State) -> usize {
        (state.waiting + 1).saturating_sub(self.cpu.available_permits())
    }

    fn expected_wait(&self, state: &State) -> Duration {
        let ahead = self.queue_with_newcomer(state);
        if ahead == 0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(ahead as f64 * state.service_s / self.slots as f64)
    }

    fn decide(&self, state: &State) -> Result<(), Shed> {
        if self.queue_with_newcomer(state) > self.max_waiting {
            return Err(Shed::QueueFull);
        }
        let expected = self.expected_wait(state);
        if expected > self.max_wait {
            return Err(Shed::WaitTooLong { expected });
        }
        Ok(())
    }

    fn record(&self, took: Duration) {
        let mut state = self.lock();
        state.service_s += EWMA_ALPHA * (took.as_secs_f64() - state.service_s);
    }
}

impl Ticket {
    /// Waits for a CPU slot. `None` only if the slots were closed (never, in practice).
    pub async fn start(mut self) -> Option<Running> {
        let permit = Arc::clone(&self.shared.cpu).acquire_owned().await.ok()?;
        self.leave_queue();
        Some(Running {
            shared: Arc::clone(&self.shared),
            _permit: permit,
            started: Instant::now(),
            timed: true,
        })
    }

    fn leave_queue(&mut self) {
        if std::mem::take(&mut self.waiting) {
            let mut state = self.shared.lock();
            state.waiting = state.waiting.saturating_sub(1);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.leave_queue();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.timed {
            self.shared.record(self.started.elapsed());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn assert_ms(d: Duration, ms: f64) {
        assert!(
            (d.as_secs_f64() * 1e3 - ms).abs() < 1e-3,
            "{d:?} is not {ms} ms"
        );
    }

    fn admission(slots: usize, max_wait_ms: u32, max_waiting: usize, service_ms: u32) -> Admission {
        Admission::new(slots, max_wait_ms * MS, max_waiting, service_ms * MS).unwrap()
    }

    #[test]
    fn no_wait_while_a_slot_is_free() {
        let a = admission(2, 2000, 100, 10);
        assert_eq!(a.expected_wait(), Duration::ZERO);
        let t1 = a.try_admit().unwrap();
        // Waiting, but a slot is free for it and for one more.
        assert_eq!(a.waiting(), 1);
        assert_eq!(a.expected_wait(), Duration::ZERO);
        let _t2 = a.try_admit().unwrap();
        // Both slots are spoken for: a third waits one service time per two checks ahead.
        assert_ms(a.expected_wait(), 5.0);
        drop(t1);
        assert_eq!(a.waiting(), 1);
        assert_eq!(a.expected_wait(), Duration::ZERO);
    }

    #[test]
    fn sixteen_clients_on_two_slots_are_all_admitted() {
        // The case that shed 98 % with a fixed queue of 8: 16 checks of 10 ms on 2 slots wait at
        // most 80 ms, far under the 2 s bound.
        let a = admission(2, 2000, 1024, 10);
        let tickets: Vec<_> = (0..16).map(|_| a.try_admit().unwrap()).collect();
        assert_eq!(a.waiting(), 16);
        assert_ms(a.expected_wait(), 75.0);
        drop(tickets);
        assert_eq!(a.waiting(), 0);
    }

    #[test]
    fn sheds_beyond_the_wait_bound_with_the_expected_wait_as_retry_after() {
        // 100 ms per check, 2 slots, 1 s bound: 21 checks fit (the 21st expects 950 ms).
        let a = admission(2, 1000, 1024, 100);
        let held: Vec<_> = (0..21).map(|_| a.try_admit().unwrap()).collect();
        assert_ms(a.expected_wait(), 1000.0);
        assert_eq!(a.check(), Ok(()));
        let _held2 = a.try_admit().unwrap();
        let shed = a.try_admit().err().unwrap();
        let Shed::WaitTooLong { expected } = shed else {
            panic!("{shed:?}")
        };
        assert_ms(expected, 1050.0);
        assert_eq!(a.check(), Err(shed));
        assert_eq!(shed.retry_after_secs(), 2);
        assert_eq!(a.waiting(), 22);
        drop(held);
        assert_eq!(a.check(), Ok(()));
    }

    #[test]
    fn the_estimate_follows_service_times() {
        let a = admission(1, 1000, 1024, 50);
        for _ in 0..200 {
            a.record_service(200 * MS);
        }
        assert!((a.service_estimate().as_secs_f64() - 0.2).abs() < 1e-6);
        // One slot, 200 ms a check: the sixth of six waiting checks expects 1 s (admitted), a
        // seventh 1.2 s (shed).
        let held: Vec<_> = (0..6).map(|_| a.try_admit().unwrap()).collect();
        assert!(a.try_admit().is_err());
        // Faster service lets more in.
        for _ in 0..200 {
            a.record_service(20 * MS);
        }
        assert!(a.try_admit().is_ok());
        drop(held);
    }

    #[test]
    fn the_hard_ceiling_holds_whatever_the_estimate() {
        // Two find a slot, three more may wait for one.
        let a = admission(2, 60_000, 3, 0);
        let held: Vec<_> = (0..5).map(|_| a.try_admit().unwrap()).collect();
        assert_eq!(a.try_admit().err(), Some(Shed::QueueFull));
        assert_eq!(Shed::QueueFull.retry_after_secs(), 1);
        drop(held);
    }

    /// Runs `join` with closures that record which thread ran them.
    fn join_threads(a: &Admission) -> (std::thread::ThreadId, std::thread::ThreadId) {
        let (mut here, mut beside) = (None, None);
        a.join(
            &mut || here = Some(std::thread::current().id()),
            &mut || beside = Some(std::thread::current().id()),
        );
        (here.unwrap(), beside.unwrap())
    }

    #[test]
    fn an_idle_slot_is_lent_and_given_back() {
        let a = admission(2, 2000, 16, 10);
        let (here, beside) = join_threads(&a);
        assert_eq!(here, std::thread::current().id());
        assert_ne!(beside, here, "an idle slot runs `beside`");
        // The slot is free again once `join` has returned.
        assert_eq!(a.running(), 0);
        assert_ne!(join_threads(&a).1, here);
    }

    #[test]
    fn no_slot_is_lent_while_a_check_waits() {
        let a = admission(2, 2000, 16, 10);
        // Admitted, not yet on a slot: lending now would delay it.
        let waiting = a.try_admit().unwrap();
        let (here, beside) = join_threads(&a);
        assert_eq!((here, beside), (std::thread::current().id(), here));
        drop(waiting);
        assert_ne!(join_threads(&a).1, std::thread::current().id());
    }

    #[tokio::test]
    async fn no_slot_is_lent_when_every_slot_is_busy() {
        let a = admission(2, 2000, 16, 10);
        let r1 = a.try_admit().unwrap().start().await.unwrap();
        let r2 = a.try_admit().unwrap().start().await.unwrap();
        let (here, beside) = join_threads(&a);
        assert_eq!(beside, here);
        drop((r1, r2));
        assert_ne!(join_threads(&a).1, std::thread::current().id());
    }

    #[tokio::test]
    async fn a_lent_slot_delays_a_new_check_only_until_join_returns() {
        let a = admission(1, 2000, 16, 10);
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let wait = std::sync::Mutex::new(wait);
        let lent = a.clone();
        // `beside` holds the one slot until told to finish.
        let joiner = std::thread::spawn(move || {
            lent.join(&mut || {}, &mut || {
                wait.lock().unwrap().recv().unwrap();
            })
        });
        while a.running() == 0 {
            tokio::task::yield_now().await;
        }
        let ticket = a.try_admit().unwrap();
        let start = tokio::spawn(ticket.start());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!start.is_finished(), "the slot is still lent");
        go.send(()).unwrap();
        joiner.join().unwrap();
        let running = start.await.unwrap().unwrap();
        assert_eq!(a.running(), 1);
        drop(running);
    }

    #[test]
    fn panics_on_either_side_reach_the_caller_after_both_ran() {
        let a = admission(2, 2000, 16, 10);
        let ran = std::sync::atomic::AtomicBool::new(false);
        let caught = std::panic::catch_unwind(AssertUnwindSafe(|| {
            a.join(&mut || panic!("here"), &mut || {
                std::thread::sleep(Duration::from_millis(20));
                ran.store(true, std::sync::atomic::Ordering::SeqCst);
            })
        }));
        assert!(caught.is_err());
        assert!(
            ran.load(std::sync::atomic::Ordering::SeqCst),
            "`beside` finished first"
        );
        let caught = std::panic::catch_unwind(AssertUnwindSafe(|| {
            a.join(&mut || {}, &mut || panic!("beside"))
        }));
        let message = caught.err().and_then(|p| p.downcast_ref::<&str>().copied());
        assert_eq!(message, Some("beside"));
        // The slots survive both: the permit came back and the threads still run work.
        assert_eq!(a.running(), 0);
        assert_ne!(join_threads(&a).1, std::thread::current().id());
    }

    #[test]
    fn retry_after_is_rounded_up_and_bounded() {
        let s = |ms| Shed::WaitTooLong { expected: ms * MS }.retry_after_secs();
        assert_eq!(s(1), 1);
        assert_eq!(s(2001), 3);
        assert_eq!(s(3_600_000), 30);
    }

    #[tokio::test]
    async fn no_queue_means_fail_fast_once_the_slots_are_taken() {
        let a = admission(1, 60_000, 0, 10);
        let running = a.try_admit().unwrap().start().await.unwrap();
        assert_eq!(a.try_admit().err(), Some(Shed::QueueFull));
        drop(running);
        assert!(a.try_admit().is_ok());
    }

    #[tokio::test]
    async fn tickets_run_on_the_cpu_slots_in_turn() {
        let a = admission(1, 2000, 16, 10);
        let first = a.try_admit().unwrap().start().await.unwrap();
        assert_eq!(a.running(), 1);
        let second = a.try_admit().unwrap();
        assert_eq!(a.waiting(), 1);
        let waiter = tokio::spawn(second.start());
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "the only slot is taken");
        drop(first);
        let second = waiter.await.unwrap().unwrap();
        assert_eq!(a.waiting(), 0);
        assert_eq!(a.running(), 1);
        drop(second);
        assert_eq!(a.running(), 0);
    }

    #[tokio::test]
    async fn work_runs_on_one_fixed_thread_per_slot() {
        let a = admission(2, 2000, 64, 10);
        let mut runs = Vec::new();
        for _ in 0..40 {
            let a = a.clone();
            runs.push(tokio::spawn(async move {
                let running = a.try_admit().unwrap().start().await.unwrap();
                running
                    .run(|| {
                        let me = std::thread::current();
                        (me.name().map(str::to_owned), me.id())
                    })
                    .await
                    .unwrap()
            }));
        }
        let mut threads = std::collections::HashSet::new();
        for run in runs {
            let (name, id) = run.await.unwrap();
            assert_eq!(name.as_deref(), Some("livecheck-cpu"));
            threads.insert(id);
        }
        assert!(threads.len() <= 2, "{} threads for 2 slots", threads.len());
        assert_eq!(a.running(), 0);
        assert_eq!(a.waiting(), 0);
    }

    #[tokio::test]
    async fn a_panic_is_an_error_and_frees_the_slot() {
        let a = admission(1, 2000, 4, 10);
        let running = a.try_admit().unwrap().start().await.unwrap();
        let err = running
            .run(|| -> u32 { panic!("engine fault") })
            .await
            .unwrap_err();
        assert!(
            matches!(&err, SlotError::Panicked(m) if m == "engine fault"),
            "{err:?}"
        );
        assert_eq!(a.running(), 0);
        // The thread survived: the next check runs.
        let running = a.try_admit().unwrap().start().await.unwrap();
        assert_eq!(running.run(|| 7).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn the_slot_is_free_before_the_result_arrives() {
        let a = admission(1, 2000, 4, 10);
        let running = a.try_admit().unwrap().start().await.unwrap();
        let probe = a.clone();
        let running_during = running.run(move || probe.running()).await.unwrap();
        assert_eq!(running_during, 1);
        assert_eq!(a.running(), 0);
    }
}
