//! Several replicas on one database and one Redis, as `livecheck serve` processes on 127.0.0.1:
//! migrations applied once when replicas start together (the real PostgreSQL server), the
//! `migrate` command, and the per-key rate limit shared through the real Redis server, including
//! what happens when Redis is down or hangs.

#![cfg(unix)]

mod common;
#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use helpers::{
    create_key_cli, get_text, http_client as client, post_check, PgSchema, ServeProcess, PG_ENV,
};
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::Connection;
use uuid::Uuid;

const REDIS_ENV: &str = "LIVECHECK_TEST_REDIS_URL";

fn livecheck(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_livecheck"))
        .args(args)
        .env_remove("LIVECHECK_DATABASE_URL")
        .output()
        .unwrap()
}

/// `livecheck migrate --json` on `db` (with `extra` flags): exit status and the parsed report.
fn migrate(db: &str, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["migrate", "--json", "--database", db];
    args.extend_from_slice(extra);
    let out = livecheck(&args);
    let code = out.status.code().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "migrate printed no JSON ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, report)
}

fn states(report: &Value) -> Vec<String> {
    report["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["state"].as_str().unwrap().to_owned())
        .collect()
}

/// Creates an empty SQLite database file (SQLite accepts an empty file as an empty database).
fn empty_sqlite_file(path: &std::path::Path) -> std::fs::File {
    std::fs::File::create(path).unwrap()
}

fn embedded_migrations(backend: &str) -> usize {
    std::fs::read_dir(common::root().join("migrations").join(backend))
        .unwrap()
        .count()
}

#[test]
fn migrate_applies_and_checks_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("m.db").display());
    let n = embedded_migrations("sqlite");

    // --check does not create a database that does not exist.
    let out = livecheck(&["migrate", "--check", "--database", &db]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!dir.path().join("m.db").exists());

    // --check on an empty database changes nothing and reports every migration pending.
    empty_sqlite_file(&dir.path().join("m.db"));
    let (code, report) = migrate(&db, &["--check"]);
    assert_eq!(code, 1);
    assert_eq!(states(&report), vec!["pending"; n]);
    let (code, report) = migrate(&db, &["--check"]);
    assert_eq!((code, states(&report)), (1, vec!["pending".to_owned(); n]));

    // migrate applies them; a second run and --check find nothing to do.
    let (code, report) = migrate(&db, &[]);
    assert_eq!((code, states(&report)), (0, vec!["applied".to_owned(); n]));
    assert!(report["database"].as_str().unwrap().starts_with("sqlite "));
    let (code, _) = migrate(&db, &[]);
    assert_eq!(code, 0);
    let (code, report) = migrate(&db, &["--check"]);
    assert_eq!((code, states(&report)), (0, vec!["applied".to_owned(); n]));

    // The table a person reads.
    let out = livecheck(&["migrate", "--database", &db]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("schema up to date"), "{text}");
    assert!(text.contains("20250101000001"), "{text}");

    // A bad URL is a clear error, not a panic.
    let out = livecheck(&["migrate", "--database", "mysql://x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsupported scheme"));
}

