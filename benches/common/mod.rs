//! What the service benchmarks share: the upstream samples, a local image server, percentiles,
//! the CPU name and the docs/benchmarks.md section writer. Included by `load.rs` and `soak.rs`.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

#[path = "../../tests/api/helpers.rs"]
pub mod helpers;

#[path = "../../tests/common/mod.rs"]
mod testcommon;
#[allow(unused_imports)]
pub use testcommon::{
    models, sample, silentface, skip_unless_ci, with_each_database, PgSchema, TestServer, PG_ENV,
};

use axum::extract::Path as UrlPath;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

pub const CHECK: &str = "/api/onboarding/biometrics/face/liveliness_check/";
/// The three upstream samples and whether each is live.
pub const IMAGES: [(&str, bool); 3] = [
    ("image_F1.jpg", false),
    ("image_F2.jpg", false),
    ("image_T1.jpg", true),
];

pub use helpers::silentface as read_image;

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Serves the samples at `/img/{name}` on 127.0.0.1:0.
pub async fn image_server() -> SocketAddr {
    let files: Arc<Vec<(String, Vec<u8>)>> = Arc::new(
        IMAGES
            .iter()
            .map(|(n, _)| ((*n).to_owned(), read_image(n)))
            .collect(),
    );
    let router = Router::new().route(
        "/img/{name}",
        get(move |UrlPath(name): UrlPath<String>| {
            let files = Arc::clone(&files);
            async move {
                match files.iter().find(|(n, _)| *n == name) {
                    Some((_, bytes)) => {
                        ([(header::CONTENT_TYPE, "image/jpeg")], bytes.clone()).into_response()
                    }
                    None => StatusCode::NOT_FOUND.into_response(),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

/// A `VmRSS:`-style field of `/proc/PID/status` or `smaps_rollup`, in KiB (0 if unreadable).
fn proc_kib(file: &str, field: &str) -> u64 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Resident set size of one process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    proc_kib(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// Proportional set size of one process (shared pages split between their users), KiB: the
/// fair measure for a service made of several processes.
pub fn pss_kib(pid: u32) -> u64 {
    proc_kib(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

/// `pid` and all its descendants, from the parent links in `/proc/*/stat`.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(ppid) = stat_fields(child).and_then(|f| f.get(1)?.parse::<u32>().ok()) {
                parents.push((child, ppid));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    tree
}

/// Fields of `/proc/PID/stat` after the command name: state, ppid, ... (field 3 onwards).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(split_stat(&stat)?.1)
}

/// A `stat` file's command name (between the parentheses) and the fields after it.
fn split_stat(stat: &str) -> Option<(&str, Vec<String>)> {
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let rest = stat.get(close + 2..)?;
    Some((
        &stat[open + 1..close],
        rest.split_whitespace().map(str::to_owned).collect(),
    ))
}

/// utime and stime in a [`stat_fields`] list: fields 14 and 15 of stat, 11 and 12 after the
/// name and state.
const UTIME: usize = 11;
const STIME: usize = 12;

/// The clock ticks in field `i` of a [`stat_fields`] list (0 when absent).
fn ticks_at(fields: &[String], i: usize) -> u64 {
    fields
        .get(i)
        .and_then(|f| f.parse::<u64>().ok())
        .unwrap_or(0)
}

/// utime + stime, in clock ticks, of a [`stat_fields`] list.
fn cpu_ticks(fields: &[String]) -> u64 {
    ticks_at(fields, UTIME) + ticks_at(fields, STIME)
}

/// What one thread name's threads have used so far ([`thread_usage`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ThreadUsage {
    /// CPU seconds, user + system.
    pub cpu_s: f64,
    /// The system (kernel) part of `cpu_s`: with tick accounting and no IRQ time accounting
    /// (this machine's kernel), interrupts taken while the thread ran are counted here too.
    pub system_s: f64,
    /// Context switches, voluntary and not.
    pub switches: u64,
    /// The involuntary part of `switches`: the thread was runnable and the scheduler gave its
    /// core to another thread (which may then evict what it had in the core's caches).
    pub preempted: u64,
}

impl ThreadUsage {
    /// The usage between an `earlier` reading and this one.
    pub fn since(self, earlier: ThreadUsage) -> ThreadUsage {
        ThreadUsage {
            cpu_s: self.cpu_s - earlier.cpu_s,
            system_s: self.system_s - earlier.system_s,
            switches: self.switches.saturating_sub(earlier.switches),
            preempted: self.preempted.saturating_sub(earlier.preempted),
        }
    }
}

/// CPU seconds (user + system, and system alone) and context switches (voluntary and not) so
/// far of each thread of `pid`, summed by thread name (`/proc/PID/task/*`). A name whose threads
/// have all ended since an earlier reading is missing from a later one.
pub fn thread_usage(pid: u32) -> std::collections::BTreeMap<String, ThreadUsage> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let dir = task.path();
        let (Ok(stat), Ok(status)) = (
            std::fs::read_to_string(dir.join("stat")),
            std::fs::read_to_string(dir.join("status")),
        ) else {
            continue;
        };
        let Some((name, fields)) = split_stat(&stat) else {
            continue;
        };
        let ticks = cpu_ticks(&fields);
        let system_ticks = ticks_at(&fields, STIME);
        let count = |field: &str| -> u64 {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                .unwrap_or(0)
        };
        let preempted = count("nonvoluntary_ctxt_switches");
        let switches = count("voluntary_ctxt_switches") + preempted;
        let entry: &mut ThreadUsage = out.entry(name.to_owned()).or_default();
        entry.cpu_s += ticks as f64 / clock_ticks_per_second();
        entry.system_s += system_ticks as f64 / clock_ticks_per_second();
        entry.switches += switches;
        entry.preempted += preempted;
    }
    out
}

/// CPU time (user + system) used so far by `pids`, in seconds.
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    let ticks: u64 = pids
        .iter()
        .filter_map(|&p| stat_fields(p))
        .map(|f| cpu_ticks(&f))
        .sum();
    ticks as f64 / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

/// Replaces the section starting with `heading` (a `## ` line) of docs/benchmarks.md, up to the
/// next `## `, with `section`; or appends it.
pub fn write_docs(heading: &str, section: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/benchmarks.md");
    let old = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".to_owned());
    let marker = format!("{heading}\n");
    let new = match old.find(&marker) {
        Some(start) => {
            let rest = &old[start + 3..];
            let end = rest
                .find("\n## ")
                .map(|i| start + 3 + i + 1)
                .unwrap_or(old.len());
            let tail = &old[end..];
            let tail = if tail.is_empty() {
                String::new()
            } else {
                format!("\n{tail}")
            };
            format!("{}{}{}", &old[..start], section, tail)
        }
        None => format!(
            "{}\n{section}",
            old.trim_end_matches('\n').to_owned() + "\n"
        ),
    };
    std::fs::write(&path, new).unwrap();
    eprintln!("wrote {}", path.display());
}
