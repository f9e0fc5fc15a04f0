//! The multi-replica test without containers (issue 12), run by `scripts/cluster-test.sh` (which
//! installs nginx from the Debian archive) and by CI; `#[ignore]`d in a plain `cargo test` because
//! it needs nginx, the local PostgreSQL and Redis.
//!
//! nginx on 127.0.0.1 in front of three `livecheck serve` processes sharing one PostgreSQL schema
//! and one Redis. In order:
//! 1. a key's rate limit holds across the three replicas (Redis), within the refill that elapsed;
//! 2. bounded load (`CLIENTS` closed-loop clients) through nginx; one replica is killed with
//!    SIGKILL mid-run; the survivors keep serving;
//! 3. another replica gets SIGTERM under load: its `/readyz` turns 503 first, and no request
//!    through nginx fails while it drains and exits;
//! 4. afterwards every reference answered 200 is retrievable through the last replica and
//!    through nginx, and the audit table holds a row for each (plus at most one per request the
//!    SIGKILL cut, committed but never acknowledged).
//!
//! It prints a Markdown summary (the figures in docs/deploy.md).

#![cfg(unix)]

mod common;
#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use helpers::{
    create_key_cli, free_port, get_text, http_client as client, post_check, sample_bodies,
    PgSchema, ServeProcess, CHECK,
};
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::Connection;
use uuid::Uuid;

/// Closed-loop load clients (each with its own API key).
const CLIENTS: usize = 6;
/// The per-key limit of every replica (the default).
const PER_MINUTE: u32 = 600;
/// Requests sent with one key in the rate-limit phase.
const LIMIT_PROBES: usize = 800;
/// Shortest load phase (before the kill, after it).
const PHASE: Duration = Duration::from_secs(8);
/// Seconds of drain grace for the replica that gets SIGTERM.
const DRAIN_GRACE: &str = "2";

fn nginx_binary() -> PathBuf {
    if let Ok(path) = std::env::var("NGINX") {
        return PathBuf::from(path);
    }
    for candidate in ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!("nginx not found: run scripts/cluster-test.sh (it installs it) or set NGINX");
}

/// nginx as a child process (foreground), proxying 127.0.0.1:`port` to `upstreams`.
struct Nginx {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(upstreams: &[String]) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let d = dir.path().display();
        // As root, nginx's workers would switch to `nobody`, who cannot write the temp folders.
        let user = if running_as_root() { "user root;" } else { "" };
        let servers: String = upstreams
            .iter()
            .map(|a| format!("    server {a} max_fails=1 fail_timeout=5s;\n"))
            .collect();
        let conf = format!(
            "{user}
worker_processes 1;
pid {d}/nginx.pid;
error_log stderr error;
events {{ worker_connections 512; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  client_max_body_size 16m;
  client_body_buffer_size 16m;
  upstream livecheck {{
{servers}  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://livecheck;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_connect_timeout 2s;
      proxy_read_timeout 60s;
      # A replica that refuses the connection (killed, or closed after draining) is skipped;
      # a POST already sent is never replayed on another replica.
      proxy_next_upstream error timeout;
    }}
  }}
}}
"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for Nginx {
    /// SIGTERM to the master, which stops its workers (SIGKILL would orphan them, and they would
    /// hold the test's output pipes open); SIGKILL only if it has not exited within 5 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// What the load clients saw, per phase.
#[derive(Default)]
struct Tally {
    /// References answered 200, with the index of the key (client) that asked.
    ok: Vec<(Uuid, usize)>,
    /// Non-200 statuses, and transport errors as status 0.
    other: BTreeMap<u16, usize>,
    latencies_ms: Vec<f64>,
}

const PHASES: [&str; 3] = ["3 replicas", "after SIGKILL", "during SIGTERM drain"];

