//! Side by side: `livecheck serve` (the release binary, default flags, rate limit off, SQLite
//! audit) against the Python peer service (`scripts/peer_service.py`: the same recipe on FastAPI +
//! uvicorn with 2 workers + onnxruntime + OpenCV, TCP_NODELAY set), each driven in turn by the same
//! closed-loop clients sending the three upstream samples as base64. At 1, 4, 16 and 64 clients it
//! reports successful req/s, p50/p99 latency, non-2xx answers, CPU per request and memory of each
//! service, and the ratios; then a 512-client burst against livecheck with a `/healthz` prober.
//!
//!   bash scripts/loadbench.sh                     # installs the peer, builds, runs, ~4 minutes
//!   bash scripts/loadbench.sh --write-docs        # also replaces the section in docs/benchmarks.md
//!
//! Environment: `VERSUS_SECS` (measured seconds per run, default 15), `VERSUS_LEVELS` (default
//! `1,4,16,64`), `VERSUS_BURST` (burst clients, default 512; 0 skips), `VERSUS_LC_ARGS` (extra
//! `serve` flags for livecheck, space-separated), `VERSUS_BASELINE_BIN` (another build of
//! `livecheck`, run in the peer's place with the same flags: an A/B of two builds in one command,
//! the ratio is this build's over that one's; the Markdown still says "peer"),
//! `VERSUS_BASELINE_ARGS` (extra `serve` flags for that other side only, after
//! `VERSUS_LC_ARGS`: with the same binary on both sides, an A/B of one setting), `VERSUS_PYTHON` (the
//! peer's interpreter, default `.bench-venv/bin/python`), `LIVECHECK_MODEL_DIR`,
//! `LIVECHECK_MODEL_SET` (a built-in set both services run; default: livecheck's default set). The clients run
//! on the same cores as the servers (the same for both). All traffic stays on loopback.
//!
//! Without `--bench` (e.g. `cargo test --benches`) it does nothing: it needs the release build
//! and the Python peer.

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use common::helpers::ServeProcess;
use common::{
    cpu_model, cpu_seconds, percentile, process_tree, pss_kib, read_image, rss_kib, thread_usage,
    ThreadUsage,
};
use common::{CHECK, IMAGES};

/// One service under test.
struct Service {
    name: &'static str,
    base: String,
    token: Option<String>,
    pid: u32,
}

/// What one run at a number of clients measured.
#[derive(Default, Clone)]
struct Run {
    clients: usize,
    secs: f64,
    answers: Tally,
    cpu_s: f64,
    /// CPU seconds of the load clients (this process) over the measured window.
    client_cpu_s: f64,
    rss_mb: f64,
    pss_mb: f64,
    healthz_ms: Vec<f64>,
    /// livecheck only: mean wall time per check of each stage during the run, ms.
    stages_ms: BTreeMap<String, f64>,
    /// CPU seconds (all, and in the kernel) and context switches over the window of the
    /// server's threads, by name.
    threads: BTreeMap<String, ThreadUsage>,
}

/// The answers seen by clients whose answer completed inside the measured window, whenever it
/// was sent: throughput is completions per second of the same window the CPU is read over. (Until
/// session 29 an answer counted only if its request was *sent* inside the window, so the requests
/// queued when the window opened ran on the window's CPU without being counted: in the burst, whose
/// queue holds up to 2 s of checks, the rate read up to 13 % low and the CPU per check as much
/// high.)
#[derive(Default, Clone)]
struct Tally {
    ok: usize,
    /// Successful answers in the window whose request was sent before it opened.
    ok_sent_before: usize,
    /// Successful answers counted the pre-session-29 way: sent inside the window and answered
    /// before the clients stopped.
    ok_by_send_time: usize,
    /// Non-2xx answers by status.
    statuses: BTreeMap<u16, usize>,
    /// 503s without `Retry-After`.
    unavailable_without_retry_after: usize,
    /// Transport errors (refused, reset).
    errors: usize,
    /// Verdicts that disagree with the sample's label.
    wrong: usize,
    /// Latencies of the 200s, ms.
    latencies_ms: Vec<f64>,
}

