//! One `async fn` per route. Handlers return `Result<_, ApiError>` and use `?`; the mapping to
//! status codes and envelopes lives in [`super::error`].

use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use uuid::Uuid;

use super::auth::{Caller, RateLimitedCaller};
use super::body::ImageBody;
use super::envelope::CheckEnvelope;
use super::error::{internal_error_response, json_response, ApiError, ErrorEnvelope};
use super::AppState;
use crate::fetch::{parse_image_input, ImageInput, InputKind};
use crate::resubmission;
use crate::service::{CheckError, CheckOutcome, Provenance, Signals};

/// Decrements the in-flight gauge when a check ends, however it ends.
struct InFlight {
    gauge: prometheus::IntGauge,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// The image bytes of a request and where they came from.
struct Image {
    bytes: bytes::Bytes,
    input_kind: InputKind,
    url_host: Option<String>,
}

/// Run a liveness check.
///
/// The image is a URL (fetched with SSRF protection), a `data:image/...;base64,` URI or bare
/// base64. Live and not-live verdicts are both 200; `data.status` tells them apart and `detail`
/// says why. The verdict is stored before the answer is sent.
#[utoipa::path(
    post,
    path = "/api/onboarding/biometrics/face/liveliness_check/",
    tag = "liveness",
    request_body(content = super::body::CheckRequest, content_type = "application/json",
        example = json!({"image": "https://example.com/photo.jpg"})),
    security(("api_key" = []), ("session_token" = [])),
    responses(
        (status = 200, description = "A verdict (live or not live)", body = CheckEnvelope,
            headers(
                ("X-RateLimit-Limit" = u32, description = "Requests allowed per minute for this key"),
                ("X-RateLimit-Remaining" = u32, description = "Requests left in the current burst"),
                ("X-RateLimit-Reset" = u64, description = "Seconds until one more request is allowed"),
            ),
            examples(
                ("live" = (summary = "Live", value = json!({
                    "status": "success",
                    "data": {"status": true, "detail": "Liveliness Detected", "response_code": "00",
                        "confidence": 0.9999987030029297, "confidence_in_percentage": 99.99987030029297,
                        "verification": {"status": "VERIFIED", "reference": "067cbed9-acda-4d30-97c2-7f8e0c2ad687"},
                        "widget_info": {}, "session": {}, "reason": "live",
                        "face": {"bbox": [203, 104, 248, 317], "confidence": 0.9995},
                        "threshold": 0.6980205, "model": "676cea0abb40fd15"},
                    "message": "Face Liveliness successful"}))),
                ("spoof" = (summary = "Not live: attack", value = json!({
                    "status": "success",
                    "data": {"status": false, "detail": "Liveliness Not Detected", "response_code": "00",
                        "confidence": 0.0123, "confidence_in_percentage": 1.23,
                        "verification": {"status": "FAILED", "reference": "1b4e28ba-2fa1-41d2-883f-0016d3cca427"},
                        "widget_info": {}, "session": {}, "reason": "spoof",
                        "face": {"bbox": [120, 88, 200, 260], "confidence": 0.998},
                        "threshold": 0.6980205, "model": "676cea0abb40fd15"},
                    "message": "Face Liveliness failed"}))),
                ("no_face" = (summary = "Not live: no face", value = json!({
                    "status": "success",
                    "data": {"status": false, "detail": "No face detected in image", "response_code": "00",
                        "confidence": 0.0, "confidence_in_percentage": 0.0,
                        "verification": {"status": "FAILED", "reference": "6ba7b810-9dad-41d1-80b4-00c04fd430c8"},
                        "widget_info": {}, "session": {}, "reason": "no_face",
                        "threshold": 0.6980205, "model": "676cea0abb40fd15"},
                    "message": "Face Liveliness failed"}))),
            )),
        (status = 400, description = "Bad request", body = ErrorEnvelope, examples(
            ("missing" = (summary = "Missing, empty or non-string image",
                value = json!({"status": "failed", "data": [], "message": "Missing required fields"}))),
            ("json" = (summary = "Malformed JSON",
                value = json!({"status": "failed", "data": [], "message": "Request body is not valid JSON: EOF while parsing a value at line 1 column 10"}))),
            ("content_type" = (summary = "Wrong content type",
                value = json!({"status": "failed", "data": [], "message": "Content-Type must be application/json"}))),
            ("fetch" = (summary = "Unfetchable URL",
                value = json!({"status": "failed", "data": [], "message": "Could not fetch image: image URL took too long to respond"}))),
            ("not_image" = (summary = "Not an image",
                value = json!({"status": "failed", "data": [], "message": "The image is not a valid image file; send a JPEG, PNG, WebP or BMP photo"}))),
            ("too_large" = (summary = "Image too large",
                value = json!({"status": "failed", "data": [], "message": "image is too large (at most 10485760 bytes)"}))),
            ("corrupt" = (summary = "Truncated or corrupt image (never judged)",
                value = json!({"status": "failed", "data": [], "message": "The image could not be decoded (truncated or corrupt file); send the complete file"}))),
        )),
        (status = 401, description = "Missing or invalid key", body = ErrorEnvelope, examples(
            ("missing" = (summary = "No x-access-token",
                value = json!({"status": "failed", "message": "Authentication credentials were not provided."}))),
            ("invalid" = (summary = "Unknown or revoked token",
                value = json!({"status": "failed", "message": "Invalid token."}))),
            ("session_used" = (summary = "x-session-token already spent (also: \"Invalid session token.\", \"Session token has expired.\", \"The key that created this session has been revoked.\")",
                value = json!({"status": "failed", "message": "Session token has already been used."}))),
        )),
        (status = 408, description = "The request body was not received within the body timeout (`--body-timeout`, default 60 s)", body = ErrorEnvelope,
            example = json!({"status": "failed", "data": [], "message": "Request body was not received within 60 s"})),
        (status = 413, description = "Request body too large: a declared `Content-Length` over the limit is refused before the body is read", body = ErrorEnvelope,
            example = json!({"status": "failed", "data": [], "message": "Request body is larger than the limit of 16777216 bytes"})),
        (status = 429, description = "Per-key rate limit exceeded, or this key already has `--max-fetches-per-key` image fetches in flight", body = ErrorEnvelope,
            headers(
                ("Retry-After" = u64, description = "Seconds to wait"),
                ("X-RateLimit-Limit" = u32, description = "Requests allowed per minute (rate limit only)"),
                ("X-RateLimit-Remaining" = u32, description = "Always 0 here (rate limit only)"),
                ("X-RateLimit-Reset" = u64, description = "Seconds until one more request is allowed (rate limit only)"),
            ),
            examples(
                ("rate" = (summary = "Rate limit",
                    value = json!({"status": "failed", "data": [], "message": "Rate limit exceeded: at most 60 requests per minute; retry after 1 s"}))),
                ("fetches" = (summary = "Too many fetches for this key",
                    value = json!({"status": "failed", "data": [], "message": "Too many image fetches in flight for this key: at most 4 at once; retry after 1 s"}))),
            )),
        (status = 500, description = "Unexpected error (no details are disclosed)", body = ErrorEnvelope,
            example = json!({"status": "failed", "data": [], "message": "Internal server error"})),
        (status = 503, description = "Overloaded (the expected wait for a CPU slot is over `--max-queue-wait`, or all image-fetch slots or the request-body memory budget are taken; `Retry-After` is the expected wait, rounded up; the request did not count against the rate limit) or the database is unreachable", body = ErrorEnvelope,
            headers(("Retry-After" = u64, description = "Seconds to wait")),
            examples(
                ("busy" = (summary = "Overloaded",
                    value = json!({"status": "failed", "data": [], "message": "Server is busy; retry after 1 s"}))),
                ("database" = (summary = "Database unreachable",
                    value = json!({"status": "failed", "data": [], "message": "Service unavailable; retry after 5 s"}))),
            )),
    )
)]
pub async fn check(
    State(state): State<AppState>,
    caller: RateLimitedCaller,
    body: Result<ImageBody, ApiError>,
) -> Result<Response, ApiError> {
    let result = match body {
        Ok(body) => run_check(&state, &caller, body).await,
        Err(err) => Err(err),
    };
    // A request the server could not serve (overload, database down, a fault of ours) does not
    // use up the caller's rate allowance, nor its session's one check.
    if let Err(err) = &result {
        if err.status().is_server_error() {
            if let (Some(limiter), Some(counted)) = (&state.inner.limiter, &caller.rate_limit) {
                limiter.refund(&caller.key.id.to_string(), counted.counter);
            }
            if let Some(session) = &caller.session {
                if let Err(e) = state.inner.store.restore_session(session).await {
                    tracing::warn!(error = %e, session = %session.id, "session not restored");
                }
            }
        }
    }
    result
}

