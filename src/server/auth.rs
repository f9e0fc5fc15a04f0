//! API-key authentication (`x-access-token`) and, for checks, the per-key rate limit. Both are
//! extractors that run before the body is read, so an unauthenticated or throttled client never
//! makes the server buffer its upload. The token is never logged or stored. Authenticated keys are
//! cached briefly ([`super::keycache`]), so a revoked key stops working within
//! `--key-cache-ttl`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::error::ApiError;
use super::ratelimit::RateLimitInfo;
use super::AppState;
use crate::store::ApiKey;

/// The header carrying the API key, as in the seed API.
pub const ACCESS_TOKEN_HEADER: &str = "x-access-token";

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key: ApiKey,
}

/// An authenticated caller whose request was counted against its rate limit.
#[derive(Debug, Clone)]
pub struct RateLimitedCaller {
    pub key: ApiKey,
    /// `None` when rate limiting is disabled.
    pub rate_limit: Option<RateLimitInfo>,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = match parts.headers.get(ACCESS_TOKEN_HEADER) {
            None => return Err(ApiError::MissingCredentials),
            Some(value) => match value.to_str() {
                // Not visible ASCII: cannot be one of our tokens.
                Err(_) => return Err(ApiError::InvalidToken),
                Ok(s) if s.trim().is_empty() => return Err(ApiError::MissingCredentials),
                Ok(s) => s.trim(),
            },
        };
        if let Some(key) = state.inner.keys.get(token) {
            return Ok(Caller { key });
        }
        match state.inner.store.authenticate(token).await {
            Ok(Some(key)) => {
                state.inner.keys.insert(token, &key);
                Ok(Caller { key })
            }
            Ok(None) => Err(ApiError::InvalidToken),
            Err(err) => Err(ApiError::from_store("authenticate", &err)),
        }
    }
}

impl FromRequestParts<AppState> for RateLimitedCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Caller { key } = Caller::from_request_parts(parts, state).await?;
        let rate_limit = match &state.inner.limiter {
            None => None,
            Some(limiter) => match limiter.check(&key.id.to_string()).await {
                Ok(info) => Some(info),
                Err(err) => {
                    state
                        .inner
                        .metrics
                        .rejections
                        .with_label_values(&["rate_limited"])
                        .inc();
                    return Err(err);
                }
            },
        };
        Ok(RateLimitedCaller { key, rate_limit })
    }
}
