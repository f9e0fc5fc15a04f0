//! The HTTP API: an Adhere-compatible `liveliness_check` endpoint plus operations routes.
//!
//! [`Application::build`] wires a loaded [`Pipeline`], a [`Store`] and an [`AppConfig`] into an axum
//! router; [`Application::run`] serves it on an already-bound listener until a shutdown future
//! resolves, then finishes the requests in flight. The binary (`livecheck serve`) and the
//! integration tests start the server the same way.
//!
//! # Layout
//! - [`error`]: [`ApiError`], the one place where failures become status codes and envelopes.
//! - [`envelope`]: the seed's success envelope.
//! - [`body`]: the `{"image": ...}` body extractor (all rejections in the envelope).
//! - [`auth`]: `x-access-token` authentication and the per-key rate limit.
//! - [`keycache`]: authenticated keys kept for a few seconds.
//! - [`ratelimit`]: the keyed GCRA limiter, per replica or shared through Redis.
//! - [`slots`]: bounded image-fetch concurrency, global and per key.
//! - [`admission`]: CPU slots for checks, and admission by expected waiting time.
//! - [`routes`]: one `async fn` per route.
//! - [`sessions`]: capture sessions (create, read).
//! - [`capture`]: the capture page, its widget, pre-checks and CORS for the browser routes.
//! - [`metrics`]: Prometheus metrics.
//! - [`openapi`]: the OpenAPI document generated from the handlers.

pub mod admission;
pub mod auth;
pub mod body;
pub mod capture;
pub mod envelope;
pub mod error;
pub mod keycache;
pub mod metrics;
pub mod openapi;
pub mod ratelimit;
pub mod routes;
pub mod sessions;
pub mod shadow;
pub mod slots;
mod unread;

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::HeaderName;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::fetch::{FetchConfig, Fetcher};
use crate::pipeline::Pipeline;
use crate::service::CheckService;
use crate::store::{AuditWriter, Store};

pub use body::{CheckRequest, ImageBody};
pub use envelope::{CheckData, CheckEnvelope, FaceInfo, Verification};
pub use error::{ApiError, ErrorEnvelope};
pub use metrics::Metrics;

/// The check endpoint, with the trailing slash of the seed API.
pub const CHECK_PATH: &str = "/api/onboarding/biometrics/face/liveliness_check/";
/// The stored-result endpoint.
pub const RESULT_PATH: &str = "/api/onboarding/biometrics/face/liveliness_check/{reference}/";
/// Capture sessions: created by an API key (POST).
pub const SESSIONS_PATH: &str = "/api/onboarding/biometrics/face/liveliness_check/sessions/";
/// A capture session's status and result (GET, the key that created it).
pub const SESSION_PATH: &str = "/api/onboarding/biometrics/face/liveliness_check/sessions/{id}/";

