//! Database faults while serving: the disk under SQLite fills up, the SQLite files turn read-only
//! (immutable), PostgreSQL is stopped mid-load. Each time: checks answer 503 with `Retry-After`
//! (never a verdict without its audit row), `/readyz` answers 503, and service resumes by itself
//! once the database is back.
//!
//! Needs root: the disk-full case runs on a small tmpfs mounted for the test, the read-only case
//! sets the immutable attribute (`chattr +i`, so the temporary directory must be on ext4 or
//! another file system that supports it), and the PostgreSQL case
//! stops and restarts this machine's cluster with `pg_ctlcluster` (always restarted, even when the
//! test fails). So the test is `#[ignore]`d in a plain `cargo test`; `scripts/test.sh` runs it
//! when it runs as root (as CI does). It is the only test in this binary, and cargo runs test
//! binaries one after another, so no other test sees PostgreSQL stopped.

#![cfg(unix)]

mod common;
#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use helpers::{silentface, test_config, Backend, TestApp};
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

const UNAVAILABLE: &str =
    r#"{"status":"failed","data":[],"message":"Service unavailable; retry after 5 s"}"#;

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A tmpfs of `size` mounted on a fresh directory; unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap().to_owned();
        run(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", &path],
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the file system holding `dir` with one file; returns it.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 * 1024];
    loop {
        if f.write_all(&block).is_err() {
            break;
        }
    }
    // Whatever partial block fits.
    while f.write_all(&[0u8; 512]).is_ok() {}
    let _ = f.sync_all();
    path
}

async fn check(app: &TestApp, b64: &str) -> (StatusCode, Option<String>, String) {
    let resp = app.check(b64).await;
    let status = resp.status();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry, resp.text().await.unwrap())
}

async fn readyz(app: &TestApp) -> (StatusCode, Value) {
    let resp = app.get("/readyz", None).await;
    let status = resp.status();
    (
        status,
        serde_json::from_str(&resp.text().await.unwrap()).unwrap(),
    )
}

fn reference(body: &str) -> Uuid {
    let v: Value = serde_json::from_str(body).unwrap();
    Uuid::parse_str(v["data"]["verification"]["reference"].as_str().unwrap()).unwrap()
}

/// Sends checks while the fault holds: every answer is a verdict (recorded) or the 503.
/// Returns the references answered and whether a 503 was seen.
async fn checks_during_fault(app: &TestApp, b64: &str, n: usize) -> (Vec<Uuid>, bool) {
    let mut answered = Vec::new();
    let mut refused = false;
    for _ in 0..n {
        let (status, retry, body) = check(app, b64).await;
        match status {
            StatusCode::OK => answered.push(reference(&body)),
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(body, UNAVAILABLE);
                assert_eq!(retry.as_deref(), Some("5"));
                refused = true;
            }
            other => panic!("{other} during a database fault: {body}"),
        }
    }
    (answered, refused)
}

/// After the fault: readiness and checks come back without a restart, and every reference
/// answered during the fault is stored.
async fn recovers(app: &TestApp, b64: &str, answered: &[Uuid]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, v) = readyz(app).await;
        if status == StatusCode::OK {
            assert_eq!(v["database"], "ok");
            break;
        }
        assert!(Instant::now() < deadline, "never ready again: {v}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (status, _, body) = check(app, b64).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for r in answered {
        let resp = app
            .get(&format!("{}{r}/", helpers::CHECK), Some(&app.token))
            .await;
        assert_eq!(resp.status(), StatusCode::OK, "{r} answered but not stored");
    }
}

async fn sqlite_disk_full(b64: &str) {
    let fs = Tmpfs::mount("6m");
    let url = format!("sqlite://{}", fs.path().join("livecheck.db").display());
    let app = helpers::start(Backend::Sqlite, url, test_config()).await;
    let (status, _, body) = check(&app, b64).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let filler = fill(fs.path());
    let (answered, refused) = checks_during_fault(&app, b64, 40).await;
    assert!(refused, "disk full never surfaced as 503");
    let (status, v) = readyz(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["database"], "unwritable");
    std::fs::remove_file(filler).unwrap();
    recovers(&app, b64, &answered).await;
    eprintln!(
        "disk full: {} answered during the fault, then 503s",
        answered.len()
    );
}

