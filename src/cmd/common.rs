//! Flags shared by `check`, `eval` and `serve`: where the models are, how to decide, and how
//! image URLs are fetched.

use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use livecheck::fetch::FetchConfig;

/// How image URLs are fetched (`serve` for the API's `image` field, `check` for URL arguments).
/// Every flag is also an environment variable.
#[derive(clap::Args, Clone, Debug)]
pub struct FetchArgs {
    /// Networks image URLs may point into although they are not public (loopback, private,
    /// link-local...), comma-separated CIDRs; a bare address means that one host. Without it, only
    /// public addresses are fetched. Cloud metadata addresses are always refused.
    #[arg(
        long,
        env = "LIVECHECK_ALLOW_FETCH_FROM",
        value_delimiter = ',',
        value_name = "CIDR,...",
        value_parser = parse_cidr
    )]
    pub allow_fetch_from: Vec<IpNet>,

    /// Total time allowed for fetching one image URL (all redirects and the body), in seconds.
    #[arg(long, env = "LIVECHECK_FETCH_TIMEOUT", default_value_t = 15.0, value_name = "SECONDS",
        value_parser = parse_seconds)]
    pub fetch_timeout: f64,

    /// Time allowed for connecting to an image host, in seconds.
    #[arg(long, env = "LIVECHECK_FETCH_CONNECT_TIMEOUT", default_value_t = 5.0, value_name = "SECONDS",
        value_parser = parse_seconds)]
    pub fetch_connect_timeout: f64,

    /// Redirects followed when fetching an image (each target is checked again).
    #[arg(
        long,
        env = "LIVECHECK_MAX_REDIRECTS",
        default_value_t = 3,
        value_name = "N"
    )]
    pub max_redirects: usize,
}

impl FetchArgs {
    /// The fetcher configuration these flags describe, with a body cap of `max_bytes`.
    pub fn fetch_config(&self, max_bytes: usize) -> FetchConfig {
        FetchConfig {
            allow: self.allow_fetch_from.clone(),
            connect_timeout: Duration::from_secs_f64(self.fetch_connect_timeout),
            total_timeout: Duration::from_secs_f64(self.fetch_timeout),
            max_bytes,
            max_redirects: self.max_redirects,
        }
    }
}

pub(crate) fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<std::net::IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("{s:?} is not a CIDR (e.g. 10.0.0.0/8) or an IP address"))
}

pub(crate) fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 3600.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds in (0, 3600]")),
    }
}

/// Model location and decision settings. Every flag is also an environment variable.
#[derive(clap::Args, Clone, Debug)]
pub struct PipelineArgs {
    /// Directory holding the model files. Without it: $LIVECHECK_MODEL_DIR, then ./models, then
    /// ../shared/models.
    #[arg(long, env = "LIVECHECK_MODEL_DIR", value_name = "DIR")]
    pub models: Option<PathBuf>,

    /// Decision threshold on p_real: live when p_real >= threshold.
    #[arg(long, env = "LIVECHECK_THRESHOLD", default_value_t = 0.5)]
    pub threshold: f32,

    /// Minimum detector confidence for a face to count.
    #[arg(long, env = "LIVECHECK_MIN_FACE_CONFIDENCE", default_value_t = 0.6)]
    pub min_face_confidence: f32,

    /// Minimum face-box side in pixels (smaller faces give reason `face_too_small`).
    #[arg(long, env = "LIVECHECK_MIN_FACE_PX", default_value_t = 32)]
    pub min_face_px: u32,

    /// Minimum ratio of image side to face-box side, on the tighter axis (less context gives reason
    /// `face_too_close`). 0.75 refuses faces whose box overflows the frame by more than a quarter;
    /// see docs/accuracy.md for the devset measurements behind it.
    #[arg(long, env = "LIVECHECK_MIN_CONTEXT_RATIO", default_value_t = 0.75)]
    pub min_context_ratio: f32,

    /// Largest image accepted, in pixels (checked from the header, before decoding).
    #[arg(long, env = "LIVECHECK_MAX_PIXELS", default_value_t = 40_000_000)]
    pub max_pixels: u64,
}

impl PipelineArgs {
    /// The pipeline configuration these flags describe.
    pub fn config(&self) -> anyhow::Result<livecheck::pipeline::PipelineConfig> {
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.threshold),
            "--threshold must be between 0 and 1 (got {})",
            self.threshold
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.min_face_confidence),
            "--min-face-confidence must be between 0 and 1 (got {})",
            self.min_face_confidence
        );
        let defaults = livecheck::pipeline::PipelineConfig::default();
        Ok(livecheck::pipeline::PipelineConfig {
            threshold: self.threshold,
            min_face_confidence: self.min_face_confidence,
            min_face_px: self.min_face_px,
            min_context_ratio: self.min_context_ratio,
            min_image_side: defaults.min_image_side,
            limits: livecheck::pipeline::DecodeLimits {
                max_bytes: defaults.limits.max_bytes,
                max_pixels: self.max_pixels,
            },
        })
    }

    /// Resolve the model directory, verify and load the models, and build the pipeline.
    pub fn build(&self) -> anyhow::Result<livecheck::pipeline::Pipeline> {
        let config = self.config()?;
        Ok(livecheck::load_pipeline(self.models.as_deref(), config)?)
    }
}