/// Everything the server needs besides the pipeline and the store. Build it with
/// [`AppConfig::default`] and override what differs.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// Largest request body accepted (413 above). Must leave room for base64 of
    /// `max_image_bytes` (4/3 of it plus the JSON around it).
    pub max_body_bytes: usize,
    /// Largest image accepted, fetched or inline (400 above).
    pub max_image_bytes: usize,
    /// Time allowed to receive a check's whole request body (408 after it), so that a client
    /// sending slowly cannot hold a request open indefinitely.
    pub body_timeout: Duration,
    /// Request-body bytes held at once by all requests together (bodies being received and
    /// bodies of checks in flight). A request whose body does not fit gets 503 with
    /// `Retry-After` before it is read; without a budget, 20 slow 15 MB uploads held 268 MB.
    pub max_body_bytes_in_flight: usize,
    /// Time allowed to receive a request's headers, counted from the moment the server waits for
    /// them: a new connection that sends nothing, a trickled header, and a kept-alive connection
    /// left idle are all closed after it.
    pub header_timeout: Duration,
    /// Open client connections at once; further connections wait in the listen backlog.
    pub max_connections: usize,
    /// Image fetches in flight, all keys together (503 beyond). Fetches do not hold check slots,
    /// so slow image hosts cannot starve base64 checks.
    pub max_concurrent_fetches: usize,
    /// Image fetches in flight per API key (429 beyond).
    pub max_fetches_per_key: usize,
    /// The image fetcher: allow-list, timeouts, redirects. Its `max_bytes` is replaced by
    /// `max_image_bytes`, the one image size limit.
    pub fetch: FetchConfig,
    /// Checks running on the CPU at once.
    pub max_concurrent_checks: usize,
    /// Longest expected wait for a CPU slot at which a check is still admitted; beyond it the
    /// check is shed at once with 503 and `Retry-After` (see [`admission`]).
    pub max_queue_wait: Duration,
    /// Hard ceiling on checks waiting for a CPU slot, whatever the expected wait; beyond it 503
    /// at once. Zero: a check is admitted only when a slot is free.
    pub max_queued_checks: usize,
    /// How long an authenticated key is served from memory without a database lookup; a key
    /// revoked meanwhile keeps working until then. Zero: every request is looked up.
    pub key_cache_ttl: Duration,
    /// Requests per minute and key on the check endpoint; `None` disables the limit.
    pub rate_limit_per_minute: Option<NonZeroU32>,
    /// Where the rate limit is shared between replicas; `None`: each replica limits on its own
    /// (see [`ratelimit`] for what happens while Redis fails).
    pub redis: Option<ratelimit::RedisConfig>,
    /// Application version, stored with every verdict.
    pub app_version: String,
    /// Signs every verdict's receipt (`data.receipt`) and publishes its public keys at
    /// `/.well-known/jwks.json`; `None`: no receipts and an empty key set.
    pub receipt_key: Option<Arc<crate::receipts::ReceiptKey>>,
    /// Keys the stored hashes of every checked picture for re-submission detection
    /// (`crate::resubmission`); `None`: no hashes kept and no
    /// `data.signals.resubmission`.
    pub print_key: Option<Arc<crate::resubmission::PrintKey>>,
    /// How far back a re-submission is looked for (`--resubmission-window`); zero: not looked
    /// for (hashes are still kept when `print_key` is set).
    pub resubmission_window: Duration,
    /// A re-submission fails the check (`reason: resubmitted_image`) instead of only being
    /// reported (`--reject-resubmissions`).
    pub reject_resubmissions: bool,
    /// Scores every checked picture again with this pipeline after the answer, into the audit
    /// row (`--shadow-model-set`, [`shadow`]).
    pub shadow_pipeline: Option<shadow::ShadowSet>,
    /// The capture page's CSP `frame-ancestors` sources (`--capture-frame-ancestors`): which
    /// sites may show `/capture` in a frame. Default `'none'`.
    pub capture_frame_ancestors: String,
    /// Origins whose pages may call the browser endpoints (the check with `x-session-token`,
    /// `/capture/session`, `/capture/precheck`) cross-origin (`--cors-origin`); empty: none.
    pub cors_origins: Vec<String>,
    /// Where clients reach this service (`--public-url`), for the `capture_url` of a new session;
    /// `None`: the request's own host.
    pub public_url: Option<url::Url>,
}

/// Default of [`AppConfig::max_body_bytes`] (`--max-body-bytes`).
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Default of [`AppConfig::body_timeout`] (`--body-timeout`), in seconds.
pub const DEFAULT_BODY_TIMEOUT_SECS: f64 = 60.0;
/// Default of [`AppConfig::max_body_bytes_in_flight`] (`--max-body-bytes-in-flight`).
pub const DEFAULT_MAX_BODY_BYTES_IN_FLIGHT: usize = 64 * 1024 * 1024;
/// Default of [`AppConfig::header_timeout`] (`--header-timeout`), in seconds.
pub const DEFAULT_HEADER_TIMEOUT_SECS: f64 = 10.0;
/// Default of [`AppConfig::max_connections`] (`--max-connections`).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 1024;
/// Default of [`AppConfig::max_concurrent_fetches`] (`--max-concurrent-fetches`).
pub const DEFAULT_MAX_CONCURRENT_FETCHES: u32 = 32;
/// Default of [`AppConfig::max_fetches_per_key`] (`--max-fetches-per-key`).
pub const DEFAULT_MAX_FETCHES_PER_KEY: u32 = 4;
/// Default of [`AppConfig::max_queue_wait`] (`--max-queue-wait`), in seconds.
pub const DEFAULT_MAX_QUEUE_WAIT_SECS: f64 = 2.0;
/// Default of [`AppConfig::max_queued_checks`] per CPU slot (`--max-queued-checks`).
pub const DEFAULT_QUEUED_CHECKS_PER_SLOT: usize = 256;
/// Default of [`AppConfig::key_cache_ttl`] (`--key-cache-ttl`), in seconds.
pub const DEFAULT_KEY_CACHE_TTL_SECS: f64 = 5.0;
/// Default of [`AppConfig::rate_limit_per_minute`] (`--rate-limit-per-minute`).
pub const DEFAULT_RATE_LIMIT_PER_MINUTE: u32 = 600;

