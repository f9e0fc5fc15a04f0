//! `livecheck serve`: load the models, connect the audit store, and serve the HTTP API until
//! SIGTERM or Ctrl-C (then finish the checks in flight).

use std::io::Write as _;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use livecheck::receipts::ReceiptKey;
use livecheck::resubmission::PrintKey;
use livecheck::server;
use livecheck::server::ratelimit::RedisConfig;
use livecheck::server::{AppConfig, Application};
use livecheck::store::{Store, StoreOptions};

/// Serve the Adhere-compatible liveness API. Every flag is also an environment variable.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address and port to listen on.
    #[arg(
        long,
        env = "LIVECHECK_BIND",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    pub bind: SocketAddr,

    #[command(flatten)]
    pub database: super::common::DatabaseArg,

    /// Database connections each replica may open (its pool). With PostgreSQL, replicas x this
    /// must stay under the server's max_connections (100 by default), or use a pooler. With
    /// SQLite, one more connection carries the checks' audit rows and re-submission lookups.
    #[arg(long, env = "LIVECHECK_DATABASE_POOL_SIZE", default_value_t = 10, value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..))]
    pub database_pool_size: u32,

    #[command(flatten)]
    pub fetch: super::common::FetchArgs,

    /// Largest request body accepted, in bytes (413 above). Leave room for base64 of the largest
    /// image: at least 4/3 of --max-image-bytes plus a few hundred bytes.
    #[arg(long, env = "LIVECHECK_MAX_BODY_BYTES", default_value_t = server::DEFAULT_MAX_BODY_BYTES, value_name = "BYTES")]
    pub max_body_bytes: usize,

    /// Seconds allowed to receive a check's whole request body; a slower client gets 408.
    #[arg(long, env = "LIVECHECK_BODY_TIMEOUT", default_value_t = server::DEFAULT_BODY_TIMEOUT_SECS, value_name = "SECONDS",
        value_parser = super::common::parse_seconds)]
    pub body_timeout: f64,

    /// Request-body bytes held in memory at once by all requests together. A request whose
    /// declared body does not fit gets 503 with Retry-After before its body is read. At least
    /// --max-body-bytes.
    #[arg(long, env = "LIVECHECK_MAX_BODY_BYTES_IN_FLIGHT", default_value_t = server::DEFAULT_MAX_BODY_BYTES_IN_FLIGHT, value_name = "BYTES")]
    pub max_body_bytes_in_flight: usize,

    /// Seconds allowed to receive a request's headers; also how long an idle kept-alive
    /// connection, or one that sends nothing, stays open.
    #[arg(long, env = "LIVECHECK_HEADER_TIMEOUT", default_value_t = server::DEFAULT_HEADER_TIMEOUT_SECS, value_name = "SECONDS",
        value_parser = super::common::parse_seconds)]
    pub header_timeout: f64,

    /// Client connections open at once; more wait in the listen backlog.
    #[arg(long, env = "LIVECHECK_MAX_CONNECTIONS", default_value_t = server::DEFAULT_MAX_CONNECTIONS, value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Image-URL fetches in flight, all keys together; beyond it 503 with Retry-After. Fetches
    /// wait on other servers, so they have their own slots and never hold a check slot.
    #[arg(long, env = "LIVECHECK_MAX_CONCURRENT_FETCHES", default_value_t = server::DEFAULT_MAX_CONCURRENT_FETCHES, value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_fetches: u32,

    /// Image-URL fetches in flight per API key; beyond it 429 with Retry-After.
    #[arg(long, env = "LIVECHECK_MAX_FETCHES_PER_KEY", default_value_t = server::DEFAULT_MAX_FETCHES_PER_KEY, value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..))]
    pub max_fetches_per_key: u32,

    /// CPU slots: checks running at once on the CPU (a check on a quiet server borrows an idle
    /// slot for half of its classifiers while no check waits). Default: the number of CPU cores.
    #[arg(long, env = "LIVECHECK_MAX_CONCURRENT_CHECKS", value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_checks: Option<u32>,

    /// Longest expected wait for a CPU slot at which a check is still queued; beyond it, 503
    /// with Retry-After at once. The wait is estimated from the checks already waiting and the
    /// recent service time.
    #[arg(long, env = "LIVECHECK_MAX_QUEUE_WAIT", default_value_t = server::DEFAULT_MAX_QUEUE_WAIT_SECS, value_name = "SECONDS",
        value_parser = super::common::parse_seconds)]
    pub max_queue_wait: f64,

    /// Hard ceiling on checks waiting for a CPU slot, whatever the expected wait; beyond it, 503
    /// with Retry-After at once (0: only when a slot is free). Default: 256 x
    /// --max-concurrent-checks (`server::DEFAULT_QUEUED_CHECKS_PER_SLOT`).
    #[arg(long, env = "LIVECHECK_MAX_QUEUED_CHECKS", value_name = "N")]
    pub max_queued_checks: Option<usize>,

    /// Seconds an authenticated API key is served from memory without a database lookup. A key
    /// revoked with `keys revoke` stops working within this time; 0 looks up every request
    /// (revocation at once).
    #[arg(long, env = "LIVECHECK_KEY_CACHE_TTL", default_value_t = server::DEFAULT_KEY_CACHE_TTL_SECS, value_name = "SECONDS",
        value_parser = super::common::parse_seconds_or_zero)]
    pub key_cache_ttl: f64,

    /// Check requests per minute allowed to each API key (bursts up to this many); 0 disables the
    /// limit. Over the limit: 429 with Retry-After and X-RateLimit-* headers.
    #[arg(
        long,
        env = "LIVECHECK_RATE_LIMIT_PER_MINUTE",
        default_value_t = server::DEFAULT_RATE_LIMIT_PER_MINUTE,
        value_name = "N"
    )]
    pub rate_limit_per_minute: u32,

    /// Origins whose pages may call the browser endpoints cross-origin (the check with
    /// x-session-token, /capture/session, /capture/precheck), comma-separated, each exactly as a
    /// browser sends it: scheme://host[:port]. Needed when an integrator's page embeds
    /// /capture.js; the built-in /capture page needs none. x-access-token is never allowed
    /// cross-origin.
    #[arg(
        long,
        env = "LIVECHECK_CORS_ORIGIN",
        value_name = "ORIGIN,...",
        value_delimiter = ','
    )]
    pub cors_origin: Vec<String>,

    /// Where clients reach this service (scheme, host and any path prefix, e.g.
    /// https://livecheck.bank.example), for the capture_url of new sessions. Unset: the
    /// request's own host (X-Forwarded-Host and X-Forwarded-Proto when a proxy sets them).
    #[arg(long, env = "LIVECHECK_PUBLIC_URL", value_name = "URL",
        value_parser = parse_public_url)]
    pub public_url: Option<url::Url>,

    /// Sources allowed to show the /capture page in a frame (its CSP frame-ancestors),
    /// space-separated: 'none', 'self', or origins such as https://bank.example.
    #[arg(
        long,
        env = "LIVECHECK_CAPTURE_FRAME_ANCESTORS",
        default_value = server::capture::DEFAULT_FRAME_ANCESTORS,
        value_name = "SOURCES"
    )]
    pub capture_frame_ancestors: String,

    /// Share the per-key rate limit between replicas through this Redis
    /// (redis://[USER:PASSWORD@]HOST:PORT[/DB]). Unset: each replica limits on its own. While Redis
    /// fails or is slower than --redis-timeout, requests are counted by the replica's own limiter
    /// (limits per replica, never none), with livecheck_ratelimit_redis_errors_total and a log line.
    #[arg(
        long,
        env = "LIVECHECK_REDIS_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub redis_url: Option<String>,

    /// Prefix of the rate limiter's Redis keys, so that deployments can share one Redis.
    #[arg(
        long,
        env = "LIVECHECK_REDIS_KEY_PREFIX",
        default_value = "livecheck:",
        value_name = "PREFIX"
    )]
    pub redis_key_prefix: String,

    /// Longest wait for one Redis round trip (connecting included) before a request is counted
    /// by the replica's own limiter instead.
    #[arg(long, env = "LIVECHECK_REDIS_TIMEOUT", default_value_t = 0.25, value_name = "SECONDS",
        value_parser = super::common::parse_seconds)]
    pub redis_timeout: f64,

    /// On SIGTERM or Ctrl-C, seconds during which /readyz answers 503 "draining" while requests
    /// are still served (so a load balancer or Kubernetes takes the replica out first); then the
    /// listener closes and in-flight requests finish. A second signal ends the wait. 0: close at
    /// once.
    #[arg(long, env = "LIVECHECK_DRAIN_GRACE", default_value_t = 5.0, value_name = "SECONDS",
        value_parser = super::common::parse_seconds_or_zero)]
    pub drain_grace: f64,

    /// Log one JSON object per line instead of human-readable text. Set RUST_LOG to filter
    /// (default: info).
    #[arg(long, env = "LIVECHECK_LOG_JSON")]
    pub log_json: bool,

    /// Key file that signs every verdict's receipt (`livecheck receipts keygen`). Default:
    /// receipt-key.json in the data directory (the SQLite database's folder, or the working
    /// directory with PostgreSQL), created on first start.
    #[arg(long, env = "LIVECHECK_RECEIPT_KEY", value_name = "FILE")]
    pub receipt_key: Option<PathBuf>,

    /// Secret that keys the stored hashes of re-submission detection (docs/resubmission.md).
    /// Default: print-key.json in the data directory, created on first start. Every replica of
    /// one deployment needs the same file.
    #[arg(long, env = "LIVECHECK_PRINT_KEY", value_name = "FILE")]
    pub print_key: Option<PathBuf>,

    /// How far back a re-submitted picture (the same bytes or a near-copy, by any key) is looked
    /// for: a number with a unit, s, m, h or d. 0 turns the lookup (and
    /// `data.signals.resubmission`) off.
    #[arg(long, env = "LIVECHECK_RESUBMISSION_WINDOW", default_value = "30d", value_parser = super::common::parse_window)]
    pub resubmission_window: Duration,

    /// Fail a re-submitted picture (`reason: resubmitted_image`, VERIFIED never) instead of only
    /// reporting it in `data.signals.resubmission`.
    #[arg(long, env = "LIVECHECK_REJECT_RESUBMISSIONS")]
    pub reject_resubmissions: bool,

    /// A second model set (built-in name or set file) that scores every checked picture again
    /// after the answer, at the lowest CPU priority, into the audit row; `livecheck report`
    /// shows how often it agrees with the live set. Answers never wait for it.
    #[arg(long, env = "LIVECHECK_SHADOW_MODEL_SET", value_name = "NAME|FILE")]
    pub shadow_model_set: Option<String>,

    #[command(flatten)]
    pub pipeline: super::common::PipelineArgs,
}

