//! Service load benchmark: the real server (in-process, on 127.0.0.1:0, temp SQLite audit store,
//! real models) answering `POST .../liveliness_check/` for image URLs served by a local image
//! server, at 1, 4 and 16 concurrent clients. Reports throughput and p50/p99 latency, checks every
//! verdict, and at the end asserts that the audit table holds exactly one row per 200 response.
//!
//!   cargo bench --bench load                       # prints the Markdown section
//!   cargo bench --bench load -- --write-docs       # also replaces "## Service load" in docs/benchmarks.md
//!
//! Environment: `LOAD_REQUESTS` (per concurrency level, default 120), `LOAD_LEVELS` (default
//! `1,4,16`), `LIVECHECK_MODEL_DIR`. Without `--bench` (e.g. under `cargo test --benches`) it runs
//! a small smoke version. All traffic stays on loopback.
//!
//! `LOAD_SHADOW=SET` measures what `--shadow-model-set SET` costs the answers instead: two servers,
//! one without and one with the shadow set, driven in turn (A, B, A, B at each level) in the same
//! command, and prints their throughput and latency side by side with the shadow scorer's counts.

#[path = "common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{cpu_model, image_server, percentile, CHECK, IMAGES};
use livecheck::pipeline::PipelineConfig;
use livecheck::server::{AppConfig, Application};
use livecheck::store::Store;

/// Result of one concurrency level.
struct Level {
    clients: usize,
    requests: usize,
    ok: usize,
    other: usize,
    wall: Duration,
    p50_ms: f64,
    p99_ms: f64,
    mean_ms: f64,
}

/// `clients` tasks share `requests` requests; each checks its verdict against the image.
async fn run_level(
    client: &reqwest::Client,
    api: SocketAddr,
    images: SocketAddr,
    token: &str,
    clients: usize,
    requests: usize,
) -> Level {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let next = Arc::clone(&next);
        let client = client.clone();
        let token = token.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut other = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    break;
                }
                let (name, live) = IMAGES[i % IMAGES.len()];
                let body = serde_json::json!({ "image": format!("http://{images}/img/{name}") });
                let t0 = Instant::now();
                let resp = client
                    .post(format!("http://{api}{CHECK}"))
                    .header("x-access-token", &token)
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .expect("request failed");
                let status = resp.status();
                let text = resp.text().await.expect("body");
                let ms = t0.elapsed().as_secs_f64() * 1e3;
                if status == StatusCode::OK {
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(
                        v["data"]["status"], live,
                        "wrong verdict for {name}: {text}"
                    );
                    latencies.push(ms);
                } else {
                    eprintln!("non-200 under load: {status} {text}");
                    other += 1;
                }
            }
            (latencies, other)
        }));
    }
    let mut latencies = Vec::new();
    let mut other = 0;
    for t in tasks {
        let (l, o) = t.await.unwrap();
        latencies.extend(l);
        other += o;
    }
    let wall = start.elapsed();
    latencies.sort_by(f64::total_cmp);
    let mean_ms = latencies.iter().sum::<f64>() / latencies.len().max(1) as f64;
    Level {
        clients,
        requests,
        ok: latencies.len(),
        other,
        wall,
        p50_ms: percentile(&latencies, 50.0),
        p99_ms: percentile(&latencies, 99.0),
        mean_ms,
    }
}

/// Mean milliseconds per stage over the whole run, from the server's own histograms.
fn stage_means(metrics: &livecheck::server::Metrics) -> Vec<(&'static str, f64)> {
    ["fetch", "decode", "detect", "classify", "pipeline", "audit"]
        .into_iter()
        .map(|stage| {
            let h = metrics.stage_duration.with_label_values(&[stage]);
            let n = h.get_sample_count().max(1) as f64;
            (stage, h.get_sample_sum() * 1e3 / n)
        })
        .collect()
}

