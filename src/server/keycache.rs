//! A short-lived cache of authenticated API keys, so that a busy key does not cost a database
//! lookup on every request.
//!
//! Entries are keyed by the SHA-256 of the token (the token itself is never kept) and live for
//! [`super::AppConfig::key_cache_ttl`]. Consequence, documented for operators: a key revoked with
//! `livecheck keys revoke` (from any process or replica) stops working within that time, not at
//! once; a TTL of zero turns the cache off and makes revocation immediate. Unknown or revoked tokens
//! are never cached, so a new key works at once and a flood of bad tokens cannot fill the cache.
//! The cache holds at most [`MAX_ENTRIES`] keys; when full, expired entries go first, then all.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::store::ApiKey;

/// Most keys held at once.
pub const MAX_ENTRIES: usize = 10_000;

/// Authenticated keys by token hash, each until its expiry.
pub struct KeyCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (ApiKey, Instant)>>,
}

impl KeyCache {
    /// A cache keeping keys for `ttl` (zero: keeps nothing).
    pub fn new(ttl: Duration) -> KeyCache {
        KeyCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, (ApiKey, Instant)>> {
        // Each update is one map operation: a panic elsewhere cannot leave it half-done.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The cached key of `token`, if it was authenticated less than the TTL ago.
    pub fn get(&self, token: &str) -> Option<ApiKey> {
        self.get_at(token, Instant::now())
    }

    /// Remembers that `token` authenticated as `key`.
    pub fn insert(&self, token: &str, key: &ApiKey) {
        self.insert_at(token, key, Instant::now());
    }

    /// Keys held now (expired ones included until they are swept).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get_at(&self, token: &str, now: Instant) -> Option<ApiKey> {
        if self.ttl.is_zero() {
            return None;
        }
        let hash = crate::sha256_hex(token.as_bytes());
        let mut entries = self.lock();
        match entries.get(&hash) {
            Some((key, expires)) if now < *expires => Some(key.clone()),
            Some(_) => {
                entries.remove(&hash);
                None
            }
            None => None,
        }
    }

    fn insert_at(&self, token: &str, key: &ApiKey, now: Instant) {
        if self.ttl.is_zero() || key.is_revoked() {
            return;
        }
        let hash = crate::sha256_hex(token.as_bytes());
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&hash) {
            entries.retain(|_, (_, expires)| now < *expires);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(hash, (key.clone(), now + self.ttl));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use uuid::Uuid;

    fn key() -> ApiKey {
        ApiKey {
            id: Uuid::new_v4(),
            name: "k".into(),
            prefix: "lc_abcdefgh".into(),
            created_at: Utc::now(),
            last_used_at: None,
            revoked_at: None,
        }
    }

    #[test]
    fn a_key_is_served_from_the_cache_until_its_ttl_ends() {
        let cache = KeyCache::new(Duration::from_secs(5));
        let k = key();
        let t0 = Instant::now();
        assert!(cache.get_at("lc_a", t0).is_none());
        cache.insert_at("lc_a", &k, t0);
        assert_eq!(cache.get_at("lc_a", t0).unwrap().id, k.id);
        assert_eq!(
            cache
                .get_at("lc_a", t0 + Duration::from_millis(4999))
                .unwrap()
                .id,
            k.id
        );
        assert!(cache.get_at("lc_a", t0 + Duration::from_secs(5)).is_none());
        assert!(cache.is_empty(), "an expired entry is dropped when seen");
        // Another token, even one differing in a byte, is not this key.
        cache.insert_at("lc_a", &k, t0);
        assert!(cache.get_at("lc_b", t0).is_none());
    }

    #[test]
    fn the_token_itself_is_not_kept() {
        let cache = KeyCache::new(Duration::from_secs(5));
        cache.insert("lc_secret-token", &key());
        let entries = cache.lock();
        assert!(entries.keys().all(|k| !k.contains("secret")));
        assert!(entries.contains_key(&crate::sha256_hex(b"lc_secret-token")));
    }

    #[test]
    fn zero_ttl_and_revoked_keys_are_never_cached() {
        let off = KeyCache::new(Duration::ZERO);
        off.insert("lc_a", &key());
        assert!(off.get("lc_a").is_none());
        assert!(off.is_empty());
        let cache = KeyCache::new(Duration::from_secs(5));
        let mut revoked = key();
        revoked.revoked_at = Some(Utc::now());
        cache.insert("lc_a", &revoked);
        assert!(cache.get("lc_a").is_none());
    }

    #[test]
    fn a_full_cache_sweeps_expired_entries_then_everything() {
        let cache = KeyCache::new(Duration::from_secs(5));
        let t0 = Instant::now();
        let k = key();
        for i in 0..MAX_ENTRIES {
            cache.insert_at(&format!("lc_{i}"), &k, t0);
        }
        assert_eq!(cache.len(), MAX_ENTRIES);
        // All still fresh: the cache starts over rather than grow.
        cache.insert_at("lc_new", &k, t0);
        assert_eq!(cache.len(), 1);
        for i in 0..MAX_ENTRIES - 1 {
            cache.insert_at(&format!("lc_{i}"), &k, t0);
        }
        // Later, every old entry has expired: they are swept and the fresh one stays.
        let later = t0 + Duration::from_secs(6);
        cache.insert_at("lc_fresh", &k, later);
        cache.insert_at("lc_fresher", &k, later);
        assert_eq!(cache.len(), 2);
        assert!(cache.get_at("lc_fresh", later).is_some());
    }
}