async fn run_check(
    state: &AppState,
    caller: &RateLimitedCaller,
    mut body: ImageBody,
) -> Result<Response, ApiError> {
    let inner = &state.inner;
    let metrics = &inner.metrics;

    // The image bytes first: a URL fetch holds a fetch slot, never a check slot.
    let image = body.take_image();
    let Image {
        bytes,
        input_kind,
        url_host,
    } = obtain_image(state, caller, &image).await?;
    // A queued check holds the decoded bytes only, not their base64 as well (`body` keeps its
    // share of the in-flight body budget until the request ends).
    drop(image);

    // Admission: queue for a CPU slot while the expected wait is within bounds, else fail fast.
    let ticket = inner.admission.try_admit().map_err(|shed| {
        metrics.rejections.with_label_values(&["overloaded"]).inc();
        ApiError::Overloaded {
            retry_after_secs: shed.retry_after_secs(),
        }
    })?;
    metrics.in_flight.inc();
    let _in_flight = InFlight {
        gauge: metrics.in_flight.clone(),
    };

    // Inference (and hashing) off the async workers, on one of the CPU slots.
    let running = ticket
        .start()
        .await
        .ok_or_else(|| ApiError::Unavailable("shutting down".into()))?;
    let service = Arc::clone(&inner.service);
    let started = Instant::now();
    let shadow_bytes = inner.shadow.as_ref().map(|_| bytes.clone());
    // A quiet server lends this check an idle slot for its classifiers (admission's `Spare`).
    let spare = inner.admission.clone();
    let result = running
        .run(move || service.check_with(&bytes, Some(&spare)))
        .await
        .map_err(|e| ApiError::Internal(format!("check task failed: {e}")))?;
    metrics.observe_stage_ms("pipeline", started.elapsed().as_secs_f64() * 1000.0);
    let checked = result.map_err(check_error)?;
    let timings = checked.verdict.timings;
    metrics.observe_stage_ms("decode", timings.decode);
    metrics.observe_stage_ms("detect", timings.detect);
    metrics.observe_stage_ms("classify", timings.classify);

    let mut outcome = inner.service.outcome(&checked, Uuid::new_v4());
    outcome.session = caller
        .session
        .as_ref()
        .map(crate::store::Session::reference);
    let provenance = Provenance {
        key_id: Some(caller.key.id),
        source: input_kind.into(),
        url_host,
        engine: inner.service.pipeline().engine_name().to_owned(),
        app_version: inner.config.app_version.clone(),
        created_at: chrono::Utc::now(),
    };
    // Re-submission: the picture's keyed hashes, and the earlier checks that share them.
    let fingerprint = match &inner.config.print_key {
        Some(key) => {
            let started = Instant::now();
            let print = checked.verdict.print.as_deref();
            let fp = key.fingerprint(&checked.image_sha256, print, outcome.reference);
            let window = inner.config.resubmission_window;
            if !window.is_zero() {
                let since = provenance.created_at
                    - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
                let sightings = inner
                    .store
                    .resubmission_sightings(&fp, since, Some(caller.key.id))
                    .await
                    .map_err(|e| ApiError::from_store("re-submission lookup", &e))?;
                let seen = resubmission::judge(key, &fp, print, Some(caller.key.id), &sightings);
                outcome
                    .signals
                    .get_or_insert_with(Signals::default)
                    .resubmission = Some(seen);
                if seen.seen_before {
                    metrics
                        .resubmissions
                        .with_label_values(&[if seen.same_key { "true" } else { "false" }])
                        .inc();
                }
                if seen.seen_before && inner.config.reject_resubmissions {
                    outcome.reject_as_resubmission();
                }
            }
            metrics.observe_stage_ms("resubmission", started.elapsed().as_secs_f64() * 1000.0);
            Some(fp)
        }
        None => None,
    };
    if let Some(key) = &inner.config.receipt_key {
        let sign_start = Instant::now();
        let payload = outcome.receipt_payload(&checked.image_sha256, &provenance);
        outcome.receipt = Some(key.sign(&payload));
        metrics.observe_stage_ms("receipt", sign_start.elapsed().as_secs_f64() * 1000.0);
    }
    let mut record = outcome.audit(&checked, provenance);
    record.fingerprint = fingerprint;
    // The audit row is committed before the verdict leaves; no row, no verdict.
    let audit_start = Instant::now();
    inner
        .audit
        .insert(record)
        .await
        .map_err(|e| ApiError::from_store("audit insert", &e))?;
    metrics.observe_stage_ms("audit", audit_start.elapsed().as_secs_f64() * 1000.0);
    metrics
        .verdicts
        .with_label_values(&[
            outcome.reason.code(),
            if outcome.live { "true" } else { "false" },
        ])
        .inc();
    metrics.count_key_verdict(&caller.key.id.to_string(), outcome.live);
    if checked.verdict.scores.is_some() {
        metrics
            .p_real
            .with_label_values(&[outcome.model.as_str()])
            .observe(outcome.p_real);
    }
    tracing::info!(
        reference = %outcome.reference,
        key_id = %caller.key.id,
        live = outcome.live,
        p_real = outcome.p_real,
        reason = outcome.reason.code(),
        input_kind = input_kind.as_str(),
        "verdict"
    );

    // The second model set scores the picture off the answer's path (src/server/shadow.rs).
    if let (Some(shadow), Some(bytes)) = (&inner.shadow, shadow_bytes) {
        shadow.submit(outcome.reference, bytes);
    }
    let mut response = json_response(StatusCode::OK, &CheckEnvelope::from(&outcome));
    if let Some(info) = caller.rate_limit {
        info.apply(response.headers_mut());
    }
    Ok(response)
}

