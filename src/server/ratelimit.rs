//! Per-key rate limiting: a GCRA limiter keyed by API key id. A key may burst up to its
//! per-minute quota, then gets one request every `60 / quota` seconds.
//!
//! Hand-written (about 60 lines) rather than `governor`: a request the server refuses with 503
//! must not use up the caller's allowance, which needs the cell given back afterwards, and
//! governor has no way to return one. GCRA keeps one instant per key (the theoretical arrival
//! time), so a refund is a subtraction.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue};

use super::error::{ApiError, X_RATELIMIT_LIMIT, X_RATELIMIT_REMAINING, X_RATELIMIT_RESET};

/// The outcome of an allowed request, for the `X-RateLimit-*` headers of the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitInfo {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until at least one more request is allowed (0 when the burst is full).
    pub reset_secs: u64,
}

impl RateLimitInfo {
    /// Adds `X-RateLimit-Limit`, `-Remaining` and `-Reset` to a response.
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(X_RATELIMIT_LIMIT, HeaderValue::from(self.limit));
        headers.insert(X_RATELIMIT_REMAINING, HeaderValue::from(self.remaining));
        headers.insert(X_RATELIMIT_RESET, HeaderValue::from(self.reset_secs));
    }
}

/// Per-key limiter.
pub struct KeyRateLimiter {
    per_minute: NonZeroU32,
    /// `60 s / per_minute`: one request's share of the quota.
    interval: Duration,
    /// Theoretical arrival time per key; a key whose TAT has passed has its whole burst.
    tat: Mutex<HashMap<String, Instant>>,
}

impl KeyRateLimiter {
    /// A limiter allowing `per_minute` requests per minute and key (burst of the same size).
    pub fn new(per_minute: NonZeroU32) -> Self {
        KeyRateLimiter {
            per_minute,
            interval: Duration::from_secs(60) / per_minute.get(),
            tat: Mutex::new(HashMap::new()),
        }
    }

    fn window(&self) -> Duration {
        self.interval * self.per_minute.get()
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        // The map holds plain instants: a panic elsewhere cannot leave it inconsistent.
        self.tat
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts one request for `key`: `Ok` with header info, or `Err(ApiError::RateLimited)`.
    pub fn check(&self, key: &str) -> Result<RateLimitInfo, ApiError> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<RateLimitInfo, ApiError> {
        let limit = self.per_minute.get();
        let mut table = self.table();
        let tat = table.get(key).copied().unwrap_or(now).max(now);
        let next = tat + self.interval;
        let ahead = next - now;
        if ahead > self.window() {
            return Err(ApiError::RateLimited {
                limit,
                retry_after_secs: ceil_secs(ahead - self.window()).max(1),
            });
        }
        table.insert(key.to_owned(), next);
        let remaining = ((self.window() - ahead).as_nanos() / self.interval.as_nanos()) as u32;
        let reset_secs = if remaining >= limit {
            0
        } else {
            ceil_secs(self.interval)
        };
        Ok(RateLimitInfo {
            limit,
            remaining,
            reset_secs,
        })
    }

    /// Gives back the allowance of one request counted for `key` (the server refused it with
    /// 503, so the caller should not pay for it).
    pub fn refund(&self, key: &str) {
        self.refund_at(key, Instant::now());
    }

    fn refund_at(&self, key: &str, now: Instant) {
        let mut table = self.table();
        if let Some(tat) = table.get_mut(key) {
            match tat.checked_sub(self.interval) {
                Some(earlier) if earlier > now => *tat = earlier,
                _ => {
                    table.remove(key);
                }
            }
        }
    }

    /// Drops state of keys whose burst is full again (bounded memory under many keys).
    pub fn retain_recent(&self) {
        let now = Instant::now();
        self.table().retain(|_, tat| *tat > now);
    }
}

fn ceil_secs(d: Duration) -> u64 {
    let secs = d.as_secs();
    if d.subsec_nanos() > 0 {
        secs + 1
    } else {
        secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refuse_with_retry_after() {
        let rl = KeyRateLimiter::new(NonZeroU32::new(3).unwrap());
        let a = rl.check("a").unwrap();
        assert_eq!((a.limit, a.remaining), (3, 2));
        assert_eq!(a.reset_secs, 20);
        assert_eq!(rl.check("a").unwrap().remaining, 1);
        assert_eq!(rl.check("a").unwrap().remaining, 0);
        match rl.check("a") {
            Err(ApiError::RateLimited {
                limit,
                retry_after_secs,
            }) => {
                assert_eq!(limit, 3);
                // One request every 20 s; the 4th comes almost immediately after the 3rd.
                assert!((19..=20).contains(&retry_after_secs), "{retry_after_secs}");
            }
            other => panic!("expected RateLimited, got {other:?}"),
        }
        // Another key is independent.
        assert_eq!(rl.check("b").unwrap().remaining, 2);
    }

    #[test]
    fn a_refund_gives_one_request_back() {
        let rl = KeyRateLimiter::new(NonZeroU32::new(2).unwrap());
        let t0 = Instant::now();
        assert_eq!(rl.check_at("a", t0).unwrap().remaining, 1);
        assert_eq!(rl.check_at("a", t0).unwrap().remaining, 0);
        assert!(rl.check_at("a", t0).is_err());
        rl.refund_at("a", t0);
        assert_eq!(rl.check_at("a", t0).unwrap().remaining, 0);
        assert!(rl.check_at("a", t0).is_err());
        // Refunds never create credit beyond a full burst.
        for _ in 0..5 {
            rl.refund_at("a", t0);
        }
        assert_eq!(rl.check_at("a", t0).unwrap().remaining, 1);
        // Time refills the burst: after 30 s one request is back.
        assert_eq!(rl.check_at("a", t0).unwrap().remaining, 0);
        let later = t0 + Duration::from_secs(30);
        assert_eq!(rl.check_at("a", later).unwrap().remaining, 0);
        assert!(rl.check_at("a", later).is_err());
        // Unknown keys refund nothing.
        rl.refund_at("zzz", t0);
        rl.retain_recent();
    }

    #[test]
    fn ceil() {
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
        assert_eq!(ceil_secs(Duration::from_millis(2001)), 3);
    }
}
