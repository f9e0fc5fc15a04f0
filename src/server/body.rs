//! The request body of a check: `{"image": "<string>"}`, parsed by hand from `Bytes` so that every
//! rejection (content type, size, syntax, shape) becomes an [`ApiError`] in the seed's envelope
//! instead of axum's plain-text rejections.

use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap};
use bytes::BytesMut;
use futures_util::StreamExt;
use serde_json::error::Category;
use tokio::sync::OwnedSemaphorePermit;

use super::error::ApiError;
use super::AppState;

/// The 400 message for a body that is not declared as JSON.
pub const CONTENT_TYPE_MESSAGE: &str = "Content-Type must be application/json";

/// A validated check request: `image` is a non-empty string (not yet interpreted).
///
/// From a request, it also holds the body's share of the server-wide in-flight body budget
/// ([`super::AppConfig::max_body_bytes_in_flight`]) until the request ends: the body, the image
/// string and the decoded image bytes may live that long (the check drops the string once it
/// has the bytes, [`ImageBody::take_image`], and keeps the reservation).
#[derive(Debug)]
pub struct ImageBody {
    pub image: String,
    reservation: Option<OwnedSemaphorePermit>,
}

impl ImageBody {
    /// Moves the image string out, leaving an empty one; the reservation stays with `self`.
    pub fn take_image(&mut self) -> String {
        std::mem::take(&mut self.image)
    }
}

/// The request body schema, for OpenAPI.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
pub struct CheckRequest {
    /// An `http://` or `https://` URL of the image, a `data:image/...;base64,` URI, or bare
    /// base64 of the image file.
    #[schema(example = "https://example.com/photo.jpg")]
    pub image: String,
}

/// Bytes of a refused over-limit body still read (and thrown away) before the answer, and how
/// long to wait for them: a server that closes a connection with unread data makes the kernel
/// reset it, and a client still sending can lose the 413 with it. Bounded, so a client that
/// declares 200 MB costs at most this much.
const DRAIN_BYTES: usize = 1024 * 1024;
const DRAIN_IDLE: std::time::Duration = std::time::Duration::from_millis(200);
const DRAIN_TOTAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads and discards up to [`DRAIN_BYTES`] of `body`, stopping when nothing arrives for
/// [`DRAIN_IDLE`] or after [`DRAIN_TOTAL`].
async fn drain(body: axum::body::Body) {
    let mut stream = body.into_data_stream();
    let mut seen = 0usize;
    let _ = tokio::time::timeout(DRAIN_TOTAL, async {
        while seen <= DRAIN_BYTES {
            match tokio::time::timeout(DRAIN_IDLE, stream.next()).await {
                Ok(Some(Ok(chunk))) => seen += chunk.len(),
                _ => break,
            }
        }
    })
    .await;
}

/// The declared `Content-Length`, if any; a malformed one is a client error.
fn declared_length(headers: &HeaderMap) -> Result<Option<usize>, ApiError> {
    let Some(value) = headers.get(header::CONTENT_LENGTH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|n| Some(usize::try_from(n).unwrap_or(usize::MAX)))
        .ok_or_else(|| ApiError::BadRequest("Content-Length is not a number".to_owned()))
}

impl FromRequest<AppState> for ImageBody {
    type Rejection = ApiError;

    /// Content type first, then a declared `Content-Length` over the cap (413 at once, before any
    /// byte of the body is read), then admission (a check that would be shed now gets 503 without
    /// its body being held), then the body budget for the declared length. The body is read
    /// within `body_timeout` (408), every chunk counted against the cap and, for bodies without a
    /// declared length, against the budget. A body that does not fit the budget is discarded as it
    /// arrives, never held, and answered with 503.
    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let config = &state.inner.config;
        let limit = config.max_body_bytes;
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        if !is_json_content_type(content_type) {
            return Err(ApiError::BadRequest(CONTENT_TYPE_MESSAGE.to_owned()));
        }
        let declared = declared_length(req.headers())?;
        if declared.is_some_and(|n| n > limit) {
            drain(req.into_body()).await;
            return Err(ApiError::BodyTooLarge { limit });
        }
        // A check the admission controller would shed now is shed before its body is held.
        let shed = state.inner.admission.check().err();
        let budget = &state.inner.body_budget;
        // `limit` fits in u32 (checked when the application is built), so these casts are exact.
        let mut reservation = match declared {
            Some(n) if shed.is_none() => budget.clone().try_acquire_many_owned(n as u32).ok(),
            _ => None,
        };
        // Shed, or refused for lack of budget: the rest of the body is read and thrown away as it
        // arrives (never held), then the 503 goes out. Answering before the body is read would
        // make the server close a connection with unread data, and the client would see a reset
        // instead of the 503.
        let mut refused = shed.is_some() || (declared.is_some() && reservation.is_none());

