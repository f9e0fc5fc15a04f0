//! The browser flow's own routes: the built-in capture page (`/capture?session=TOKEN`), the
//! embeddable widget (`/capture.js`, `LiveCheck.mount`), their stylesheet, and the two
//! session-token endpoints the widget calls before its one check:
//! - `GET /capture/session`: is the token still usable, and where does the browser go after?
//! - `POST /capture/precheck`: framing guidance ("move closer", "one face only", ...) on a
//!   downscaled preview frame, from the same quality gates a check applies
//!   ([`crate::service::CheckService::precheck`]), without classifying, storing or spending.
//!
//! The page and its scripts are compiled into the binary (`src/server/capture/`): no CDN, no
//! request anywhere but this origin. The page is served with a strict Content-Security-Policy
//! (scripts and styles from this origin only, no inline code, Trusted Types for the DOM sinks,
//! `frame-ancestors` from `--capture-frame-ancestors`), `Referrer-Policy: no-referrer` (the
//! token is in the page's URL) and `Cache-Control: no-store`.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::auth::SessionHolder;
use super::error::{json_response, ApiError, ErrorEnvelope};
use super::AppState;
use crate::pipeline::{Precheck, Reason};
use crate::service::MAX_PRECHECK_BYTES;

/// The page: markup only (its code is `page.js` and `capture.js`, its style `capture.css`).
const PAGE_HTML: &str = include_str!("capture/index.html");
/// The widget: `window.LiveCheck.mount(element, options)`.
const WIDGET_JS: &str = include_str!("capture/capture.js");
/// The page's few lines: mount the widget with the token from the page's URL.
const PAGE_JS: &str = include_str!("capture/page.js");
const STYLE_CSS: &str = include_str!("capture/capture.css");
/// The page's icon (so that browsers do not ask for a `/favicon.ico` that is not there).
const ICON_SVG: &str = include_str!("capture/icon.svg");

/// The capture page's path.
pub const CAPTURE_PATH: &str = "/capture";
/// The widget's path.
pub const WIDGET_PATH: &str = "/capture.js";
/// The stylesheet's path.
pub const STYLE_PATH: &str = "/capture.css";
/// The page icon's path.
pub const ICON_PATH: &str = "/capture/icon.svg";
/// The page script's path.
pub const PAGE_SCRIPT_PATH: &str = "/capture/page.js";
/// The session lookup (`x-session-token`).
pub const SESSION_INFO_PATH: &str = "/capture/session";
/// The framing pre-check (`x-session-token`, an image body).
pub const PRECHECK_PATH: &str = "/capture/precheck";

/// Default of `--capture-frame-ancestors`: no site may frame the capture page.
pub const DEFAULT_FRAME_ANCESTORS: &str = "'none'";

/// Pre-checks per minute and session, per replica (a burst of this many, then one every
/// `60 / n` s). The page asks about once a second while the camera runs.
pub const PRECHECKS_PER_MINUTE: u32 = 120;

/// Mean luma (of 255) of the face, or of the frame without one, under which the guidance is
/// "more light". Guidance only: no verdict depends on it. 40 is a plainly underexposed picture
/// (about 1.5 stops under mid-grey at 118), the point where the detector's misses in the dark
/// are more likely explained by light than by framing.
pub const DARK_LUMA: f32 = 40.0;

/// What the capture page and its files are served with, fixed when the application is built.
#[derive(Debug, Clone)]
pub struct CapturePolicy {
    csp: HeaderValue,
    /// `X-Frame-Options: DENY` for browsers older than CSP's `frame-ancestors`, when no site may
    /// frame the page.
    deny_frames: bool,
}

impl CapturePolicy {
    /// `frame_ancestors`: the CSP `frame-ancestors` sources, space-separated: `'none'`, `'self'`
    /// or origins such as `https://bank.example` and `https://*.bank.example`.
    pub fn new(frame_ancestors: &str) -> Result<CapturePolicy, String> {
        let sources: Vec<&str> = frame_ancestors.split_ascii_whitespace().collect();
        if sources.is_empty() {
            return Err("--capture-frame-ancestors is empty (use 'none')".into());
        }
        for source in &sources {
            if !is_frame_source(source) {
                return Err(format!(
                    "--capture-frame-ancestors: {source:?} is not 'none', 'self' or an origin such \
                     as https://bank.example"
                ));
            }
        }
        if sources.len() > 1 && sources.contains(&"'none'") {
            return Err("--capture-frame-ancestors: 'none' cannot be combined with sources".into());
        }
        let csp = format!(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; \
             connect-src 'self'; base-uri 'none'; form-action 'none'; \
             require-trusted-types-for 'script'; trusted-types 'none'; frame-ancestors {}",
            sources.join(" ")
        );
        Ok(CapturePolicy {
            csp: HeaderValue::from_str(&csp).map_err(|e| e.to_string())?,
            deny_frames: sources == ["'none'"],
        })
    }
}

