//! Flags shared by `check`, `eval` and `serve`: where the models are and how to decide.

use std::path::PathBuf;

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

    /// Minimum ratio of image side to face-box side (less context gives reason `face_too_close`).
    #[arg(long, env = "LIVECHECK_MIN_CONTEXT_RATIO", default_value_t = 1.0)]
    pub min_context_ratio: f32,

    /// Largest image accepted, in pixels (checked from the header, before decoding).
    #[arg(long, env = "LIVECHECK_MAX_PIXELS", default_value_t = 40_000_000)]
    pub max_pixels: u64,
}
