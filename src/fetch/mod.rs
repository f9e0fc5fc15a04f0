//! SSRF-safe image fetching and parsing of the API's `image` field.
//!
//! - [`parse_image_input`] turns the request's `image` string into an [`ImageInput`]: a URL to
//!   fetch, or inline bytes decoded from a data URI / base64, with the byte cap enforced.
//! - [`Fetcher`] downloads an image URL under the address policy in [`policy`]: only http(s), only
//!   public unicast addresses (plus an operator allow-list), every redirect hop re-validated,
//!   connect timeout, one total deadline, byte cap on the body.
//!
//! # How DNS rebinding is prevented
//!
//! The shared [`reqwest::Client`] is built with a custom [`reqwest::dns::Resolve`]
//! implementation (`GuardedResolver`). Whenever the client needs a connection to a host name it
//! asks that resolver, which looks the name up once, refuses the whole lookup if *any* address is
//! forbidden, and hands exactly the checked addresses to the connector, which connects to one of
//! them. There is no second lookup between "check" and "connect", so a rebinding DNS server has
//! no window. Pooled connections were all opened through this path. IP-literal hosts never reach
//! a resolver (hyper connects to them directly), so [`check_url`] checks them before every
//! request. This keeps one client (one TLS configuration, one connection pool) for the whole
//! process instead of building a client per request with `resolve_to_addrs`.
//!
//! Proxies are disabled (`no_proxy`): an environment proxy would make the proxy, not this guard,
//! decide where connections go. Redirects are never followed by reqwest; [`Fetcher::fetch`]
//! follows them itself and re-validates every hop.

mod input;
pub mod policy;

use std::error::Error as StdError;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION};
use reqwest::StatusCode;
use url::Url;

pub use input::{parse_image_input, ImageInput, InputError, InputKind, MAX_URL_LEN};
pub use policy::{
    check_host_name, check_ip, check_url, classify_ip, host_for_log, Forbidden, ForbiddenReason,
};

/// Most bytes pre-allocated for a body before any of it has arrived.
const MAX_PREALLOC: usize = 1 << 20;

/// Fetch limits and the address allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchConfig {
    /// CIDRs that may be fetched from even though they are not public (e.g. `127.0.0.0/8` for
    /// local testing). Cloud metadata addresses stay refused. Host names such as `localhost` are
    /// refused regardless; use an IP literal.
    pub allow: Vec<IpNet>,
    /// Limit on establishing one TCP (+TLS) connection, including the DNS lookup.
    pub connect_timeout: Duration,
    /// One deadline over the whole fetch: every redirect hop, connection and the body.
    pub total_timeout: Duration,
    /// Largest accepted body in bytes (checked against Content-Length and while streaming).
    pub max_bytes: usize,
    /// Most redirects followed; one more is [`FetchError::TooManyRedirects`].
    pub max_redirects: usize,
}

/// Default of [`FetchConfig::connect_timeout`] (`--fetch-connect-timeout`), in seconds.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: f64 = 5.0;
/// Default of [`FetchConfig::total_timeout`] (`--fetch-timeout`), in seconds.
pub const DEFAULT_TOTAL_TIMEOUT_SECS: f64 = 15.0;
/// Default of [`FetchConfig::max_redirects`] (`--max-redirects`).
pub const DEFAULT_MAX_REDIRECTS: usize = 3;

impl Default for FetchConfig {
    /// Empty allow-list and the `DEFAULT_*` constants.
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            connect_timeout: Duration::from_secs_f64(DEFAULT_CONNECT_TIMEOUT_SECS),
            total_timeout: Duration::from_secs_f64(DEFAULT_TOTAL_TIMEOUT_SECS),
            max_bytes: crate::pipeline::DEFAULT_MAX_IMAGE_BYTES,
            max_redirects: DEFAULT_MAX_REDIRECTS,
        }
    }
}

/// A successfully fetched image body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The body, at most [`FetchConfig::max_bytes`] long and never empty.
    pub bytes: Bytes,
    /// Host the body finally came from (after redirects): host only, never port, path, query or
    /// credentials; IPv6 in brackets. Safe for logs and audit records.
    pub host: String,
    /// The response's Content-Type header, if present and printable (at most 256 characters).
    pub content_type: Option<String>,
}