/// `'none'`, `'self'`, or `scheme://host[:port]` with an optional leading `*.` on the host and
/// nothing that could end the directive or start another (no `;`, `,`, quotes or spaces).
fn is_frame_source(source: &str) -> bool {
    if source == "'none'" || source == "'self'" {
        return true;
    }
    let Some((scheme, rest)) = source.split_once("://") else {
        return false;
    };
    let host = rest.strip_prefix("*.").unwrap_or(rest);
    matches!(scheme, "http" | "https")
        && !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        && url::Url::parse(&format!("{scheme}://{host}")).is_ok_and(|u| u.host().is_some())
}

const PERMISSIONS_POLICY: HeaderName = HeaderName::from_static("permissions-policy");
const REFERRER_POLICY: HeaderName = HeaderName::from_static("referrer-policy");
const X_CONTENT_TYPE_OPTIONS: HeaderName = HeaderName::from_static("x-content-type-options");
const X_FRAME_OPTIONS: HeaderName = HeaderName::from_static("x-frame-options");
const CROSS_ORIGIN_OPENER_POLICY: HeaderName =
    HeaderName::from_static("cross-origin-opener-policy");
const CROSS_ORIGIN_RESOURCE_POLICY: HeaderName =
    HeaderName::from_static("cross-origin-resource-policy");

/// Headers every capture file carries.
fn common_headers(headers: &mut HeaderMap, content_type: &'static str) {
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
}

/// The capture page: camera preview with guidance, capture, upload fallback, result, then the
/// session's `redirect_url`. Built into the binary; served with a strict CSP.
#[utoipa::path(
    get,
    path = "/capture",
    tag = "capture",
    params(("session" = String, Query, description = "The session's one-time token (`capture_url` of the session holds it)")),
    responses(
        (status = 200, description = "The capture page", content_type = "text/html", body = String,
            headers(
                ("Content-Security-Policy" = String, description = "Strict: this origin only, no inline code, `frame-ancestors` from `--capture-frame-ancestors`"),
                ("Referrer-Policy" = String, description = "`no-referrer`"),
                ("Cache-Control" = String, description = "`no-store`"),
            ),
            example = json!("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Selfie check</title>...")),
    )
)]
pub async fn page(State(state): State<AppState>) -> Response {
    let policy = &state.inner.capture;
    let mut response = PAGE_HTML.into_response();
    let headers = response.headers_mut();
    common_headers(headers, "text/html; charset=utf-8");
    headers.insert(header::CONTENT_SECURITY_POLICY, policy.csp.clone());
    // The URL holds a one-time token: never stored by the browser or a proxy.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        PERMISSIONS_POLICY,
        HeaderValue::from_static("camera=(self), microphone=(), geolocation=()"),
    );
    headers.insert(
        CROSS_ORIGIN_OPENER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if policy.deny_frames {
        headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    response
}

/// A static capture file (script or stylesheet); the widget may be loaded by other sites.
fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    common_headers(headers, content_type);
    // Revalidated on every use, so a new release's page never runs an old widget.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        CROSS_ORIGIN_RESOURCE_POLICY,
        HeaderValue::from_static("cross-origin"),
    );
    response
}

/// The embeddable widget: `LiveCheck.mount(element, {sessionToken, onResult, onError})`
/// (docs/browser.md). Cross-origin use of the endpoints it calls needs `--cors-origin`.
#[utoipa::path(
    get,
    path = "/capture.js",
    tag = "capture",
    responses(
        (status = 200, description = "The widget script", content_type = "text/javascript", body = String,
            example = json!("// livecheck capture widget: window.LiveCheck.mount(element, options).\n...")),
    )
)]
pub async fn widget_script() -> Response {
    asset(WIDGET_JS, "text/javascript; charset=utf-8")
}

/// `/capture/page.js`.
pub async fn page_script() -> Response {
    asset(PAGE_JS, "text/javascript; charset=utf-8")
}

/// `/capture.css`.
pub async fn stylesheet() -> Response {
    asset(STYLE_CSS, "text/css; charset=utf-8")
}

/// `/capture/icon.svg`.
pub async fn icon() -> Response {
    asset(ICON_SVG, "image/svg+xml")
}

