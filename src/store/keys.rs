//! API keys: creation, listing, revocation and token authentication.
//!
//! A token is `lc_` followed by 32 bytes from the operating-system CSPRNG, base64url without
//! padding (46 characters in all). Only its SHA-256 (lowercase hex) is stored, plus the first 11
//! characters (`lc_` + 8, 48 of 256 random bits) for display.

use chrono::{DateTime, Utc};
use serde::Serialize;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::{now, parse_opt_ts, parse_ts, parse_uuid, pg_ts, ts_text, Pool, Store, StoreError};

/// Every token starts with this.
pub const TOKEN_PREFIX: &str = "lc_";
/// Characters of the token kept for display.
const DISPLAY_PREFIX_LEN: usize = TOKEN_PREFIX.len() + 8;
/// Longest key name accepted, in characters.
const MAX_NAME_CHARS: usize = 100;

/// An API key as stored: never the token, never its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    /// Non-secret start of the token (`lc_` + 8 characters), to recognise a key in listings.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    /// Last successful authentication, to within [`StoreOptions::last_used_resolution`].
    ///
    /// [`StoreOptions::last_used_resolution`]: super::StoreOptions::last_used_resolution
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: String,
    name: String,
    prefix: String,
    key_hash: String,
    created_at: String,
    last_used_at: Option<String>,
    revoked_at: Option<String>,
}

impl KeyRow {
    fn into_key(self) -> Result<ApiKey, StoreError> {
        Ok(ApiKey {
            id: parse_uuid("api_keys.id", &self.id)?,
            name: self.name,
            prefix: self.prefix,
            created_at: parse_ts("api_keys.created_at", &self.created_at)?,
            last_used_at: parse_opt_ts("api_keys.last_used_at", self.last_used_at.as_deref())?,
            revoked_at: parse_opt_ts("api_keys.revoked_at", self.revoked_at.as_deref())?,
        })
    }
}

const SQLITE_KEY_COLUMNS: &str = "id, name, prefix, key_hash, created_at, last_used_at, revoked_at";
const PG_KEY_COLUMNS: &str = concat!(
    "id::text AS id, name, prefix, key_hash, ",
    pg_ts!("created_at"),
    ", ",
    pg_ts!("last_used_at"),
    ", ",
    pg_ts!("revoked_at")
);

/// A fresh token from the OS CSPRNG.
fn generate_token() -> Result<String, StoreError> {
    super::random_token(TOKEN_PREFIX)
}

/// Lowercase hex SHA-256 of the token, as stored in `api_keys.key_hash`.
fn hash_token(token: &str) -> String {
    crate::sha256_hex(token.as_bytes())
}

/// Could this be a token we issued? Anything else is refused without a query.
fn well_formed(token: &str) -> bool {
    super::is_token_shaped(token, TOKEN_PREFIX)
}

fn validate_name(name: &str) -> Result<String, StoreError> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err(StoreError::Invalid("key name is empty".into()));
    }
    if trimmed.chars().count() > MAX_NAME_CHARS {
        return Err(StoreError::Invalid(format!(
            "key name is longer than {MAX_NAME_CHARS} characters"
        )));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(StoreError::Invalid(
            "key name contains control characters".into(),
        ));
    }
    Ok(trimmed.to_string())
}

impl Store {
    /// Create a key named `name` (trimmed; 1 to 100 characters, no control characters). Returns
    /// the key and its token; the token cannot be recovered later.
    pub async fn create_key(&self, name: &str) -> Result<(ApiKey, String), StoreError> {
        let name = validate_name(name)?;
        let token = generate_token()?;
        let key_hash = hash_token(&token);
        let key = ApiKey {
            id: Uuid::new_v4(),
            name,
            prefix: token[..DISPLAY_PREFIX_LEN].to_string(),
            created_at: now(),
            last_used_at: None,
            revoked_at: None,
        };
        let result = match &self.pool {
            Pool::Sqlite(p) => sqlx::query(
                "INSERT INTO api_keys (id, name, prefix, key_hash, created_at) \
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(key.id.to_string())
            .bind(&key.name)
            .bind(&key.prefix)
            .bind(&key_hash)
            .bind(ts_text(key.created_at))
            .execute(p)
            .await
            .map(|_| ()),
            Pool::Postgres(p) => sqlx::query(
                "INSERT INTO api_keys (id, name, prefix, key_hash, created_at) \
                 VALUES ($1::uuid, $2, $3, $4, $5::timestamptz)",
            )
            .bind(key.id.to_string())
            .bind(&key.name)
            .bind(&key.prefix)
            .bind(&key_hash)
            .bind(ts_text(key.created_at))
            .execute(p)
            .await
            .map(|_| ()),
        };
        result.map_err(|e| self.db_err(e))?;
        Ok((key, token))
    }

    /// Every key, revoked ones included, oldest first.
    pub async fn list_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let rows: Vec<KeyRow> = match &self.pool {
            Pool::Sqlite(p) => {
                sqlx::query_as(&format!(
                    "SELECT {SQLITE_KEY_COLUMNS} FROM api_keys ORDER BY created_at, id"
                ))
                .fetch_all(p)
                .await
            }
            Pool::Postgres(p) => {
                sqlx::query_as(&format!(
                "SELECT {PG_KEY_COLUMNS} FROM api_keys ORDER BY api_keys.created_at, api_keys.id"
            ))
                .fetch_all(p)
                .await
            }
        }
        .map_err(|e| self.db_err(e))?;
        rows.into_iter().map(KeyRow::into_key).collect()
    }

