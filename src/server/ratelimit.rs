//! Per-key rate limiting: GCRA keyed by API key id. A key may burst up to its per-minute quota,
//! then gets one request every `60 / quota` seconds.
//!
//! Two places hold the state:
//! - [`KeyRateLimiter`], in this process: the limit holds per replica.
//! - [`SharedRateLimiter`], in Redis (`--redis-url`): one atomic Lua step per request on the
//!   key's theoretical arrival time (TAT), timed by the Redis server's clock, so the limit holds
//!   across every replica that uses the same Redis and key prefix.
//!
//! [`RateLimiter`] puts them together. When Redis cannot answer within its timeout (down,
//! unreachable, slow), the request is counted by the replica's own limiter instead: limits degrade
//! to per replica rather than to none (fail open to the local limit) and no request waits on a
//! dead Redis for more than the timeout. Each failure increments
//! `livecheck_ratelimit_redis_errors_total`; the switch to local limits and back is logged once
//! each way; after a failure Redis is left alone for [`REDIS_RETRY_AFTER`].
//!
//! Hand-written (GCRA is about 30 lines) rather than `governor`: a request the server refuses
//! with 503 must not use up the caller's allowance, which needs the cell given back afterwards,
//! and governor has no way to return one. GCRA keeps one instant per key, so a refund is a
//! subtraction, in Rust and in the Lua script alike.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue};
use prometheus::IntCounter;

use super::error::{ApiError, X_RATELIMIT_LIMIT, X_RATELIMIT_REMAINING, X_RATELIMIT_RESET};

/// After Redis fails, requests use the local limiter for this long before Redis is tried again
/// (so a Redis that times out costs one timeout per second, not one per request).
pub const REDIS_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Which limiter counted a request (a refund must go back to the same one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// This replica's own limiter.
    Local,
    /// The shared limiter in Redis.
    Shared,
}

/// The outcome of an allowed request, for the `X-RateLimit-*` headers of the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitInfo {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until at least one more request is allowed (0 when the burst is full).
    pub reset_secs: u64,
    /// Which limiter counted it.
    pub counter: Counter,
}

impl RateLimitInfo {
    /// Adds `X-RateLimit-Limit`, `-Remaining` and `-Reset` to a response.
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(X_RATELIMIT_LIMIT, HeaderValue::from(self.limit));
        headers.insert(X_RATELIMIT_REMAINING, HeaderValue::from(self.remaining));
        headers.insert(X_RATELIMIT_RESET, HeaderValue::from(self.reset_secs));
    }
}

/// The quota's arithmetic, shared by both limiters.
#[derive(Debug, Clone, Copy)]
struct Quota {
    per_minute: NonZeroU32,
    /// `60 s / per_minute`: one request's share of the quota.
    interval: Duration,
}

impl Quota {
    fn new(per_minute: NonZeroU32) -> Self {
        Quota {
            per_minute,
            interval: Duration::from_secs(60) / per_minute.get(),
        }
    }

    /// The whole burst: `interval x per_minute`.
    fn window(&self) -> Duration {
        self.interval * self.per_minute.get()
    }

    /// `(interval, window)` in whole microseconds: the units of the Redis script.
    fn micros(&self) -> (u64, u64) {
        let interval = self.interval.as_micros() as u64;
        (interval, interval * u64::from(self.per_minute.get()))
    }

    /// The refusal of a request whose new TAT would lie `over` beyond the window.
    fn refused(&self, over: Duration) -> ApiError {
        ApiError::RateLimited {
            limit: self.per_minute.get(),
            retry_after_secs: ceil_secs(over).max(1),
        }
    }

    /// The answer for a request whose new TAT would lie `ahead` of now.
    fn outcome(&self, ahead: Duration, counter: Counter) -> Result<RateLimitInfo, ApiError> {
        let limit = self.per_minute.get();
        if ahead > self.window() {
            return Err(self.refused(ahead - self.window()));
        }
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
            counter,
        })
    }
}

/// Per-key limiter in this process.
pub struct KeyRateLimiter {
    quota: Quota,
    /// Theoretical arrival time per key; a key whose TAT has passed has its whole burst.
    tat: Mutex<HashMap<String, Instant>>,
}

