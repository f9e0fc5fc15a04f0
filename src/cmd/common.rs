//! Flags shared by `check`, `eval` and `serve`: where the models are, how to decide, and how
//! image URLs are fetched.

use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use livecheck::engine::tract::Kernels;
use livecheck::fetch::{self, FetchConfig};
use livecheck::models::LoadedSet;
use livecheck::pipeline;

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
    #[arg(long, env = "LIVECHECK_FETCH_TIMEOUT", default_value_t = fetch::DEFAULT_TOTAL_TIMEOUT_SECS, value_name = "SECONDS",
        value_parser = parse_seconds)]
    pub fetch_timeout: f64,

    /// Time allowed for connecting to an image host, in seconds.
    #[arg(long, env = "LIVECHECK_FETCH_CONNECT_TIMEOUT", default_value_t = fetch::DEFAULT_CONNECT_TIMEOUT_SECS, value_name = "SECONDS",
        value_parser = parse_seconds)]
    pub fetch_connect_timeout: f64,

    /// Redirects followed when fetching an image (each target is checked again).
    #[arg(
        long,
        env = "LIVECHECK_MAX_REDIRECTS",
        default_value_t = fetch::DEFAULT_MAX_REDIRECTS,
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
    seconds(s, false)
}

/// [`parse_seconds`], zero allowed (a feature turned off).
pub(crate) fn parse_seconds_or_zero(s: &str) -> Result<f64, String> {
    seconds(s, true)
}

fn seconds(s: &str, zero_ok: bool) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (v > 0.0 || (zero_ok && v == 0.0)) && v <= 3600.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a number of seconds in {}0, 3600]",
            if zero_ok { "[" } else { "(" }
        )),
    }
}

/// Model location and decision settings. Every flag is also an environment variable.
#[derive(clap::Args, Clone, Debug)]
pub struct PipelineArgs {
    /// Directory holding the model files. Without it: $LIVECHECK_MODEL_DIR, then ./models, then
    /// ../shared/models.
    #[arg(long, env = "LIVECHECK_MODEL_DIR", value_name = "DIR")]
    pub models: Option<PathBuf>,

    /// Model set: a built-in name (`livecheck models list`) or a model-set JSON file (its model
    /// files are looked for beside it first).
    #[arg(long, env = "LIVECHECK_MODEL_SET", value_name = "NAME|FILE")]
    pub model_set: Option<String>,

    /// Decision threshold on p_real: live when p_real >= threshold. Default: the model set's
    /// own threshold (0.5 for silentface).
    #[arg(long, env = "LIVECHECK_THRESHOLD")]
    pub threshold: Option<f32>,

    /// Minimum detector confidence for a face to count.
    #[arg(long, env = "LIVECHECK_MIN_FACE_CONFIDENCE", default_value_t = pipeline::DEFAULT_MIN_FACE_CONFIDENCE)]
    pub min_face_confidence: f32,

    /// Minimum face-box side in pixels (smaller faces give reason `face_too_small`).
    #[arg(long, env = "LIVECHECK_MIN_FACE_PX", default_value_t = pipeline::DEFAULT_MIN_FACE_PX)]
    pub min_face_px: u32,

    /// Minimum ratio of image side to face-box side, on the tighter axis (less context gives reason
    /// `face_too_close`). 0.75 refuses faces whose box overflows the frame by more than a quarter;
    /// see docs/accuracy.md for the devset measurements behind it.
    #[arg(long, env = "LIVECHECK_MIN_CONTEXT_RATIO", default_value_t = pipeline::DEFAULT_MIN_CONTEXT_RATIO)]
    pub min_context_ratio: f32,

    /// Largest image accepted, in bytes (files, fetched URLs, and the service's base64 and URL
    /// images alike).
    #[arg(long, env = "LIVECHECK_MAX_IMAGE_BYTES", default_value_t = pipeline::DEFAULT_MAX_IMAGE_BYTES, value_name = "BYTES")]
    pub max_image_bytes: usize,

    /// Largest image accepted, in pixels (checked from the header, before decoding).
    #[arg(long, env = "LIVECHECK_MAX_PIXELS", default_value_t = pipeline::DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,

