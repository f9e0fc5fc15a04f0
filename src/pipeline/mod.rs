//! The liveness pipeline: image bytes in, [`Verdict`] out.
//!
//! This module knows nothing of HTTP, SQL or the network. It follows the reference recipe of
//! `shared/models/MODELS.md` step by step: decode (+EXIF) → detector input → priors/box decode →
//! per-classifier crop → OpenCV-compatible bilinear resize → BGR 0-255 NCHW → softmax → fusion.

pub mod classify;
pub mod crop;
pub mod decode;
pub mod detect;
pub mod resize;

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::engine::{Engine, EngineError};
pub use decode::{BgrImage, DecodeError, DecodeLimits};

/// Stable machine-readable reason for a verdict. Serialized in snake_case (`"no_face"`...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The classifiers say live (p_real >= threshold).
    Live,
    /// The classifiers say attack (p_real < threshold).
    Spoof,
    /// No detection above the face-confidence floor.
    NoFace,
    /// A second, non-overlapping face above the floor.
    MultipleFaces,
    /// The face box is smaller than the configured minimum side.
    FaceTooSmall,
    /// The image leaves too little context around the face for the classifiers' crops.
    FaceTooClose,
    /// The image is smaller than the minimum side.
    ImageTooSmall,
    /// The bytes are an image but could not be decoded (truncated, corrupt).
    ImageCorrupt,
    /// The bytes are an image in a format livecheck does not decode.
    UnsupportedFormat,
    /// The declared dimensions exceed the pixel limit (decompression-bomb guard).
    TooManyPixels,
}

impl Reason {
    /// The stable code, as serialized.
    pub fn code(self) -> &'static str {
        match self {
            Reason::Live => "live",
            Reason::Spoof => "spoof",
            Reason::NoFace => "no_face",
            Reason::MultipleFaces => "multiple_faces",
            Reason::FaceTooSmall => "face_too_small",
            Reason::FaceTooClose => "face_too_close",
            Reason::ImageTooSmall => "image_too_small",
            Reason::ImageCorrupt => "image_corrupt",
            Reason::UnsupportedFormat => "unsupported_format",
            Reason::TooManyPixels => "too_many_pixels",
        }
    }

    /// A human sentence for this reason (used as `detail` by the API).
    pub fn sentence(self) -> &'static str {
        match self {
            Reason::Live => "Liveliness Detected",
            Reason::Spoof => "Liveliness Not Detected",
            Reason::NoFace => "No face detected in image",
            Reason::MultipleFaces => "More than one face detected in image",
            Reason::FaceTooSmall => "Face is too small in image; move closer to the camera",
            Reason::FaceTooClose => {
                "Face is too close to the camera; the image must show more of the head and background"
            }
            Reason::ImageTooSmall => "Image is too small",
            Reason::ImageCorrupt => "Image could not be decoded (truncated or corrupt)",
            Reason::UnsupportedFormat => "Image format is not supported",
            Reason::TooManyPixels => "Image has too many pixels",
        }
    }
}

/// Tunable decision and quality settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineConfig {
    /// `live = p_real >= threshold`.
    pub threshold: f32,
    /// Minimum detector confidence for a face to count.
    pub min_face_confidence: f32,
    /// Minimum face-box side (the smaller of w and h), in pixels of the upright image.
    pub min_face_px: u32,
    /// Minimum ratio of image side to face-box side (checked on both axes, the smaller wins).
    pub min_context_ratio: f32,
    /// Minimum image side in pixels.
    pub min_image_side: u32,
    /// Limits applied before decoding.
    pub limits: DecodeLimits,
}

/// The face the verdict is about.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Face {
    /// `[x, y, w, h]` in pixels of the upright image (upstream integer arithmetic).
    pub bbox: [i32; 4],
    /// Detector confidence of this face.
    pub confidence: f32,
}

/// Per-model softmax outputs (index 1 = real).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// MiniFASNetV2, crop scale 2.7.
    #[serde(rename = "MiniFASNetV2")]
    pub v2: [f32; 3],
    /// MiniFASNetV1SE, crop scale 4.0.
    #[serde(rename = "MiniFASNetV1SE")]
    pub v1se: [f32; 3],
}

/// Wall-clock time of each stage, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub decode: f64,
    pub detect: f64,
    pub classify: f64,
    pub total: f64,
}

/// The outcome of one check. Quality outcomes (no face, ...) are verdicts with `live = false`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub live: bool,
    /// Fused liveness probability in [0,1]; 0 for quality outcomes that never reached the classifiers.
    pub p_real: f32,
    pub threshold: f32,
    pub reason: Reason,
    /// Best face (absent when no face passed the floor, or the image was not decoded).
    pub face: Option<Face>,
    /// Classifier outputs (absent when the classifiers did not run).
    pub scores: Option<Scores>,
    /// Upright image size `[w, h]` (absent when the image was not decoded).
    pub image_size: Option<[u32; 2]>,
    pub timings: Timings,
}

/// Errors that stop a check before any verdict (the bytes are not an image, or inference failed).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("inference failed: {0}")]
    Engine(#[from] EngineError),
}

/// The loaded pipeline: engine plus configuration. Cheap to share (`Arc<Pipeline>`), `Send + Sync`.
pub struct Pipeline {
    engine: Box<dyn Engine>,
    config: PipelineConfig,
}

impl Pipeline {
    pub fn new(engine: Box<dyn Engine>, config: PipelineConfig) -> Self {
        Pipeline { engine, config }
    }

    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    /// Run the whole pipeline on encoded image bytes.
    ///
    /// `Err` only when the bytes are not an image at all ([`DecodeError::NotAnImage`]) or the engine
    /// failed; every other outcome, including undecodable or oversized images, is a [`Verdict`].
    pub fn check(&self, bytes: &[u8]) -> Result<Verdict, PipelineError> {
        let _ = (bytes, Instant::now(), &self.engine);
        unimplemented!("pipeline under construction")
    }
}