        let deadline = config.body_timeout;
        let read = async {
            let mut stream = req.into_body().into_data_stream();
            let mut buf = BytesMut::with_capacity(if refused { 0 } else { declared.unwrap_or(0) });
            let mut seen = 0usize;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| {
                    ApiError::BadRequest(format!("Could not read the request body: {e}"))
                })?;
                seen += chunk.len();
                if seen > limit + DRAIN_BYTES {
                    break;
                }
                if seen > limit {
                    // Over the cap: keep discarding a little (see `drain`), then answer 413.
                    buf = BytesMut::new();
                    reservation = None;
                    continue;
                }
                if refused {
                    continue;
                }
                if declared.is_none() && !chunk.is_empty() {
                    match budget.clone().try_acquire_many_owned(chunk.len() as u32) {
                        Ok(more) => match &mut reservation {
                            Some(held) => held.merge(more),
                            None => reservation = Some(more),
                        },
                        Err(_) => {
                            refused = true;
                            reservation = None;
                            buf = BytesMut::new();
                            continue;
                        }
                    }
                }
                buf.extend_from_slice(&chunk);
            }
            if seen > limit {
                return Err(ApiError::BodyTooLarge { limit });
            }
            Ok(buf)
        };
        let bytes =
            tokio::time::timeout(deadline, read)
                .await
                .map_err(|_| ApiError::BodyTimeout {
                    secs: deadline.as_secs_f64(),
                })??;
        if refused {
            let (cause, retry_after_secs) = match shed {
                Some(shed) => ("overloaded", shed.retry_after_secs()),
                None => ("body_budget", 1),
            };
            state
                .inner
                .metrics
                .rejections
                .with_label_values(&[cause])
                .inc();
            return Err(ApiError::Overloaded { retry_after_secs });
        }
        let mut body = parse_image_body(&bytes)?;
        body.reservation = reservation;
        Ok(body)
    }
}

/// A content type's essence: the type and subtype, lowercase, without parameters.
pub fn content_type_essence(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// `application/json`, `application/json; charset=utf-8`, or `application/<x>+json`.
pub fn is_json_content_type(value: Option<&str>) -> bool {
    let Some(value) = value else {
        return false;
    };
    let essence = content_type_essence(value);
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses and validates the body bytes.
pub fn parse_image_body(bytes: &[u8]) -> Result<ImageBody, ApiError> {
    let mut object: serde_json::Map<String, serde_json::Value> = match serde_json::from_slice(bytes)
    {
        Ok(map) => map,
        Err(err) => {
            return Err(match err.classify() {
                Category::Data => ApiError::BadRequest(
                    "Request body must be a JSON object with an \"image\" string field".to_owned(),
                ),
                Category::Syntax | Category::Eof | Category::Io => {
                    ApiError::BadRequest(format!("Request body is not valid JSON: {err}"))
                }
            })
        }
    };
    match object.remove("image") {
        Some(serde_json::Value::String(image)) if !image.trim().is_empty() => Ok(ImageBody {
            image,
            reservation: None,
        }),
        _ => Err(ApiError::MissingFields),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(r: Result<ImageBody, ApiError>) -> String {
        match r {
            Ok(b) => format!("ok:{}", b.image),
            Err(e) => e.client_message(),
        }
    }

    #[test]
    fn content_types() {
        assert!(is_json_content_type(Some("application/json")));
        assert!(is_json_content_type(Some(
            "Application/JSON; charset=utf-8"
        )));
        assert!(is_json_content_type(Some("application/vnd.api+json")));
        assert!(!is_json_content_type(None));
        assert!(!is_json_content_type(Some("text/plain")));
        assert!(!is_json_content_type(Some(
            "application/x-www-form-urlencoded"
        )));
        assert!(!is_json_content_type(Some(
            "multipart/form-data; boundary=x"
        )));
    }

    #[test]
    fn bodies() {
        let missing = "Missing required fields";
        let cases: &[(&str, &str)] = &[
            (r#"{"image":"https://x/y.jpg"}"#, "ok:https://x/y.jpg"),
            (r#"{"image":"abc","other":1}"#, "ok:abc"),
            (r#"{}"#, missing),
            (r#"{"image":""}"#, missing),
            (r#"{"image":"   "}"#, missing),
            (r#"{"image":null}"#, missing),
            (r#"{"image":42}"#, missing),
            (r#"{"image":["a"]}"#, missing),
            (r#"{"image":{"url":"a"}}"#, missing),
            (r#"{"img":"a"}"#, missing),
        ];
        for (body, want) in cases {
            assert_eq!(msg(parse_image_body(body.as_bytes())), *want, "{body}");
        }
        for body in ["", "{", "{\"image\":", "not json", "{\"image\":\"a\",}"] {
            let got = msg(parse_image_body(body.as_bytes()));
            assert!(
                got.starts_with("Request body is not valid JSON"),
                "{body}: {got}"
            );
        }
        for body in ["[]", "\"image\"", "42", "null", "[{\"image\":\"a\"}]"] {
            let got = msg(parse_image_body(body.as_bytes()));
            assert!(
                got.starts_with("Request body must be a JSON object"),
                "{body}: {got}"
            );
        }
    }
}
