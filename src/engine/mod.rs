//! Inference engines behind one small trait, so the pipeline never names a backend.
//!
//! The only engine today is [`tract::TractEngine`] (pure Rust). A second backend (ONNX Runtime)
//! implements [`Engine`] and nothing in `pipeline` changes.

pub mod depthwise;
pub mod direct;
pub mod tract;

/// Which anti-spoofing classifier to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Classifier {
    /// MiniFASNetV2, fed the crop at scale 2.7.
    V2,
    /// MiniFASNetV1SE, fed the crop at scale 4.0.
    V1Se,
}

/// Raw detector outputs for one image: `loc` is `[P,4]` box deltas, `conf` is `[P,2]` softmaxed
/// scores (column 1 = face), both flattened row-major.
#[derive(Debug, Clone, Default)]
pub struct DetectorOutput {
    pub loc: Vec<f32>,
    pub conf: Vec<f32>,
}

impl DetectorOutput {
    /// Number of priors.
    pub fn len(&self) -> usize {
        self.conf.len() / 2
    }

    pub fn is_empty(&self) -> bool {
        self.conf.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot load model {file}: {message}")]
    Load { file: String, message: String },
    #[error("inference failed in {model}: {message}")]
    Run {
        model: &'static str,
        message: String,
    },
    #[error("unexpected output from {model}: {message}")]
    Output {
        model: &'static str,
        message: String,
    },
}

/// An inference backend. Implementations are `Send + Sync` and are shared by all threads.
pub trait Engine: Send + Sync {
    /// Run the face detector on a mean-subtracted BGR NCHW tensor `[1,3,height,width]`.
    fn detect(
        &self,
        input: &[f32],
        width: usize,
        height: usize,
    ) -> Result<DetectorOutput, EngineError>;

    /// Run one classifier on a BGR 0-255 NCHW tensor `[1,3,80,80]`; returns the raw logits.
    fn classify(&self, model: Classifier, input: &[f32]) -> Result<[f32; 3], EngineError>;

    /// A short name for logs and reports (e.g. `tract`).
    fn name(&self) -> &'static str;
}