/// What one request got.
enum Outcome {
    /// A 200; `wrong` when its verdict disagrees with the sample's label.
    Ok {
        wrong: bool,
    },
    Status {
        code: u16,
        retry_after: bool,
    },
    Error,
}

/// One request: when it was sent and answered (the body read), and what it got.
struct Answer {
    sent: Instant,
    done: Instant,
    outcome: Outcome,
}

impl Tally {
    /// The answers completed in `[from, until)`; `stopped` is when the clients were told to stop.
    fn of(answers: &[Answer], from: Instant, until: Instant, stopped: Instant) -> Tally {
        let mut t = Tally::default();
        for a in answers {
            if matches!(a.outcome, Outcome::Ok { .. }) && a.sent >= from && a.done < stopped {
                t.ok_by_send_time += 1;
            }
            if a.done < from || a.done >= until {
                continue;
            }
            match a.outcome {
                Outcome::Ok { wrong } => {
                    t.ok += 1;
                    t.ok_sent_before += usize::from(a.sent < from);
                    t.wrong += usize::from(wrong);
                    t.latencies_ms.push((a.done - a.sent).as_secs_f64() * 1e3);
                }
                Outcome::Status { code, retry_after } => {
                    *t.statuses.entry(code).or_default() += 1;
                    if code == 503 && !retry_after {
                        t.unavailable_without_retry_after += 1;
                    }
                }
                Outcome::Error => t.errors += 1,
            }
        }
        t.latencies_ms.sort_by(f64::total_cmp);
        t
    }
}

/// One closed-loop client: request after request until `stop`, every answer recorded with its
/// times. After a 503 or 429 it waits as `Retry-After` says.
async fn client(
    url: String,
    token: Option<String>,
    bodies: Arc<Vec<(Bytes, bool)>>,
    offset: usize,
    stop: Arc<AtomicBool>,
) -> Vec<Answer> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .expect("client");
    let mut answers = Vec::new();
    let mut i = offset;
    while !stop.load(Ordering::Relaxed) {
        let (body, live) = &bodies[i % bodies.len()];
        i += 1;
        let mut req = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(t) = &token {
            req = req.header("x-access-token", t);
        }
        let sent = Instant::now();
        let resp = match req.send().await {
            Err(_) => {
                answers.push(Answer {
                    sent,
                    done: Instant::now(),
                    outcome: Outcome::Error,
                });
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            Ok(resp) => resp,
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<f64>().ok());
        let text = resp.text().await.unwrap_or_default();
        let done = Instant::now();
        let outcome = if status == 200 {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            Outcome::Ok {
                wrong: v["data"]["status"].as_bool() != Some(*live),
            }
        } else {
            Outcome::Status {
                code: status,
                retry_after: retry_after.is_some(),
            }
        };
        answers.push(Answer {
            sent,
            done,
            outcome,
        });
        // A well-behaved client waits as told, spread over 1 to 2 times the hint so that shed
        // clients do not come back in one wave.
        if let Some(secs) = retry_after.filter(|_| status == 503 || status == 429) {
            let spread = 1.0 + (i % 7) as f64 / 7.0;
            tokio::time::sleep(Duration::from_secs_f64(secs.min(10.0) * spread)).await;
        }
    }
    answers
}

impl Run {
    fn ok_per_s(&self) -> f64 {
        self.answers.ok as f64 / self.secs
    }
    fn p(&self, q: f64) -> f64 {
        percentile(&self.answers.latencies_ms, q)
    }
    fn cpu_ms_per_ok(&self) -> f64 {
        self.cpu_s * 1e3 / self.answers.ok.max(1) as f64
    }
    /// How many of the successes were in flight when the window opened, and the rate counted
    /// by send time as before session 29.
    fn counting(&self) -> String {
        format!(
            "{} of the successes sent before the window opened; {:.1} ok/s counted by send time",
            self.answers.ok_sent_before,
            self.answers.ok_by_send_time as f64 / self.secs,
        )
    }
}

