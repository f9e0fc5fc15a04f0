//! Per-key rate limiting: a GCRA limiter (governor) keyed by API key id. A key may burst up to its
//! per-minute quota, then gets one request every `60 / quota` seconds.

use std::num::NonZeroU32;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use super::error::{ApiError, X_RATELIMIT_LIMIT, X_RATELIMIT_REMAINING, X_RATELIMIT_RESET};

type Limiter =
    RateLimiter<String, DashMapStateStore<String>, DefaultClock, StateInformationMiddleware>;

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

/// Per-key limiter. `None` quota disables limiting.
pub struct KeyRateLimiter {
    per_minute: NonZeroU32,
    limiter: Limiter,
    clock: DefaultClock,
}

impl KeyRateLimiter {
    /// A limiter allowing `per_minute` requests per minute and key (burst of the same size).
    pub fn new(per_minute: NonZeroU32) -> Self {
        let clock = DefaultClock::default();
        let limiter = RateLimiter::dashmap_with_clock(Quota::per_minute(per_minute), clock.clone())
            .with_middleware::<StateInformationMiddleware>();
        KeyRateLimiter {
            per_minute,
            limiter,
            clock,
        }
    }

    /// Counts one request for `key`: `Ok` with header info, or `Err(ApiError::RateLimited)`.
    pub fn check(&self, key: &str) -> Result<RateLimitInfo, ApiError> {
        let limit = self.per_minute.get();
        let key = key.to_owned();
        match self.limiter.check_key(&key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let reset_secs = if remaining >= limit {
                    0
                } else {
                    ceil_secs(self.replenish_interval())
                };
                Ok(RateLimitInfo {
                    limit,
                    remaining,
                    reset_secs,
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Err(ApiError::RateLimited {
                    limit,
                    retry_after_secs: ceil_secs(wait).max(1),
                })
            }
        }
    }

    fn replenish_interval(&self) -> Duration {
        Duration::from_secs(60) / self.per_minute.get()
    }

    /// Drops state of keys whose bucket is full again (bounded memory under many keys).
    pub fn retain_recent(&self) {
        self.limiter.retain_recent();
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
    fn ceil() {
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
        assert_eq!(ceil_secs(Duration::from_millis(2001)), 3);
    }
}