    /// One key by id, revoked or not.
    pub async fn get_key(&self, id: Uuid) -> Result<Option<ApiKey>, StoreError> {
        let row: Option<KeyRow> = match &self.pool {
            Pool::Sqlite(p) => {
                sqlx::query_as(&format!(
                    "SELECT {SQLITE_KEY_COLUMNS} FROM api_keys WHERE id = ?"
                ))
                .bind(id.to_string())
                .fetch_optional(p)
                .await
            }
            Pool::Postgres(p) => {
                sqlx::query_as(&format!(
                    "SELECT {PG_KEY_COLUMNS} FROM api_keys WHERE id = $1::uuid"
                ))
                .bind(id.to_string())
                .fetch_optional(p)
                .await
            }
        }
        .map_err(|e| self.db_err(e))?;
        row.map(KeyRow::into_key).transpose()
    }

    /// Revoke a key. `true` when this call revoked it; `false` when there is no such key or it was
    /// already revoked (the first revocation time is kept).
    pub async fn revoke_key(&self, id: Uuid) -> Result<bool, StoreError> {
        let at = ts_text(now());
        let affected = match &self.pool {
            Pool::Sqlite(p) => sqlx::query(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            )
            .bind(at)
            .bind(id.to_string())
            .execute(p)
            .await
            .map(|r| r.rows_affected()),
            Pool::Postgres(p) => sqlx::query(
                "UPDATE api_keys SET revoked_at = $1::timestamptz \
                 WHERE id = $2::uuid AND revoked_at IS NULL",
            )
            .bind(at)
            .bind(id.to_string())
            .execute(p)
            .await
            .map(|r| r.rows_affected()),
        }
        .map_err(|e| self.db_err(e))?;
        Ok(affected == 1)
    }

    /// The live (not revoked) key whose token this is, or `None`.
    ///
    /// The token is hashed and looked up by hash; the stored and computed hashes are then compared
    /// in constant time. On success `last_used_at` is set to now, unless it is more recent than
    /// [`StoreOptions::last_used_resolution`](super::StoreOptions::last_used_resolution).
    pub async fn authenticate(&self, token: &str) -> Result<Option<ApiKey>, StoreError> {
        if !well_formed(token) {
            return Ok(None);
        }
        let hash = hash_token(token);
        let row: Option<KeyRow> = match &self.pool {
            Pool::Sqlite(p) => {
                sqlx::query_as(&format!(
                    "SELECT {SQLITE_KEY_COLUMNS} FROM api_keys WHERE key_hash = ?"
                ))
                .bind(&hash)
                .fetch_optional(p)
                .await
            }
            Pool::Postgres(p) => {
                sqlx::query_as(&format!(
                    "SELECT {PG_KEY_COLUMNS} FROM api_keys WHERE key_hash = $1"
                ))
                .bind(&hash)
                .fetch_optional(p)
                .await
            }
        }
        .map_err(|e| self.db_err(e))?;
        let Some(row) = row else { return Ok(None) };
        if !bool::from(row.key_hash.as_bytes().ct_eq(hash.as_bytes())) {
            return Ok(None);
        }
        let mut key = row.into_key()?;
        if key.is_revoked() {
            return Ok(None);
        }

        let now = now();
        let stale = key
            .last_used_at
            .is_none_or(|t| now - t >= self.last_used_resolution);
        if !stale {
            return Ok(Some(key));
        }
        // Never move last_used_at backwards (another replica may have written a later time), and
        // never touch a key revoked since the read above.
        let at = ts_text(now);
        let id = key.id.to_string();
        let updated = match &self.pool {
            Pool::Sqlite(p) => sqlx::query(
                "UPDATE api_keys SET last_used_at = ? WHERE id = ? AND revoked_at IS NULL \
                 AND (last_used_at IS NULL OR last_used_at < ?)",
            )
            .bind(&at)
            .bind(&id)
            .bind(&at)
            .execute(p)
            .await
            .map(|r| r.rows_affected()),
            Pool::Postgres(p) => sqlx::query(
                "UPDATE api_keys SET last_used_at = $1::timestamptz \
                 WHERE id = $2::uuid AND revoked_at IS NULL \
                 AND (last_used_at IS NULL OR last_used_at < $1::timestamptz)",
            )
            .bind(&at)
            .bind(&id)
            .execute(p)
            .await
            .map(|r| r.rows_affected()),
        }
        .map_err(|e| self.db_err(e))?;
        if updated == 1 {
            key.last_used_at = Some(now);
            return Ok(Some(key));
        }
        // Lost a race: revoked meanwhile, or someone else wrote a newer time. Read it again.
        Ok(self.get_key(key.id).await?.filter(|k| !k.is_revoked()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shape() {
        let a = generate_token().unwrap();
        let b = generate_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 46);
        assert!(well_formed(&a) && well_formed(&b));
        let raw =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &a[3..])
                .unwrap();
        assert_eq!(raw.len(), 32);
        assert!(!well_formed(&a[..45]));
        assert!(!well_formed(&format!("xx_{}", &a[3..])));
        assert!(!well_formed(&format!("{}=", &a[..45])));
        assert!(!well_formed(""));
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn names() {
        assert_eq!(validate_name("  ci bot ").unwrap(), "ci bot");
        assert!(validate_name("   ").is_err());
        assert!(validate_name("a\nb").is_err());
        assert!(validate_name(&"é".repeat(100)).is_ok());
        assert!(validate_name(&"é".repeat(101)).is_err());
    }
}