/// Why a fetch failed. [`FetchError::client_message`] is safe to return to the API client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The URL (or a redirect target) is not a usable http(s) URL.
    #[error("invalid image URL")]
    InvalidUrl,
    /// A scheme other than http/https (also for redirect targets).
    #[error("unsupported URL scheme {scheme:?}")]
    UnsupportedScheme {
        /// The scheme (at most 32 characters).
        scheme: String,
    },
    /// The URL carries a user name or password.
    #[error("image URL contains credentials")]
    Credentials,
    /// The host name or one of its addresses is refused by the policy.
    #[error("host {host} refused: {reason}")]
    Forbidden {
        /// The refused host (host only).
        host: String,
        /// Which rule refused it.
        reason: ForbiddenReason,
    },
    /// The host name did not resolve to any address.
    #[error("could not resolve host {host}")]
    Resolve {
        /// The host that failed to resolve.
        host: String,
    },
    /// No connection or no valid HTTP response from the host.
    #[error("could not connect to host {host}")]
    Connect {
        /// The host (host only).
        host: String,
    },
    /// The connect timeout or the total deadline passed.
    #[error("image fetch timed out")]
    Timeout,
    /// The body (announced or streamed) is larger than the cap.
    #[error("image larger than {limit} bytes")]
    TooLarge {
        /// The cap in bytes.
        limit: usize,
    },
    /// The final response was not 2xx (a 3xx without a usable Location ends up here too).
    #[error("image URL returned HTTP {0}")]
    Status(u16),
    /// More redirects than [`FetchConfig::max_redirects`].
    #[error("too many redirects (limit {limit})")]
    TooManyRedirects {
        /// The configured limit.
        limit: usize,
    },
    /// A redirect's Location header is not a valid URL reference.
    #[error("invalid redirect location")]
    BadRedirect,
    /// The body could not be read completely.
    #[error("error reading the image body from {host}")]
    Body {
        /// The host (host only).
        host: String,
    },
    /// The response was 2xx but had an empty body.
    #[error("empty image body")]
    EmptyBody,
    /// The configuration is invalid or the HTTP client could not be built (server-side problem;
    /// only returned by [`Fetcher::new`]).
    #[error("fetcher setup failed: {0}")]
    Setup(String),
}

impl FetchError {
    /// A message for the API client (HTTP 400 body) saying what to fix. It names the host the
    /// client supplied (or was redirected to) but never resolved addresses or internal details.
    pub fn client_message(&self) -> String {
        match self {
            Self::InvalidUrl => "image URL is not a valid http(s) URL".to_owned(),
            Self::UnsupportedScheme { scheme } => format!(
                "image URL scheme \"{scheme}\" is not supported (including in redirects): \
                 use http or https"
            ),
            Self::Credentials => "image URL must not contain a user name or password".to_owned(),
            Self::Forbidden { host, .. } => format!(
                "image URL host \"{host}\" is not allowed: images must be served from a public \
                 internet address"
            ),
            Self::Resolve { host } => format!("image URL host \"{host}\" could not be resolved"),
            Self::Connect { host } => {
                format!("could not get a valid HTTP response from image URL host \"{host}\"")
            }
            Self::Timeout => "image URL took too long to respond".to_owned(),
            Self::TooLarge { limit } => {
                format!("image at the URL is too large (at most {limit} bytes)")
            }
            Self::Status(code) => format!("image URL returned HTTP status {code}"),
            Self::TooManyRedirects { limit } => {
                format!("image URL redirects too many times (at most {limit} redirects)")
            }
            Self::BadRedirect => "image URL redirects to an invalid location".to_owned(),
            Self::Body { host } => {
                format!("could not read the image body from host \"{host}\"")
            }
            Self::EmptyBody => "image URL returned an empty body".to_owned(),
            Self::Setup(_) => "internal error while fetching the image".to_owned(),
        }
    }

