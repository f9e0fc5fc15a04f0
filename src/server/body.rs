//! The request body of a check: `{"image": "<string>"}`, parsed by hand from `Bytes` so that every
//! rejection (content type, size, syntax, shape) becomes an [`ApiError`] in the seed's envelope
//! instead of axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, Request};
use axum::http::header;
use serde_json::error::Category;

use super::error::ApiError;

/// The configured request-body cap, read from the router state.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// The time allowed to receive the whole request body, read from the router state.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub std::time::Duration);

/// A validated check request: `image` is a non-empty string (not yet interpreted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageBody {
    pub image: String,
}

/// The request body schema, for OpenAPI.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
pub struct CheckRequest {
    /// An `http://` or `https://` URL of the image, a `data:image/...;base64,` URI, or bare
    /// base64 of the image file.
    #[schema(example = "https://example.com/photo.jpg")]
    pub image: String,
}

impl<S> FromRequest<S> for ImageBody
where
    S: Send + Sync,
    BodyLimit: FromRef<S>,
    BodyTimeout: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let BodyLimit(limit) = BodyLimit::from_ref(state);
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if !is_json_content_type(content_type.as_deref()) {
            return Err(ApiError::BadRequest(
                "Content-Type must be application/json".to_owned(),
            ));
        }
        let BodyTimeout(deadline) = BodyTimeout::from_ref(state);
        let read = tokio::time::timeout(deadline, Bytes::from_request(req, state));
        let bytes = read
            .await
            .map_err(|_| ApiError::BodyTimeout {
                secs: deadline.as_secs_f64(),
            })?
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::BodyTooLarge { limit }
                } else {
                    ApiError::BadRequest(format!("Could not read the request body: {rejection}"))
                }
            })?;
        parse_image_body(&bytes)
    }
}

/// `application/json`, `application/json; charset=utf-8`, or `application/<x>+json`.
pub fn is_json_content_type(value: Option<&str>) -> bool {
    let Some(value) = value else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
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
        Some(serde_json::Value::String(image)) if !image.trim().is_empty() => {
            Ok(ImageBody { image })
        }
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
