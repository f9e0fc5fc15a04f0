//! Test harness: the real server in-process on 127.0.0.1:0 with real models and a fresh database
//! (a temporary SQLite file, and a fresh PostgreSQL schema when `LIVECHECK_TEST_POSTGRES_URL` is
//! set), plus a real local image server on 127.0.0.1:0.
//!
//! Network safety: every server here binds loopback, and every URL a test hands the API points at
//! loopback. Nothing is ever aimed at a private, link-local or public address.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{Path as UrlPath, Query};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use livecheck::fetch::FetchConfig;
use livecheck::pipeline::{Pipeline, PipelineConfig};
use livecheck::server::{AppConfig, Application};
use livecheck::store::Store;
use sqlx::Connection;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

pub const CHECK: &str = "/api/onboarding/biometrics/face/liveliness_check/";
#[allow(dead_code)] // the session and capture tests
pub const SESSIONS: &str = "/api/onboarding/biometrics/face/liveliness_check/sessions/";
#[allow(unused_imports)] // each test binary that includes this file uses a part of it
pub use crate::common::{skip_unless_ci, PgSchema, TestServer, PG_ENV};

pub use crate::common::models as model_dir;

/// One Silent-Face sample's bytes (`tests/fixtures/silentface`).
pub fn silentface(name: &str) -> Vec<u8> {
    crate::common::sample(name)
}

/// The real pipeline, loaded once per test binary: the `silentface` set at its threshold 0.5,
/// whose scores the envelope tests know (these tests are about the HTTP layer; the default set is
/// exercised through the binary in tests/cli.rs and tests/model_sets.rs).
pub fn pipeline() -> Arc<Pipeline> {
    static PIPELINE: OnceLock<Arc<Pipeline>> = OnceLock::new();
    PIPELINE
        .get_or_init(|| {
            Arc::new(
                livecheck::load_pipeline(
                    Some("silentface"),
                    Some(&model_dir()),
                    PipelineConfig::default(),
                )
                .expect("load the real models (set LIVECHECK_MODEL_DIR)"),
            )
        })
        .clone()
}

pub fn model_hash() -> String {
    pipeline().model_hash().to_string()
}

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A running server and everything a test needs to talk to it.
pub struct TestApp {
    pub backend: Backend,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub store: Store,
    pub db_url: String,
    /// Token of the main test key.
    pub token: String,
    pub key_id: Uuid,
    /// Token of a second, independent key.
    pub other_token: String,
    pub images: ImageServer,
    /// With a shadow model set: the shadow scorer starts paused; drop this to let it run.
    pub shadow_pause: Option<livecheck::server::shadow::PauseGuard>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POST `body` to the check endpoint with the main key and JSON content type.
    pub async fn check_raw(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(self.url(CHECK))
            .header("x-access-token", &self.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// POST `{"image": image}` with the main key.
    pub async fn check(&self, image: &str) -> reqwest::Response {
        self.check_with(&self.token, image).await
    }

    /// POST `{"image": image}` with the key `token`.
    pub async fn check_with(&self, token: &str, image: &str) -> reqwest::Response {
        self.client
            .post(self.url(CHECK))
            .header("x-access-token", token)
            .header("content-type", "application/json")
            .body(serde_json::json!({ "image": image }).to_string())
            .send()
            .await
            .unwrap()
    }

    /// Creates a capture session with the main key and `body`; its `data` (201 asserted).
    #[allow(dead_code)] // the session and capture tests
    pub async fn new_session(&self, body: &serde_json::Value) -> serde_json::Value {
        let resp = self
            .client
            .post(self.url(SESSIONS))
            .header("x-access-token", &self.token)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(status, reqwest::StatusCode::CREATED, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["data"].clone()
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.header("x-access-token", t);
        }
        req.send().await.unwrap()
    }

    pub async fn audit_count(&self) -> i64 {
        self.store.count_audit().await.unwrap()
    }

    /// Stop accepting connections, finish in-flight requests, wait for the server to exit.
    pub async fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(30), handle)
                .await
                .expect("server did not stop")
                .unwrap();
        }
    }

    /// Trigger shutdown without waiting; `wait_stopped` waits.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    pub async fn wait_stopped(&mut self) {
        self.shutdown().await;
    }

    /// Run raw SQL on the test database (to break it on purpose).
    pub async fn exec_sql(&self, sql: &str) {
        match self.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.db_url).await.unwrap();
                sqlx::query(sql).execute(&mut c).await.unwrap();
                let _ = c.close().await;
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.db_url).await.unwrap();
                sqlx::query(sql).execute(&mut c).await.unwrap();
                let _ = c.close().await;
            }
        }
    }
}