    /// When one face is found with a weaker candidate beside it, look again at 2x the detector's
    /// working size (group photos: small second faces score low at ~192 px). `false` skips it.
    #[arg(long, env = "LIVECHECK_MULTI_FACE_SCAN", default_value_t = true,
        action = clap::ArgAction::Set, value_name = "BOOL")]
    pub multi_face_scan: bool,

    /// When the best face is below --min-face-confidence, look again at 2x the detector's
    /// working size and accept the face if it reaches the floor there (the detector
    /// under-scores many clear faces at ~192 px). `false` reports `no_face` at once.
    #[arg(long, env = "LIVECHECK_FACE_CONFIRM_SCAN", default_value_t = true,
        action = clap::ArgAction::Set, value_name = "BOOL")]
    pub face_confirm_scan: bool,

    /// Convolution kernels: `auto` (`bf16` where bf16 runs faster than f32 on this CPU: with
    /// AMX, or on an AMD core with AVX512-BF16; `fused` elsewhere, Intel's AVX512-BF16 cores
    /// without AMX included), `bf16` (the engine's own, with the classifiers' 1x1 and dense 3x3
    /// products in bfloat16 where the CPU has AVX512-BF16, the 1x1 ones on AMX tiles where it
    /// has AMX-BF16, f32 elsewhere; the detector and each network's first layer stay f32),
    /// `fused` (the engine's own in f32: the reference recipe's numbers exactly), `avx2`
    /// (`fused` with its AVX2 + FMA paths even on an AVX-512 CPU: the same numbers at the speed
    /// of CPUs without AVX-512) or `tract` (tract's only; for comparison, and as a fallback).
    #[arg(long, env = "LIVECHECK_KERNELS", default_value = "auto",
        value_name = "auto|bf16|fused|avx2|tract", value_parser = <Kernels as std::str::FromStr>::from_str)]
    pub kernels: Kernels,
}

impl PipelineArgs {
    /// The pipeline configuration these flags describe.
    /// `set_threshold` is the model set's own threshold, used without `--threshold`.
    pub fn config(
        &self,
        set_threshold: f32,
    ) -> anyhow::Result<livecheck::pipeline::PipelineConfig> {
        let threshold = self.threshold.unwrap_or(set_threshold);
        anyhow::ensure!(
            (0.0..=1.0).contains(&threshold),
            "--threshold must be between 0 and 1 (got {threshold})",
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.min_face_confidence),
            "--min-face-confidence must be between 0 and 1 (got {})",
            self.min_face_confidence
        );
        let defaults = livecheck::pipeline::PipelineConfig::default();
        Ok(livecheck::pipeline::PipelineConfig {
            threshold,
            min_face_confidence: self.min_face_confidence,
            min_face_px: self.min_face_px,
            min_context_ratio: self.min_context_ratio,
            min_image_side: defaults.min_image_side,
            limits: livecheck::pipeline::DecodeLimits {
                max_bytes: self.max_image_bytes,
                max_pixels: self.max_pixels,
            },
            multi_face_scan: self.multi_face_scan,
            face_confirm_scan: self.face_confirm_scan,
        })
    }

    /// The model set these flags name, with its search path.
    pub fn model_set(&self) -> anyhow::Result<LoadedSet> {
        Ok(LoadedSet::resolve(
            self.model_set.as_deref(),
            self.models.as_deref(),
        )?)
    }

    /// Resolve the model set, verify and load its models, and build the pipeline.
    pub fn build(&self) -> anyhow::Result<livecheck::pipeline::Pipeline> {
        let set = self.model_set()?;
        let config = self.config(set.set.threshold)?;
        Ok(livecheck::pipeline_with_kernels(set, config, self.kernels)?)
    }
}

/// A progress bar on stderr for a run over `len` images (count, rate, ETA).
pub fn image_progress(len: usize) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    let pb = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} images  {per_sec}  ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.enable_steady_tick(std::time::Duration::from_millis(200));
    pb
}

/// The database flag of `serve`, `keys` and `migrate`.
#[derive(clap::Args)]
pub struct DatabaseArg {
    /// Audit and key database: sqlite://PATH (created if missing) or
    /// postgres://USER@HOST:PORT/DB. Its schema is migrated at connect (not with `migrate --check`).
    #[arg(
        long = "database",
        global = true,
        env = "LIVECHECK_DATABASE_URL",
        default_value = "sqlite://livecheck.db",
        value_name = "URL",
        hide_env_values = true
    )]
    pub url: String,
}

impl std::fmt::Debug for DatabaseArg {
    /// Never shows the URL: it may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = self.url.split(':').next().unwrap_or_default();
        f.debug_struct("DatabaseArg")
            .field("url", &format_args!("{scheme}:<redacted>"))
            .finish()
    }
}

/// A period with a unit (`--resubmission-window`, `report --since`): `30d`, `12h`, `90m`,
/// `3600s` (or `0`).
pub fn parse_window(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit (s, m, h or d)"))?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit {unit:?} (s, m, h or d)")),
    };
    n.checked_mul(secs)
        .filter(|s| *s <= 100 * 365 * 86_400)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is longer than 100 years"))
}
