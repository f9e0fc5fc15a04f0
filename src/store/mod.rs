//! Persistence: API keys and the audit trail, on embedded SQLite (the default, one process) or
//! PostgreSQL (several replicas sharing one database).
//!
//! Queries are plain runtime SQL (`sqlx::query` with binds), one text per backend, over the same
//! logical schema (`migrations/sqlite`, `migrations/postgres`), which is migrated at connect.
//!
//! Representation:
//! - UUIDs are lowercase hyphenated text in SQLite and `UUID` in PostgreSQL.
//! - Timestamps are UTC with microsecond precision: RFC 3339 text with six fractional digits in
//!   SQLite (`2025-01-01T12:00:00.000000Z`, so text order is time order) and `TIMESTAMPTZ` in
//!   PostgreSQL. Values are truncated to whole microseconds when stored, so they round-trip
//!   exactly on both backends.
//!
//! What is never stored: API tokens (only their SHA-256), image bytes and full URLs
//! ([`AuditRecord`] has no field that could hold them; `url_host` is checked to be a bare host).

mod audit;
mod hot;
mod keys;
mod sessions;
mod writer;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Connection;

pub use self::audit::{AuditRecord, ImageSource, ShadowScore};
pub use self::keys::{ApiKey, TOKEN_PREFIX};
pub use self::sessions::{
    NewSession, Session, SessionRef, SessionRefusal, MAX_REDIRECT_URL_BYTES,
    MAX_REFERENCE_ID_CHARS, SESSION_TOKEN_PREFIX,
};
pub use self::writer::{AuditWriter, WriterStats};
pub use crate::pipeline::Timings;

/// Errors of the store. [`StoreError::is_unavailable`] tells "the database cannot be reached right
/// now" (answer 503, retry) from everything else.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL is malformed, has an unsupported scheme or unsupported options. Never
    /// contains the URL itself (it may hold a password).
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    /// The database cannot be reached or opened (connection refused, timeout, pool exhausted,
    /// file cannot be opened, database busy/locked beyond the busy timeout, server shutting down).
    #[error("database unavailable ({target}): {cause}")]
    Unavailable {
        /// Backend and address, without credentials (`postgres 127.0.0.1:5432/test`).
        target: String,
        cause: sqlx::Error,
    },
    /// Applying the embedded migrations failed.
    #[error("database migration failed ({target}): {cause}")]
    Migrate {
        target: String,
        cause: sqlx::migrate::MigrateError,
    },
    /// Any other database error (constraint violation, SQL error...).
    #[error("database error: {0}")]
    Query(sqlx::Error),
    /// The caller passed a value the store refuses (empty key name, non-finite score, a `url_host`
    /// that is not a bare host...).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The operating system's random source failed (no token could be generated).
    #[error("random source failed: {0}")]
    Random(String),
    /// The error of the group commit this record was part of ([`AuditWriter`]): every record in
    /// that transaction got it.
    #[error("{0}")]
    Batch(Arc<StoreError>),
    /// A stored value could not be decoded (not a UUID, not a timestamp).
    #[error("corrupt value in column `{column}`: {detail}")]
    Corrupt {
        column: &'static str,
        detail: String,
    },
}

impl StoreError {
    /// True when the database could not be reached or opened: a transient condition for which an
    /// HTTP server should answer 503 and a client may retry.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unavailable { .. } => true,
            StoreError::Batch(shared) => shared.is_unavailable(),
            _ => false,
        }
    }

    /// True for a malformed or unsupported database URL (a configuration mistake).
    pub fn is_invalid_url(&self) -> bool {
        matches!(self, StoreError::InvalidUrl(_))
    }
}

/// One migration of the schema, as [`Store::schema`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SchemaMigration {
    /// The migration's version (its file name's timestamp, e.g. `20250101000001`).
    pub version: i64,
    pub description: String,
    pub state: MigrationState,
}

/// Whether a migration is in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrationState {
    /// Embedded in this build and applied.
    Applied,
    /// Embedded in this build, not applied (only seen with [`StoreOptions::migrate`] off).
    Pending,
    /// Applied by a newer release; this build does not know it (tolerated).
    Newer,
}