/// The default test configuration: loopback image server allowed, modest limits.
pub fn test_config() -> AppConfig {
    AppConfig {
        fetch: FetchConfig {
            allow: vec!["127.0.0.1/32".parse().unwrap()],
            total_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            ..FetchConfig::default()
        },
        max_concurrent_checks: 2,
        max_queued_checks: 16,
        rate_limit_per_minute: None,
        receipt_key: Some(receipt_key()),
        print_key: Some(print_key()),
        ..AppConfig::default()
    }
}

/// The re-submission secret of the in-process test servers (one per test binary).
pub fn print_key() -> Arc<livecheck::resubmission::PrintKey> {
    static KEY: OnceLock<Arc<livecheck::resubmission::PrintKey>> = OnceLock::new();
    KEY.get_or_init(|| Arc::new(livecheck::resubmission::PrintKey::generate()))
        .clone()
}

/// The receipt signing key of the in-process test servers (one per test binary).
pub fn receipt_key() -> Arc<livecheck::receipts::ReceiptKey> {
    static KEY: OnceLock<Arc<livecheck::receipts::ReceiptKey>> = OnceLock::new();
    KEY.get_or_init(|| Arc::new(livecheck::receipts::ReceiptKey::generate()))
        .clone()
}

/// Starts the server on `db_url` (already a fresh database).
pub async fn start(backend: Backend, db_url: String, config: AppConfig) -> TestApp {
    let store = Store::connect(&db_url).await.unwrap();
    let expected = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    assert_eq!(store.backend(), expected);
    let (_, token) = store.create_key("test").await.unwrap();
    let key_id = store.authenticate(&token).await.unwrap().unwrap().id;
    let (_, other_token) = store.create_key("other").await.unwrap();
    let images = ImageServer::start().await;
    let app = Application::build(config, pipeline(), store.clone()).unwrap();
    let shadow_pause = app.shadow().map(|s| s.pause());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        app.run(listener, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    TestApp {
        backend,
        addr,
        client,
        store,
        db_url,
        token,
        key_id,
        other_token,
        images,
        shadow_pause,
        shutdown: Some(tx),
        server: Some(server),
    }
}

/// Runs `body` against a fresh server on SQLite, then (when `LIVECHECK_TEST_POSTGRES_URL` is set)
/// against a fresh server on a new PostgreSQL schema, dropped afterwards even if `body` panics.
pub async fn on_each_backend<C, F, Fut>(config: C, body: F)
where
    C: Fn() -> AppConfig,
    F: Fn(TestApp) -> Fut,
    Fut: Future<Output = ()>,
{
    crate::common::with_each_database(|url, backend| {
        let config = config();
        let body = &body;
        async move {
            let backend = match backend {
                "sqlite" => Backend::Sqlite,
                _ => Backend::Postgres,
            };
            body(start(backend, url, config).await).await;
        }
    })
    .await;
}

/// Creates an API key with `livecheck keys create` on `db`; returns its token.
pub fn create_key_cli(db: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_livecheck"))
        .args([
            "keys",
            "create",
            "--name",
            "cli",
            "--json",
            "--database",
            db,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    key["token"].as_str().unwrap().to_owned()
}

/// A loopback port that was free a moment ago (bound, noted, closed).
#[allow(dead_code)] // tests/api.rs does not use it
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A client for servers the tests start on loopback: no proxy, a 60 s ceiling per request.
#[allow(dead_code)] // tests/api.rs does not use it
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// `GET url`: the body as text (panics on a transport error).
#[allow(dead_code)] // tests/api.rs does not use it
pub async fn get_text(url: &str) -> String {
    http_client()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// `POST` a check body (JSON text) to the server at `addr` with `token`.
#[allow(dead_code)] // tests/api.rs does not use it
pub async fn post_check(
    client: &reqwest::Client,
    addr: &str,
    token: &str,
    body: String,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("http://{addr}{CHECK}"))
        .header("x-access-token", token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
}

/// Check bodies with the three upstream samples as base64 (T1 live, F1 and F2 attacks).
#[allow(dead_code)] // tests/api.rs does not use it
pub fn sample_bodies() -> Vec<String> {
    ["image_T1.jpg", "image_F1.jpg", "image_F2.jpg"]
        .iter()
        .map(|n| serde_json::json!({ "image": STANDARD.encode(silentface(n)) }).to_string())
        .collect()
}

/// `livecheck serve` as a process on 127.0.0.1:0, with the test models.
pub struct ServeProcess {
    pub child: std::process::Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    logs: Option<std::thread::JoinHandle<String>>,
}

impl ServeProcess {
    /// Starts `serve` on `db` with `args` added and `env` set; waits until it listens.
    pub fn spawn(db: &str, args: &[&str], env: &[(&str, &str)]) -> ServeProcess {
        Self::spawn_binary(Path::new(env!("CARGO_BIN_EXE_livecheck")), db, args, env)
    }

    /// [`ServeProcess::spawn`] with another build of the binary (the release one, say).
    pub fn spawn_binary(bin: &Path, db: &str, args: &[&str], env: &[(&str, &str)]) -> ServeProcess {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new(bin)
            // Out of the repository: with PostgreSQL, serve keeps its receipt key in the working
            // directory (all the processes of a run share /tmp's, like replicas share a key).
            .current_dir(std::env::temp_dir())
            .args(["serve", "--bind", "127.0.0.1:0", "--database", db])
            .arg("--models")
            .arg(model_dir())
            .args(args)
            .env_remove("LIVECHECK_ALLOW_FETCH_FROM")
            // The set whose scores these tests know; an explicit --model-set in `args` wins.
            .env("LIVECHECK_MODEL_SET", "silentface")
            // Stop at once on SIGTERM unless a test asks for a drain period (through `env`).
            .env("LIVECHECK_DRAIN_GRACE", "0")
            .envs(env.iter().copied())
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let logs = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("livecheck listening on http://") {
                    let _ = tx.send(addr.to_owned());
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server did not start");
        ServeProcess {
            child,
            addr,
            logs: Some(logs),
        }
    }

    fn take_logs(&mut self) -> String {
        self.logs
            .take()
            .map(|t| t.join().unwrap())
            .unwrap_or_default()
    }

    /// The logs of a process that has exited (waits for its stderr to close).
    #[allow(dead_code)] // tests/api.rs does not use it
    pub fn stop_logs(mut self) -> String {
        self.take_logs()
    }

    /// Sends `signal` (`TERM`, `KILL`) without waiting for the exit.
    pub fn signal(&self, signal: &str) {
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Sends `signal` (`TERM`, `KILL`) and waits for the exit; returns the status and the logs.
    pub fn stop(mut self, signal: &str) -> (std::process::ExitStatus, String) {
        self.signal(signal);
        let status = self.child.wait().unwrap();
        (status, self.take_logs())
    }
}

/// A test that panics must not leave its servers running (they would hold the test harness's
/// output pipes open).
impl Drop for ServeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A local HTTP server for images ([`TestServer`] with the routes below).
#[derive(Clone)]
pub struct ImageServer {
    pub addr: SocketAddr,
    server: TestServer,
}

#[derive(serde::Deserialize)]
struct To {
    to: String,
}

impl ImageServer {
    /// Routes: `/img/{name}` (silentface files), `/slow/{ms}/{name}` (delay, then the file),
    /// `/text` (a text file), `/missing` (404), `/redirect?to=URL` (302 to URL).
    pub async fn start() -> ImageServer {
        Self::start_on("127.0.0.1:0").await.unwrap()
    }

    /// `None` when `bind` cannot be bound here (e.g. no IPv6 loopback).
    pub async fn start_on(bind: &str) -> Option<ImageServer> {
        let router = Router::new()
            .route(
                "/img/{name}",
                get(|UrlPath(name): UrlPath<String>| async move { file(&name) }),
            )
            .route(
                "/slow/{ms}/{name}",
                get(|UrlPath((ms, name)): UrlPath<(u64, String)>| async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    file(&name)
                }),
            )
            .route(
                "/text",
                get(|| async {
                    (
                        [(header::CONTENT_TYPE, "text/plain")],
                        "hello, this is not an image at all",
                    )
                }),
            )
            .route(
                "/redirect",
                get(|Query(to): Query<To>| async move {
                    (StatusCode::FOUND, [(header::LOCATION, to.to)]).into_response()
                }),
            );
        let server = TestServer::start_on(bind, router).await?;
        Some(ImageServer {
            addr: server.addr,
            server,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base())
    }

    pub fn hits(&self) -> usize {
        self.server.hits()
    }
}

fn file(name: &str) -> Response {
    if name.contains('/') || name.contains("..") {
        return StatusCode::NOT_FOUND.into_response();
    }
    match std::fs::read(crate::common::silentface().join(name)) {
        Ok(bytes) => ([(header::CONTENT_TYPE, "image/jpeg")], bytes).into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}
