//! API-key authentication (`x-access-token`), capture-session tokens (`x-session-token`, check
//! endpoint only) and, for checks, the per-key rate limit. All are extractors that run before the
//! body is read, so an unauthenticated or throttled client never
//! makes the server buffer its upload. The token is never logged or stored. Authenticated keys are
//! cached briefly ([`super::keycache`]), so a revoked key stops working within
//! `--key-cache-ttl`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::error::ApiError;
use super::ratelimit::RateLimitInfo;
use super::AppState;
use crate::store::{ApiKey, Session, SessionRefusal};

/// The header carrying the API key, as in the seed API.
pub const ACCESS_TOKEN_HEADER: &str = "x-access-token";
/// The header carrying a capture session's one-time token (the check endpoint only).
pub const SESSION_TOKEN_HEADER: &str = "x-session-token";

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key: ApiKey,
}

/// An authenticated caller whose request was counted against its rate limit: by API key, or (on
/// the check endpoint) by a capture session's one-time token, on behalf of the key that created
/// the session.
#[derive(Debug, Clone)]
pub struct RateLimitedCaller {
    pub key: ApiKey,
    /// `None` when rate limiting is disabled.
    pub rate_limit: Option<RateLimitInfo>,
    /// The session whose token this request spent (`x-session-token`).
    pub session: Option<Session>,
}

/// The caller of a request bearing `x-session-token` (and no `x-access-token`): the session is
/// found, its key must still be active, the key's rate limit applies, and only then is the token
/// spent (so a throttled request does not waste it). Spending is one conditional UPDATE: of two
/// requests racing with one token, the second gets 401.
async fn session_caller(token: &str, state: &AppState) -> Result<RateLimitedCaller, ApiError> {
    let (_, key) = usable_session(token, state).await?;
    let rate_limit = rate_limit(&key, state).await?;
    let store = &state.inner.store;
    let session = store
        .spend_session(token)
        .await
        .map_err(|e| ApiError::from_store("session spend", &e))?
        .map_err(ApiError::Session)?;
    Ok(RateLimitedCaller {
        key,
        rate_limit,
        session: Some(session),
    })
}

/// The session of an unspent, unexpired token whose key is still active, and that key; the
/// token is not spent. `Err` is the 401 that names why not.
pub(crate) async fn usable_session(
    token: &str,
    state: &AppState,
) -> Result<(Session, ApiKey), ApiError> {
    let store = &state.inner.store;
    let session = store
        .find_session(token)
        .await
        .map_err(|e| ApiError::from_store("session lookup", &e))?
        .map_err(ApiError::Session)?;
    let key = store
        .get_key(session.key_id)
        .await
        .map_err(|e| ApiError::from_store("session key", &e))?
        .filter(|k| !k.is_revoked())
        .ok_or(ApiError::Session(SessionRefusal::KeyRevoked))?;
    Ok((session, key))
}

/// A request bearing an unspent capture-session token (`x-session-token`), which it does not
/// spend: the capture page's session lookup and pre-checks.
#[derive(Debug, Clone)]
pub struct SessionHolder {
    pub session: Session,
}

impl FromRequestParts<AppState> for SessionHolder {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = match parts.headers.get(SESSION_TOKEN_HEADER) {
            None => return Err(ApiError::MissingCredentials),
            Some(value) => value
                .to_str()
                .map_err(|_| ApiError::Session(SessionRefusal::Unknown))?
                .trim(),
        };
        let (session, _) = usable_session(token, state).await?;
        Ok(SessionHolder { session })
    }
}

/// Count a request against `key`'s rate limit (`None` when there is none).
async fn rate_limit(key: &ApiKey, state: &AppState) -> Result<Option<RateLimitInfo>, ApiError> {
    match &state.inner.limiter {
        None => Ok(None),
        Some(limiter) => match limiter.check(&key.id.to_string()).await {
            Ok(info) => Ok(Some(info)),
            Err(err) => {
                state
                    .inner
                    .metrics
                    .rejections
                    .with_label_values(&["rate_limited"])
                    .inc();
                Err(err)
            }
        },
    }
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
        if !parts.headers.contains_key(ACCESS_TOKEN_HEADER) {
            if let Some(value) = parts.headers.get(SESSION_TOKEN_HEADER) {
                let token = value
                    .to_str()
                    .map_err(|_| ApiError::Session(SessionRefusal::Unknown))?
                    .trim();
                return session_caller(token, state).await;
            }
        }
        let Caller { key } = Caller::from_request_parts(parts, state).await?;
        let rate_limit = rate_limit(&key, state).await?;
        Ok(RateLimitedCaller {
            key,
            rate_limit,
            session: None,
        })
    }
}
