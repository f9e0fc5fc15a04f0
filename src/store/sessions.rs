//! One-time capture sessions: an API key creates a session, a browser spends the session's token
//! on one check (`x-session-token`), and the key reads the result.
//!
//! A session token is `ls_` followed by 32 bytes from the operating-system CSPRNG, base64url
//! without padding (46 characters, like an API key's but with its own prefix, so one is never
//! mistaken for the other). Only its SHA-256 is stored. A token is spent by the first check
//! request that presents it, whatever that check's outcome, unless the server could not serve
//! it (a 5xx: [`Store::restore_session`]): [`Store::spend_session`] sets `used_at` in one
//! conditional UPDATE, so of two concurrent requests (on any replica) exactly one gets it.

use chrono::{DateTime, Utc};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::{now, parse_opt_ts, parse_ts, parse_uuid, pg_ts, ts_text, Pool, Store, StoreError};

/// Every session token starts with this.
pub const SESSION_TOKEN_PREFIX: &str = "ls_";
/// Longest `reference_id` kept, in characters.
pub const MAX_REFERENCE_ID_CHARS: usize = 128;
/// Longest `redirect_url` kept, in bytes.
pub const MAX_REDIRECT_URL_BYTES: usize = 2048;

/// A session as stored: never its token, never the token's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: Uuid,
    /// The key that created it: its rate limit and audit apply to the check.
    pub key_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub redirect_url: Option<String>,
    /// The integrator's own id, echoed back.
    pub reference_id: Option<String>,
    /// When the token was spent.
    pub used_at: Option<DateTime<Utc>>,
}

/// The session a check was made through, as its audit row and `data.session` name it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionRef {
    pub id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_id: Option<String>,
}

impl Session {
    /// How a check made through this session names it.
    pub fn reference(&self) -> SessionRef {
        SessionRef {
            id: self.id,
            reference_id: self.reference_id.clone(),
        }
    }
}

/// What a new session carries besides its key and lifetime.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewSession {
    pub redirect_url: Option<String>,
    pub reference_id: Option<String>,
}

/// Why a session token was not spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRefusal {
    /// No session has this token.
    Unknown,
    /// The token was already spent.
    Used,
    /// The session's lifetime is over.
    Expired,
    /// The key that created the session is revoked (decided by the caller, from the key).
    KeyRevoked,
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    id: String,
    key_id: String,
    token_hash: String,
    created_at: String,
    expires_at: String,
    redirect_url: Option<String>,
    reference_id: Option<String>,
    used_at: Option<String>,
}

impl SessionRow {
    fn into_session(self) -> Result<Session, StoreError> {
        Ok(Session {
            id: parse_uuid("sessions.id", &self.id)?,
            key_id: parse_uuid("sessions.key_id", &self.key_id)?,
            created_at: parse_ts("sessions.created_at", &self.created_at)?,
            expires_at: parse_ts("sessions.expires_at", &self.expires_at)?,
            redirect_url: self.redirect_url,
            reference_id: self.reference_id,
            used_at: parse_opt_ts("sessions.used_at", self.used_at.as_deref())?,
        })
    }
}

const SQLITE_COLUMNS: &str =
    "id, key_id, token_hash, created_at, expires_at, redirect_url, reference_id, used_at";
const PG_COLUMNS: &str = concat!(
    "id::text AS id, key_id::text AS key_id, token_hash, ",
    pg_ts!("created_at"),
    ", ",
    pg_ts!("expires_at"),
    ", redirect_url, reference_id, ",
    pg_ts!("used_at")
);

fn generate_token() -> Result<String, StoreError> {
    super::random_token(SESSION_TOKEN_PREFIX)
}

/// Could this be a session token we issued? Anything else is refused without a query.
pub fn well_formed(token: &str) -> bool {
    super::is_token_shaped(token, SESSION_TOKEN_PREFIX)
}

fn validate(new: &NewSession) -> Result<(), StoreError> {
    if let Some(r) = &new.reference_id {
        if r.is_empty()
            || r.chars().count() > MAX_REFERENCE_ID_CHARS
            || r.chars().any(char::is_control)
        {
            return Err(StoreError::Invalid(format!(
                "reference_id must be 1 to {MAX_REFERENCE_ID_CHARS} characters without control \
                 characters"
            )));
        }
    }
    if let Some(u) = &new.redirect_url {
        if u.len() > MAX_REDIRECT_URL_BYTES || u.chars().any(char::is_control) {
            return Err(StoreError::Invalid(format!(
                "redirect_url must be at most {MAX_REDIRECT_URL_BYTES} bytes without control \
                 characters"
            )));
        }
    }
    Ok(())
}