/// Connection settings. [`Store::connect`] uses [`StoreOptions::default`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Largest number of pooled connections (at least 1). Default 10.
    pub max_connections: u32,
    /// Limit for opening the first connection at connect time and for acquiring a pooled
    /// connection afterwards. Default 10 s.
    pub connect_timeout: Duration,
    /// SQLite only: how long a statement waits for a lock held by another connection before
    /// failing with [`StoreError::Unavailable`]. Default 5 s.
    pub busy_timeout: Duration,
    /// [`Store::authenticate`] writes `last_used_at` only when the stored value is at least this
    /// old, so a busy key does not cost one write per request. Default 60 s; zero writes on every
    /// successful authentication.
    pub last_used_resolution: Duration,
    /// Apply the embedded migrations at connect (default). Off only to inspect a schema without
    /// changing it (`livecheck migrate --check`): the store's other calls need a current schema.
    pub migrate: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 10,
            connect_timeout: Duration::from_secs(10),
            busy_timeout: Duration::from_secs(5),
            last_used_resolution: Duration::from_secs(60),
            migrate: true,
        }
    }
}

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Where a check's statements go: see [`Store`]'s `hot`.
#[derive(Clone)]
enum Hot {
    Sqlite(Arc<hot::HotSqlite>),
    Postgres(PgPool),
}

/// A handle on the database: a connection pool. Cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    /// What a check writes and reads (its audit row, the re-submission lookup) goes through
    /// here. SQLite: one connection of its own ([`hot::HotSqlite`], not pooled). A SQLite
    /// connection that begins a read after *another* connection has committed drops its page
    /// cache, and every check commits; on the connection that made the commit, the cache stays
    /// valid. PostgreSQL: `pool` itself.
    hot: Hot,
    /// Backend and address without credentials, for error messages.
    target: Arc<str>,
    last_used_resolution: chrono::Duration,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("target", &&*self.target)
            .finish_non_exhaustive()
    }
}

/// The embedded migrations of one backend. Migrations applied by a newer release are tolerated,
/// so replicas can be upgraded one by one.
fn migrator(postgres: bool) -> sqlx::migrate::Migrator {
    let mut migrator = if postgres {
        sqlx::migrate!("migrations/postgres")
    } else {
        sqlx::migrate!("migrations/sqlite")
    };
    migrator.set_ignore_missing(true);
    migrator
}

const URL_HELP: &str = "expected sqlite://PATH or postgres://USER@HOST:PORT/DB";