impl AppConfig {
    /// The default for [`AppConfig::max_concurrent_checks`]: one per core.
    pub fn default_concurrent_checks() -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }
}

impl Default for AppConfig {
    fn default() -> Self {
        let cores = AppConfig::default_concurrent_checks();
        AppConfig {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_image_bytes: crate::pipeline::DEFAULT_MAX_IMAGE_BYTES,
            body_timeout: Duration::from_secs_f64(DEFAULT_BODY_TIMEOUT_SECS),
            max_body_bytes_in_flight: DEFAULT_MAX_BODY_BYTES_IN_FLIGHT,
            header_timeout: Duration::from_secs_f64(DEFAULT_HEADER_TIMEOUT_SECS),
            max_connections: DEFAULT_MAX_CONNECTIONS as usize,
            max_concurrent_fetches: DEFAULT_MAX_CONCURRENT_FETCHES as usize,
            max_fetches_per_key: DEFAULT_MAX_FETCHES_PER_KEY as usize,
            fetch: FetchConfig::default(),
            max_concurrent_checks: cores,
            max_queue_wait: Duration::from_secs_f64(DEFAULT_MAX_QUEUE_WAIT_SECS),
            max_queued_checks: cores * DEFAULT_QUEUED_CHECKS_PER_SLOT,
            key_cache_ttl: Duration::from_secs_f64(DEFAULT_KEY_CACHE_TTL_SECS),
            rate_limit_per_minute: NonZeroU32::new(DEFAULT_RATE_LIMIT_PER_MINUTE),
            redis: None,
            app_version: env!("CARGO_PKG_VERSION").to_owned(),
            receipt_key: None,
            print_key: None,
            resubmission_window: Duration::from_secs(
                crate::resubmission::DEFAULT_WINDOW_DAYS as u64 * 86_400,
            ),
            reject_resubmissions: false,
            shadow_pipeline: None,
            capture_frame_ancestors: capture::DEFAULT_FRAME_ANCESTORS.to_owned(),
            cors_origins: Vec::new(),
            public_url: None,
        }
    }
}

/// Errors while assembling the application.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot create metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot create the image fetcher: {0}")]
    Fetch(String),
    #[error("server I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// The service time assumed for a check until the first ones have been timed: about a 1 MP
/// photo on one core of a small server.
const INITIAL_SERVICE_ESTIMATE: Duration = Duration::from_millis(50);

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: AppConfig,
    /// The check every front end runs.
    pub(crate) service: Arc<CheckService>,
    pub(crate) store: Store,
    /// Group commit of audit rows.
    pub(crate) audit: AuditWriter,
    pub(crate) fetcher: Fetcher,
    pub(crate) metrics: Metrics,
    pub(crate) limiter: Option<ratelimit::RateLimiter>,
    /// Recently authenticated keys.
    pub(crate) keys: keycache::KeyCache,
    /// Checks with their image bytes in hand: CPU slots and the waiting queue.
    pub(crate) admission: admission::Admission,
    /// Request-body bytes in memory.
    pub(crate) body_budget: Arc<Semaphore>,
    /// Image fetches in flight.
    pub(crate) fetch_slots: slots::FetchSlots,
    /// Set when shutdown begins: `/readyz` answers 503 `draining` while requests are still served.
    pub(crate) draining: Arc<AtomicBool>,
    /// Shadow scoring, when a shadow model set is configured.
    pub(crate) shadow: Option<shadow::Shadow>,
    /// The capture page's headers.
    pub(crate) capture: capture::CapturePolicy,
    /// Pre-checks per capture session (this replica's count).
    pub(crate) prechecks: ratelimit::KeyRateLimiter,
    /// `--cors-origin`, parsed.
    pub(crate) cors_origins: Vec<axum::http::HeaderValue>,
}

