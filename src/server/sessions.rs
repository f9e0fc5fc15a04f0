//! Capture sessions over HTTP: an API key creates a one-time session for a browser
//! (`POST .../sessions/`), the browser spends its token on one check (`x-session-token`, see
//! [`super::auth`]), and the key reads the session's status and result (`GET .../sessions/{id}/`).
//! The API key never reaches the browser.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::auth::Caller;
use super::envelope::{CheckData, CheckEnvelope};
use super::error::{json_response, ApiError, ErrorEnvelope};
use super::AppState;
use crate::service::CheckOutcome;
use crate::store::{NewSession, StoreError};

/// Lifetime of a session when the request names none.
pub const DEFAULT_SESSION_TTL_SECS: u64 = 300;
/// Longest lifetime a session may ask for.
pub const MAX_SESSION_TTL_SECS: u64 = 1800;

/// Body of `POST .../sessions/` (optional; an empty body takes every default).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionRequest {
    /// Seconds the session's token stays usable: 1 to 1800, default 300.
    #[schema(example = 300)]
    pub ttl_seconds: Option<u64>,
    /// Where the capture page sends the browser when done (absolute http or https URL), with
    /// `session_id` added to its query.
    #[schema(example = "https://bank.example/onboarding/done")]
    pub redirect_url: Option<String>,
    /// The integrator's own id for this session (1 to 128 characters), echoed back in
    /// `data.session` of the check and in the session's status.
    #[schema(example = "applicant-7731")]
    pub reference_id: Option<String>,
}

/// `data` of a created session.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionCreated {
    pub session_id: Uuid,
    /// The one-time token for the browser (`x-session-token`); shown once, stored only as a hash.
    pub session_token: String,
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: DateTime<Utc>,
    /// The built-in capture page for this session, to send the person to (it holds the token):
    /// `--public-url` (or the request's own host) + `/capture?session=<token>`.
    #[schema(example = "https://livecheck.bank.example/capture?session=ls_0vJx7...")]
    pub capture_url: String,
}

/// The answer of `POST .../sessions/` (201).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionCreatedEnvelope {
    #[schema(example = "success")]
    pub status: String,
    pub data: SessionCreated,
    #[schema(example = "Session created")]
    pub message: String,
}

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Created; its token is unspent and unexpired.
    Pending,
    /// Its token expired unspent.
    Expired,
    /// Its token was spent, and no verdict was recorded: the check was refused (an unreadable
    /// image, overload) or is still running.
    Used,
    /// Its token was spent on a check with a verdict (`result`).
    Completed,
}

/// `data` of a session's status.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionStatus {
    pub session_id: Uuid,
    pub status: SessionState,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: DateTime<Utc>,
    /// When the token was spent.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub used_at: Option<DateTime<Utc>>,
    pub reference_id: Option<String>,
    pub redirect_url: Option<String>,
    /// The check's `data`, as its POST answered it (`null` unless `completed`).
    pub result: Option<CheckData>,
}

/// The answer of `GET .../sessions/{id}/`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionStatusEnvelope {
    #[schema(example = "success")]
    pub status: String,
    pub data: SessionStatus,
    #[schema(example = "Session retrieved")]
    pub message: String,
}

/// The request's session settings, or why they are refused.
fn parse_request(body: &[u8]) -> Result<(chrono::Duration, NewSession), ApiError> {
    let request: CreateSessionRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CreateSessionRequest::default()
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::BadRequest(format!("Invalid JSON body: {e}")))?
    };
    let ttl = request.ttl_seconds.unwrap_or(DEFAULT_SESSION_TTL_SECS);
    if !(1..=MAX_SESSION_TTL_SECS).contains(&ttl) {
        return Err(ApiError::BadRequest(format!(
            "ttl_seconds must be between 1 and {MAX_SESSION_TTL_SECS}"
        )));
    }
    if let Some(u) = &request.redirect_url {
        let ok = url::Url::parse(u).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host().is_some()
                && u.username().is_empty()
                && u.password().is_none()
        });
        if !ok {
            return Err(ApiError::BadRequest(
                "redirect_url must be an absolute http or https URL without credentials".into(),
            ));
        }
    }
    let ttl = chrono::Duration::seconds(i64::try_from(ttl).unwrap_or(i64::MAX));
    Ok((
        ttl,
        NewSession {
            redirect_url: request.redirect_url,
            reference_id: request.reference_id,
        },
    ))
}