impl Store {
    /// Connect with [`StoreOptions::default`]. See [`Store::connect_with`].
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Store::connect_with(url, &StoreOptions::default()).await
    }

    /// Connect to `sqlite://PATH` (the file is created if missing; WAL journal, full sync, busy
    /// timeout, foreign keys on) or `postgres://...` / `postgresql://...` (libpq-style URL; a
    /// schema may be chosen with `?options[search_path]=NAME`), then apply the embedded
    /// migrations.
    ///
    /// Errors: [`StoreError::InvalidUrl`] for a malformed/unsupported URL (in-memory SQLite is
    /// refused: each pooled connection would see its own empty database);
    /// [`StoreError::Unavailable`] when the first connection fails (it is tried once, no retry
    /// loop, so an unreachable server is reported at once); [`StoreError::Migrate`] when the schema
    /// cannot be brought up to date. Migrations already applied by a newer release are tolerated,
    /// so replicas can be upgraded one by one.
    pub async fn connect_with(url: &str, options: &StoreOptions) -> Result<Store, StoreError> {
        let scheme = match url.split_once(':') {
            Some((scheme, _)) => scheme.to_ascii_lowercase(),
            None => return Err(StoreError::InvalidUrl(format!("no scheme; {URL_HELP}"))),
        };
        match scheme.as_str() {
            "sqlite" => Store::connect_sqlite(url, options).await,
            "postgres" | "postgresql" => Store::connect_postgres(url, options).await,
            other => {
                let shown: String = other.chars().take(20).collect();
                Err(StoreError::InvalidUrl(format!(
                    "unsupported scheme `{shown}`; {URL_HELP}"
                )))
            }
        }
    }

    async fn connect_sqlite(url: &str, options: &StoreOptions) -> Result<Store, StoreError> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::InvalidUrl(e.to_string()))?;
        let filename = opts.get_filename().to_path_buf();
        let name = filename.to_string_lossy();
        if name.is_empty() {
            return Err(StoreError::InvalidUrl(format!(
                "SQLite URL has no file path; {URL_HELP}"
            )));
        }
        if name.starts_with("file:sqlx-in-memory") || url.contains("mode=memory") {
            return Err(StoreError::InvalidUrl(
                "in-memory SQLite is not supported; use sqlite://PATH".into(),
            ));
        }
        let target = format!("sqlite {name}");
        let opts = opts
            // Inspecting a schema (`migrate --check`) must not create a database.
            .create_if_missing(options.migrate)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(options.busy_timeout)
            // No memory map (`mmap_size`): it paid while the checks' statements ran on pooled
            // connections, each dropping its page cache after another's commit; on the one
            // connection of the checks the cache stays valid, and a map made the process's
            // resident set grow with the database file (docs/benchmarks.md, session 19: the same
            // CPU per check without it, 23 MB less RSS at 64 clients).
            .foreign_keys(true);
        let pool_of = |size: u32| {
            SqlitePoolOptions::new()
                .max_connections(size)
                // No ping before each use: a SQLite connection is a worker thread in this
                // process, not a socket that can go stale, and the ping was a round trip to that
                // thread (two per check). A crashed worker still fails the statement sent to it.
                .test_before_acquire(false)
                .acquire_timeout(options.connect_timeout)
        };
        let pool = pool_of(options.max_connections.max(1))
            .connect_with(opts.clone())
            .await
            .map_err(|cause| match cause {
                sqlx::Error::Configuration(e) => StoreError::InvalidUrl(e.to_string()),
                cause => StoreError::Unavailable {
                    target: target.clone(),
                    cause,
                },
            })?;
        let migrator = migrator(false);
        // `run_direct` on a connection rather than `run(&pool)`: the latter's `Acquire` bound makes
        // the future not `Send` in generic contexts (so `Store::connect` could not be spawned).
        let migrated = match pool.acquire().await {
            Ok(_) if !options.migrate => Ok(()),
            Ok(mut conn) => migrator.run_direct(&mut *conn).await,
            Err(cause) => {
                pool.close().await;
                return Err(StoreError::Unavailable { target, cause });
            }
        };
        if let Err(cause) = migrated {
            pool.close().await;
            return Err(StoreError::Migrate { target, cause });
        }
        // One connection for the checks, so that no other connection's commit invalidates its
        // cache. Writes to one SQLite database are serialised anyway; the re-submission lookups
        // queue behind them on this connection. Opened on first use (after the migrations).
        let hot = hot::HotSqlite::new(opts, options.connect_timeout);
        Ok(Store::new(
            Pool::Sqlite(pool),
            Hot::Sqlite(Arc::new(hot)),
            target,
            options,
        ))
    }

    async fn connect_postgres(url: &str, options: &StoreOptions) -> Result<Store, StoreError> {
        let opts =
            PgConnectOptions::from_str(url).map_err(|e| StoreError::InvalidUrl(e.to_string()))?;
        let place = match opts.get_socket() {
            Some(socket) => socket.display().to_string(),
            None => format!("{}:{}", opts.get_host(), opts.get_port()),
        };
        let target = format!(
            "postgres {place}/{}",
            opts.get_database().unwrap_or(opts.get_username())
        );
        let unavailable = |cause: sqlx::Error| match cause {
            sqlx::Error::Configuration(e) => StoreError::InvalidUrl(e.to_string()),
            cause => StoreError::Unavailable {
                target: target.clone(),
                cause,
            },
        };

        // One direct attempt first: the pool would retry a refused connection until its acquire
        // timeout and then report only "pool timed out"; this reports the real cause at once.
        let timeout = options.connect_timeout;
        let mut conn = match tokio::time::timeout(timeout, PgConnection::connect_with(&opts)).await
        {
            Ok(Ok(conn)) => conn,
            Ok(Err(cause)) => return Err(unavailable(cause)),
            Err(_) => {
                return Err(unavailable(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {timeout:?}"),
                ))))
            }
        };
        // The migrator holds a PostgreSQL advisory lock, so replicas starting together apply each
        // migration once.
        let migrator = migrator(true);
        let migrated = if options.migrate {
            migrator.run_direct(&mut conn).await
        } else {
            Ok(())
        };
        let _ = conn.close().await;
        if let Err(cause) = migrated {
            return Err(StoreError::Migrate { target, cause });
        }

        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(timeout)
            .connect_lazy_with(opts);
        let hot = Hot::Postgres(pool.clone());
        Ok(Store::new(Pool::Postgres(pool), hot, target, options))
    }

    fn new(pool: Pool, hot: Hot, target: String, options: &StoreOptions) -> Store {
        Store {
            pool,
            hot,
            target: target.into(),
            last_used_resolution: chrono::Duration::from_std(options.last_used_resolution)
                .unwrap_or(chrono::Duration::MAX),
        }
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// Backend and address without credentials, e.g. `postgres 127.0.0.1:5432/livecheck` or
    /// `sqlite livecheck.db`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The schema's migrations: every migration this build embeds, in order, with whether the
    /// database records it as applied (`_sqlx_migrations`), and versions the database has applied
    /// that this build does not know (a newer release migrated it).
    pub async fn schema(&self) -> Result<Vec<SchemaMigration>, StoreError> {
        const SQL: &str = "SELECT version, description FROM _sqlx_migrations \
                           WHERE success ORDER BY version";
        // The table exists once any migration ran; without it, nothing is applied.
        let exists: i64 = match &self.pool {
            Pool::Sqlite(p) => {
                sqlx::query_scalar(
                    "SELECT count(*) FROM sqlite_master \
                     WHERE type = 'table' AND name = '_sqlx_migrations'",
                )
                .fetch_one(p)
                .await
            }
            Pool::Postgres(p) => {
                sqlx::query_scalar(
                    "SELECT count(*) FROM information_schema.tables \
                     WHERE table_name = '_sqlx_migrations' AND table_schema = current_schema()",
                )
                .fetch_one(p)
                .await
            }
        }
        .map_err(|e| self.db_err(e))?;
        let applied: Vec<(i64, String)> = if exists == 0 {
            Vec::new()
        } else {
            match &self.pool {
                Pool::Sqlite(p) => sqlx::query_as(SQL).fetch_all(p).await,
                Pool::Postgres(p) => sqlx::query_as(SQL).fetch_all(p).await,
            }
            .map_err(|e| self.db_err(e))?
        };
        let migrator = migrator(matches!(self.pool, Pool::Postgres(_)));
        let mut out: Vec<SchemaMigration> = migrator
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .map(|m| SchemaMigration {
                version: m.version,
                description: m.description.to_string(),
                state: if applied.iter().any(|(v, _)| *v == m.version) {
                    MigrationState::Applied
                } else {
                    MigrationState::Pending
                },
            })
            .collect();
        for (version, description) in applied {
            if !out.iter().any(|m| m.version == version) {
                out.push(SchemaMigration {
                    version,
                    description,
                    state: MigrationState::Newer,
                });
            }
        }
        out.sort_by_key(|m| m.version);
        Ok(out)
    }

    /// Readiness: one round-trip (`SELECT 1`) through the pool.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let result = match &self.pool {
            Pool::Sqlite(p) => sqlx::query("SELECT 1").execute(p).await.map(|_| ()),
            Pool::Postgres(p) => sqlx::query("SELECT 1").execute(p).await.map(|_| ()),
        };
        result.map_err(|e| self.db_err(e))
    }

    /// Proves that the database still takes writes: rewrites the single row of `health` (a
    /// committed write, so a full disk or a read-only file fails here although `ping` works).
    pub async fn probe_write(&self) -> Result<(), StoreError> {
        let at = now();
        let result = match &self.pool {
            Pool::Sqlite(p) => {
                // A connection that failed on a database fault is closed, not pooled again: one
                // opened while the files were read-only opened its WAL read-only and would answer
                // "readonly database" forever, so readiness never came back by itself.
                let mut conn = p.acquire().await.map_err(|e| self.db_err(e))?;
                let result = sqlx::query(
                    "INSERT INTO health (id, checked_at) VALUES (1, ?1) \
                     ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
                )
                .bind(ts_text(at))
                .execute(&mut *conn)
                .await
                .map(|_| ());
                if result.as_ref().is_err_and(is_connectivity) {
                    let _ = conn.close().await;
                }
                result
            }
            Pool::Postgres(p) => sqlx::query(
                "INSERT INTO health (id, checked_at) VALUES (1, $1::timestamptz) \
                 ON CONFLICT (id) DO UPDATE SET checked_at = EXCLUDED.checked_at",
            )
            .bind(ts_text(at))
            .execute(p)
            .await
            .map(|_| ()),
        };
        result.map_err(|e| self.db_err(e))
    }

    /// Close every pooled connection (waits for checked-out ones). Later calls fail with
    /// [`StoreError::Unavailable`].
    pub async fn close(&self) {
        if let Hot::Sqlite(hot) = &self.hot {
            hot.close().await;
        }
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }

    /// Map a query error: connectivity problems become [`StoreError::Unavailable`].
    fn db_err(&self, cause: sqlx::Error) -> StoreError {
        if is_connectivity(&cause) {
            StoreError::Unavailable {
                target: self.target.to_string(),
                cause,
            }
        } else {
            StoreError::Query(cause)
        }
    }
}

