//! Store fixtures: fresh databases on the real servers.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt as _;

use sqlx::Connection;

/// The PostgreSQL the tests use (CI: `postgres://postgres@127.0.0.1:5432/test`); its tests are
/// skipped, honestly, when unset.
pub const PG_ENV: &str = "LIVECHECK_TEST_POSTGRES_URL";

/// A fresh PostgreSQL schema on the server at `base`; `url` selects it as the search path.
pub struct PgSchema {
    pub url: String,
    name: String,
    base: String,
}

impl PgSchema {
    pub async fn create(base: &str) -> PgSchema {
        let name = format!("lc_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(base).await.unwrap();
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let _ = admin.close().await;
        let separator = if base.contains('?') { '&' } else { '?' };
        PgSchema {
            url: format!("{base}{separator}options[search_path]={name}"),
            name,
            base: base.to_owned(),
        }
    }

    /// Drops the schema and everything in it.
    pub async fn drop(self) {
        let mut admin = sqlx::PgConnection::connect(&self.base).await.unwrap();
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.name))
            .execute(&mut admin)
            .await
            .unwrap();
        let _ = admin.close().await;
    }
}

/// Run `body` once with a URL naming a fresh, empty database per backend: a SQLite file in a
/// temporary directory, then (if [`PG_ENV`] is set) a new PostgreSQL schema, dropped afterwards
/// even when the body panics (the panic is caught, the schema dropped, then the panic resumed).
pub async fn with_each_database<F, Fut>(body: F)
where
    F: Fn(String, &'static str) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("livecheck.db").display());
    let outcome = AssertUnwindSafe(body(url, "sqlite")).catch_unwind().await;
    drop(dir);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }

    let Ok(base) = std::env::var(PG_ENV) else {
        super::skip_unless_ci(
            "the PostgreSQL half of this test",
            &format!("{PG_ENV} is unset"),
        );
        return;
    };
    let schema = PgSchema::create(&base).await;
    let outcome = AssertUnwindSafe(body(schema.url.clone(), "postgres"))
        .catch_unwind()
        .await;
    schema.drop().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