/// The capture page's URL for `token`: under `public_url` when configured, else under the
/// scheme and host the request names (`X-Forwarded-Proto` / `X-Forwarded-Host` from a proxy, else
/// `Host` over plain HTTP), else a relative URL. The request is the API key holder's own, and the
/// answer goes back to it alone, so its headers are trusted for this.
fn capture_url(public_url: Option<&url::Url>, headers: &HeaderMap, token: &str) -> String {
    let path = format!("{}?session={token}", super::capture::CAPTURE_PATH);
    if let Some(base) = public_url {
        return format!("{}{path}", base.as_str().trim_end_matches('/'));
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let host = header("x-forwarded-host")
        .or_else(|| header("host"))
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        });
    let scheme = match header("x-forwarded-proto") {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    };
    match host {
        Some(host) => format!("{scheme}://{host}{path}"),
        None => path,
    }
}

/// Create a one-time capture session.
#[utoipa::path(
    post,
    path = "/api/onboarding/biometrics/face/liveliness_check/sessions/",
    tag = "sessions",
    security(("api_key" = [])),
    request_body(content = Option<CreateSessionRequest>, content_type = "application/json",
        description = "Optional; an empty body takes every default"),
    responses(
        (status = 201, description = "The session and its one-time token", body = SessionCreatedEnvelope,
            example = json!({"status": "success", "data": {
                "session_id": "5b0f4f8e-2d0b-4a51-9a43-2f8f4f1f2e11",
                "session_token": "ls_0vJx7...",
                "expires_at": "2026-12-01T10:05:00Z",
                "capture_url": "https://livecheck.bank.example/capture?session=ls_0vJx7..."},
                "message": "Session created"})),
        (status = 400, description = "Invalid body, ttl_seconds, redirect_url or reference_id", body = ErrorEnvelope,
            example = json!({"status": "failed", "data": [], "message": "ttl_seconds must be between 1 and 1800"})),
        (status = 401, description = "Missing or invalid key", body = ErrorEnvelope,
            example = json!({"status": "failed", "message": "Invalid token."})),
        (status = 503, description = "The database is unreachable", body = ErrorEnvelope,
            headers(("Retry-After" = u64, description = "Seconds to wait")),
            example = json!({"status": "failed", "data": [], "message": "Service unavailable; retry after 5 s"})),
    )
)]
pub async fn create_session(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (ttl, new) = parse_request(&body)?;
    let (session, token) = state
        .inner
        .store
        .create_session(caller.key.id, ttl, new)
        .await
        .map_err(|e| match e {
            StoreError::Invalid(what) => ApiError::BadRequest(what),
            e => ApiError::from_store("session create", &e),
        })?;
    Ok(json_response(
        StatusCode::CREATED,
        &SessionCreatedEnvelope {
            status: "success".into(),
            data: SessionCreated {
                session_id: session.id,
                expires_at: session.expires_at,
                capture_url: capture_url(state.inner.config.public_url.as_ref(), &headers, &token),
                session_token: token,
            },
            message: "Session created".into(),
        },
    ))
}