impl Store {
    /// Create a session for `key_id` that lives `ttl` from now. Returns it with its token, which
    /// cannot be recovered later.
    pub async fn create_session(
        &self,
        key_id: Uuid,
        ttl: chrono::Duration,
        new: NewSession,
    ) -> Result<(Session, String), StoreError> {
        validate(&new)?;
        let token = generate_token()?;
        let hash = crate::sha256_hex(token.as_bytes());
        let created_at = now();
        let session = Session {
            id: Uuid::new_v4(),
            key_id,
            created_at,
            expires_at: created_at + ttl,
            redirect_url: new.redirect_url,
            reference_id: new.reference_id,
            used_at: None,
        };
        let (id, key) = (session.id.to_string(), key_id.to_string());
        let (created, expires) = (ts_text(session.created_at), ts_text(session.expires_at));
        let result = match &self.pool {
            Pool::Sqlite(p) => sqlx::query(
                "INSERT INTO sessions (id, key_id, token_hash, created_at, expires_at, \
                 redirect_url, reference_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&id)
            .bind(&key)
            .bind(&hash)
            .bind(&created)
            .bind(&expires)
            .bind(&session.redirect_url)
            .bind(&session.reference_id)
            .execute(p)
            .await
            .map(|_| ()),
            Pool::Postgres(p) => sqlx::query(
                "INSERT INTO sessions (id, key_id, token_hash, created_at, expires_at, \
                 redirect_url, reference_id) VALUES ($1::uuid, $2::uuid, $3, $4::timestamptz, \
                 $5::timestamptz, $6, $7)",
            )
            .bind(&id)
            .bind(&key)
            .bind(&hash)
            .bind(&created)
            .bind(&expires)
            .bind(&session.redirect_url)
            .bind(&session.reference_id)
            .execute(p)
            .await
            .map(|_| ()),
        };
        result.map_err(|e| self.db_err(e))?;
        Ok((session, token))
    }

    /// The session `id`, if it exists.
    pub async fn get_session(&self, id: Uuid) -> Result<Option<Session>, StoreError> {
        let row: Option<SessionRow> = match &self.pool {
            Pool::Sqlite(p) => {
                sqlx::query_as(&format!(
                    "SELECT {SQLITE_COLUMNS} FROM sessions WHERE id = ?"
                ))
                .bind(id.to_string())
                .fetch_optional(p)
                .await
            }
            Pool::Postgres(p) => {
                sqlx::query_as(&format!(
                    "SELECT {PG_COLUMNS} FROM sessions WHERE id = $1::uuid"
                ))
                .bind(id.to_string())
                .fetch_optional(p)
                .await
            }
        }
        .map_err(|e| self.db_err(e))?;
        row.map(SessionRow::into_session).transpose()
    }

    /// The unspent, unexpired session whose token this is, without spending it.
    pub async fn find_session(
        &self,
        token: &str,
    ) -> Result<Result<Session, SessionRefusal>, StoreError> {
        if !well_formed(token) {
            return Ok(Err(SessionRefusal::Unknown));
        }
        let hash = crate::sha256_hex(token.as_bytes());
        let row: Option<SessionRow> = match &self.pool {
            Pool::Sqlite(p) => {
                sqlx::query_as(&format!(
                    "SELECT {SQLITE_COLUMNS} FROM sessions WHERE token_hash = ?"
                ))
                .bind(&hash)
                .fetch_optional(p)
                .await
            }
            Pool::Postgres(p) => {
                sqlx::query_as(&format!(
                    "SELECT {PG_COLUMNS} FROM sessions WHERE token_hash = $1"
                ))
                .bind(&hash)
                .fetch_optional(p)
                .await
            }
        }
        .map_err(|e| self.db_err(e))?;
        let Some(row) = row else {
            return Ok(Err(SessionRefusal::Unknown));
        };
        if !bool::from(row.token_hash.as_bytes().ct_eq(hash.as_bytes())) {
            return Ok(Err(SessionRefusal::Unknown));
        }
        let session = row.into_session()?;
        Ok(if session.used_at.is_some() {
            Err(SessionRefusal::Used)
        } else if session.expires_at <= now() {
            Err(SessionRefusal::Expired)
        } else {
            Ok(session)
        })
    }

    /// Spend the session whose token this is: the one conditional UPDATE that only an unspent,
    /// unexpired session passes. Of concurrent calls with one token, exactly one gets `Ok`.
    pub async fn spend_session(
        &self,
        token: &str,
    ) -> Result<Result<Session, SessionRefusal>, StoreError> {
        if !well_formed(token) {
            return Ok(Err(SessionRefusal::Unknown));
        }
        let hash = crate::sha256_hex(token.as_bytes());
        let at = ts_text(now());
        let row: Option<SessionRow> = match &self.pool {
            Pool::Sqlite(p) => {
                sqlx::query_as(&format!(
                    "UPDATE sessions SET used_at = ? WHERE token_hash = ? AND used_at IS NULL \
                     AND expires_at > ? RETURNING {SQLITE_COLUMNS}"
                ))
                .bind(&at)
                .bind(&hash)
                .bind(&at)
                .fetch_optional(p)
                .await
            }
            Pool::Postgres(p) => {
                sqlx::query_as(&format!(
                    "UPDATE sessions SET used_at = $1::timestamptz WHERE token_hash = $2 \
                     AND used_at IS NULL AND expires_at > $1::timestamptz RETURNING {PG_COLUMNS}"
                ))
                .bind(&at)
                .bind(&hash)
                .fetch_optional(p)
                .await
            }
        }
        .map_err(|e| self.db_err(e))?;
        match row {
            Some(row) => Ok(Ok(row.into_session()?)),
            // Not spent: say why (unknown, already used or expired).
            None => Ok(Err(self
                .find_session(token)
                .await?
                .err()
                .unwrap_or(SessionRefusal::Used))),
        }
    }
}

impl Store {
    /// Give back a token spent by `session` (as [`Store::spend_session`] returned it) on a request
    /// the server could not serve (overload, a database fault), so the browser can retry. Only
    /// that spending is undone: a session spent again since, or never, is left as it is.
    pub async fn restore_session(&self, session: &Session) -> Result<bool, StoreError> {
        let Some(used_at) = session.used_at else {
            return Ok(false);
        };
        let (id, at) = (session.id.to_string(), ts_text(used_at));
        let restored = match &self.pool {
            Pool::Sqlite(p) => {
                sqlx::query("UPDATE sessions SET used_at = NULL WHERE id = ? AND used_at = ?")
                    .bind(&id)
                    .bind(&at)
                    .execute(p)
                    .await
                    .map(|r| r.rows_affected())
            }
            Pool::Postgres(p) => sqlx::query(
                "UPDATE sessions SET used_at = NULL WHERE id = $1::uuid \
                 AND used_at = $2::timestamptz",
            )
            .bind(&id)
            .bind(&at)
            .execute(p)
            .await
            .map(|r| r.rows_affected()),
        }
        .map_err(|e| self.db_err(e))?;
        Ok(restored == 1)
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
        assert!(well_formed(&a), "{a}");
        assert_eq!(a.len(), 46);
        assert!(!well_formed(&a.replacen("ls_", "lc_", 1)));
        assert!(!well_formed(&a[..45]));
        assert!(!well_formed(&format!("{}!", &a[..45])));
    }

    #[test]
    fn reference_ids_and_redirects_are_bounded() {
        let ok = NewSession {
            redirect_url: Some("https://example.test/done".into()),
            reference_id: Some("user-42".into()),
        };
        assert!(validate(&ok).is_ok());
        for bad in [
            NewSession {
                reference_id: Some(String::new()),
                ..NewSession::default()
            },
            NewSession {
                reference_id: Some("x".repeat(129)),
                ..NewSession::default()
            },
            NewSession {
                reference_id: Some("a\nb".into()),
                ..NewSession::default()
            },
            NewSession {
                redirect_url: Some(format!("https://e.test/{}", "a".repeat(2048))),
                ..NewSession::default()
            },
        ] {
            assert!(validate(&bad).is_err(), "{bad:?}");
        }
    }
}