/// Turns the `image` string into bytes: decodes inline base64, or fetches the URL on one of the
/// caller's fetch slots.
async fn obtain_image(
    state: &AppState,
    caller: &RateLimitedCaller,
    image: &str,
) -> Result<Image, ApiError> {
    let inner = &state.inner;
    let input = parse_image_input(image, inner.config.max_image_bytes)
        .map_err(|e| ApiError::BadImage(e.client_message()))?;
    let input_kind = input.kind();
    match input {
        ImageInput::Bytes { bytes, .. } => Ok(Image {
            bytes: bytes.into(),
            input_kind,
            url_host: None,
        }),
        ImageInput::Url(url) => {
            let _slot = inner
                .fetch_slots
                .try_acquire(caller.key.id)
                .inspect_err(|err| {
                    let cause = match err {
                        ApiError::TooManyFetches { .. } => "fetches_per_key",
                        _ => "fetches",
                    };
                    inner.metrics.rejections.with_label_values(&[cause]).inc();
                })?;
            let start = Instant::now();
            let fetched = inner.fetcher.fetch(&url).await;
            inner
                .metrics
                .observe_stage_ms("fetch", start.elapsed().as_secs_f64() * 1000.0);
            match fetched {
                Ok(fetched) => Ok(Image {
                    bytes: fetched.bytes,
                    input_kind,
                    url_host: Some(fetched.host),
                }),
                Err(err) if err.is_client_error() => {
                    tracing::info!(kind = err.kind(), "image fetch refused or failed");
                    Err(ApiError::BadImage(format!(
                        "Could not fetch image: {}",
                        err.client_message()
                    )))
                }
                Err(err) => Err(ApiError::Internal(format!("fetch: {err}"))),
            }
        }
    }
}