/// `data` of `GET /capture/session`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionInfo {
    pub session_id: Uuid,
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: DateTime<Utc>,
    /// Where the page sends the browser when done (with `session_id` added to its query).
    pub redirect_url: Option<String>,
}

/// The answer of `GET /capture/session`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionInfoEnvelope {
    #[schema(example = "success")]
    pub status: String,
    pub data: SessionInfo,
    #[schema(example = "Session is ready")]
    pub message: String,
}

/// Whether a capture-session token can still be spent, without spending it. The capture page
/// asks before it starts the camera, so that an expired or used link says so at once.
#[utoipa::path(
    get,
    path = "/capture/session",
    tag = "sessions",
    security(("session_token" = [])),
    responses(
        (status = 200, description = "The token is unspent and unexpired", body = SessionInfoEnvelope,
            example = json!({"status": "success", "data": {
                "session_id": "5b0f4f8e-2d0b-4a51-9a43-2f8f4f1f2e11",
                "expires_at": "2026-12-01T10:05:00.000000Z",
                "redirect_url": "https://bank.example/done"}, "message": "Session is ready"})),
        (status = 401, description = "No token, or one that is unknown, used, expired or whose key was revoked", body = ErrorEnvelope,
            example = json!({"status": "failed", "message": "Session token has expired."})),
    )
)]
pub async fn session_info(holder: SessionHolder) -> Response {
    let session = holder.session;
    json_response(
        StatusCode::OK,
        &SessionInfoEnvelope {
            status: "success".into(),
            data: SessionInfo {
                session_id: session.id,
                expires_at: session.expires_at,
                redirect_url: session.redirect_url,
            },
            message: "Session is ready".into(),
        },
    )
}

/// What the person in front of the camera should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Guidance {
    /// Every quality gate passes: take the photo.
    Ready,
    /// No face found.
    NoFace,
    /// More than one face.
    OneFaceOnly,
    /// The face is too small.
    MoveCloser,
    /// The face leaves too little room around it.
    MoveBack,
    /// The face (or, without one, the frame) is too dark.
    MoreLight,
}

impl Guidance {
    /// The guidance for a pre-check's outcome.
    pub fn of(precheck: &Precheck) -> Guidance {
        let dark = precheck.brightness < DARK_LUMA;
        match precheck.blocked {
            None if dark => Guidance::MoreLight,
            None => Guidance::Ready,
            Some(Reason::NoFace) if dark => Guidance::MoreLight,
            Some(Reason::MultipleFaces) => Guidance::OneFaceOnly,
            Some(Reason::FaceTooSmall) => Guidance::MoveCloser,
            Some(Reason::FaceTooClose) => Guidance::MoveBack,
            Some(_) => Guidance::NoFace,
        }
    }

    /// The guidance in plain words.
    pub fn message(self) -> &'static str {
        match self {
            Guidance::Ready => "Hold still. You can take the photo now.",
            Guidance::NoFace => "We can't see a face. Put your face inside the oval.",
            Guidance::OneFaceOnly => "Only one person should be in the picture.",
            Guidance::MoveCloser => "Move closer to the camera.",
            Guidance::MoveBack => "Move back a little, so that your whole head fits in the oval.",
            Guidance::MoreLight => "It's too dark. Find more light, or face a window.",
        }
    }
}

/// `data` of `POST /capture/precheck`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PrecheckResult {
    /// `guidance == "ready"`: a check of this picture would reach the classifiers.
    pub ready: bool,
    pub guidance: Guidance,
    /// The guidance in plain words.
    #[schema(example = "Move closer to the camera.")]
    pub message: String,
    /// The face found, `[x, y, width, height]` in the frame's pixels.
    pub face_box: Option<[i32; 4]>,
}

/// The answer of `POST /capture/precheck`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PrecheckEnvelope {
    #[schema(example = "success")]
    pub status: String,
    pub data: PrecheckResult,
    #[schema(example = "Pre-check done")]
    pub message: String,
}