/// File name of the signing key `serve` creates in its data directory.
pub const DEFAULT_RECEIPT_KEY_FILE: &str = "receipt-key.json";
/// File name of the re-submission secret `serve` creates in its data directory.
pub const DEFAULT_PRINT_KEY_FILE: &str = "print-key.json";

/// The re-submission secret: `--print-key`'s file (which must exist), or the data directory's,
/// created on first start.
fn print_key(flag: Option<&Path>, database: &str) -> anyhow::Result<PrintKey> {
    if let Some(path) = flag {
        return Ok(PrintKey::load(path)?);
    }
    let path = data_dir(database).join(DEFAULT_PRINT_KEY_FILE);
    let (key, created) = PrintKey::load_or_create(&path)?;
    if created {
        tracing::info!(file = %path.display(), "re-submission secret created");
    }
    Ok(key)
}

/// The data directory of a database URL: the SQLite file's folder, else the working directory.
fn data_dir(database: &str) -> PathBuf {
    let file = database
        .strip_prefix("sqlite://")
        .or_else(|| database.strip_prefix("sqlite:"))
        .map(|rest| rest.split('?').next().unwrap_or_default());
    match file {
        Some(f) if !f.is_empty() && !f.starts_with(":memory:") => Path::new(f)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
        _ => PathBuf::from("."),
    }
}