/// Three replicas started at the same instant on one fresh PostgreSQL schema: all come up, and
/// each migration is recorded exactly once (PostgreSQL's advisory lock serialises the migrators).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_starting_together_apply_each_migration_once() {
    let Ok(base) = std::env::var(PG_ENV) else {
        helpers::skip_unless_ci("the replica start-up test", &format!("{PG_ENV} is unset"));
        return;
    };
    let schema = PgSchema::create(&base).await;
    let db = schema.url.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let barrier = Arc::new(Barrier::new(3));
        let starts: Vec<_> = (0..3)
            .map(|_| {
                let (barrier, db) = (Arc::clone(&barrier), db.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    ServeProcess::spawn(&db, &[], &[("RUST_LOG", "warn")])
                })
            })
            .collect();
        let replicas: Vec<ServeProcess> = starts.into_iter().map(|t| t.join().unwrap()).collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for replica in &replicas {
            assert_eq!(runtime.block_on(readyz(&replica.addr)).0, StatusCode::OK);
        }
        for replica in replicas {
            let (_, logs) = replica.stop("TERM");
            assert!(!logs.contains("migration failed"), "{logs}");
        }
        let (code, report) = migrate(&db, &["--check"]);
        assert_eq!(code, 0, "{report}");
        assert_eq!(
            states(&report),
            vec!["applied".to_owned(); embedded_migrations("postgres")]
        );
        db
    })
    .await;
    let recorded = match &outcome {
        Ok(db) => {
            let mut conn = sqlx::PgConnection::connect(db).await.unwrap();
            let rows: Vec<(i64, i64)> = sqlx::query_as(
                "SELECT version, count(*) FROM _sqlx_migrations WHERE success GROUP BY version",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap();
            let _ = conn.close().await;
            Some(rows)
        }
        Err(_) => None,
    };
    schema.drop().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
    let rows = recorded.unwrap();
    assert_eq!(rows.len(), embedded_migrations("postgres"));
    assert!(rows.iter().all(|(_, n)| *n == 1), "{rows:?}");
}

fn redis_url() -> Option<String> {
    match std::env::var(REDIS_ENV) {
        Ok(url) => Some(url),
        Err(_) => {
            helpers::skip_unless_ci(
                "the shared rate-limit test",
                &format!("{REDIS_ENV} is unset"),
            );
            None
        }
    }
}

/// A check request with an image that is not base64: counted by the rate limit, then refused with
/// 400 before any decoding (cheap, and a client error is never refunded).
async fn send(addr: &str, token: &str) -> reqwest::Response {
    post_check(&client(), addr, token, r#"{"image":"%%%"}"#.into())
        .await
        .unwrap()
}

/// `GET /readyz`: the status and the JSON body.
async fn readyz(addr: &str) -> (StatusCode, Value) {
    let resp = client()
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (
        status,
        serde_json::from_str(&resp.text().await.unwrap()).unwrap(),
    )
}

async fn metric(addr: &str, name: &str) -> f64 {
    let text = get_text(&format!("http://{addr}/metrics")).await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Three replicas, one key, a limit of 6 per minute (one request back every 10 s): across all
/// replicas together the key gets its 6 requests (7 if a refill fell inside the test), not 18.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_holds_across_replicas_through_redis() {
    let Some(redis) = redis_url() else { return };
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("shared.db").display());
    let token = create_key_cli(&db);
    let prefix = format!("lc_test_{}:", Uuid::new_v4().simple());
    let args = [
        "--rate-limit-per-minute",
        "6",
        "--redis-url",
        &redis,
        "--redis-key-prefix",
        &prefix,
    ];
    let replicas: Vec<ServeProcess> = (0..3)
        .map(|_| ServeProcess::spawn(&db, &args, &[("RUST_LOG", "warn")]))
        .collect();
    let started = Instant::now();
    let mut allowed = 0;
    let mut allowed_by = [0; 3];
    for i in 0..18 {
        let resp = send(&replicas[i % 3].addr, &token).await;
        match resp.status() {
            StatusCode::BAD_REQUEST => {
                allowed += 1;
                allowed_by[i % 3] += 1;
            }
            StatusCode::TOO_MANY_REQUESTS => {
                let retry: u64 = resp.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=10).contains(&retry), "Retry-After {retry}");
            }
            other => panic!("unexpected {other}: {}", resp.text().await.unwrap()),
        }
    }
    let elapsed = started.elapsed();
    let refills = (elapsed.as_secs_f64() / 10.0).floor() as usize;
    assert!(
        (6..=6 + refills).contains(&allowed),
        "{allowed} of 18 allowed across 3 replicas in {elapsed:?}"
    );
    // Every replica spent from the one allowance (the first six went round the three).
    assert!(allowed_by.iter().all(|n| *n >= 2), "{allowed_by:?}");
    for replica in &replicas {
        assert_eq!(
            metric(&replica.addr, "livecheck_ratelimit_redis_errors_total").await,
            0.0
        );
    }
    for replica in replicas {
        replica.stop("TERM");
    }
}