/// A built application, ready to serve.
pub struct Application {
    state: AppState,
    router: Router,
}

impl Application {
    /// Validates the configuration and assembles the router. Call it inside a tokio runtime (it
    /// starts the audit writer's task).
    pub fn build(
        config: AppConfig,
        pipeline: Arc<Pipeline>,
        store: Store,
    ) -> Result<Application, ServerError> {
        if config.max_concurrent_checks == 0 {
            return Err(ServerError::Config(
                "max_concurrent_checks must be at least 1".into(),
            ));
        }
        if config.body_timeout.is_zero() {
            return Err(ServerError::Config("body_timeout must be positive".into()));
        }
        if config.max_image_bytes == 0 || config.max_body_bytes == 0 {
            return Err(ServerError::Config(
                "max_image_bytes and max_body_bytes must be positive".into(),
            ));
        }
        if u32::try_from(config.max_body_bytes).is_err() {
            return Err(ServerError::Config(
                "max_body_bytes must be below 4 GiB".into(),
            ));
        }
        if config.max_body_bytes_in_flight < config.max_body_bytes {
            return Err(ServerError::Config(format!(
                "max_body_bytes_in_flight ({}) must be at least max_body_bytes ({})",
                config.max_body_bytes_in_flight, config.max_body_bytes
            )));
        }
        if config.header_timeout.is_zero() {
            return Err(ServerError::Config(
                "header_timeout must be positive".into(),
            ));
        }
        if config.max_connections == 0
            || config.max_concurrent_fetches == 0
            || config.max_fetches_per_key == 0
        {
            return Err(ServerError::Config(
                "max_connections, max_concurrent_fetches and max_fetches_per_key must be at least 1"
                    .into(),
            ));
        }
        let capture = capture::CapturePolicy::new(&config.capture_frame_ancestors)
            .map_err(ServerError::Config)?;
        let cors_origins =
            capture::parse_origins(&config.cors_origins).map_err(ServerError::Config)?;
        let prechecks = ratelimit::KeyRateLimiter::new(
            NonZeroU32::new(capture::PRECHECKS_PER_MINUTE).unwrap_or(NonZeroU32::MIN),
        );
        let fetcher = Fetcher::new(FetchConfig {
            max_bytes: config.max_image_bytes,
            ..config.fetch.clone()
        })
        .map_err(|e| ServerError::Fetch(e.to_string()))?;
        let metrics = Metrics::new()?;
        let limiter = match (config.rate_limit_per_minute, &config.redis) {
            (None, _) => None,
            (Some(n), None) => Some(ratelimit::RateLimiter::local(n)),
            (Some(n), Some(redis)) => Some(
                ratelimit::RateLimiter::shared(n, redis, metrics.ratelimit_redis_errors.clone())
                    .map_err(|e| ServerError::Config(format!("invalid Redis URL: {e}")))?,
            ),
        };
        let admission = admission::Admission::new(
            config.max_concurrent_checks,
            config.max_queue_wait,
            config.max_queued_checks,
            INITIAL_SERVICE_ESTIMATE,
        )?;
        let body_budget = Arc::new(Semaphore::new(
            config.max_body_bytes_in_flight.min(Semaphore::MAX_PERMITS),
        ));
        let keys = keycache::KeyCache::new(config.key_cache_ttl);
        let fetch_slots =
            slots::FetchSlots::new(config.max_concurrent_fetches, config.max_fetches_per_key);
        let shadow = match &config.shadow_pipeline {
            Some(shadow::ShadowSet(p)) => {
                let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
                    ServerError::Config("the shadow scorer needs a Tokio runtime".into())
                })?;
                Some(
                    shadow::Shadow::spawn(p.clone(), store.clone(), metrics.clone(), runtime)
                        .map_err(|e| {
                            ServerError::Config(format!("cannot start the shadow scorer: {e}"))
                        })?,
                )
            }
            None => None,
        };
        let state = AppState {
            inner: Arc::new(Inner {
                config,
                service: Arc::new(CheckService::new(pipeline)),
                audit: AuditWriter::spawn(store.clone()),
                store,
                fetcher,
                metrics,
                limiter,
                keys,
                admission,
                body_budget,
                fetch_slots,
                draining: Arc::new(AtomicBool::new(false)),
                shadow,
                capture,
                prechecks,
                cors_origins,
            }),
        };
        let router = router(state.clone());
        Ok(Application { state, router })
    }

    /// The shadow scorer (tests pause it to show that answers never wait for it).
    #[doc(hidden)]
    pub fn shadow(&self) -> Option<&shadow::Shadow> {
        self.state.inner.shadow.as_ref()
    }

    /// The switch that starts draining: once set, `/readyz` answers 503 `draining` (so load
    /// balancers stop sending traffic) while requests are still served until [`Application::run`]'s
    /// shutdown future resolves.
    pub fn drain_switch(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.state.inner.draining)
    }

    /// The router (for embedding or `tower::ServiceExt::oneshot` tests).
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// The metrics of this application.
    pub fn metrics(&self) -> &Metrics {
        &self.state.inner.metrics
    }

    /// Serves on `listener` until `shutdown` resolves, then stops accepting connections and
    /// waits for the requests in flight (and so their checks and audit rows) to finish.
    ///
    /// HTTP/1.1 on hyper's connection builder directly rather than `axum::serve`, which has no
    /// header-read timeout and no connection cap: a client that opened a connection and sent
    /// nothing, or trickled a header one byte at a time, held it forever.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        // Forget the rate-limit state of idle keys now and then (bounded memory).
        let weak = Arc::downgrade(&self.state.inner);
        let janitor = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                if let Some(limiter) = &inner.limiter {
                    limiter.retain_recent();
                }
                inner.prechecks.retain_recent();
            }
        });
        let config = &self.state.inner.config;
        let connections = Arc::new(Semaphore::new(config.max_connections));
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(config.header_timeout)
            .keep_alive(true)
            // A connection's read buffer grows to fit what one read brings, up to this, and a
            // kept-alive connection keeps it: with hyper's default (about 400 KB) every client
            // sending a base64 photo held a buffer that size. Headers must fit (64 KiB is far
            // more than any real request's); the body streams through in pieces of this size.
            .max_buf_size(64 * 1024);
        let service = TowerToHyperService::new(self.router);
        // Shutdown as a flag every connection watches; `stop.closed()` resolves once every
        // connection task (each holding a receiver) has ended.
        let (stop, stopping) = watch::channel(false);
        // One accepted connection, served until it ends (or shutdown closes it when idle); it
        // holds its connection permit, if any, until then.
        let serve = |stream: TcpStream, permit: Option<OwnedSemaphorePermit>| {
            let _ = stream.set_nodelay(true);
            let first = Arc::new(FirstRequest::default());
            let service = {
                let first = Arc::clone(&first);
                let service = service.clone();
                hyper::service::service_fn(move |req| {
                    first.arrived();
                    service.call(req)
                })
            };
            let connection = http.serve_connection(TokioIo::new(stream), service);
            let mut stopping = stopping.clone();
            tokio::spawn(async move {
                let _permit = permit;
                tokio::pin!(connection);
                let ended = tokio::select! {
                    result = connection.as_mut() => Some(result),
                    _ = stopping.wait_for(|stop| *stop) => None,
                };
                // Shutdown. hyper's graceful shutdown closes at once a connection that has read
                // nothing yet, though its request may be in the socket already: a proxy that had
                // sent a POST on it answers 502 (it never replays a POST). So wait for the first
                // request; the header timeout ends a connection that sends none.
                let ended = match ended {
                    None if !first.seen() => tokio::select! {
                        result = connection.as_mut() => Some(result),
                        () = first.wait() => None,
                    },
                    ended => ended,
                };
                let result = match ended {
                    Some(result) => result,
                    None => {
                        // In-flight requests finish (answered `Connection: close`); an idle
                        // kept-alive connection closes at once.
                        connection.as_mut().graceful_shutdown();
                        connection.await
                    }
                };
                if let Err(err) = result {
                    tracing::debug!(error = %err, "connection ended with an error");
                }
            });
        };
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                () = &mut shutdown => break,
                permit = connections.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let stream = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _peer)) => stream,
                    Err(err) => {
                        // Per-connection failures (reset before accept) and resource exhaustion
                        // (EMFILE): neither should stop the server; back off briefly on the latter.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            serve(stream, Some(permit));
        }
        // Connections the kernel has already completed wait in the listen backlog; closing the
        // listener would reset them, and a proxy that had sent a POST on one answers 502. Serve
        // those too, then close: a connection attempted after this is refused, which a proxy
        // retries on another replica.
        accept_backlog(listener, |stream| serve(stream, None));
        // The listener is closed. In-flight requests finish; idle connections close.
        let _ = stop.send(true);
        drop(stopping);
        stop.closed().await;
        janitor.abort();
        Ok(())
    }
}