/// Over HTTP, bytes that cannot be used as an image are client errors (400, with what to send
/// instead); a fault of the models is ours (500).
fn check_error(err: CheckError) -> ApiError {
    match err {
        CheckError::Input(e) => ApiError::BadImage(e.client_message()),
        err @ CheckError::Engine(_) => ApiError::Internal(format!("pipeline: {err}")),
    }
}

/// Fetch the stored result of an earlier check.
///
/// Only the key that created the check can read it; any other key gets 404.
#[utoipa::path(
    get,
    path = "/api/onboarding/biometrics/face/liveliness_check/{reference}/",
    tag = "liveness",
    params(("reference" = Uuid, Path, description = "`data.verification.reference` of the check")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The stored verdict, in the envelope of the check", body = CheckEnvelope,
            example = json!({
                "status": "success",
                "data": {"status": false, "detail": "No face detected in image", "response_code": "00",
                    "confidence": 0.0, "confidence_in_percentage": 0.0,
                    "verification": {"status": "FAILED", "reference": "6ba7b810-9dad-41d1-80b4-00c04fd430c8"},
                    "widget_info": {}, "session": {}, "reason": "no_face",
                    "threshold": 0.6980205, "model": "676cea0abb40fd15"},
                "message": "Face Liveliness failed"})),
        (status = 401, description = "Missing or invalid key", body = ErrorEnvelope, examples(
            ("missing" = (value = json!({"status": "failed", "message": "Authentication credentials were not provided."}))),
            ("invalid" = (value = json!({"status": "failed", "message": "Invalid token."}))),
        )),
        (status = 404, description = "No check with this reference for this key", body = ErrorEnvelope,
            example = json!({"status": "failed", "data": [], "message": "Not found."})),
        (status = 500, description = "Unexpected error", body = ErrorEnvelope,
            example = json!({"status": "failed", "data": [], "message": "Internal server error"})),
    )
)]
pub async fn get_check(
    State(state): State<AppState>,
    caller: Caller,
    Path(reference): Path<String>,
) -> Result<Response, ApiError> {
    let Ok(reference) = Uuid::parse_str(&reference) else {
        return Err(ApiError::NotFound);
    };
    let record = state
        .inner
        .store
        .get_audit(reference, caller.key.id)
        .await
        .map_err(|e| ApiError::from_store("audit read", &e))?
        .ok_or(ApiError::NotFound)?;
    Ok(json_response(
        StatusCode::OK,
        &CheckEnvelope::from(&CheckOutcome::from(&record)),
    ))
}