/// The receipt signing key: `--receipt-key`'s file (which must exist), or the data directory's,
/// created on first start.
fn receipt_key(flag: Option<&Path>, database: &str) -> anyhow::Result<ReceiptKey> {
    if let Some(path) = flag {
        let key = ReceiptKey::load(path)?;
        tracing::info!(kid = key.kid(), file = %path.display(), "receipt signing key loaded");
        return Ok(key);
    }
    let path = data_dir(database).join(DEFAULT_RECEIPT_KEY_FILE);
    let (key, created) = ReceiptKey::load_or_create(&path)?;
    if created {
        tracing::info!(kid = key.kid(), file = %path.display(), "receipt signing key created");
    } else {
        tracing::info!(kid = key.kid(), file = %path.display(), "receipt signing key loaded");
    }
    Ok(key)
}

/// `--public-url`: an absolute http(s) URL without credentials, query or fragment.
fn parse_public_url(value: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(value).map_err(|e| e.to_string())?;
    if !matches!(u.scheme(), "http" | "https")
        || u.host().is_none()
        || !u.username().is_empty()
        || u.password().is_some()
        || u.query().is_some()
        || u.fragment().is_some()
    {
        return Err("expected an http(s) URL such as https://livecheck.bank.example".into());
    }
    Ok(u)
}