fn markdown(
    levels: &[Level],
    cores: usize,
    audit_rows: i64,
    ok_total: usize,
    stages: &[(&'static str, f64)],
) -> String {
    let profile = if cfg!(debug_assertions) {
        "dev profile: dependencies at opt-level 3, livecheck at opt-level 1"
    } else {
        "release profile"
    };
    let mut s = String::new();
    s.push_str("## Service load\n\n");
    s.push_str(&format!(
        "`cargo bench --bench load` ({profile}; {}, {cores} cores, shared with other work): the real \
         server in-process on 127.0.0.1 with a temporary SQLite audit store, \
         `--max-concurrent-checks {cores}`, clients posting image URLs of the three upstream \
         samples (640x480 JPEG, 65-86 KB) served by a local image server. Latency is per request \
         as the client sees it (fetch + decode + detect + classify + audit insert + HTTP).\n\n",
        cpu_model()
    ));
    s.push_str("| clients | requests | 200 | other | throughput (req/s) | p50 (ms) | p99 (ms) | mean (ms) |\n");
    s.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for l in levels {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
            l.clients,
            l.requests,
            l.ok,
            l.other,
            l.ok as f64 / l.wall.as_secs_f64(),
            l.p50_ms,
            l.p99_ms,
            l.mean_ms
        ));
    }
    if levels.iter().all(|l| l.other == 0) {
        s.push_str(&format!(
            "\nWith more clients than CPU slots ({cores}), requests wait for a slot (admitted while \
             the expected wait stays under `--max-queue-wait`): throughput stays at the CPU limit \
             and latency grows with the queue. No request was refused or failed.\n"
        ));
    }
    s.push_str(
        "\nServer-side mean per check over the whole run (ms; `pipeline` is decode + detect + \
                classify as run on the blocking pool, `audit` the committed insert):\n\n",
    );
    s.push_str(&format!(
        "| {} |\n|{}\n| {} |\n",
        stages
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(" | "),
        "---:|".repeat(stages.len()),
        stages
            .iter()
            .map(|(_, ms)| format!("{ms:.1}"))
            .collect::<Vec<_>>()
            .join(" | ")
    ));
    s.push_str(&format!(
        "\nAfter the run the audit table held {audit_rows} rows for {ok_total} responses with status \
         200 (warm-up included): one row per verdict, committed before each answer.\n"
    ));
    s
}

/// The server settings of every run: loopback image URLs allowed, one CPU slot per core, no
/// rate limit.
fn load_config(cores: usize) -> AppConfig {
    AppConfig {
        fetch: livecheck::fetch::FetchConfig {
            allow: vec!["127.0.0.1/32".parse().unwrap()],
            ..Default::default()
        },
        max_concurrent_checks: cores,
        // One key stands for every client here: its fetch cap would refuse the load itself.
        max_fetches_per_key: 64,
        rate_limit_per_minute: None,
        ..AppConfig::default()
    }
}

fn load_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// A running server of the load bench, its store and key.
struct Server {
    api: SocketAddr,
    token: String,
    store: Store,
    metrics: livecheck::server::Metrics,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), livecheck::server::ServerError>>,
    _dir: tempfile::TempDir,
}

async fn start_server(config: AppConfig, pipeline: Arc<livecheck::pipeline::Pipeline>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("load.db").display());
    let store = Store::connect(&db).await.unwrap();
    let (_, token) = store.create_key("load").await.unwrap();
    let app = Application::build(config, pipeline, store.clone()).unwrap();
    let metrics = app.metrics().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run(listener, async {
        let _ = stopped.await;
    }));
    Server {
        api,
        token,
        store,
        metrics,
        stop,
        task,
        _dir: dir,
    }
}