/// Framing guidance for a preview frame, from the quality gates a check applies (a face, one
/// face only, big enough, with room around it) plus a brightness hint. Nothing is classified
/// or stored and the token is not spent; the frame must be small (at most 256 KiB and 1 MP).
#[utoipa::path(
    post,
    path = "/capture/precheck",
    tag = "sessions",
    security(("session_token" = [])),
    request_body(content = Vec<u8>, content_type = "image/jpeg",
        description = "A JPEG, PNG or WebP preview frame, at most 256 KiB and 1 megapixel"),
    responses(
        (status = 200, description = "The guidance", body = PrecheckEnvelope,
            example = json!({"status": "success", "data": {"ready": false, "guidance": "move_closer",
                "message": "Move closer to the camera.", "face_box": [200, 150, 28, 34]},
                "message": "Pre-check done"})),
        (status = 400, description = "Not an image, or not an image content type", body = ErrorEnvelope,
            example = json!({"status": "failed", "data": [], "message": "The image is not a valid image file; send a JPEG, PNG, WebP or BMP photo"})),
        (status = 401, description = "No token, or one that is unknown, used, expired or whose key was revoked", body = ErrorEnvelope,
            example = json!({"status": "failed", "message": "Invalid session token."})),
        (status = 413, description = "Frame over 256 KiB", body = ErrorEnvelope,
            example = json!({"status": "failed", "data": [], "message": "Request body is larger than the limit of 262144 bytes"})),
        (status = 429, description = "Over 120 pre-checks a minute for this session", body = ErrorEnvelope,
            headers(("Retry-After" = u64, description = "Seconds to wait")),
            example = json!({"status": "failed", "data": [], "message": "Rate limit exceeded: at most 120 requests per minute; retry after 1 s"})),
        (status = 503, description = "Overloaded (as for checks)", body = ErrorEnvelope,
            headers(("Retry-After" = u64, description = "Seconds to wait")),
            example = json!({"status": "failed", "data": [], "message": "Server is busy; retry after 1 s"})),
    )
)]
pub async fn precheck(
    State(state): State<AppState>,
    holder: SessionHolder,
    request: Request,
) -> Result<Response, ApiError> {
    let inner = &state.inner;
    let is_image = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| super::body::content_type_essence(v).starts_with("image/"));
    if !is_image {
        return Err(ApiError::BadRequest(
            "Content-Type must be an image type (image/jpeg, image/png or image/webp)".into(),
        ));
    }
    inner
        .prechecks
        .check(&holder.session.id.to_string())
        .inspect_err(|_| {
            inner
                .metrics
                .rejections
                .with_label_values(&["rate_limited"])
                .inc();
        })?;
    let bytes = read_frame(request.into_body(), inner.config.body_timeout).await?;
    let ticket = inner.admission.try_admit().map_err(|shed| {
        inner
            .metrics
            .rejections
            .with_label_values(&["overloaded"])
            .inc();
        ApiError::Overloaded {
            retry_after_secs: shed.retry_after_secs(),
        }
    })?;
    let running = ticket
        .start()
        .await
        .ok_or_else(|| ApiError::Unavailable("shutting down".into()))?
        .untimed();
    let service = std::sync::Arc::clone(&inner.service);
    let started = Instant::now();
    let outcome = running
        .run(move || service.precheck(&bytes))
        .await
        .map_err(|e| ApiError::Internal(format!("precheck task failed: {e}")))?;
    inner
        .metrics
        .observe_stage_ms("precheck", started.elapsed().as_secs_f64() * 1000.0);
    let precheck = outcome.map_err(|e| match e {
        crate::service::CheckError::Input(d) => ApiError::BadImage(d.client_message()),
        e => ApiError::Internal(format!("precheck: {e}")),
    })?;
    let guidance = Guidance::of(&precheck);
    Ok(json_response(
        StatusCode::OK,
        &PrecheckEnvelope {
            status: "success".into(),
            data: PrecheckResult {
                ready: guidance == Guidance::Ready,
                guidance,
                message: guidance.message().into(),
                face_box: precheck.face.map(|f| f.bbox),
            },
            message: "Pre-check done".into(),
        },
    ))
}

/// The frame's bytes: at most [`MAX_PRECHECK_BYTES`] (413 beyond, after reading a little more
/// so that the client sees the answer rather than a reset), within `timeout` (408).
async fn read_frame(body: Body, timeout: std::time::Duration) -> Result<Vec<u8>, ApiError> {
    let limit = MAX_PRECHECK_BYTES;
    let read = async {
        let mut stream = body.into_data_stream();
        let mut buf = Vec::new();
        let mut seen = 0usize;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::BadRequest(format!("Could not read the request body: {e}"))
            })?;
            seen += chunk.len();
            if seen > 4 * limit {
                break;
            }
            if seen <= limit {
                buf.extend_from_slice(&chunk);
            }
        }
        if seen > limit {
            return Err(ApiError::BodyTooLarge { limit });
        }
        Ok(buf)
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| ApiError::BodyTimeout {
            secs: timeout.as_secs_f64(),
        })?
}