/// GET /healthz every 20 ms on its own connection; latencies in ms.
async fn healthz_prober(base: String, stop: Arc<AtomicBool>) -> Vec<f64> {
    let http = reqwest::Client::new();
    let mut out = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        match http.get(format!("{base}/healthz")).send().await {
            Ok(r) if r.status().is_success() => out.push(t0.elapsed().as_secs_f64() * 1e3),
            // A failed probe counts as the whole timeout of a load balancer's check.
            _ => out.push(f64::INFINITY),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    out
}

async fn run(
    service: &Service,
    bodies: &Arc<Vec<(Bytes, bool)>>,
    clients: usize,
    warmup: Duration,
    secs: Duration,
    probe: bool,
) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let measure_from = Instant::now() + warmup;
    let url = format!("{}{CHECK}", service.base);
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            tokio::spawn(client(
                url.clone(),
                service.token.clone(),
                Arc::clone(bodies),
                c,
                Arc::clone(&stop),
            ))
        })
        .collect();
    let prober = probe.then(|| tokio::spawn(healthz_prober(service.base.clone(), stop.clone())));
    tokio::time::sleep_until(measure_from.into()).await;
    let tree = process_tree(service.pid);
    let stages0 = stage_totals(&service.base).await;
    let cpu0 = cpu_seconds(&tree);
    let threads0 = thread_usage(service.pid);
    // The load clients run in this process, on the same cores as the server.
    let me = [std::process::id()];
    let client_cpu0 = cpu_seconds(&me);
    let started = Instant::now();
    // Memory: the largest of samples taken through the run.
    let (mut rss, mut pss) = (0u64, 0u64);
    while started.elapsed() < secs {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss = rss.max(tree.iter().map(|&p| rss_kib(p)).sum());
        pss = pss.max(tree.iter().map(|&p| pss_kib(p)).sum());
    }
    let cpu_s = cpu_seconds(&tree) - cpu0;
    let ended = Instant::now();
    let threads = thread_usage(service.pid)
        .into_iter()
        .map(|(name, usage)| {
            let before = threads0.get(&name).copied().unwrap_or_default();
            (name, usage.since(before))
        })
        .collect();
    let client_cpu_s = cpu_seconds(&me) - client_cpu0;
    let stages1 = stage_totals(&service.base).await;
    stop.store(true, Ordering::Relaxed);
    let stopped = Instant::now();
    let stages_ms = stages1
        .iter()
        .filter_map(|(stage, (sum1, n1))| {
            let (sum0, n0) = stages0.get(stage).copied().unwrap_or((0.0, 0.0));
            (n1 > &n0).then(|| (stage.clone(), (sum1 - sum0) * 1e3 / (n1 - n0)))
        })
        .collect();
    let mut out = Run {
        clients,
        secs: (ended - started).as_secs_f64(),
        cpu_s,
        client_cpu_s,
        rss_mb: rss as f64 / 1024.0,
        pss_mb: pss as f64 / 1024.0,
        stages_ms,
        threads,
        ..Run::default()
    };
    let mut answers = Vec::new();
    for task in tasks {
        answers.extend(task.await.expect("client task"));
    }
    out.answers = Tally::of(&answers, started, ended, stopped);
    if let Some(p) = prober {
        out.healthz_ms = p.await.expect("prober");
        out.healthz_ms.sort_by(f64::total_cmp);
    }
    out
}

