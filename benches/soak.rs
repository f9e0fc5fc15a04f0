//! Soak: `livecheck serve` as its own process (so that its RSS is its own), driven for a fixed
//! time at its capacity with a mix of traffic, all on 127.0.0.1:
//!
//! - checks of live and attack images, as base64 and as URLs of a local image server;
//! - bad requests: invalid JSON, missing field, not an image, a truncated JPEG, no key;
//! - slow clients: uploads that stall until the body timeout, headers trickled until the header
//!   timeout.
//!
//! "At capacity": as many closed-loop check clients as the server has CPU slots (one per core),
//! so the CPU is always busy, plus one client each for bad requests and slow clients. Reports
//! throughput, p50/p99 of checks, responses by status, and the server's RSS at start (after a
//! warm-up minute), middle and end. Fails when RSS grows by more than 10 % after warm-up or when
//! any 5xx other than a documented 503 appears.
//!
//!   cargo build --release && cargo bench --bench soak                 # 10 minutes
//!   SOAK_SECS=60 cargo bench --bench soak                             # shorter
//!   cargo bench --bench soak -- --write-docs                          # also docs/benchmarks.md
//!
//! Without `--bench` (e.g. `cargo test --benches`) it runs for 20 seconds and asserts the same.

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::helpers::ServeProcess;
use common::{percentile, read_image, rss_kib, CHECK, IMAGES};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The `livecheck` binary: the release build when there is one (what operators run), else the
/// one cargo built for this bench.
fn binary() -> PathBuf {
    let release = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/livecheck");
    if release.is_file() && std::env::var_os("SOAK_DEV_BINARY").is_none() {
        release
    } else {
        PathBuf::from(env!("CARGO_BIN_EXE_livecheck"))
    }
}

#[derive(Default)]
struct Tally {
    /// (kind, status) → count.
    statuses: BTreeMap<(&'static str, u16), usize>,
    check_ms: Vec<f64>,
    wrong_verdicts: usize,
    transport_errors: usize,
}

fn start_server(bin: &Path, db: &str, cores: usize) -> (ServeProcess, String) {
    let token = common::helpers::create_key_cli(db);
    let cores = cores.to_string();
    let args = [
        "--allow-fetch-from",
        "127.0.0.1/32",
        "--max-concurrent-checks",
        &cores,
        "--rate-limit-per-minute",
        "0",
        "--body-timeout",
        "5",
        "--header-timeout",
        "5",
    ];
    let server = ServeProcess::spawn_binary(bin, db, &args, &[("RUST_LOG", "warn")]);
    (server, token)
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: String,
) -> Result<(u16, String), reqwest::Error> {
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        req = req.header("x-access-token", t);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await?))
}

/// A check client: images in turn, base64 and URL alternately; verdicts checked.
async fn check_client(
    id: usize,
    client: reqwest::Client,
    url: String,
    images: String,
    token: String,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
) {
    let b64: Vec<String> = IMAGES
        .iter()
        .map(|(n, _)| STANDARD.encode(read_image(n)))
        .collect();
    let mut i = id;
    while !stop.load(Ordering::Relaxed) {
        let (name, live) = IMAGES[i % IMAGES.len()];
        let (image, kind) = if i.is_multiple_of(2) {
            (b64[i % IMAGES.len()].clone(), "check_base64")
        } else {
            (format!("{images}/img/{name}"), "check_url")
        };
        i += 1;
        let t0 = Instant::now();
        let result = post(
            &client,
            &url,
            Some(&token),
            serde_json::json!({ "image": image }).to_string(),
        )
        .await;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        let mut t = tally.lock().unwrap();
        match result {
            Ok((status, text)) => {
                *t.statuses.entry((kind, status)).or_default() += 1;
                if status == 200 {
                    t.check_ms.push(ms);
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                    if v["data"]["status"] != live {
                        t.wrong_verdicts += 1;
                    }
                }
            }
            Err(_) => t.transport_errors += 1,
        }
    }
}