async fn load(
    addr: String,
    tokens: Vec<String>,
    phase: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    tallies: Arc<Mutex<[Tally; 3]>>,
) {
    let bodies = sample_bodies();
    let mut tasks = Vec::new();
    for (c, token) in tokens.into_iter().enumerate() {
        let (addr, phase, stop, tallies, bodies) = (
            addr.clone(),
            Arc::clone(&phase),
            Arc::clone(&stop),
            Arc::clone(&tallies),
            bodies.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let client = client();
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let p = phase.load(Ordering::Relaxed);
                let sent =
                    post_check(&client, &addr, &token, bodies[i % bodies.len()].clone()).await;
                i += 1;
                let outcome = match sent {
                    Ok(resp) if resp.status() == StatusCode::OK => {
                        let v: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
                        let r = v["data"]["verification"]["reference"].as_str().unwrap();
                        Ok(Uuid::parse_str(r).unwrap())
                    }
                    Ok(resp) => Err(resp.status().as_u16()),
                    Err(_) => Err(0),
                };
                // A request counts in the phase it started in, unless the phase moved on while it
                // ran (then in the later one: it was in flight across the event).
                let p = p.max(phase.load(Ordering::Relaxed));
                let mut t = tallies.lock().unwrap();
                t[p].latencies_ms
                    .push(started.elapsed().as_secs_f64() * 1000.0);
                match outcome {
                    Ok(reference) => t[p].ok.push((reference, c)),
                    Err(status) => *t[p].other.entry(status).or_default() += 1,
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs nginx, PostgreSQL and Redis: run scripts/cluster-test.sh"]
async fn three_replicas_behind_nginx() {
    let pg = std::env::var("LIVECHECK_TEST_POSTGRES_URL")
        .expect("LIVECHECK_TEST_POSTGRES_URL: the cluster test needs the local PostgreSQL");
    let redis = std::env::var("LIVECHECK_TEST_REDIS_URL")
        .expect("LIVECHECK_TEST_REDIS_URL: the cluster test needs the local Redis");
    let schema = PgSchema::create(&pg).await;
    let db = schema.url.clone();
    let outcome = tokio::spawn(async move { cluster(&db, &redis).await }).await;
    schema.drop().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn cluster(db: &str, redis: &str) {
    let prefix = format!("lc_cluster_{}:", Uuid::new_v4().simple());
    let limit = PER_MINUTE.to_string();
    let args = [
        "--redis-url",
        redis,
        "--redis-key-prefix",
        &prefix,
        "--rate-limit-per-minute",
        &limit,
    ];
    let env = [("RUST_LOG", "warn"), ("LIVECHECK_DRAIN_GRACE", DRAIN_GRACE)];
    let replicas: Vec<ServeProcess> = (0..3)
        .map(|_| ServeProcess::spawn(db, &args, &env))
        .collect();
    let addrs: Vec<String> = replicas.iter().map(|r| r.addr.clone()).collect();
    let nginx = Nginx::start(&addrs);
    let front = nginx.addr.clone();
    let mut report = String::new();

    // 1. One key's limit across the three replicas: cheap requests (an image that is not
    // base64: counted, then 400) from 4 concurrent senders through nginx's round robin.
    let limit_token = create_key_cli(db);
    let started = Instant::now();
    let sent = Arc::new(AtomicUsize::new(0));
    let allowed = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..4 {
        let (front, token, sent, allowed) = (
            front.clone(),
            limit_token.clone(),
            Arc::clone(&sent),
            Arc::clone(&allowed),
        );
        senders.push(tokio::spawn(async move {
            let client = client();
            while sent.fetch_add(1, Ordering::Relaxed) < LIMIT_PROBES {
                let resp = post_check(&client, &front, &token, r#"{"image":"%%%"}"#.into())
                    .await
                    .unwrap();
                match resp.status() {
                    StatusCode::BAD_REQUEST => {
                        allowed.fetch_add(1, Ordering::Relaxed);
                    }
                    StatusCode::TOO_MANY_REQUESTS => {}
                    other => panic!("rate-limit phase: unexpected {other}"),
                }
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    let elapsed = started.elapsed();
    let allowed = allowed.load(Ordering::Relaxed);
    // One request comes back every 60 s / limit.
    let refilled = (elapsed.as_secs_f64() * f64::from(PER_MINUTE) / 60.0).ceil() as usize;
    assert!(
        allowed >= PER_MINUTE as usize && allowed <= PER_MINUTE as usize + refilled + 1,
        "{allowed} of {LIMIT_PROBES} allowed in {elapsed:?} (limit {PER_MINUTE}, {refilled} refilled)"
    );
    for addr in &addrs {
        let text = get_text(&format!("http://{addr}/metrics")).await;
        let served: f64 = text
            .lines()
            .filter(|l| l.starts_with("livecheck_http_requests_total") && l.contains("check"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert!(served > 0.0, "nginx sent no check to {addr}");
        assert!(
            text.contains("livecheck_ratelimit_redis_errors_total 0"),
            "{addr} could not reach Redis"
        );
    }
    report.push_str(&format!(
        "- Shared rate limit: {LIMIT_PROBES} requests with one key through nginx to 3 replicas in \
         {:.1} s: {allowed} allowed (limit {PER_MINUTE}/min, {refilled} refilled meanwhile; \
         per-replica limits would have allowed up to {}).\n",
        elapsed.as_secs_f64(),
        3 * PER_MINUTE
    ));

    // 2. Load, then SIGKILL one replica.
    let tokens: Vec<String> = (0..CLIENTS).map(|_| create_key_cli(db)).collect();
    let phase = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let tallies: Arc<Mutex<[Tally; 3]>> = Arc::default();
    let load_task = tokio::spawn(load(
        front.clone(),
        tokens.clone(),
        Arc::clone(&phase),
        Arc::clone(&stop),
        Arc::clone(&tallies),
    ));
    let mut replicas = replicas.into_iter();
    let first = replicas.next().unwrap();
    let second = replicas.next().unwrap();
    let third = replicas.next().unwrap();
    let load_started = Instant::now();
    wait_until("60 answers", Duration::from_secs(180), || {
        tallies.lock().unwrap()[0].ok.len() >= 60 && load_started.elapsed() >= PHASE
    })
    .await;
    let phase0_secs = load_started.elapsed().as_secs_f64();
    phase.store(1, Ordering::Relaxed);
    let killed_at = Instant::now();
    let (status, _) = tokio::task::spawn_blocking(move || first.stop("KILL"))
        .await
        .unwrap();
    assert!(!status.success());
    wait_until(
        "60 answers after the kill",
        Duration::from_secs(180),
        || tallies.lock().unwrap()[1].ok.len() >= 60 && killed_at.elapsed() >= PHASE,
    )
    .await;
    let phase1_secs = killed_at.elapsed().as_secs_f64();

    // 3. SIGTERM on the second replica while the load goes on.
    phase.store(2, Ordering::Relaxed);
    let term_at = Instant::now();
    second.signal("TERM");
    let second_addr = second.addr.clone();
    let mut readyz = None;
    for _ in 0..50 {
        match client()
            .get(format!("http://{second_addr}/readyz"))
            .send()
            .await
        {
            Ok(resp) if resp.status() == StatusCode::SERVICE_UNAVAILABLE => {
                readyz = Some(term_at.elapsed());
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let readyz = readyz.expect("/readyz did not turn 503 after SIGTERM");
    let (status, logs) = tokio::task::spawn_blocking(move || {
        let mut second = second;
        let status = second.child.wait().unwrap();
        (status, second.stop_logs())
    })
    .await
    .unwrap();
    assert!(status.success(), "exit after SIGTERM: {status:?}\n{logs}");
    let drained_in = term_at.elapsed();
    // More load on the last replica, then stop.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let phase2_secs = term_at.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    load_task.await.unwrap();

    let tallies = std::mem::take(&mut *tallies.lock().unwrap());
    report.push_str(&format!(
        "- SIGTERM: `/readyz` answered 503 after {:.0} ms; the replica exited cleanly {:.1} s \
         after the signal (grace {DRAIN_GRACE} s).\n",
        readyz.as_secs_f64() * 1000.0,
        drained_in.as_secs_f64()
    ));
    report.push_str(
        "\n| phase | seconds | 200 | other answers | checks/s | p50 ms | p95 ms | max ms |\n\
         |---|---:|---:|---|---:|---:|---:|---:|\n",
    );
    for (p, t) in tallies.iter().enumerate() {
        let secs = [phase0_secs, phase1_secs, phase2_secs][p];
        let mut lat = t.latencies_ms.clone();
        lat.sort_by(f64::total_cmp);
        let other = if t.other.is_empty() {
            "none".to_owned()
        } else {
            t.other
                .iter()
                .map(|(s, n)| {
                    if *s == 0 {
                        format!("{n} x transport error")
                    } else {
                        format!("{n} x {s}")
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        report.push_str(&format!(
            "| {} | {secs:.1} | {} | {other} | {:.1} | {:.0} | {:.0} | {:.0} |\n",
            PHASES[p],
            t.ok.len(),
            t.ok.len() as f64 / secs,
            percentile(&lat, 0.5),
            percentile(&lat, 0.95),
            lat.last().copied().unwrap_or(f64::NAN),
        ));
    }
    // Before the kill and during the drain nothing may fail; the kill may cut the requests that
    // were on the killed replica (nginx answers 502 for those: a POST already sent is not
    // replayed). The survivors kept serving.
    // (429 is the clients' own rate limit at work, not a failure.)
    let failures = |t: &Tally| -> usize {
        t.other
            .iter()
            .filter(|(s, _)| **s != 429)
            .map(|(_, n)| n)
            .sum()
    };
    assert_eq!(failures(&tallies[0]), 0, "{:?}", tallies[0].other);
    assert_eq!(
        failures(&tallies[2]),
        0,
        "drain lost requests: {:?}",
        tallies[2].other
    );
    let cut = failures(&tallies[1]);
    assert!(
        tallies[1].other.keys().all(|s| *s == 502 || *s == 429),
        "{:?}",
        tallies[1].other
    );
    assert!(cut <= CLIENTS, "{cut} requests cut by one SIGKILL");
    assert!(!tallies[2].ok.is_empty());

    // 4. Every acknowledged reference, through the last replica and through nginx.
    let acknowledged: Vec<(Uuid, usize)> = tallies.iter().flat_map(|t| t.ok.clone()).collect();
    let unique: HashSet<Uuid> = acknowledged.iter().map(|(r, _)| *r).collect();
    assert_eq!(
        unique.len(),
        acknowledged.len(),
        "a reference was answered twice"
    );
    for (reference, c) in &acknowledged {
        for addr in [&third.addr, &front] {
            let resp = client()
                .get(format!("http://{addr}{CHECK}{reference}/"))
                .header("x-access-token", &tokens[*c])
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{reference} via {addr}");
        }
    }
    let mut conn = sqlx::PgConnection::connect(db).await.unwrap();
    let rows: Vec<(String,)> = sqlx::query_as("SELECT reference::text FROM audit")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
    let stored: HashSet<Uuid> = rows
        .into_iter()
        .map(|(r,)| Uuid::parse_str(&r).unwrap())
        .collect();
    let missing = unique.difference(&stored).count();
    assert_eq!(
        missing, 0,
        "{missing} acknowledged verdicts have no audit row"
    );
    let unacknowledged = stored.len() - unique.len();
    assert!(
        unacknowledged <= cut,
        "{unacknowledged} audit rows without an answer, {cut} requests cut"
    );
    report.push_str(&format!(
        "- Afterwards: all {} references answered 200 retrievable through the last replica and \
         through nginx; {} audit rows = {} acknowledged + {} committed by the killed replica \
         whose answers were cut ({} requests cut).\n",
        unique.len(),
        stored.len(),
        unique.len(),
        unacknowledged,
        cut
    ));
    let (status, _) = tokio::task::spawn_blocking(move || third.stop("TERM"))
        .await
        .unwrap();
    assert!(status.success());
    drop(nginx);
    println!("\n{report}");
}