/// `stage -> (seconds summed, count)` from livecheck's `/metrics` (empty for the peer).
async fn stage_totals(base: &str) -> BTreeMap<String, (f64, f64)> {
    let mut out: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    let Ok(resp) = reqwest::get(format!("{base}/metrics")).await else {
        return out;
    };
    let text = resp.text().await.unwrap_or_default();
    for line in text.lines() {
        for (suffix, is_sum) in [("_sum{stage=\"", true), ("_count{stage=\"", false)] {
            let prefix = format!("livecheck_stage_duration_seconds{suffix}");
            let Some(rest) = line.strip_prefix(&prefix) else {
                continue;
            };
            let Some((stage, value)) = rest.split_once("\"} ") else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            let entry = out.entry(stage.to_owned()).or_default();
            if is_sum {
                entry.0 = value;
            } else {
                entry.1 = value;
            }
        }
    }
    out
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Starts the Python peer and waits until it answers `/healthz` (each worker loads the models).
async fn start_peer(python: &Path, models: &Path, set_file: &Path) -> (Child, String) {
    let port = free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/peer_service.py");
    let child = Command::new(python)
        .arg(script)
        .arg(models)
        .arg(port.to_string())
        .arg("2")
        .env("PEER_MODEL_SET", set_file)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the peer with {}: {e}", python.display()));
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/healthz")).await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the peer did not start");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (child, base)
}