/// Accepts every connection waiting in `listener`'s backlog, hands each to `serve`, then closes
/// the listener. The socket is asked directly (non-blocking accept until it would block): tokio's
/// cached readiness may not have seen the latest arrivals yet.
fn accept_backlog(listener: TcpListener, mut serve: impl FnMut(TcpStream)) {
    let listener = match listener.into_std() {
        Ok(listener) => listener,
        Err(err) => {
            tracing::warn!(error = %err, "cannot take the listener back from tokio");
            return;
        }
    };
    loop {
        let stream = match listener.accept() {
            Ok((stream, _peer)) => stream,
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(err) => {
                tracing::warn!(error = %err, "accept failed while closing the listener");
                return;
            }
        };
        match stream
            .set_nonblocking(true)
            .and_then(|()| TcpStream::from_std(stream))
        {
            Ok(stream) => serve(stream),
            Err(err) => tracing::warn!(error = %err, "accept failed"),
        }
    }
}

/// Whether a connection has delivered its first request (see the shutdown in
/// [`Application::run`]).
#[derive(Default)]
struct FirstRequest {
    seen: AtomicBool,
    notify: Notify,
}

impl FirstRequest {
    fn arrived(&self) {
        if !self.seen.swap(true, Ordering::Relaxed) {
            // Stores a permit when nobody waits yet, so `wait` after this returns at once.
            self.notify.notify_one();
        }
    }