/// Bad requests in turn; each has a documented 4xx.
async fn bad_client(
    client: reqwest::Client,
    url: String,
    token: String,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
) {
    let t1 = read_image("image_T1.jpg");
    let truncated = STANDARD.encode(&t1[..t1.len() * 7 / 10]);
    let cases: Vec<(&'static str, Option<&str>, String)> = vec![
        ("bad_json", Some(token.as_str()), "{\"image\": ".to_owned()),
        ("missing_field", Some(token.as_str()), "{}".to_owned()),
        (
            "not_an_image",
            Some(token.as_str()),
            serde_json::json!({"image": STANDARD.encode(b"hello, not an image")}).to_string(),
        ),
        (
            "truncated_jpeg",
            Some(token.as_str()),
            serde_json::json!({ "image": truncated }).to_string(),
        ),
        ("no_key", None, "{}".to_owned()),
    ];
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let (kind, key, body) = &cases[i % cases.len()];
        i += 1;
        let result = post(&client, &url, *key, body.clone()).await;
        {
            let mut t = tally.lock().unwrap();
            match result {
                Ok((status, _)) => *t.statuses.entry((kind, status)).or_default() += 1,
                Err(_) => t.transport_errors += 1,
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Slow clients: a stalled upload (408 after the body timeout), then a trickled header (closed
/// after the header timeout), in turn.
async fn slow_client(addr: String, token: String, stop: Arc<AtomicBool>, tally: Arc<Mutex<Tally>>) {
    let mut i: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let Ok(mut conn) = tokio::net::TcpStream::connect(&addr).await else {
            tally.lock().unwrap().transport_errors += 1;
            continue;
        };
        if i.is_multiple_of(2) {
            let head = format!(
                "POST {CHECK} HTTP/1.1\r\nhost: {addr}\r\nx-access-token: {token}\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n{{\"image\":\""
            );
            let _ = conn.write_all(head.as_bytes()).await;
            let mut buf = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut buf)).await;
            let text = String::from_utf8_lossy(&buf);
            let status = text
                .get(9..12)
                .and_then(|s| s.parse::<u16>().ok())
                .unwrap_or(0);
            *tally
                .lock()
                .unwrap()
                .statuses
                .entry(("slow_body", status))
                .or_default() += 1;
        } else {
            let _ = conn.write_all(b"GET /healthz HTTP/1.1\r\nx-slow: ").await;
            let start = Instant::now();
            let mut buf = [0u8; 256];
            loop {
                match tokio::time::timeout(Duration::from_millis(500), conn.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(_)) => {}
                    Err(_) => {
                        if conn.write_all(b"a").await.is_err()
                            || start.elapsed() > Duration::from_secs(30)
                        {
                            break;
                        }
                    }
                }
            }
            // 0: closed by the server without a response, as intended.
            *tally
                .lock()
                .unwrap()
                .statuses
                .entry(("slow_header", 0))
                .or_default() += 1;
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let write = args.iter().any(|a| a == "--write-docs");
    let secs: u64 = match std::env::var("SOAK_SECS") {
        Ok(v) => v.parse().expect("SOAK_SECS must be a number"),
        Err(_) if full => 600,
        Err(_) => 20,
    };
    let warmup = Duration::from_secs((secs / 10).clamp(5, 60));
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let bin = binary();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("soak.db").display());
    let (server, token) = start_server(&bin, &db, cores);
    let pid = server.child.id();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
        .unwrap();
    let (tally, rss, wall) = rt.block_on(async {
        let images = format!("http://{}", common::image_server().await);
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let url = format!("http://{}{CHECK}", server.addr);
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let mut tasks = Vec::new();
        for id in 0..cores {
            tasks.push(tokio::spawn(check_client(
                id,
                client.clone(),
                url.clone(),
                images.clone(),
                token.clone(),
                Arc::clone(&stop),
                Arc::clone(&tally),
            )));
        }
        tasks.push(tokio::spawn(bad_client(
            client.clone(),
            url.clone(),
            token.clone(),
            Arc::clone(&stop),
            Arc::clone(&tally),
        )));
        tasks.push(tokio::spawn(slow_client(
            server.addr.clone(),
            token.clone(),
            Arc::clone(&stop),
            Arc::clone(&tally),
        )));

        let start = Instant::now();
        tokio::time::sleep(warmup).await;
        // Counting starts after the warm-up.
        *tally.lock().unwrap() = Tally::default();
        let measured = Instant::now();
        let rss_start = rss_kib(pid);
        let rest = Duration::from_secs(secs).saturating_sub(warmup);
        tokio::time::sleep(rest / 2).await;
        let rss_mid = rss_kib(pid);
        tokio::time::sleep(rest / 2).await;
        let rss_end = rss_kib(pid);
        let wall = measured.elapsed();
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(40), t).await;
        }
        eprintln!("soak ran {:.0} s in all", start.elapsed().as_secs_f64());
        let tally = std::mem::take(&mut *tally.lock().unwrap());
        (tally, [rss_start, rss_mid, rss_end], wall)
    });
    let _ = server.stop("TERM");

    let mut ms = tally.check_ms.clone();
    ms.sort_by(f64::total_cmp);
    let checks_ok = ms.len();
    let growth = (rss[2] as f64 - rss[0] as f64) / rss[0].max(1) as f64 * 100.0;
    let bad_5xx: usize = tally
        .statuses
        .iter()
        .filter(|((_, s), _)| *s >= 500 && *s != 503)
        .map(|(_, n)| n)
        .sum();
    let mut s = String::from("## Soak\n\n");
    s.push_str(&format!(
        "`cargo bench --bench soak` ({} binary `{}`, SQLite audit, {cores} cores shared with other work): \
         {:.0} s measured after a {:.0} s warm-up; {cores} closed-loop check clients (the server's CPU slots, \
         so the CPU is saturated), images as base64 and as local URLs in turn, plus one client sending bad \
         requests and one slow client (stalled bodies, trickled headers). Body and header timeouts 5 s.\n\n",
        if bin.ends_with("release/livecheck") { "release" } else { "dev-profile" },
        bin.display(),
        wall.as_secs_f64(),
        warmup.as_secs_f64()
    ));
    s.push_str(&format!(
        "Checks answered 200: {checks_ok} ({:.1}/s), p50 {:.1} ms, p99 {:.1} ms; wrong verdicts: {}; \
         transport errors: {}.\n\n",
        checks_ok as f64 / wall.as_secs_f64(),
        percentile(&ms, 50.0),
        percentile(&ms, 99.0),
        tally.wrong_verdicts,
        tally.transport_errors
    ));
    s.push_str("| traffic | status | count |\n|---|---:|---:|\n");
    for ((kind, status), n) in &tally.statuses {
        let shown = if *status == 0 {
            "closed".to_owned()
        } else {
            status.to_string()
        };
        s.push_str(&format!("| {kind} | {shown} | {n} |\n"));
    }
    s.push_str(&format!(
        "\nServer RSS: {:.1} MiB after warm-up, {:.1} MiB at the middle, {:.1} MiB at the end \
         ({growth:+.1} %; the limit is +10 %). 5xx other than 503: {bad_5xx}.\n",
        rss[0] as f64 / 1024.0,
        rss[1] as f64 / 1024.0,
        rss[2] as f64 / 1024.0,
    ));
    println!("{s}");
    if write {
        common::write_docs("## Soak", &s);
    }
    assert_eq!(bad_5xx, 0, "5xx other than 503");
    assert_eq!(tally.wrong_verdicts, 0, "wrong verdicts");
    assert!(checks_ok > 0, "no check answered");
    assert!(growth <= 10.0, "RSS grew {growth:.1} % after warm-up");
}
