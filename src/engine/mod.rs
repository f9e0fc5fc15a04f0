//! Inference engines behind one small trait, so the pipeline never names a backend.
//!
//! The only engine today is [`tract::TractEngine`] (pure Rust). A second backend (ONNX Runtime)
//! implements [`Engine`] and nothing in `pipeline` changes.

pub mod tract;

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

/// Raw face-finder (YuNet) outputs for one image, per level (strides 8, 16 and 32): `cls` and
/// `obj` have one score per cell, `bbox` four deltas per cell, cells row-major.
#[derive(Debug, Clone, Default)]
pub struct FinderOutput {
    pub cls: [Vec<f32>; 3],
    pub obj: [Vec<f32>; 3],
    pub bbox: [Vec<f32>; 3],
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot load model {file}: {message}")]
    Load { file: String, message: String },
    #[error("inference failed in {model}: {message}")]
    Run { model: String, message: String },
    #[error("unexpected output from {model}: {message}")]
    Output { model: String, message: String },
    /// A classifier produced no logits or a non-finite one (NaN, infinity): an engine fault,
    /// never a score.
    #[error("{model} gave {} logits, not all finite: {logits:?}", logits.len())]
    NonFinite { model: String, logits: Vec<f32> },
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

    /// Run classifier `member` (its index in the model set) on its NCHW tensor
    /// `[1,3,size,size]`, already preprocessed; returns the raw logits, all finite (a non-finite
    /// output is an [`EngineError::NonFinite`], never a score).
    fn classify(&self, member: usize, input: &[f32]) -> Result<Vec<f32>, EngineError>;

    /// Run the set's face finder on its BGR 0-255 NCHW tensor `[1,3,size,size]`. An engine
    /// whose set has no face finder answers [`EngineError::Run`].
    fn find_faces(&self, input: &[f32]) -> Result<FinderOutput, EngineError>;

    /// A short name for logs and reports (e.g. `tract`).
    fn name(&self) -> &'static str;
}