/// Sets or clears the immutable attribute of the database files: writes through the descriptors
/// SQLite already holds fail (EPERM), as on a file system turned read-only under it. (A tmpfs
/// cannot be remounted read-only while SQLite holds files open for writing.)
fn immutable(dir: &Path, on: bool) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // Not the -shm file: SQLite maps it, and a write fault on an immutable mapping is SIGBUS
        // (the kernel cannot return an error code to a memory store).
        if name == "livecheck.db" || name == "livecheck.db-wal" {
            run(
                "chattr",
                &[if on { "+i" } else { "-i" }, path.to_str().unwrap()],
            );
        }
    }
}

async fn sqlite_read_only(b64: &str) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("livecheck.db").display());
    let app = helpers::start(Backend::Sqlite, url, test_config()).await;
    let (status, _, body) = check(&app, b64).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    immutable(dir.path(), true);
    let (answered, refused) = checks_during_fault(&app, b64, 10).await;
    let (status, v) = readyz(&app).await;
    immutable(dir.path(), false);
    assert!(refused, "a read-only database never surfaced as 503");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["database"], "unwritable");
    recovers(&app, b64, &answered).await;
    eprintln!(
        "read-only: {} answered during the fault, then 503s",
        answered.len()
    );
}

/// Restarts the PostgreSQL cluster when dropped, whatever happened.
struct PgCluster {
    version: String,
}

impl PgCluster {
    fn find() -> PgCluster {
        let version = std::fs::read_dir("/etc/postgresql")
            .expect("/etc/postgresql: a Debian PostgreSQL cluster")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .max()
            .expect("a PostgreSQL version");
        PgCluster { version }
    }

    fn ctl(&self, action: &str) {
        let mut args = vec!["--skip-systemctl-redirect", &self.version, "main", action];
        if action == "stop" {
            args.extend(["-m", "fast"]);
        }
        run("pg_ctlcluster", &args);
    }

    fn wait_ready(&self) {
        for _ in 0..60 {
            let ok = Command::new("pg_isready")
                .args(["-h", "127.0.0.1", "-p", "5432", "-q"])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("PostgreSQL did not come back");
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let ready = Command::new("pg_isready")
            .args(["-h", "127.0.0.1", "-p", "5432", "-q"])
            .status()
            .is_ok_and(|s| s.success());
        if !ready {
            let _ = Command::new("pg_ctlcluster")
                .args(["--skip-systemctl-redirect", &self.version, "main", "start"])
                .status();
            self.wait_ready();
        }
    }
}

async fn postgres_stopped(base: &str, b64: &str) {
    let cluster = PgCluster::find();
    let schema = helpers::PgSchema::create(base).await;
    let url = schema.url.clone();
    let app = helpers::start(Backend::Postgres, url, test_config()).await;
    let (status, _, body) = check(&app, b64).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    cluster.ctl("stop");
    let (answered, refused) = checks_during_fault(&app, b64, 3).await;
    let (status, v) = readyz(&app).await;
    cluster.ctl("start");
    cluster.wait_ready();
    assert!(answered.is_empty(), "verdicts while PostgreSQL was down");
    assert!(refused);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["database"], "unreachable");
    recovers(&app, b64, &answered).await;

    drop(app);
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: mounts a tmpfs and stops PostgreSQL (scripts/test.sh runs it as root)"]
async fn database_faults_answer_503_and_recover() {
    let b64 = STANDARD.encode(silentface("image_T1.jpg"));
    sqlite_disk_full(&b64).await;
    sqlite_read_only(&b64).await;
    let base = std::env::var("LIVECHECK_TEST_POSTGRES_URL")
        .expect("LIVECHECK_TEST_POSTGRES_URL: the PostgreSQL fault case needs the local server");
    postgres_stopped(&base, &b64).await;
}