fn statuses(r: &Run) -> String {
    let a = &r.answers;
    let mut parts: Vec<String> = a.statuses.iter().map(|(s, n)| format!("{n}x{s}")).collect();
    if a.errors > 0 {
        parts.push(format!("{} errors", a.errors));
    }
    if parts.is_empty() {
        "0".to_owned()
    } else {
        parts.join(", ")
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        eprintln!("versus: skipped outside `cargo bench` (needs the release build and the peer)");
        return;
    }
    let write_docs = args.iter().any(|a| a == "--write-docs");
    let env_num = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let secs = Duration::from_secs(env_num("VERSUS_SECS", 15));
    let warmup = Duration::from_secs(3);
    let burst = env_num("VERSUS_BURST", 512) as usize;
    let levels: Vec<usize> = std::env::var("VERSUS_LEVELS")
        .unwrap_or_else(|_| "1,4,16,64".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var_os("VERSUS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".bench-venv/bin/python"));
    let models = common::helpers::model_dir();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_livecheck"));

    let b64 = base64::engine::general_purpose::STANDARD;
    let bodies: Arc<Vec<(Bytes, bool)>> = Arc::new(
        IMAGES
            .iter()
            .map(|(name, live)| {
                let body = serde_json::json!({ "image": b64.encode(read_image(name)) });
                (Bytes::from(body.to_string()), *live)
            })
            .collect(),
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("versus.db").display());
    let token = common::helpers::create_key_cli(&db);
    // Both services run the same model set: livecheck's default unless LIVECHECK_MODEL_SET names
    // a built-in set.
    let set_name = std::env::var("LIVECHECK_MODEL_SET")
        .unwrap_or_else(|_| livecheck::models::DEFAULT_MODEL_SET.to_string());
    let set_file = root.join("models/sets").join(format!("{set_name}.json"));
    assert!(set_file.is_file(), "no built-in set {set_name}");
    // VERSUS_LC_ARGS: extra `serve` flags for livecheck (an A/B of one setting), space-separated.
    let extra = std::env::var("VERSUS_LC_ARGS").unwrap_or_default();
    let mut args = vec!["--rate-limit-per-minute", "0", "--model-set", &set_name];
    args.extend(extra.split_whitespace());
    let lc = ServeProcess::spawn_binary(&bin, &db, &args, &[("RUST_LOG", "warn")]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // The other side: the Python peer, or (VERSUS_BASELINE_BIN) another build of livecheck.
    let baseline = std::env::var_os("VERSUS_BASELINE_BIN").map(|bin| {
        let db = format!("sqlite://{}", dir.path().join("baseline.db").display());
        let token = common::helpers::create_key_cli(&db);
        let extra = std::env::var("VERSUS_BASELINE_ARGS").unwrap_or_default();
        let mut args = args.clone();
        args.extend(extra.split_whitespace());
        let serve =
            ServeProcess::spawn_binary(Path::new(&bin), &db, &args, &[("RUST_LOG", "warn")]);
        (serve, token)
    });
    let versus_livecheck = baseline.is_some();
    let (mut peer, peer_base, peer_token, peer_pid) = match &baseline {
        None => {
            let (peer, base) = rt.block_on(start_peer(&python, &models, &set_file));
            let pid = peer.id();
            (Some(peer), base, None, pid)
        }
        Some((serve, token)) => (
            None,
            format!("http://{}", serve.addr),
            Some(token.clone()),
            serve.child.id(),
        ),
    };
    let lc_service = Service {
        name: "livecheck",
        base: format!("http://{}", lc.addr),
        token: Some(token),
        pid: lc.child.id(),
    };
    let peer_service = Service {
        name: if baseline.is_some() {
            "baseline"
        } else {
            "peer"
        },
        base: peer_base,
        token: peer_token,
        pid: peer_pid,
    };

    let mut rows = Vec::new();
    for &clients in &levels {
        let mut pair = Vec::new();
        for service in [&lc_service, &peer_service] {
            eprintln!("{} at {clients} clients ...", service.name);
            let r = rt.block_on(run(service, &bodies, clients, warmup, secs, false));
            eprintln!(
                "  {:.1} ok/s, p50 {:.1} ms, p99 {:.1} ms, non-2xx {}, {:.1} ms CPU per ok ({})",
                r.ok_per_s(),
                r.p(50.0),
                r.p(99.0),
                statuses(&r),
                r.cpu_ms_per_ok(),
                r.counting(),
            );
            pair.push(r);
        }
        rows.push((pair[0].clone(), pair[1].clone()));
    }
    // The fallback without the engine's fused kernels, at the level the peer was measured at.
    let plain_level = env_num("VERSUS_PLAIN_CLIENTS", 4) as usize;
    let plain_run = rows
        .iter()
        .find(|(l, _)| l.clients == plain_level)
        .map(|(_, peer_run)| {
            let db = format!("sqlite://{}", dir.path().join("plain.db").display());
            let token = common::helpers::create_key_cli(&db);
            let plain = ServeProcess::spawn_binary(
                &bin,
                &db,
                &["--rate-limit-per-minute", "0", "--kernels", "tract"],
                &[("RUST_LOG", "warn")],
            );
            let service = Service {
                name: "livecheck --kernels tract",
                base: format!("http://{}", plain.addr),
                token: Some(token),
                pid: plain.child.id(),
            };
            eprintln!("{} at {plain_level} clients ...", service.name);
            let r = rt.block_on(run(&service, &bodies, plain_level, warmup, secs, false));
            plain.stop("TERM");
            (r, peer_run.clone())
        });
    let burst_run = (burst > 0).then(|| {
        eprintln!("livecheck burst of {burst} clients ...");
        rt.block_on(run(&lc_service, &bodies, burst, warmup, secs, true))
    });
    // The uvicorn workers (and multiprocessing's helpers) are the peer's descendants: stop them
    // all, children first, then reap the parent.
    if let Some(peer) = &mut peer {
        for pid in process_tree(peer.id()).into_iter().rev() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        let _ = peer.wait();
    }
    if let Some((serve, _)) = baseline {
        serve.stop("TERM");
    }
    let (_, logs) = lc.stop("TERM");

    let mut md = String::new();
    md.push_str("## Side by side with the Python service\n\n");
    md.push_str(&format!(
        "`bash scripts/loadbench.sh` ({}, {} cores shared by both servers and the load \
         clients; {} s measured per run after {} s of warm-up; closed-loop clients sending the \
         three upstream samples as base64; model set `{}` on both sides). livecheck: the release \
         binary with default flags and `--rate-limit-per-minute 0`, SQLite audit (every verdict committed before it is \
         sent). Peer: `scripts/peer_service.py`, the same recipe on FastAPI + uvicorn (2 \
         workers) + onnxruntime + OpenCV, with TCP_NODELAY set on its connections (stock \
         uvicorn loses about 40 ms per kept-alive request to Nagle and delayed ACKs); it stores \
         nothing. Successful req/s counts the 200s answered inside the measured window, \
         whenever they were sent (the window the CPU is read over). CPU is the servers' user + \
         system time per successful check; memory is the \
         largest sample during the run, RSS summed over the peer's processes and PSS (shared \
         pages split).\n\n",
        cpu_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        secs.as_secs(),
        warmup.as_secs(),
        set_name,
    ));
    md.push_str(
        "| clients | livecheck ok/s | peer ok/s | ratio | livecheck p50 / p99 ms | peer p50 / p99 ms \
         | livecheck non-2xx | peer non-2xx | CPU ms per check (lc / peer) | RSS MB (lc / peer) \
         | PSS MB (lc / peer) |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (l, p) in &rows {
        md.push_str(&format!(
            "| {} | {:.1} | {:.1} | {:.2} | {:.1} / {:.1} | {:.1} / {:.1} | {} | {} | {:.1} / {:.1} \
             | {:.0} / {:.0} | {:.0} / {:.0} |\n",
            l.clients,
            l.ok_per_s(),
            p.ok_per_s(),
            l.ok_per_s() / p.ok_per_s().max(1e-9),
            l.p(50.0),
            l.p(99.0),
            p.p(50.0),
            p.p(99.0),
            statuses(l),
            statuses(p),
            l.cpu_ms_per_ok(),
            p.cpu_ms_per_ok(),
            l.rss_mb,
            p.rss_mb,
            l.pss_mb,
            p.pss_mb,
        ));
    }
    md.push_str(
        "\nlivecheck per check, mean wall time of each stage (ms; `pipeline` is the time on a CPU \
         slot: decode, detect, classify and the image hash; on a quiet server the classifiers \
         run on two slots, so wall time is not CPU time: the CPU outside the pipeline is the \
         per-thread table's `off the check threads`):\n\n| clients | pipeline | decode | detect \
         | classify | audit | CPU per check |\n|---|---|---|---|---|---|---|\n",
    );
    for (l, _) in &rows {
        let st = |k: &str| l.stages_ms.get(k).copied().unwrap_or(f64::NAN);
        md.push_str(&format!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            l.clients,
            st("pipeline"),
            st("decode"),
            st("detect"),
            st("classify"),
            st("audit"),
            l.cpu_ms_per_ok(),
        ));
    }
    md.push_str(
        "\nlivecheck's CPU per check by thread (ms; `livecheck-cpu`: the CPU slots' threads, which \
         run the checks; `livecheck-serve`: the async workers, HTTP, JSON and the hand-offs; \
         `sqlx-sqlite-wor`: SQLite's worker threads, the re-submission lookup and the audit \
         commit), the part of the check threads' CPU spent in the kernel (system time, which \
         on a kernel with tick accounting also holds the interrupts taken while they ran), \
         the context switches of all its threads per check, and how often per check a check \
         thread lost its core while it could still run (involuntary switches of \
         `livecheck-cpu`: the other thread may evict the check's data from the core's \
         caches):\n\n| clients | livecheck-cpu | of which kernel | livecheck-serve | \
         sqlx-sqlite-wor | other threads | off the check threads | context switches | check \
         threads preempted |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    // With VERSUS_BASELINE_BIN the other side is livecheck too: its rows follow, marked.
    // The burst's row last: where its extra CPU per successful check goes.
    let sides: Vec<(&Run, &str)> = rows
        .iter()
        .flat_map(|(l, p)| [(l, ""), (p, " (baseline)")])
        .filter(|(_, mark)| versus_livecheck || mark.is_empty())
        .chain(burst_run.iter().map(|b| (b, " (burst)")))
        .collect();
    for (l, mark) in sides {
        let ok = l.answers.ok.max(1) as f64;
        let per_check = |name: &str, part: fn(&ThreadUsage) -> f64| {
            l.threads
                .iter()
                .filter(|(n, _)| n.starts_with(name))
                .map(|(_, usage)| part(usage))
                .sum::<f64>()
                * 1e3
                / ok
        };
        let ms = |name: &str| per_check(name, |u| u.cpu_s);
        let all: f64 = l.threads.values().map(|u| u.cpu_s).sum::<f64>() * 1e3 / ok;
        let named = ["livecheck-cpu", "livecheck-serve", "sqlx-sqlite-wor"];
        let other = (all - named.iter().map(|n| ms(n)).sum::<f64>()).max(0.0);
        let switches: u64 = l.threads.values().map(|u| u.switches).sum();
        let preempted: u64 = l
            .threads
            .iter()
            .filter(|(n, _)| n.starts_with(named[0]))
            .map(|(_, u)| u.preempted)
            .sum();
        md.push_str(&format!(
            "| {}{mark} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.2} |\n",
            l.clients,
            ms(named[0]),
            per_check(named[0], |u| u.system_s),
            ms(named[1]),
            ms(named[2]),
            other,
            all - ms(named[0]),
            switches as f64 / ok,
            preempted as f64 / ok,
        ));
    }
    let wrong: usize = rows
        .iter()
        .map(|(l, p)| l.answers.wrong + p.answers.wrong)
        .sum();
    md.push_str(&format!(
        "\nVerdicts that disagreed with the sample's label: {wrong}.\n"
    ));
    if let Some((r, peer_run)) = &plain_run {
        md.push_str(&format!(
            "\nWithout the fused kernels (`--kernels tract`: tract's own kernels for every \
             convolution, what a CPU with neither AVX-512 nor AVX2 + FMA gets for the 1x1 and \
             dense 3x3 ones): {:.1} ok/s at {} clients against the \
             peer's {:.1} (ratio {:.2}), p50 / p99 {:.1} / {:.1} ms, {:.1} ms CPU per check, \
             non-2xx {}.\n",
            r.ok_per_s(),
            r.clients,
            peer_run.ok_per_s(),
            r.ok_per_s() / peer_run.ok_per_s().max(1e-9),
            r.p(50.0),
            r.p(99.0),
            r.cpu_ms_per_ok(),
            statuses(r),
        ));
    }
    if let Some(b) = &burst_run {
        let at16 = rows.iter().find(|(l, _)| l.clients == 16).map(|(l, _)| l);
        md.push_str(&format!(
            "\nBurst: {} clients against livecheck for {} s: {:.1} successful checks/s{} \
             ({}), answers other than 200: {} ({} of the 503s without `Retry-After`); `/healthz` \
             every 20 ms meanwhile: p50 {:.1} ms, p99 {:.1} ms over {} probes. (Clients \
             wait as `Retry-After` says before retrying.) CPU over the {} s window: server {:.1} s ({:.1} ms per successful check), load clients \
             {:.1} s{}.\n",
            b.clients,
            secs.as_secs(),
            b.ok_per_s(),
            at16.map_or(String::new(), |l| format!(" (16 clients: {:.1})", l.ok_per_s())),
            b.counting(),
            statuses(b),
            b.answers.unavailable_without_retry_after,
            percentile(&b.healthz_ms, 50.0),
            percentile(&b.healthz_ms, 99.0),
            b.healthz_ms.len(),
            secs.as_secs(),
            b.cpu_s,
            b.cpu_ms_per_ok(),
            b.client_cpu_s,
            at16.map_or(String::new(), |l| format!(
                " (at 16 clients: server {:.1} s, clients {:.1} s)",
                l.cpu_s, l.client_cpu_s
            )),
        ));
    }
    println!("{md}");
    if logs.contains("ERROR") || logs.contains("panicked") {
        eprintln!("server log:\n{logs}");
    }
    if write_docs {
        common::write_docs("## Side by side with the Python service", &md);
    }
}
