//! One error type for the whole HTTP surface, mapped to a status code and the seed's envelope in
//! exactly one place ([`ApiError::into_response`]). Handlers and extractors just use `?`.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::store::SessionRefusal;

/// The text of a caught panic's payload (`panic!` gives a `&str` or a `String`), for logs and
/// internal error details.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<String>() {
        s.as_str()
    } else if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else {
        "non-string panic payload"
    }
}

/// The error envelope of the seed API. `data` is present (an empty array) on every error except
/// the two authentication errors, whose seed bodies carry only `status` and `message`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorEnvelope {
    /// Always `"failed"`.
    #[schema(example = "failed")]
    pub status: &'static str,
    /// Always an empty array when present.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>, example = json!([]))]
    pub data: Option<[(); 0]>,
    /// What went wrong and what to fix.
    #[schema(example = "Missing required fields")]
    pub message: String,
}

/// Seed body: request without `x-access-token`.
pub const MSG_NO_CREDENTIALS: &str = "Authentication credentials were not provided.";
/// Seed body: unknown or revoked token.
pub const MSG_INVALID_TOKEN: &str = "Invalid token.";
/// Why a session token was refused, in words (a 401 like the seed's authentication errors).
pub fn session_message(refusal: SessionRefusal) -> &'static str {
    match refusal {
        SessionRefusal::Unknown => "Invalid session token.",
        SessionRefusal::Used => "Session token has already been used.",
        SessionRefusal::Expired => "Session token has expired.",
        SessionRefusal::KeyRevoked => "The key that created this session has been revoked.",
    }
}

/// Seed body: missing, empty or non-string `image`.
pub const MSG_MISSING_FIELDS: &str = "Missing required fields";

/// `Retry-After` of a 503 for an unavailable dependency.
pub const UNAVAILABLE_RETRY_SECS: u64 = 5;

/// Every way an API request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No `x-access-token` header (or an empty one).
    #[error("{MSG_NO_CREDENTIALS}")]
    MissingCredentials,
    /// The token matches no active key.
    #[error("{MSG_INVALID_TOKEN}")]
    InvalidToken,
    /// An `x-session-token` that cannot be spent: unknown, used, expired, or its key revoked.
    #[error("{}", session_message(*.0))]
    Session(SessionRefusal),
    /// `image` is absent, empty or not a string.
    #[error("{MSG_MISSING_FIELDS}")]
    MissingFields,
    /// The request is malformed in a way the client can fix (bad JSON, wrong content type, ...).
    #[error("{0}")]
    BadRequest(String),
    /// The image could not be obtained or used (unfetchable URL, not an image, too large ...).
    #[error("{0}")]
    BadImage(String),
    /// The request body exceeds the configured cap.
    #[error("Request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// The request body did not arrive in time.
    #[error("Request body was not received within {secs} s")]
    BodyTimeout { secs: f64 },
    /// No route at this path.
    #[error("Not found.")]
    NotFound,
    /// The route exists but not with this method.
    #[error("Method not allowed.")]
    MethodNotAllowed,
    /// The per-key rate limit is exhausted.
    #[error("Rate limit exceeded: at most {limit} requests per minute; retry after {retry_after_secs} s")]
    RateLimited { limit: u32, retry_after_secs: u64 },
    /// This key already has as many image fetches in flight as it may.
    #[error("Too many image fetches in flight for this key: at most {limit} at once; retry after {retry_after_secs} s")]
    TooManyFetches { limit: usize, retry_after_secs: u64 },
    /// The expected wait for a CPU slot is over `max_queue_wait` (or the hard queue ceiling is
    /// reached), or all image-fetch slots or the request-body memory budget are taken.
    #[error("Server is busy; retry after {retry_after_secs} s")]
    Overloaded { retry_after_secs: u64 },
    /// The server is shutting down or a dependency (the database) is down. The text goes to the
    /// log only; the client is told to retry.
    #[error("Service unavailable; retry after {UNAVAILABLE_RETRY_SECS} s")]
    Unavailable(String),
    /// Anything unexpected. The inner text goes to the log only, never to the client.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A store failure: 503 with `Retry-After` when the database cannot be reached (the client
    /// may retry), 500 otherwise.
    pub fn from_store(context: &str, err: &crate::store::StoreError) -> ApiError {
        if err.is_unavailable() {
            ApiError::Unavailable(format!("{context}: {err}"))
        } else {
            ApiError::Internal(format!("{context}: {err}"))
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MissingCredentials | ApiError::InvalidToken | ApiError::Session(_) => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::MissingFields | ApiError::BadRequest(_) | ApiError::BadImage(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RateLimited { .. } | ApiError::TooManyFetches { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Overloaded { .. } | ApiError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The client-facing message (never internal details).
    pub fn client_message(&self) -> String {
        match self {
            ApiError::Internal(_) => "Internal server error".to_owned(),
            other => other.to_string(),
        }
    }

    /// The envelope this error is sent as.
    pub fn envelope(&self) -> ErrorEnvelope {
        let data = match self {
            ApiError::MissingCredentials | ApiError::InvalidToken | ApiError::Session(_) => None,
            _ => Some([]),
        };
        ErrorEnvelope {
            status: "failed",
            data,
            message: self.client_message(),
        }
    }
}

/// Serializes an envelope to a JSON response with the given status.
pub(crate) fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        Err(err) => {
            tracing::error!(error = %err, "cannot serialize response body");
            internal_error_response()
        }
    }
}

/// The 500 response, built without any fallible step (also used by the panic handler).
pub(crate) fn internal_error_response() -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        r#"{"status":"failed","data":[],"message":"Internal server error"}"#,
    )
        .into_response()
}