/// SQLite's READONLY: for a connection opened while the files could not be written, a lasting
/// state of that connection (its WAL was opened read-only), not of the database.
fn is_sqlite_readonly(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
                && db
                    .code()
                    .and_then(|c| c.parse::<i32>().ok())
                    .is_some_and(|c| c & 0xff == 8)
        }
        _ => false,
    }
}

/// Errors that mean "cannot talk to the database right now", as opposed to a bad query.
fn is_connectivity(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let Some(code) = db.code() else { return false };
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // SQLite result codes; the low byte is the primary code.
                // BUSY, LOCKED, READONLY (file made read-only), IOERR, FULL (disk full), CANTOPEN.
                code.parse::<i32>()
                    .is_ok_and(|c| matches!(c & 0xff, 5 | 6 | 8 | 10 | 13 | 14))
            } else {
                // SQLSTATE: connection exception, insufficient resources, operator intervention.
                code.starts_with("08") || code.starts_with("53") || code.starts_with("57P")
            }
        }
        _ => false,
    }
}

/// Now, truncated to the stored precision.
/// Random bytes in an API key's or a session's token.
const TOKEN_RANDOM_BYTES: usize = 32;

/// `prefix` + 32 bytes from the operating-system CSPRNG, base64url without padding.
fn random_token(prefix: &str) -> Result<String, StoreError> {
    use base64::Engine as _;
    use rand::TryRngCore;
    let mut bytes = [0u8; TOKEN_RANDOM_BYTES];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| StoreError::Random(e.to_string()))?;
    Ok(format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// Could `token` be one [`random_token`] made with `prefix`? Anything else is refused without a
/// query.
fn is_token_shaped(token: &str, prefix: &str) -> bool {
    token.len() == prefix.len() + (TOKEN_RANDOM_BYTES * 4).div_ceil(3)
        && token.starts_with(prefix)
        && token[prefix.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// The text form used for SQLite columns and PostgreSQL binds (`$n::timestamptz`).
fn ts_text(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn parse_ts(column: &'static str, text: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt {
            column,
            detail: format!("{text:?} is not an RFC 3339 timestamp: {e}"),
        })
}

fn parse_opt_ts(
    column: &'static str,
    text: Option<&str>,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    text.map(|t| parse_ts(column, t)).transpose()
}

fn parse_uuid(column: &'static str, text: &str) -> Result<uuid::Uuid, StoreError> {
    uuid::Uuid::parse_str(text).map_err(|e| StoreError::Corrupt {
        column,
        detail: format!("{text:?} is not a UUID: {e}"),
    })
}

/// PostgreSQL select expression giving a timestamp column in the same text form as SQLite.
macro_rules! pg_ts {
    ($col:literal) => {
        concat!(
            "to_char(",
            $col,
            r#" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS "#,
            $col
        )
    };
}
use pg_ts;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_text_round_trips_and_sorts() {
        let a = DateTime::parse_from_rfc3339("2025-03-04T05:06:07.123456789Z")
            .unwrap()
            .with_timezone(&Utc)
            .trunc_subsecs(6);
        let text = ts_text(a);
        assert_eq!(text, "2025-03-04T05:06:07.123456Z");
        assert_eq!(parse_ts("t", &text).unwrap(), a);
        let b = a + chrono::Duration::microseconds(1);
        assert!(ts_text(a) < ts_text(b));
        let whole = DateTime::parse_from_rfc3339("2025-03-04T05:06:07Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(ts_text(whole), "2025-03-04T05:06:07.000000Z");
        assert!(parse_ts("t", "yesterday").is_err());
    }

    #[test]
    fn pg_timestamp_expression() {
        assert_eq!(
            pg_ts!("created_at"),
            r#"to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS created_at"#
        );
    }
}