impl ServeArgs {
    /// The server configuration these flags describe.
    pub fn app_config(&self) -> AppConfig {
        let defaults = AppConfig::default();
        let concurrent = self
            .max_concurrent_checks
            .map(|n| n as usize)
            .unwrap_or(defaults.max_concurrent_checks);
        AppConfig {
            max_body_bytes: self.max_body_bytes,
            max_image_bytes: self.pipeline.max_image_bytes,
            body_timeout: Duration::from_secs_f64(self.body_timeout),
            max_body_bytes_in_flight: self.max_body_bytes_in_flight,
            header_timeout: Duration::from_secs_f64(self.header_timeout),
            max_connections: self.max_connections as usize,
            max_concurrent_fetches: self.max_concurrent_fetches as usize,
            max_fetches_per_key: self.max_fetches_per_key as usize,
            fetch: self.fetch.fetch_config(self.pipeline.max_image_bytes),
            max_concurrent_checks: concurrent,
            max_queue_wait: Duration::from_secs_f64(self.max_queue_wait),
            max_queued_checks: self
                .max_queued_checks
                .unwrap_or(concurrent * server::DEFAULT_QUEUED_CHECKS_PER_SLOT),
            key_cache_ttl: Duration::from_secs_f64(self.key_cache_ttl),
            rate_limit_per_minute: NonZeroU32::new(self.rate_limit_per_minute),
            redis: self.redis_url.as_ref().map(|url| RedisConfig {
                url: url.clone(),
                key_prefix: self.redis_key_prefix.clone(),
                timeout: Duration::from_secs_f64(self.redis_timeout),
            }),
            resubmission_window: self.resubmission_window,
            reject_resubmissions: self.reject_resubmissions,
            capture_frame_ancestors: self.capture_frame_ancestors.clone(),
            cors_origins: self.cors_origin.clone(),
            public_url: self.public_url.clone(),
            ..defaults
        }
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_tracing(args.log_json);
    // The pipeline's own byte cap follows --max-image-bytes (the fetcher and the base64 parser
    // enforce it first; this keeps the three from disagreeing).
    let pipeline = Arc::new(args.pipeline.build()?);
    tracing::info!(kernels = args.pipeline.kernels.describe(), "models loaded");
    let mut config = args.app_config();
    config.receipt_key = Some(Arc::new(receipt_key(
        args.receipt_key.as_deref(),
        &args.database.url,
    )?));
    if let Some(set) = &args.shadow_model_set {
        // The shadow set's own threshold and the same quality settings as the live set.
        let mut shadow = args.pipeline.clone();
        shadow.model_set = Some(set.clone());
        shadow.threshold = None;
        let shadow = shadow
            .build()
            .with_context(|| format!("cannot load the shadow model set {set:?}"))?;
        tracing::info!(model_set = %set, hash = shadow.model_hash(), "shadow model set loaded");
        config.shadow_pipeline = Some(server::shadow::ShadowSet(Arc::new(shadow)));
    }
    config.print_key = Some(Arc::new(print_key(
        args.print_key.as_deref(),
        &args.database.url,
    )?));
    // The models are loaded: what loading them freed goes back to the system.
    crate::release_freed_memory();
    // Checks run on the CPU slots' own threads (server::admission), not on this runtime.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("livecheck-serve")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(
        args.bind,
        &args.database.url,
        config,
        pipeline,
        args.drain_grace,
        args.database_pool_size,
    ))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(
    bind: SocketAddr,
    database: &str,
    config: AppConfig,
    pipeline: Arc<livecheck::pipeline::Pipeline>,
    drain_grace: f64,
    pool_size: u32,
) -> anyhow::Result<()> {
    let options = StoreOptions {
        max_connections: pool_size,
        ..StoreOptions::default()
    };
    let store = Store::connect_with(database, &options).await?;
    tracing::info!(
        database = store.target(),
        backend = store.backend(),
        "audit store ready"
    );
    let summary = format!(
        "max_concurrent_checks={} max_queue_wait={:?} max_queued_checks={} \
         rate_limit_per_minute={} rate_limit_scope={} allow_fetch_from=[{}] model={}",
        config.max_concurrent_checks,
        config.max_queue_wait,
        config.max_queued_checks,
        config
            .rate_limit_per_minute
            .map_or("off".to_owned(), |n| n.to_string()),
        if config.redis.is_some() {
            "shared (redis)"
        } else {
            "replica"
        },
        config
            .fetch
            .allow
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
        pipeline.model_hash(),
    );
    if !livecheck::pipeline::decode::jpeg_simd() {
        tracing::warn!(
            "JPEG decoding runs without SIMD (this build of libjpeg-turbo has none): same results, \
             slower; build with nasm installed (bash scripts/setup.sh)"
        );
    }
    let app = Application::build(config, pipeline, store.clone())?;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind}"))?;
    let local = listener.local_addr().unwrap_or(bind);
    tracing::info!(address = %local, "{summary}");
    // Not `eprintln!`, which panics when stderr is closed.
    let _ = writeln!(std::io::stderr(), "livecheck listening on http://{local}");
    let drain = app.drain_switch();
    let grace = Duration::from_secs_f64(drain_grace);
    let shutdown = async move {
        shutdown_signal().await;
        drain.store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            grace = ?grace,
            "shutting down: /readyz answers 503 draining; requests are served for the grace \
             period, then the listener closes and in-flight requests finish (a second signal \
             ends the grace period)"
        );
        tokio::select! {
            () = tokio::time::sleep(grace) => {}
            () = shutdown_signal() => {}
        }
    };
    app.run(listener, shutdown).await?;
    tracing::info!("in-flight requests finished; closing the store");
    store.close().await;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutdown requested: no new connections, finishing in-flight checks");
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only on a terminal, never in a file or a log collector.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        // A log line that cannot be written (stderr closed: a log collector gone) is dropped.
        // Otherwise tracing-subscriber reports it with `eprintln!`, which panics on the same
        // closed stderr, inside the request: every check's connection was dropped unanswered.
        .log_internal_errors(false);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::common::{parse_cidr, parse_seconds, parse_window};
    use clap::Parser;
    use ipnet::IpNet;
    use livecheck::pipeline;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn resubmission_windows() {
        assert_eq!(
            parse_window("30d").unwrap(),
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(parse_window("12h").unwrap(), Duration::from_secs(12 * 3600));
        assert_eq!(parse_window("90m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_window("45s").unwrap(), Duration::from_secs(45));
        assert_eq!(parse_window("0").unwrap(), Duration::ZERO);
        for bad in ["30", "d", "3w", "-1d", "1.5d", "99999999999d", ""] {
            assert!(parse_window(bad).is_err(), "{bad:?}");
        }
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(
            cli.serve.resubmission_window,
            Duration::from_secs(30 * 86_400)
        );
        assert!(!cli.serve.reject_resubmissions);
    }

    #[test]
    fn cidrs_and_bare_addresses() {
        assert_eq!(
            parse_cidr("127.0.0.1").unwrap(),
            "127.0.0.1/32".parse::<IpNet>().unwrap()
        );
        assert_eq!(
            parse_cidr(" 10.1.2.3/8 ").unwrap(),
            "10.0.0.0/8".parse::<IpNet>().unwrap()
        );
        assert_eq!(
            parse_cidr("::1").unwrap(),
            "::1/128".parse::<IpNet>().unwrap()
        );
        for bad in ["", "nope", "10.0.0.0/33", "localhost", "10.0.0"] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_seconds("0.5").unwrap(), 0.5);
        for bad in ["0", "-1", "nan", "inf", "x", "3601"] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
    }

    /// Each default is defined once (a named constant): the flags' defaults are the library's.
    #[test]
    fn default_flags_are_the_library_defaults() {
        let cli = Cli::try_parse_from(["t"]).unwrap();
        assert_eq!(
            format!("{:?}", cli.serve.app_config()),
            format!("{:?}", AppConfig::default())
        );
        let mut want = pipeline::PipelineConfig::default();
        let got = cli.serve.pipeline.config(0.5).unwrap();
        want.threshold = got.threshold;
        assert_eq!(got, want);
    }

    #[test]
    fn flags_become_the_app_config() {
        let cli = Cli::try_parse_from([
            "t",
            "--allow-fetch-from",
            "127.0.0.1/32,::1",
            "--rate-limit-per-minute",
            "0",
            "--max-concurrent-checks",
            "3",
            "--fetch-timeout",
            "2.5",
            "--max-image-bytes",
            "1000",
        ])
        .unwrap();
        let c = cli.serve.app_config();
        assert_eq!(c.fetch.allow.len(), 2);
        assert_eq!(c.rate_limit_per_minute, None);
        assert_eq!(c.max_concurrent_checks, 3);
        assert_eq!(c.max_queued_checks, 768);
        assert_eq!(c.max_queue_wait, Duration::from_secs(2));
        assert_eq!(c.fetch.total_timeout, Duration::from_millis(2500));
        assert_eq!(c.max_image_bytes, 1000);
        assert_eq!(c.fetch.max_bytes, 1000);
        assert!(Cli::try_parse_from(["t", "--max-concurrent-checks", "0"]).is_err());
        assert!(Cli::try_parse_from(["t", "--allow-fetch-from", "bogus"]).is_err());
    }
}