/// Redis refuses connections (nothing listens on its port): requests are served, counted by the
/// replica's own limiter (the limit still holds per replica), the error metric counts, and the
/// log says so once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_the_limit_falls_back_to_the_replica() {
    let redis = format!("redis://127.0.0.1:{}/", helpers::free_port());
    fallback_case(&redis, Duration::from_millis(250)).await;
}

/// Redis accepts the connection and never answers: each request waits at most about
/// --redis-timeout, then the replica's own limiter counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_hanging_requests_wait_no_longer_than_the_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let redis = format!("redis://{}/", listener.local_addr().unwrap());
    // Accept and hold every connection, reading nothing and answering nothing.
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for conn in listener.incoming() {
            match conn {
                Ok(c) => open.push(c),
                Err(_) => break,
            }
            if open.len() > 64 {
                break;
            }
        }
    });
    fallback_case(&redis, Duration::from_millis(300)).await;
    drop(held);
}

async fn fallback_case(redis: &str, timeout: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("fallback.db").display());
    let token = create_key_cli(&db);
    let timeout_arg = format!("{}", timeout.as_secs_f64());
    let args = [
        "--rate-limit-per-minute",
        "3",
        "--redis-url",
        redis,
        "--redis-timeout",
        &timeout_arg,
    ];
    let replica = ServeProcess::spawn(&db, &args, &[("RUST_LOG", "warn")]);
    let mut statuses = Vec::new();
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        statuses.push(send(&replica.addr, &token).await.status());
        slowest = slowest.max(started.elapsed());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::BAD_REQUEST,
            StatusCode::BAD_REQUEST,
            StatusCode::BAD_REQUEST,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    // One timeout at most per request (Redis is left alone for a second after a failure).
    assert!(
        slowest < timeout + Duration::from_secs(2),
        "a request took {slowest:?}"
    );
    assert!(metric(&replica.addr, "livecheck_ratelimit_redis_errors_total").await >= 1.0);
    let (_, logs) = replica.stop("TERM");
    assert_eq!(
        logs.matches("counting requests per replica").count(),
        1,
        "{logs}"
    );
}

/// SIGTERM drains: `/readyz` turns 503 `draining` at once, requests that arrive during the grace
/// period are still served (with `Connection: close`), a request in flight when the signal came completes with 200, and
/// then the process exits cleanly and stops listening.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_readiness_first_and_finishes_in_flight_requests() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("drain.db").display());
    let token = create_key_cli(&db);
    let images = helpers::ImageServer::start().await;
    let replica = ServeProcess::spawn(
        &db,
        &["--allow-fetch-from", "127.0.0.1/32"],
        &[("RUST_LOG", "info"), ("LIVECHECK_DRAIN_GRACE", "2")],
    );
    let addr = replica.addr.clone();
    assert_eq!(readyz(&addr).await.0, StatusCode::OK);

    // A check whose image takes 3 s to arrive: in flight across the signal and the grace period.
    let slow = {
        let (addr, token) = (addr.clone(), token.clone());
        let body =
            serde_json::json!({ "image": images.url("/slow/3000/image_T1.jpg") }).to_string();
        tokio::spawn(async move { post_check(&client(), &addr, &token, body).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    replica.signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (status, body) = readyz(&addr).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], "draining");

    // Still served during the grace period.
    let body = serde_json::json!({ "image": images.url("/img/image_F1.jpg") }).to_string();
    let during = post_check(&client(), &addr, &token, body).await.unwrap();
    assert_eq!(during.status(), StatusCode::OK);
    // ... on connections that close after the answer (a proxy stops reusing them).
    assert_eq!(during.headers()["connection"], "close");

    let slow = slow.await.unwrap().expect("the in-flight request was cut");
    assert_eq!(slow.status(), StatusCode::OK);
    let v: Value = serde_json::from_str(&slow.text().await.unwrap()).unwrap();
    assert!(v["data"]["verification"]["reference"].is_string(), "{v}");

    let (status, logs) = tokio::task::spawn_blocking(move || {
        let mut replica = replica;
        let status = replica.child.wait().unwrap();
        (status, replica)
    })
    .await
    .map(|(status, replica)| (status, replica.stop_logs()))
    .unwrap();
    assert!(status.success(), "exit {status:?}: {logs}");
    assert!(logs.contains("draining"), "{logs}");
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "still listening after the drain"
    );
}