/// Liveness of the process.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Readiness: models loaded and database reachable.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready`, `unavailable` (the database), or `draining` (shutting down: the process still
    /// serves the requests it gets but should be taken out of the load balancer).
    #[schema(example = "ready")]
    pub status: &'static str,
    /// `loaded`.
    #[schema(example = "loaded")]
    pub models: &'static str,
    /// `ok`, `unreachable`, or `unwritable` (answers but refuses writes: disk full, read-only).
    #[schema(example = "ok")]
    pub database: &'static str,
    /// Model manifest hash.
    pub model: String,
    pub version: String,
}

/// The public keys of the service's decision receipts (current first, then retired ones still
/// valid for verification), as a JSON Web Key Set; empty when the service signs no receipts.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "operations",
    responses((status = 200, description = "JSON Web Key Set (RFC 7517) of Ed25519 keys", body = Object,
        example = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
            "kid": "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k", "alg": "EdDSA", "use": "sig"}]}))))]
pub async fn jwks(State(state): State<AppState>) -> Response {
    let keys = match &state.inner.config.receipt_key {
        Some(k) => k.jwks(),
        None => crate::receipts::Jwks { keys: Vec::new() },
    };
    let mut response = json_response(StatusCode::OK, &keys);
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = Health, example = json!({"status": "ok"}))))]
pub async fn healthz() -> Response {
    json_response(StatusCode::OK, &Health { status: "ok" })
}