/// A session's status and, once completed, its check's result. Only the key that created the
/// session may read it.
#[utoipa::path(
    get,
    path = "/api/onboarding/biometrics/face/liveliness_check/sessions/{id}/",
    tag = "sessions",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "The session's id")),
    responses(
        (status = 200, description = "The session's status", body = SessionStatusEnvelope,
            example = json!({"status": "success", "data": {
                "session_id": "5b0f4f8e-2d0b-4a51-9a43-2f8f4f1f2e11", "status": "pending",
                "created_at": "2026-12-01T10:00:00.000000Z", "expires_at": "2026-12-01T10:05:00.000000Z",
                "used_at": null, "reference_id": "applicant-7731",
                "redirect_url": "https://bank.example/done", "result": null},
                "message": "Session retrieved"})),
        (status = 401, description = "Missing or invalid key", body = ErrorEnvelope,
            example = json!({"status": "failed", "message": "Invalid token."})),
        (status = 404, description = "No session with this id for this key", body = ErrorEnvelope,
            example = json!({"status": "failed", "data": [], "message": "Not found."})),
    )
)]
pub async fn get_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    let store = &state.inner.store;
    let session = store
        .get_session(id)
        .await
        .map_err(|e| ApiError::from_store("session read", &e))?
        .filter(|s| s.key_id == caller.key.id)
        .ok_or(ApiError::NotFound)?;
    let result = match session.used_at {
        None => None,
        Some(_) => store
            .get_audit_by_session(session.id)
            .await
            .map_err(|e| ApiError::from_store("session result", &e))?
            .map(|record| CheckEnvelope::from(&CheckOutcome::from(&record)).data),
    };
    let status = match (&session.used_at, &result) {
        (Some(_), Some(_)) => SessionState::Completed,
        (Some(_), None) => SessionState::Used,
        (None, _) if session.expires_at <= Utc::now() => SessionState::Expired,
        (None, _) => SessionState::Pending,
    };
    Ok(json_response(
        StatusCode::OK,
        &SessionStatusEnvelope {
            status: "success".into(),
            data: SessionStatus {
                session_id: session.id,
                status,
                created_at: session.created_at,
                expires_at: session.expires_at,
                used_at: session.used_at,
                reference_id: session.reference_id,
                redirect_url: session.redirect_url,
                result,
            },
            message: "Session retrieved".into(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_urls() {
        let mut h = HeaderMap::new();
        assert_eq!(capture_url(None, &h, "ls_x"), "/capture?session=ls_x");
        h.insert("host", "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            capture_url(None, &h, "ls_x"),
            "http://127.0.0.1:8080/capture?session=ls_x"
        );
        h.insert("x-forwarded-host", "lc.bank.example".parse().unwrap());
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        assert_eq!(
            capture_url(None, &h, "ls_x"),
            "https://lc.bank.example/capture?session=ls_x"
        );
        h.insert("x-forwarded-host", "evil/<script>".parse().unwrap());
        assert_eq!(capture_url(None, &h, "ls_x"), "/capture?session=ls_x");
        let base = url::Url::parse("https://lc.example/liveness/").unwrap();
        assert_eq!(
            capture_url(Some(&base), &h, "ls_x"),
            "https://lc.example/liveness/capture?session=ls_x"
        );
    }

    #[test]
    fn session_requests_are_validated() {
        let (ttl, new) = parse_request(b"").unwrap();
        assert_eq!(ttl.num_seconds(), 300);
        assert_eq!(new, NewSession::default());
        let (ttl, new) = parse_request(
            br#"{"ttl_seconds": 60, "redirect_url": "https://bank.example/done?x=1", "reference_id": "a-1"}"#,
        )
        .unwrap();
        assert_eq!(ttl.num_seconds(), 60);
        assert_eq!(new.reference_id.as_deref(), Some("a-1"));
        for bad in [
            &br#"{"ttl_seconds": 0}"#[..],
            br#"{"ttl_seconds": 1801}"#,
            br#"{"ttl_seconds": -5}"#,
            br#"{"redirect_url": "javascript:alert(1)"}"#,
            br#"{"redirect_url": "/relative"}"#,
            br#"{"redirect_url": "https://user:pw@bank.example/"}"#,
            br#"{"unknown": 1}"#,
            b"not json",
            b"[]",
        ] {
            assert!(
                matches!(parse_request(bad), Err(ApiError::BadRequest(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