/// `LOAD_SHADOW`: the same load on a server without and one with a shadow model set.
#[allow(clippy::too_many_arguments)]
async fn shadow_comparison(
    shadow_set: &str,
    pipeline: Arc<livecheck::pipeline::Pipeline>,
    model_dir: &std::path::Path,
    config: AppConfig,
    client: &reqwest::Client,
    images: SocketAddr,
    levels: &[usize],
    requests: usize,
    cores: usize,
) {
    let shadow = Arc::new(
        livecheck::load_pipeline(Some(shadow_set), Some(model_dir), PipelineConfig::default())
            .expect("load the shadow set"),
    );
    let plain = start_server(config.clone(), Arc::clone(&pipeline)).await;
    let shadowed = start_server(
        AppConfig {
            shadow_pipeline: Some(livecheck::server::shadow::ShadowSet(shadow)),
            ..config
        },
        pipeline,
    )
    .await;
    for s in [&plain, &shadowed] {
        run_level(client, s.api, images, &s.token, cores, 3 * cores).await;
    }
    let mut rows = String::new();
    for &c in levels {
        // (req/s, p50, p99) summed over two rounds of each, interleaved.
        let mut sums = [[0.0f64; 3]; 2];
        for _ in 0..2 {
            for (i, s) in [&plain, &shadowed].into_iter().enumerate() {
                let l = run_level(client, s.api, images, &s.token, c, requests).await;
                assert_eq!(l.other, 0, "non-200 responses under load");
                sums[i][0] += l.ok as f64 / l.wall.as_secs_f64() / 2.0;
                sums[i][1] += l.p50_ms / 2.0;
                sums[i][2] += l.p99_ms / 2.0;
            }
        }
        let [a, b] = sums;
        eprintln!(
            "{c:>3} clients: {:.1} vs {:.1} req/s, p50 {:.1} vs {:.1} ms, p99 {:.1} vs {:.1} ms",
            a[0], b[0], a[1], b[1], a[2], b[2]
        );
        rows.push_str(&format!(
            "| {c} | {:.1} | {:.1} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
            a[0],
            b[0],
            b[0] / a[0],
            a[1],
            b[1],
            a[2],
            b[2]
        ));
    }
    let counts: Vec<String> = ["scored", "dropped", "failed"]
        .into_iter()
        .map(|o| {
            let n = shadowed.metrics.shadow.with_label_values(&[o]).get();
            format!("{n} {o}")
        })
        .collect();
    println!(
        "`LOAD_SHADOW={shadow_set} cargo bench --bench load` ({}, {cores} cores; {requests} \
         requests per round, two rounds of each server per level, interleaved; figures are the \
         means of the two):\n\n\
         | clients | without: req/s | with shadow: req/s | ratio | without: p50 ms | with: p50 ms | \
         without: p99 ms | with: p99 ms |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n{rows}\n\
         Shadow scorer: {}.",
        cpu_model(),
        counts.join(", ")
    );
    for s in [plain, shadowed] {
        let _ = s.stop.send(());
        s.task.await.unwrap().unwrap();
        s.store.close().await;
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let write = args.iter().any(|a| a == "--write-docs");
    let requests: usize = match std::env::var("LOAD_REQUESTS") {
        Ok(v) => v.parse().expect("LOAD_REQUESTS must be a number"),
        Err(_) if full => 120,
        Err(_) => 6,
    };
    let levels: Vec<usize> = match std::env::var("LOAD_LEVELS") {
        Ok(v) => v
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .expect("LOAD_LEVELS: comma-separated numbers")
            })
            .collect(),
        Err(_) if full => vec![1, 4, 16],
        Err(_) => vec![1, 4],
    };
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);

    let model_dir = common::models();
    let pipeline = Arc::new(
        livecheck::load_pipeline(None, Some(&model_dir), PipelineConfig::default())
            .expect("load models (set LIVECHECK_MODEL_DIR)"),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if let Ok(shadow_set) = std::env::var("LOAD_SHADOW") {
        runtime.block_on(async move {
            let images = image_server().await;
            shadow_comparison(
                &shadow_set,
                pipeline,
                &model_dir,
                load_config(cores),
                &load_client(),
                images,
                &levels,
                requests,
                cores,
            )
            .await;
        });
        return;
    }
    runtime.block_on(async move {
        let images = image_server().await;
        let Server {
            api,
            token,
            store,
            metrics,
            stop,
            task: server,
            _dir,
        } = start_server(load_config(cores), pipeline).await;
        let client = load_client();

        // Warm-up: connections, allocator, per-thread scratch buffers.
        let warm = run_level(&client, api, images, &token, cores, 3 * cores).await;
        let mut ok_total = warm.ok;
        let mut results = Vec::new();
        for &c in &levels {
            let level = run_level(&client, api, images, &token, c, requests).await;
            eprintln!(
                "{c:>3} clients: {:.1} req/s, p50 {:.1} ms, p99 {:.1} ms ({} ok, {} other)",
                level.ok as f64 / level.wall.as_secs_f64(),
                level.p50_ms,
                level.p99_ms,
                level.ok,
                level.other
            );
            ok_total += level.ok;
            results.push(level);
        }
        let _ = stop.send(());
        server.await.unwrap().unwrap();
        let audit_rows = store.count_audit().await.unwrap();
        assert_eq!(
            audit_rows, ok_total as i64,
            "audit rows must equal the number of 200 responses"
        );
        assert!(
            results.iter().all(|l| l.other == 0),
            "non-200 responses under load"
        );
        let section = markdown(
            &results,
            cores,
            audit_rows,
            ok_total,
            &stage_means(&metrics),
        );
        println!("{section}");
        if write {
            common::write_docs("## Service load", &section);
        }
        store.close().await;
    });
}