/// The service can answer checks: models are loaded, the database answers, and the process is not
/// shutting down.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Readiness,
            example = json!({"status": "ready", "models": "loaded", "database": "ok", "model": "676cea0abb40fd15", "version": "0.1.0"})),
        (status = 503, description = "Not ready", body = Readiness,
            example = json!({"status": "unavailable", "models": "loaded", "database": "unreachable", "model": "676cea0abb40fd15", "version": "0.1.0"})),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let inner = &state.inner;
    // The pipeline is built (models loaded and verified) before the application exists. The
    // database must answer and take a write (a full disk or read-only file still answers reads).
    let database = match inner.store.ping().await {
        Err(err) => {
            tracing::warn!(error = %err, "readiness: database unreachable");
            "unreachable"
        }
        Ok(()) => match inner.store.probe_write().await {
            Err(err) => {
                tracing::warn!(error = %err, "readiness: database refuses writes");
                "unwritable"
            }
            Ok(()) => "ok",
        },
    };
    let db_ok = database == "ok";
    let draining = inner.draining.load(std::sync::atomic::Ordering::Relaxed);
    let body = Readiness {
        status: match (draining, db_ok) {
            (true, _) => "draining",
            (false, true) => "ready",
            (false, false) => "unavailable",
        },
        models: "loaded",
        database,
        model: inner.service.model_hash().to_owned(),
        version: inner.config.app_version.clone(),
    };
    let status = if db_ok && !draining {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, &body)
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain; version=0.0.4",
        body = String,
        example = "# TYPE livecheck_checks_in_flight gauge\nlivecheck_checks_in_flight 0\n")))]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = state
        .inner
        .metrics
        .render()
        .map_err(|e| ApiError::Internal(format!("metrics: {e}")))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json", body = Object,
        example = json!({"openapi": "3.1.0", "info": {"title": "livecheck", "version": "0.1.0"}, "paths": {}}))))]
pub async fn openapi_json() -> Response {
    json_response(StatusCode::OK, &super::openapi::document())
}

/// Unknown path.
pub async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// Known path, wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The body of a 500 after a panic: the envelope, never the panic message.
pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = super::error::panic_message(panic.as_ref());
    tracing::error!(panic = %detail, "handler panicked");
    internal_error_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;
    use tower_http::catch_panic::CatchPanicLayer;

    #[tokio::test]
    async fn a_panic_becomes_the_500_envelope_without_its_message() {
        let app = Router::new()
            .route(
                "/boom",
                get(|| async {
                    if std::hint::black_box(true) {
                        panic!("secret detail at src/x.rs:12");
                    }
                    "unreachable"
                }),
            )
            .layer(CatchPanicLayer::custom(panic_response));
        let response = app
            .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        assert_eq!(
            &body[..],
            br#"{"status":"failed","data":[],"message":"Internal server error"}"#
        );
    }

    #[test]
    fn unusable_images_are_client_errors_not_verdicts() {
        use crate::pipeline::{DecodeError, PipelineError};
        let err = check_error(PipelineError::Decode(DecodeError::NotAnImage).into());
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        for decode in [
            DecodeError::Corrupt("eof".into()),
            DecodeError::Unsupported("AVIF".into()),
        ] {
            let err = check_error(PipelineError::Decode(decode).into());
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{err}");
        }
        let err = check_error(
            PipelineError::Decode(DecodeError::TooManyPixels {
                width: 100_000,
                height: 100_000,
                limit: 40_000_000,
            })
            .into(),
        );
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert!(err.client_message().contains("too large"), "{err}");
        let err = check_error(
            PipelineError::Engine(crate::engine::EngineError::Run {
                model: "x".to_string(),
                message: "boom".into(),
            })
            .into(),
        );
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(err.client_message(), "Internal server error");
    }
}