    /// Stable lowercase identifier of the variant, for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidUrl => "invalid_url",
            Self::UnsupportedScheme { .. } => "unsupported_scheme",
            Self::Credentials => "credentials",
            Self::Forbidden { .. } => "forbidden",
            Self::Resolve { .. } => "resolve",
            Self::Connect { .. } => "connect",
            Self::Timeout => "timeout",
            Self::TooLarge { .. } => "too_large",
            Self::Status(_) => "status",
            Self::TooManyRedirects { .. } => "too_many_redirects",
            Self::BadRedirect => "bad_redirect",
            Self::Body { .. } => "body",
            Self::EmptyBody => "empty_body",
            Self::Setup(_) => "setup",
        }
    }

    /// True when the failure is the client's to fix (bad or refused URL, unreachable or
    /// misbehaving image host); false only for [`FetchError::Setup`].
    pub fn is_client_error(&self) -> bool {
        !matches!(self, Self::Setup(_))
    }
}

/// Host name lookup used by the fetcher. The default, [`SystemLookup`], uses the system resolver
/// through [`tokio::net::lookup_host`]; tests can substitute a fixed table. Whatever it returns is
/// checked by [`check_ip`] before any connection is made.
pub trait HostLookup: Send + Sync + 'static {
    /// All addresses of `host` (a domain name, never an IP literal).
    fn lookup(&self, host: &str) -> BoxFuture<'static, io::Result<Vec<IpAddr>>>;
}

/// [`HostLookup`] through the operating system's resolver (`getaddrinfo`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemLookup;

impl HostLookup for SystemLookup {
    fn lookup(&self, host: &str) -> BoxFuture<'static, io::Result<Vec<IpAddr>>> {
        let host = host.to_owned();
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// Error raised inside [`GuardedResolver`]; recovered from reqwest's error chain by
/// [`map_send_error`].
#[derive(Debug, thiserror::Error)]
enum GuardError {
    #[error("resolved address refused: {0}")]
    Forbidden(ForbiddenReason),
    #[error("host name did not resolve")]
    Unresolved,
}

/// The reqwest resolver that looks a name up once, checks every address and returns exactly the
/// checked addresses (see the module docs).
struct GuardedResolver {
    allow: Arc<[IpNet]>,
    lookup: Arc<dyn HostLookup>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let allow = Arc::clone(&self.allow);
        let lookup = Arc::clone(&self.lookup);
        Box::pin(async move {
            // Defence in depth: fetch() already checked the name, but this resolver is the last
            // gate before a socket is opened.
            // (Errors are boxed as `GuardError` itself, not `Box<GuardError>`, so that
            // `find_guard_error` can downcast them.)
            check_host_name(&host).map_err(|f| GuardError::Forbidden(f.reason))?;
            let ips = lookup
                .lookup(&host)
                .await
                .map_err(|_| GuardError::Unresolved)?;
            if ips.is_empty() {
                return Err(GuardError::Unresolved.into());
            }
            for ip in &ips {
                if let Err(f) = check_ip(*ip, &allow) {
                    tracing::warn!(
                        host = %host,
                        reason = f.reason.as_str(),
                        "image host resolves to a forbidden address"
                    );
                    return Err(GuardError::Forbidden(f.reason).into());
                }
            }
            // Port 0: the connector substitutes the URL's port (or the scheme default).
            let addrs: Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// Downloads images over http(s) under the address policy. Cheap to clone: all clones share one
/// connection pool.
#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    cfg: Arc<FetchConfig>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher").field("cfg", &self.cfg).finish()
    }
}

impl Fetcher {
    /// Build a fetcher that resolves names with the system resolver.
    ///
    /// Fails with [`FetchError::Setup`] when `max_bytes` is 0, a timeout is zero, or the HTTP
    /// client cannot be built.
    pub fn new(cfg: FetchConfig) -> Result<Self, FetchError> {
        Self::with_lookup(cfg, Arc::new(SystemLookup))
    }