fn secs_header(secs: u64) -> HeaderValue {
    HeaderValue::from(secs.max(1))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
            }
            ApiError::Unavailable(detail) => tracing::warn!(error = %detail, "unavailable"),
            _ => {}
        }
        let mut response = json_response(self.status(), &self.envelope());
        let headers = response.headers_mut();
        match &self {
            ApiError::RateLimited {
                limit,
                retry_after_secs,
            } => {
                headers.insert(header::RETRY_AFTER, secs_header(*retry_after_secs));
                headers.insert(X_RATELIMIT_LIMIT, HeaderValue::from(*limit));
                headers.insert(X_RATELIMIT_REMAINING, HeaderValue::from(0u32));
                headers.insert(X_RATELIMIT_RESET, secs_header(*retry_after_secs));
            }
            ApiError::Overloaded { retry_after_secs }
            | ApiError::TooManyFetches {
                retry_after_secs, ..
            } => {
                headers.insert(header::RETRY_AFTER, secs_header(*retry_after_secs));
            }
            ApiError::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, secs_header(UNAVAILABLE_RETRY_SECS));
            }
            _ => {}
        }
        response
    }
}

/// `X-RateLimit-Limit`: requests allowed per minute for this key.
pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining`: requests left in the current burst.
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Reset`: seconds until the burst is refilled by at least one request.
pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(err: ApiError) -> (StatusCode, String) {
        let status = err.status();
        let body = serde_json::to_string(&err.envelope()).unwrap();
        (status, body)
    }

    #[test]
    fn seed_bodies_are_byte_exact() {
        assert_eq!(
            body_of(ApiError::MissingCredentials),
            (
                StatusCode::UNAUTHORIZED,
                r#"{"status":"failed","message":"Authentication credentials were not provided."}"#
                    .to_owned()
            )
        );
        assert_eq!(
            body_of(ApiError::InvalidToken),
            (
                StatusCode::UNAUTHORIZED,
                r#"{"status":"failed","message":"Invalid token."}"#.to_owned()
            )
        );
        assert_eq!(
            body_of(ApiError::MissingFields),
            (
                StatusCode::BAD_REQUEST,
                r#"{"status":"failed","data":[],"message":"Missing required fields"}"#.to_owned()
            )
        );
    }

    #[test]
    fn internal_details_never_reach_the_client() {
        let err = ApiError::Internal("db password=hunter2 at /srv/x.rs:12".into());
        let (status, body) = body_of(err);
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            body,
            r#"{"status":"failed","data":[],"message":"Internal server error"}"#
        );
    }

    #[test]
    fn statuses() {
        assert_eq!(
            ApiError::BodyTooLarge { limit: 10 }.status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            ApiError::RateLimited {
                limit: 1,
                retry_after_secs: 3
            }
            .status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            ApiError::Overloaded {
                retry_after_secs: 1
            }
            .status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            ApiError::BadImage("x".into()).status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[tokio::test]
    async fn rate_limit_headers() {
        let response = ApiError::RateLimited {
            limit: 5,
            retry_after_secs: 12,
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let h = response.headers();
        assert_eq!(h[header::RETRY_AFTER], "12");
        assert_eq!(h[X_RATELIMIT_LIMIT], "5");
        assert_eq!(h[X_RATELIMIT_REMAINING], "0");
        assert_eq!(h[X_RATELIMIT_RESET], "12");
        assert_eq!(h[header::CONTENT_TYPE], "application/json");
    }
}
