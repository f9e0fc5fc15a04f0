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
//! - [`ratelimit`]: the keyed GCRA limiter.
//! - [`routes`]: one `async fn` per route.
//! - [`metrics`]: Prometheus metrics.
//! - [`openapi`]: the OpenAPI document generated from the handlers.

pub mod auth;
pub mod body;
pub mod envelope;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod ratelimit;
pub mod routes;

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, FromRef, MatchedPath, Request, State};
use axum::http::HeaderName;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

use crate::fetch::{FetchConfig, Fetcher};
use crate::pipeline::Pipeline;
use crate::store::Store;

pub use body::{BodyLimit, BodyTimeout, CheckRequest, ImageBody};
pub use envelope::{CheckData, CheckEnvelope, CheckOutcome, FaceInfo, Verification};
pub use error::{ApiError, ErrorEnvelope};
pub use metrics::Metrics;

/// The check endpoint, with the trailing slash of the seed API.
pub const CHECK_PATH: &str = "/api/onboarding/biometrics/face/liveliness_check/";
/// The stored-result endpoint.
pub const RESULT_PATH: &str = "/api/onboarding/biometrics/face/liveliness_check/{reference}/";

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
    /// Networks the image fetcher may reach although they are private/loopback/...
    pub allow_fetch_from: Vec<IpNet>,
    /// Connect timeout of image fetches.
    pub fetch_connect_timeout: Duration,
    /// Total timeout of one image fetch (connect, redirects, and the whole body).
    pub fetch_timeout: Duration,
    /// Redirects followed per fetch (each one re-validated).
    pub max_redirects: usize,
    /// Checks running on the CPU at once.
    pub max_concurrent_checks: usize,
    /// Checks admitted beyond the running ones, waiting for a CPU slot; past
    /// `max_concurrent_checks + max_queued_checks` requests fail fast with 503.
    pub max_queued_checks: usize,
    /// Requests per minute and key on the check endpoint; `None` disables the limit.
    pub rate_limit_per_minute: Option<NonZeroU32>,
    /// Application version, stored with every verdict.
    pub app_version: String,
}

impl Default for AppConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        AppConfig {
            max_body_bytes: 16 * 1024 * 1024,
            max_image_bytes: 10 * 1024 * 1024,
            body_timeout: Duration::from_secs(60),
            allow_fetch_from: Vec::new(),
            fetch_connect_timeout: Duration::from_secs(5),
            fetch_timeout: Duration::from_secs(15),
            max_redirects: 3,
            max_concurrent_checks: cores,
            max_queued_checks: cores * 4,
            rate_limit_per_minute: NonZeroU32::new(600),
            app_version: env!("CARGO_PKG_VERSION").to_owned(),
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

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: AppConfig,
    pub(crate) pipeline: Arc<Pipeline>,
    pub(crate) store: Store,
    pub(crate) fetcher: Fetcher,
    pub(crate) metrics: Metrics,
    pub(crate) limiter: Option<ratelimit::KeyRateLimiter>,
    /// Admission: running + queued checks.
    pub(crate) admission: Arc<Semaphore>,
    /// CPU slots: running checks.
    pub(crate) cpu: Arc<Semaphore>,
}

impl FromRef<AppState> for BodyLimit {
    fn from_ref(state: &AppState) -> Self {
        BodyLimit(state.inner.config.max_body_bytes)
    }
}

impl FromRef<AppState> for BodyTimeout {
    fn from_ref(state: &AppState) -> Self {
        BodyTimeout(state.inner.config.body_timeout)
    }
}

/// A built application, ready to serve.
pub struct Application {
    state: AppState,
    router: Router,
}

impl Application {
    /// Validates the configuration and assembles the router.
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
        let fetcher = Fetcher::new(FetchConfig {
            allow: config.allow_fetch_from.clone(),
            connect_timeout: config.fetch_connect_timeout,
            total_timeout: config.fetch_timeout,
            max_bytes: config.max_image_bytes,
            max_redirects: config.max_redirects,
        })
        .map_err(|e| ServerError::Fetch(e.to_string()))?;
        let metrics = Metrics::new()?;
        let limiter = config
            .rate_limit_per_minute
            .map(ratelimit::KeyRateLimiter::new);
        let admission = Arc::new(Semaphore::new(
            config.max_concurrent_checks + config.max_queued_checks,
        ));
        let cpu = Arc::new(Semaphore::new(config.max_concurrent_checks));
        let state = AppState {
            inner: Arc::new(Inner {
                config,
                pipeline,
                store,
                fetcher,
                metrics,
                limiter,
                admission,
                cpu,
            }),
        };
        let router = router(state.clone());
        Ok(Application { state, router })
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
            }
        });
        let served = axum::serve(listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await;
        janitor.abort();
        served?;
        Ok(())
    }
}
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn router(state: AppState) -> Router {
    let max_body = state.inner.config.max_body_bytes;
    let api = Router::new()
        .route(CHECK_PATH, post(routes::check))
        .route(CHECK_PATH.trim_end_matches('/'), post(routes::check))
        .route(RESULT_PATH, get(routes::get_check))
        .route(RESULT_PATH.trim_end_matches('/'), get(routes::get_check))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(routes::metrics))
        .route("/openapi.json", get(routes::openapi_json))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .with_state(state.clone());

    api.layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::new(X_REQUEST_ID, MakeRequestUuid))
            .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
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
            }))
            .layer(PropagateRequestIdLayer::new(X_REQUEST_ID))
            .layer(middleware::from_fn_with_state(state, track_metrics))
            .layer(CatchPanicLayer::custom(routes::panic_response))
            .layer(DefaultBodyLimit::max(max_body)),
    )
}

/// Counts every response by route template, method and status, and times it.
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