    fn seen(&self) -> bool {
        self.seen.load(Ordering::Relaxed)
    }

    async fn wait(&self) {
        self.notify.notified().await;
    }
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn router(state: AppState) -> Router {
    let max_body = state.inner.config.max_body_bytes;
    // The routes a browser calls with a session token: cross-origin only with `--cors-origin`.
    let mut browser = Router::new()
        .route(CHECK_PATH, post(routes::check))
        .route(CHECK_PATH.trim_end_matches('/'), post(routes::check))
        .route(capture::SESSION_INFO_PATH, get(capture::session_info))
        .route(capture::PRECHECK_PATH, post(capture::precheck))
        // Before the CORS layer, so that the layer covers it (a preflight is an OPTIONS, which
        // these routes do not otherwise serve); the outer router's own call below leaves a
        // fallback set here alone.
        .method_not_allowed_fallback(routes::method_not_allowed);
    if !state.inner.cors_origins.is_empty() {
        browser = browser.layer(capture::cors_layer(&state.inner.cors_origins));
    }
    let api = Router::new()
        .merge(browser)
        .route(capture::CAPTURE_PATH, get(capture::page))
        .route(capture::WIDGET_PATH, get(capture::widget_script))
        .route(capture::STYLE_PATH, get(capture::stylesheet))
        .route(capture::PAGE_SCRIPT_PATH, get(capture::page_script))
        .route(capture::ICON_PATH, get(capture::icon))
        .route(RESULT_PATH, get(routes::get_check))
        .route(RESULT_PATH.trim_end_matches('/'), get(routes::get_check))
        .route(SESSIONS_PATH, post(sessions::create_session))
        .route(
            SESSIONS_PATH.trim_end_matches('/'),
            post(sessions::create_session),
        )
        .route(SESSION_PATH, get(sessions::get_session))
        .route(
            SESSION_PATH.trim_end_matches('/'),
            get(sessions::get_session),
        )
        .route("/.well-known/jwks.json", get(routes::jwks))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(routes::metrics))
        .route("/openapi.json", get(routes::openapi_json))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .with_state(state.clone());