/// The shared limiter in-process, on the real Redis: two limiters (two replicas) spend one
/// allowance, a refund (a request the server failed with 5xx) gives one request back to both, and
/// each answer says it was counted in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shared_limiters_spend_and_refund_one_allowance() {
    use livecheck::server::ratelimit::{Counter, RateLimiter, RedisConfig};
    let Some(url) = redis_url() else { return };
    let redis = RedisConfig {
        url,
        key_prefix: format!("lc_test_{}:", Uuid::new_v4().simple()),
        timeout: Duration::from_millis(500),
    };
    let per_minute = std::num::NonZeroU32::new(3).unwrap();
    let errors = prometheus::IntCounter::new("e", "e").unwrap();
    let a = RateLimiter::shared(per_minute, &redis, errors.clone()).unwrap();
    let b = RateLimiter::shared(per_minute, &redis, errors.clone()).unwrap();
    let first = a.check("key").await.unwrap();
    assert_eq!(
        (first.counter, first.limit, first.remaining),
        (Counter::Shared, 3, 2)
    );
    assert_eq!(b.check("key").await.unwrap().remaining, 1);
    assert_eq!(a.check("key").await.unwrap().remaining, 0);
    assert!(b.check("key").await.is_err());
    assert!(a.check("key").await.is_err());
    // Another key has its own allowance.
    assert_eq!(b.check("other").await.unwrap().remaining, 2);

    b.refund("key", Counter::Shared);
    let deadline = Instant::now() + Duration::from_secs(5);
    let back = loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Ok(info) = a.check("key").await {
            break info;
        }
        assert!(Instant::now() < deadline, "the refund never arrived");
    };
    assert_eq!(back.remaining, 0);
    assert!(b.check("key").await.is_err());
    assert_eq!(errors.get(), 0);
}

/// Re-submission across replicas on PostgreSQL: two replicas with one secret
/// (`livecheck resubmission keygen`, given with `--print-key`); a picture checked through one
/// replica with one key is reported as seen by the other replica for another key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resubmission_is_seen_across_replicas() {
    use base64::Engine as _;
    let Ok(base) = std::env::var(PG_ENV) else {
        helpers::skip_unless_ci(
            "the cross-replica re-submission test",
            &format!("{PG_ENV} is unset"),
        );
        return;
    };
    let schema = PgSchema::create(&base).await;
    let db = schema.url.clone();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("print-key.json");
    let out = livecheck(&["resubmission", "keygen", "--out", secret.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Never overwritten.
    let again = livecheck(&["resubmission", "keygen", "--out", secret.to_str().unwrap()]);
    assert!(!again.status.success());
    let (one, two) = (create_key_cli(&db), create_key_cli(&db));
    let args = ["--print-key", secret.to_str().unwrap()];
    let a = ServeProcess::spawn(&db, &args, &[("RUST_LOG", "warn")]);
    let b = ServeProcess::spawn(&db, &args, &[("RUST_LOG", "warn")]);
    let image =
        base64::engine::general_purpose::STANDARD.encode(helpers::silentface("image_T1.jpg"));
    let body = serde_json::json!({ "image": image }).to_string();
    let signal = |text: String| -> Value {
        let v: Value = serde_json::from_str(&text).unwrap();
        v["data"]["signals"]["resubmission"].clone()
    };
    let first = post_check(&client(), &a.addr, &one, body.clone())
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(signal(first.text().await.unwrap())["seen_before"], false);
    let second = post_check(&client(), &b.addr, &two, body).await.unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    let r = signal(second.text().await.unwrap());
    assert_eq!(r["seen_before"], true, "{r}");
    assert_eq!(r["count"], 1);
    assert_eq!(r["same_key"], false);
    a.stop("TERM");
    b.stop("TERM");
    schema.drop().await;
}
