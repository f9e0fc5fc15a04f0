//! Bounded concurrency for image fetches, separate from the CPU slots of checks.
//!
//! A fetch waits on someone else's server for up to `--fetch-timeout`. When fetches held check
//! slots, ten URLs that never answered locked every client out for the whole timeout. Now a fetch
//! holds a fetch slot only: at most `max_concurrent_fetches` at once (503 beyond, as for any
//! overload) and at most `max_fetches_per_key` per API key (429 beyond: that key is the one
//! waiting on slow hosts). A check takes a CPU-side admission slot only once its bytes are in hand.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use super::error::ApiError;

/// Global and per-key fetch slots.
pub struct FetchSlots {
    global: Arc<Semaphore>,
    per_key: usize,
    in_flight: Arc<Mutex<HashMap<Uuid, usize>>>,
}

/// A held fetch slot; dropping it frees both the global and the key's share.
#[derive(Debug)]
pub struct FetchSlot {
    _global: OwnedSemaphorePermit,
    key: Uuid,
    in_flight: Arc<Mutex<HashMap<Uuid, usize>>>,
}

fn lock(table: &Mutex<HashMap<Uuid, usize>>) -> MutexGuard<'_, HashMap<Uuid, usize>> {
    // Plain counters: a panic elsewhere cannot leave the map inconsistent.
    table
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl FetchSlots {
    pub fn new(global: usize, per_key: usize) -> Self {
        FetchSlots {
            global: Arc::new(Semaphore::new(global.min(Semaphore::MAX_PERMITS))),
            per_key,
            in_flight: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Takes a slot for `key` without waiting: [`ApiError::TooManyFetches`] when the key is at
    /// its own limit, [`ApiError::Overloaded`] when all fetch slots are taken.
    pub fn try_acquire(&self, key: Uuid) -> Result<FetchSlot, ApiError> {
        let mut table = lock(&self.in_flight);
        let mine = table.get(&key).copied().unwrap_or(0);
        if mine >= self.per_key {
            return Err(ApiError::TooManyFetches {
                limit: self.per_key,
                retry_after_secs: 1,
            });
        }
        let global = self
            .global
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::Overloaded {
                retry_after_secs: 1,
            })?;
        table.insert(key, mine + 1);
        Ok(FetchSlot {
            _global: global,
            key,
            in_flight: Arc::clone(&self.in_flight),
        })
    }

    /// Fetches in flight for `key`.
    #[cfg(test)]
    fn in_flight(&self, key: Uuid) -> usize {
        lock(&self.in_flight).get(&key).copied().unwrap_or(0)
    }
}

impl Drop for FetchSlot {
    fn drop(&mut self) {
        let mut table = lock(&self.in_flight);
        if let Some(n) = table.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                table.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_key_then_global_limits() {
        let slots = FetchSlots::new(3, 2);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let a1 = slots.try_acquire(a).unwrap();
        let _a2 = slots.try_acquire(a).unwrap();
        assert!(matches!(
            slots.try_acquire(a),
            Err(ApiError::TooManyFetches { limit: 2, .. })
        ));
        let _b1 = slots.try_acquire(b).unwrap();
        // Global cap of 3 reached: b's second fetch is refused as overload, and the refusal does
        // not count against b.
        assert!(matches!(
            slots.try_acquire(b),
            Err(ApiError::Overloaded { .. })
        ));
        assert_eq!(slots.in_flight(b), 1);
        drop(a1);
        assert_eq!(slots.in_flight(a), 1);
        let _b2 = slots.try_acquire(b).unwrap();
        assert_eq!(slots.in_flight(b), 2);
    }

    #[test]
    fn counters_vanish_when_idle() {
        let slots = FetchSlots::new(1, 1);
        let k = Uuid::new_v4();
        drop(slots.try_acquire(k).unwrap());
        assert_eq!(slots.in_flight(k), 0);
        assert!(lock(&slots.in_flight).is_empty());
        drop(slots.try_acquire(k).unwrap());
    }
}