/// CORS for the browser endpoints (the check, `/capture/session`, `/capture/precheck`) when
/// `--cors-origin` names origins: those origins may send `x-session-token` and JSON or image
/// bodies, and read `Retry-After`. `x-access-token` is never allowed cross-origin: an API key
/// has no business in a browser.
pub fn cors_layer(origins: &[HeaderValue]) -> tower_http::cors::CorsLayer {
    use axum::http::Method;
    tower_http::cors::CorsLayer::new()
        .allow_origin(origins.to_vec())
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::CONTENT_TYPE,
            HeaderName::from_static(super::auth::SESSION_TOKEN_HEADER),
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([header::RETRY_AFTER, HeaderName::from_static("x-request-id")])
        .max_age(std::time::Duration::from_secs(600))
}

/// Parses `--cors-origin` values: each `scheme://host[:port]` exactly as a browser sends it in
/// `Origin` (no path, no trailing slash, no wildcard).
pub fn parse_origins(values: &[String]) -> Result<Vec<HeaderValue>, String> {
    values
        .iter()
        .map(|v| {
            let parsed = url::Url::parse(v).map_err(|e| format!("--cors-origin {v:?}: {e}"))?;
            let origin = parsed.origin().ascii_serialization();
            if !matches!(parsed.scheme(), "http" | "https") || origin != *v {
                return Err(format!(
                    "--cors-origin {v:?} is not an origin: write it as {origin:?} \
                     (scheme://host[:port], no path)"
                ));
            }
            HeaderValue::from_str(v).map_err(|e| e.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Face;

    #[test]
    fn frame_ancestors_are_validated() {
        for good in [
            "'none'",
            "'self'",
            "'self' https://bank.example",
            "https://*.bank.example:8443 http://127.0.0.1:3000",
        ] {
            let p = CapturePolicy::new(good).unwrap_or_else(|e| panic!("{good}: {e}"));
            let csp = p.csp.to_str().unwrap();
            assert!(csp.ends_with(&format!("frame-ancestors {good}")), "{csp}");
            assert_eq!(p.deny_frames, good == "'none'");
        }
        for bad in [
            "",
            "   ",
            "*",
            "https://bank.example; script-src *",
            "https://bank.example,https://x",
            "'unsafe-inline'",
            "javascript://x",
            "https://",
            "'none' 'self'",
            "https://bank.example/path",
        ] {
            assert!(CapturePolicy::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_page_policy_is_strict() {
        let p = CapturePolicy::new(DEFAULT_FRAME_ANCESTORS).unwrap();
        let csp = p.csp.to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "require-trusted-types-for 'script'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{directive} missing from {csp}");
        }
        assert!(!csp.contains("unsafe"), "{csp}");
    }

    #[test]
    fn origins_are_exact() {
        let ok = parse_origins(&[
            "https://bank.example".into(),
            "http://127.0.0.1:8080".into(),
        ])
        .unwrap();
        assert_eq!(ok.len(), 2);
        for bad in [
            "*",
            "https://bank.example/",
            "https://bank.example/app",
            "bank.example",
            "ftp://bank.example",
            "https://BANK.example",
        ] {
            assert!(parse_origins(&[bad.into()]).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn guidance_follows_the_gates() {
        let face = Some(Face {
            bbox: [10, 10, 100, 120],
            confidence: 0.99,
        });
        let at = |blocked, brightness| Precheck {
            blocked,
            face,
            brightness,
        };
        assert_eq!(Guidance::of(&at(None, 120.0)), Guidance::Ready);
        assert_eq!(Guidance::of(&at(None, 20.0)), Guidance::MoreLight);
        assert_eq!(
            Guidance::of(&at(Some(Reason::NoFace), 120.0)),
            Guidance::NoFace
        );
        assert_eq!(
            Guidance::of(&at(Some(Reason::NoFace), 10.0)),
            Guidance::MoreLight
        );
        assert_eq!(
            Guidance::of(&at(Some(Reason::MultipleFaces), 120.0)),
            Guidance::OneFaceOnly
        );
        assert_eq!(
            Guidance::of(&at(Some(Reason::FaceTooSmall), 120.0)),
            Guidance::MoveCloser
        );
        assert_eq!(
            Guidance::of(&at(Some(Reason::FaceTooClose), 120.0)),
            Guidance::MoveBack
        );
        assert_eq!(
            Guidance::of(&at(Some(Reason::ImageTooSmall), 120.0)),
            Guidance::NoFace
        );
    }
}