    /// Build a fetcher with a custom [`HostLookup`] (a fixed table in tests, another resolver in
    /// production). Its answers go through the same policy checks.
    pub fn with_lookup(cfg: FetchConfig, lookup: Arc<dyn HostLookup>) -> Result<Self, FetchError> {
        if cfg.max_bytes == 0 {
            return Err(FetchError::Setup("max_bytes must be positive".into()));
        }
        if cfg.connect_timeout.is_zero() || cfg.total_timeout.is_zero() {
            return Err(FetchError::Setup("timeouts must be positive".into()));
        }
        let resolver = Arc::new(GuardedResolver {
            allow: cfg.allow.clone().into(),
            lookup,
        });
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .connect_timeout(cfg.connect_timeout)
            // Backstop only: fetch() enforces one deadline over all hops itself.
            .timeout(cfg.total_timeout)
            .dns_resolver(resolver)
            .user_agent(concat!("livecheck/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4)
            .build()
            .map_err(|e| FetchError::Setup(e.without_url().to_string()))?;
        Ok(Self {
            client,
            cfg: Arc::new(cfg),
        })
    }

    /// The configuration this fetcher enforces.
    pub fn config(&self) -> &FetchConfig {
        &self.cfg
    }

    /// Fetch `url` with a GET, following up to `max_redirects` redirects (301, 302, 303, 307,
    /// 308; relative Locations resolved against the current URL), re-validating scheme, host and
    /// addresses on every hop, all within `total_timeout`.
    ///
    /// Only the host is logged, never the path or query.
    pub async fn fetch(&self, url: &Url) -> Result<Fetched, FetchError> {
        let host = host_for_log(url);
        let result = match tokio::time::timeout(self.cfg.total_timeout, self.fetch_inner(url)).await
        {
            Ok(result) => result,
            Err(_elapsed) => Err(FetchError::Timeout),
        };
        match &result {
            Ok(fetched) => tracing::debug!(
                host = %host,
                final_host = %fetched.host,
                bytes = fetched.bytes.len(),
                "image fetched"
            ),
            Err(FetchError::Forbidden {
                host: refused,
                reason,
            }) => tracing::warn!(
                host = %host,
                refused_host = %refused,
                reason = reason.as_str(),
                "image fetch refused by address policy"
            ),
            Err(err) => tracing::info!(host = %host, error = err.kind(), "image fetch failed"),
        }
        result
    }

    async fn fetch_inner(&self, url: &Url) -> Result<Fetched, FetchError> {
        let mut current = url.clone();
        let mut redirects = 0usize;
        loop {
            check_url(&current, &self.cfg.allow)?;
            let host = host_for_log(&current);
            let mut response = self
                .client
                .get(current.clone())
                .header(ACCEPT, "image/*")
                .send()
                .await
                .map_err(|e| map_send_error(&e, &host))?;
            let status = response.status();
            if matches!(
                status,
                StatusCode::MOVED_PERMANENTLY
                    | StatusCode::FOUND
                    | StatusCode::SEE_OTHER
                    | StatusCode::TEMPORARY_REDIRECT
                    | StatusCode::PERMANENT_REDIRECT
            ) {
                let Some(location) = response.headers().get(LOCATION) else {
                    return Err(FetchError::Status(status.as_u16()));
                };
                if redirects >= self.cfg.max_redirects {
                    return Err(FetchError::TooManyRedirects {
                        limit: self.cfg.max_redirects,
                    });
                }
                let location = std::str::from_utf8(location.as_bytes())
                    .map_err(|_| FetchError::BadRedirect)?;
                let next = current
                    .join(location)
                    .map_err(|_| FetchError::BadRedirect)?;
                tracing::debug!(
                    from = %host,
                    to = %host_for_log(&next),
                    status = status.as_u16(),
                    "following image redirect"
                );
                redirects += 1;
                current = next;
                continue;
            }
            if !status.is_success() {
                return Err(FetchError::Status(status.as_u16()));
            }
            let limit = self.cfg.max_bytes;
            let announced = response.content_length();
            if announced.is_some_and(|len| len > limit as u64) {
                return Err(FetchError::TooLarge { limit });
            }
            let content_type = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(256).collect::<String>());
            let prealloc = announced
                .and_then(|len| usize::try_from(len).ok())
                .unwrap_or(0)
                .min(limit)
                .min(MAX_PREALLOC);
            let mut body = BytesMut::with_capacity(prealloc);
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| map_body_error(&e, &host))?
            {
                if chunk.len() > limit - body.len() {
                    return Err(FetchError::TooLarge { limit });
                }
                body.extend_from_slice(&chunk);
            }
            if body.is_empty() {
                return Err(FetchError::EmptyBody);
            }
            return Ok(Fetched {
                bytes: body.freeze(),
                host,
                content_type,
            });
        }
    }
}

/// Find a [`GuardError`] raised by [`GuardedResolver`] anywhere in an error's source chain.
fn find_guard_error<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a GuardError> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(guard) = e.downcast_ref::<GuardError>() {
            return Some(guard);
        }
        // `io::Error::source` skips the error it wraps; look inside explicitly.
        if let Some(inner) = e.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            if let Some(guard) = find_guard_error(inner) {
                return Some(guard);
            }
        }
        current = e.source();
    }
    None
}