impl KeyRateLimiter {
    /// A limiter allowing `per_minute` requests per minute and key (burst of the same size).
    pub fn new(per_minute: NonZeroU32) -> Self {
        KeyRateLimiter {
            quota: Quota::new(per_minute),
            tat: Mutex::new(HashMap::new()),
        }
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
        let mut table = self.table();
        let tat = table.get(key).copied().unwrap_or(now).max(now);
        let next = tat + self.quota.interval;
        let info = self.quota.outcome(next - now, Counter::Local)?;
        table.insert(key.to_owned(), next);
        Ok(info)
    }

    /// Gives back the allowance of one request counted for `key` (the server refused it with
    /// 503, so the caller should not pay for it).
    pub fn refund(&self, key: &str) {
        self.refund_at(key, Instant::now());
    }

    fn refund_at(&self, key: &str, now: Instant) {
        let mut table = self.table();
        if let Some(tat) = table.get_mut(key) {
            match tat.checked_sub(self.quota.interval) {
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

/// The GCRA step in Redis, atomic because a script runs alone. Times are microseconds of the
/// Redis server's clock (`TIME`), so replicas with skewed clocks still share one timeline.
/// KEYS[1]: the key's TAT; ARGV: interval (us), window (us), `1` to count a request or `0` to
/// refund one. Returns `{allowed, ahead}`: whether the request is allowed and how far ahead of now
/// its new TAT lies (us). The key expires when its TAT passes (a full burst needs no state).
const GCRA_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if ARGV[3] == '0' then
  if tat then
    local earlier = tat - interval
    if earlier > now then
      redis.call('SET', KEYS[1], string.format('%.0f', earlier), 'PX', math.ceil((earlier - now) / 1000))
    else
      redis.call('DEL', KEYS[1])
    end
  end
  return {1, 0}
end
if not tat or tat < now then tat = now end
local nxt = tat + interval
local ahead = nxt - now
if ahead > window then return {0, ahead} end
redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', math.ceil(ahead / 1000))
return {1, ahead}
"#;

/// Where the shared limiter keeps its state, and how long it waits for it.
#[derive(Clone)]
pub struct RedisConfig {
    /// `redis://[USER:PASSWORD@]HOST:PORT[/DB]` (or `rediss://` for TLS).
    pub url: String,
    /// Prepended to every key (`{prefix}ratelimit:{key id}`), so that several deployments can
    /// share one Redis.
    pub key_prefix: String,
    /// Longest wait for one Redis round trip (connecting included) before the request is counted
    /// locally instead.
    pub timeout: Duration,
}

impl std::fmt::Debug for RedisConfig {
    /// Never shows the URL: it may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &"<redacted>")
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Failure of one Redis round trip.
#[derive(Debug, thiserror::Error)]
enum RedisFailure {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
}

/// The per-key limiter in Redis, shared by every replica using the same Redis and key prefix.
pub struct SharedRateLimiter {
    quota: Quota,
    conn: redis::aio::ConnectionManager,
    script: redis::Script,
    prefix: String,
    timeout: Duration,
    /// Set after a failure: until then, requests are counted locally without asking Redis.
    retry_at: Mutex<Option<Instant>>,
    /// True while requests are counted locally because Redis failed (for the log lines).
    degraded: AtomicBool,
    errors: IntCounter,
}

impl SharedRateLimiter {
    /// A limiter on the Redis at `config.url`. Connects lazily: a Redis that is down at start
    /// only means local limits until it answers. Errors: a malformed URL.
    pub fn new(
        config: &RedisConfig,
        per_minute: NonZeroU32,
        errors: IntCounter,
    ) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(config.url.as_str())?;
        let manager = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let conn = redis::aio::ConnectionManager::new_lazy_with_config(client, manager)?;
        Ok(SharedRateLimiter {
            quota: Quota::new(per_minute),
            conn,
            script: redis::Script::new(GCRA_LUA),
            prefix: config.key_prefix.clone(),
            timeout: config.timeout,
            retry_at: Mutex::new(None),
            degraded: AtomicBool::new(false),
            errors,
        })
    }

    fn redis_key(&self, key: &str) -> String {
        format!("{}ratelimit:{key}", self.prefix)
    }

    /// One script call, bounded by the timeout.
    async fn step(&self, key: &str, take: bool) -> Result<(i64, i64), RedisFailure> {
        let mut conn = self.conn.clone();
        let (interval_us, window_us) = self.quota.micros();
        let mut call = self.script.key(self.redis_key(key));
        call.arg(interval_us).arg(window_us).arg(u8::from(take));
        match tokio::time::timeout(self.timeout, call.invoke_async(&mut conn)).await {
            Ok(reply) => Ok(reply?),
            Err(_) => Err(RedisFailure::Timeout(self.timeout)),
        }
    }

    fn backing_off(&self) -> bool {
        let retry_at = self.retry_at.lock().unwrap_or_else(|p| p.into_inner());
        retry_at.is_some_and(|at| Instant::now() < at)
    }

    fn failed(&self, err: &RedisFailure) {
        self.errors.inc();
        *self.retry_at.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Instant::now() + REDIS_RETRY_AFTER);
        if !self.degraded.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                error = %err,
                "shared rate limit: Redis failed; counting requests per replica until it answers"
            );
        }
    }

    fn answered(&self) {
        if self.degraded.swap(false, Ordering::Relaxed) {
            tracing::info!("shared rate limit: Redis answers again; limits are shared again");
        }
    }

    /// Counts one request in Redis; `None` when Redis did not answer (count it locally).
    async fn check(&self, key: &str) -> Option<Result<RateLimitInfo, ApiError>> {
        if self.backing_off() {
            return None;
        }
        match self.step(key, true).await {
            Ok((allowed, ahead)) => {
                self.answered();
                let ahead = Duration::from_micros(ahead.max(0) as u64);
                Some(if allowed == 1 {
                    self.quota
                        .outcome(ahead.min(self.quota.window()), Counter::Shared)
                } else {
                    // Redis compared in whole microseconds: its decision stands.
                    let (_, window_us) = self.quota.micros();
                    Err(self
                        .quota
                        .refused(ahead.saturating_sub(Duration::from_micros(window_us))))
                })
            }
            Err(err) => {
                self.failed(&err);
                None
            }
        }
    }

    /// Gives one request back in Redis, in the background (the response does not wait for it).
    fn refund(self: &Arc<Self>, key: &str) {
        let this = Arc::clone(self);
        let key = key.to_owned();
        tokio::spawn(async move {
            if let Err(err) = this.step(&key, false).await {
                this.failed(&err);
            }
        });
    }
}

/// The limiter the server consults: shared in Redis when configured, with this replica's own
/// limiter as the fallback while Redis fails; otherwise this replica's own limiter.
pub struct RateLimiter {
    local: KeyRateLimiter,
    shared: Option<Arc<SharedRateLimiter>>,
}

impl RateLimiter {
    /// A per-replica limiter.
    pub fn local(per_minute: NonZeroU32) -> Self {
        RateLimiter {
            local: KeyRateLimiter::new(per_minute),
            shared: None,
        }
    }

    /// A limiter shared through Redis, falling back to a per-replica one.
    pub fn shared(
        per_minute: NonZeroU32,
        redis: &RedisConfig,
        errors: IntCounter,
    ) -> Result<Self, redis::RedisError> {
        Ok(RateLimiter {
            local: KeyRateLimiter::new(per_minute),
            shared: Some(Arc::new(SharedRateLimiter::new(redis, per_minute, errors)?)),
        })
    }

    /// Counts one request for `key`: `Ok` with header info, or `Err(ApiError::RateLimited)`.
    pub async fn check(&self, key: &str) -> Result<RateLimitInfo, ApiError> {
        if let Some(shared) = &self.shared {
            if let Some(answer) = shared.check(key).await {
                return answer;
            }
        }
        self.local.check(key)
    }

    /// Gives back one request counted for `key` by `counter`.
    pub fn refund(&self, key: &str, counter: Counter) {
        match (counter, &self.shared) {
            (Counter::Shared, Some(shared)) => shared.refund(key),
            _ => self.local.refund(key),
        }
    }

    /// Drops local state of keys whose burst is full again (Redis expires its keys by itself).
    pub fn retain_recent(&self) {
        self.local.retain_recent();
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