    api.layer(
        ServiceBuilder::new()
            .layer(middleware::from_fn(drop_unusable_request_id))
            .layer(SetRequestIdLayer::new(X_REQUEST_ID, MakeRequestUuid))
            .layer(
                TraceLayer::new_for_http()
                    // Every response at DEBUG. Failures are logged where they are understood
                    // (`ApiError::into_response`: a 500 at ERROR, an unreachable database at
                    // WARN; overload 503s only in metrics) rather than once per 5xx here, which
                    // put 63k ERROR lines in 20 s of overload.
                    .on_response(DefaultOnResponse::new().level(Level::DEBUG))
                    .on_failure(DefaultOnFailure::new().level(Level::DEBUG))
                    .make_span_with(|req: &Request| {
                        let request_id = req
                            .extensions()
                            .get::<RequestId>()
                            .and_then(|id| id.header_value().to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        // Path only: the token is in a header and never enters a span.
                        tracing::info_span!(
                            "request",
                            method = %req.method(),
                            path = %req.uri().path(),
                            request_id = %request_id,
                        )
                    }),
            )
            .layer(PropagateRequestIdLayer::new(X_REQUEST_ID))
            .layer(middleware::from_fn_with_state(state.clone(), track_metrics))
            .layer(middleware::from_fn_with_state(state, close_when_draining))
            .layer(middleware::from_fn(unread::close_if_body_unread))
            .layer(CatchPanicLayer::custom(routes::panic_response))
            .layer(DefaultBodyLimit::max(max_body)),
    )
}

/// Longest client-supplied `x-request-id` kept.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// True for a request id worth echoing and logging: 1 to [`MAX_REQUEST_ID_LEN`] characters from
/// `A-Z a-z 0-9 - _ . : /`. Anything else (control characters, spaces, quotes, a 64 KB header)
/// could forge or flood log lines.
pub fn is_usable_request_id(value: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&value.len())
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(b))
}

/// Removes an unusable client `x-request-id`, so that the next layer replaces it with a UUID.
async fn drop_unusable_request_id(mut req: Request, next: Next) -> Response {
    let unusable = req
        .headers()
        .get_all(X_REQUEST_ID)
        .iter()
        .any(|v| !is_usable_request_id(v.as_bytes()));
    let repeated = req.headers().get_all(X_REQUEST_ID).iter().count() > 1;
    if unusable || repeated {
        req.headers_mut().remove(X_REQUEST_ID);
    }
    next.run(req).await
}

/// Counts every response by route template, method and status, and times it.
/// While draining, every answer says `Connection: close`, so that a proxy keeping connections
/// alive to this replica (nginx with `keepalive`, Envoy, most ingresses) stops reusing them
/// before the listener closes, instead of sending a request on one just as shutdown closes it.
async fn close_when_draining(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    if state.inner.draining.load(Ordering::Relaxed) {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

async fn track_metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let start = Instant::now();
    let response = next.run(req).await;
    let metrics = &state.inner.metrics;
    metrics
        .http_requests
        .with_label_values(&[route.as_str(), method.as_str(), response.status().as_str()])
        .inc();
    metrics
        .http_duration
        .with_label_values(&[route.as_str()])
        .observe(start.elapsed().as_secs_f64());
    response
}