/// Map an error from sending a request (connect + response head).
fn map_send_error(err: &reqwest::Error, host: &str) -> FetchError {
    match find_guard_error(err) {
        Some(GuardError::Forbidden(reason)) => {
            return FetchError::Forbidden {
                host: host.to_owned(),
                reason: *reason,
            }
        }
        Some(GuardError::Unresolved) => {
            return FetchError::Resolve {
                host: host.to_owned(),
            }
        }
        None => {}
    }
    if err.is_timeout() {
        FetchError::Timeout
    } else if err.is_builder() {
        FetchError::InvalidUrl
    } else {
        FetchError::Connect {
            host: host.to_owned(),
        }
    }
}

/// Map an error from reading the body.
fn map_body_error(err: &reqwest::Error, host: &str) -> FetchError {
    if err.is_timeout() {
        FetchError::Timeout
    } else {
        FetchError::Body {
            host: host.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let cfg = FetchConfig::default();
        assert!(cfg.allow.is_empty());
        assert_eq!(cfg.connect_timeout, Duration::from_secs(5));
        assert_eq!(cfg.total_timeout, Duration::from_secs(15));
        assert_eq!(cfg.max_bytes, 10 * 1024 * 1024);
        assert_eq!(cfg.max_redirects, 3);
    }

    #[test]
    fn invalid_config_is_refused() {
        let zero_bytes = FetchConfig {
            max_bytes: 0,
            ..FetchConfig::default()
        };
        assert!(matches!(
            Fetcher::new(zero_bytes),
            Err(FetchError::Setup(_))
        ));
        let zero_timeout = FetchConfig {
            total_timeout: Duration::ZERO,
            ..FetchConfig::default()
        };
        assert!(matches!(
            Fetcher::new(zero_timeout),
            Err(FetchError::Setup(_))
        ));
    }

    #[test]
    fn guard_error_is_found_through_boxes() {
        #[derive(Debug, thiserror::Error)]
        #[error("wrapper")]
        struct Wrapper(#[source] Box<dyn StdError + Send + Sync>);

        let inner: Box<dyn StdError + Send + Sync> =
            GuardError::Forbidden(ForbiddenReason::Private).into();
        let wrapped = Wrapper(Box::new(Wrapper(inner)));
        assert!(matches!(
            find_guard_error(&wrapped),
            Some(GuardError::Forbidden(ForbiddenReason::Private))
        ));
        let in_io = Wrapper(Box::new(io::Error::other(GuardError::Unresolved)));
        assert!(matches!(
            find_guard_error(&in_io),
            Some(GuardError::Unresolved)
        ));
        assert!(find_guard_error(&io::Error::other("x")).is_none());
    }

    #[test]
    fn client_messages_do_not_leak_internals() {
        let err = FetchError::Forbidden {
            host: "evil.example".into(),
            reason: ForbiddenReason::Metadata,
        };
        let msg = err.client_message();
        assert!(msg.contains("evil.example"));
        assert!(!msg.contains("metadata"), "{msg}");
        assert!(!FetchError::Setup("rustls: secret detail".into())
            .client_message()
            .contains("rustls"));
        assert!(FetchError::Status(404).client_message().contains("404"));
    }
}
