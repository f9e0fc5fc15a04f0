//! Crash durability: `livecheck serve` as a process under load is killed with SIGKILL, restarted
//! on the same database, and every reference it answered 200 before the kill is retrievable.
//! SQLite (a temporary file) and, when `LIVECHECK_TEST_POSTGRES_URL` is set, PostgreSQL (a fresh
//! schema). Every request goes to the server on 127.0.0.1.

#![cfg(unix)]

mod common;
#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use helpers::{post_check, sample_bodies, ServeProcess, CHECK};
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

/// Unlimited rate and a deep queue: every request is either answered or cut by the kill.
const SERVE_ARGS: &[&str] = &["--rate-limit-per-minute", "0", "--max-queued-checks", "64"];

async fn crash_and_recover(db: &str) {
    let token = helpers::create_key_cli(db);
    let server = ServeProcess::spawn(db, SERVE_ARGS, &[("RUST_LOG", "warn")]);
    let addr = server.addr.clone();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let bodies = sample_bodies();

    // Four clients send checks back to back and record every reference answered 200.
    let answered: Arc<Mutex<Vec<Uuid>>> = Arc::default();
    let mut clients = Vec::new();
    for c in 0..4 {
        let (client, addr, token, answered) = (
            client.clone(),
            addr.clone(),
            token.clone(),
            Arc::clone(&answered),
        );
        let bodies = bodies.clone();
        clients.push(tokio::spawn(async move {
            let mut i = c;
            loop {
                let sent =
                    post_check(&client, &addr, &token, bodies[i % bodies.len()].clone()).await;
                i += 1;
                let Ok(resp) = sent else { break };
                if resp.status() != StatusCode::OK {
                    continue;
                }
                let Ok(text) = resp.text().await else { break };
                let v: Value = serde_json::from_str(&text).unwrap();
                let reference = v["data"]["verification"]["reference"].as_str().unwrap();
                answered
                    .lock()
                    .unwrap()
                    .push(Uuid::parse_str(reference).unwrap());
            }
        }));
    }
    // Kill in the middle of the load, once a fair number of answers are in.
    let deadline = Instant::now() + Duration::from_secs(120);
    while answered.lock().unwrap().len() < 40 {
        assert!(
            Instant::now() < deadline,
            "the server answered too few checks"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _) = tokio::task::spawn_blocking(move || server.stop("KILL"))
        .await
        .unwrap();
    assert!(!status.success());
    for c in clients {
        c.await.unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() >= 40);

    // Restart on the same database: every answered reference is there.
    let server = ServeProcess::spawn(db, SERVE_ARGS, &[("RUST_LOG", "warn")]);
    let addr = server.addr.clone();
    for reference in &answered {
        let resp = client
            .get(format!("http://{addr}{CHECK}{reference}/"))
            .header("x-access-token", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "{reference} lost after SIGKILL"
        );
    }
    let _ = tokio::task::spawn_blocking(move || server.stop("TERM")).await;
    eprintln!(
        "{} answered references all survived SIGKILL",
        answered.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_answers_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("crash.db").display());
    crash_and_recover(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_answers_survive_sigkill() {
    let Ok(base) = std::env::var("LIVECHECK_TEST_POSTGRES_URL") else {
        helpers::skip_unless_ci(
            "the PostgreSQL crash test",
            "LIVECHECK_TEST_POSTGRES_URL is unset",
        );
        return;
    };
    let schema = helpers::PgSchema::create(&base).await;
    let db = schema.url.clone();
    let outcome = tokio::spawn(async move { crash_and_recover(&db).await }).await;
    schema.drop().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
