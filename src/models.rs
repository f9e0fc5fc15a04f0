//! Model sets: one face detector plus N classifiers, each with its own preprocessing, and a fusion
//! rule. Built-in sets (`models/sets/*.json`) are compiled in; an operator's set is a JSON file of
//! the same format (`--model-set FILE`). This module parses and validates sets, finds their files,
//! verifies every file's SHA-256 and copies verified files into a directory.
//!
//! Fetching over HTTP lives in the binary (`livecheck models fetch`); this module only reads
//! local files.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The built-in sets: `(name, JSON text)`; [`DEFAULT_MODEL_SET`] says which is the default.
pub const BUILTIN_SETS: [(&str, &str); 4] = [
    ("silentface", include_str!("../models/sets/silentface.json")),
    (
        "silentface-minifas128",
        include_str!("../models/sets/silentface-minifas128.json"),
    ),
    ("minifas128", include_str!("../models/sets/minifas128.json")),
    (
        "silentface-minifas128-calibrated",
        include_str!("../models/sets/silentface-minifas128-calibrated.json"),
    ),
];

/// The set `serve`, `check` and `eval` use without `--model-set`: the one that ranks best on
/// sources it never saw (docs/accuracy.md, "Fusion calibrated on the corpus" and "Equal member
/// weights"). `silentface`, the
/// upstream pair alone, is one flag away (`--model-set silentface`).
pub const DEFAULT_MODEL_SET: &str = "silentface-minifas128-calibrated";

/// Largest classifier input side a set may declare.
pub const MAX_INPUT_SIDE: usize = 512;

/// Largest face-finder input side a set may declare.
pub const MAX_FINDER_SIDE: usize = 1280;

/// One model file: its name and the SHA-256 every load verifies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// How a classifier's crop is cut around the detector's face box.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CropSpec {
    /// Silent-Face's `_get_new_box`: the box grown by `scale` (capped to fit), shifted back inside
    /// the image, never padded.
    Clamp { scale: f64 },
    /// A square of side `int(scale * max(w, h))` centred on the box, the part outside the image
    /// filled by reflection (OpenCV `BORDER_REFLECT_101`), as face-antispoof-onnx does.
    SquareReflect { scale: f64 },
}

/// How the crop is brought to the input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeKind {
    /// OpenCV `INTER_LINEAR` straight to `size x size` (Silent-Face).
    Linear,
    /// face-antispoof-onnx's letterbox: longest side to `size` (OpenCV `INTER_AREA` when
    /// shrinking, `INTER_LANCZOS4` when enlarging), reflect-padded to a square.
    Letterbox,
}

/// Channel order of the input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channels {
    Bgr,
    Rgb,
}

/// How a classifier's outputs become a probability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// Softmax over the logits; `p_real = softmax[real_index]`.
    Softmax,
    /// One logit; `p_real = sigmoid(logit)` (`real_index` must be 0).
    Sigmoid,
}

/// One classifier of a set, with its preprocessing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Stable name (reports, `check` JSON, crops).
    pub name: String,
    #[serde(flatten)]
    pub model: ModelFile,
    pub crop: CropSpec,
    /// Input side in pixels (square inputs).
    pub size: usize,
    pub resize: ResizeKind,
    pub channels: Channels,
    /// Tensor value = `(pixel * scale - mean[c]) / std[c]`, channels in `channels` order.
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub output: OutputKind,
    /// Which output means "real".
    pub real_index: usize,
}

/// How the members' p_real are combined into one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fusion {
    /// `p = Σ wᵢ pᵢ / Σ wᵢ`, in f64 (Silent-Face: weights 1, 1).
    Mean { weights: Vec<f64> },
    /// `p = sigmoid(intercept + Σ cᵢ · logit(pᵢ))`, with `logit(p) = ln(p / (1 - p))` and `pᵢ`
    /// clipped to `[LOGIT_EPS, 1 - LOGIT_EPS]` (fitted by `livecheck eval --calibrate`).
    Logistic {
        intercept: f64,
        coefficients: Vec<f64>,
    },
}

/// Clip applied to member probabilities before `logit` in [`Fusion::Logistic`].
pub const LOGIT_EPS: f64 = 1e-6;

/// A second detector whose only job is to find additional faces (the multi-face scan): YuNet
/// (libfacedetection.train, the OpenCV `FaceDetectorYN` model) at a fixed square input, run on the
/// whole image shrunk to fit (never enlarged), with OpenCV `FaceDetectorYN`'s decoding and NMS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaceFinder {
    #[serde(flatten)]
    pub model: ModelFile,
    /// The model's fixed input side (a multiple of 32).
    pub size: usize,
    /// A face counts when its score (`sqrt(cls * obj)`) reaches this.
    pub score: f32,
    /// NMS overlap (IoU) above which the weaker of two boxes is dropped.
    pub nms: f32,
}

/// A model set: the detector, the classifiers and how their scores are fused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSet {
    pub name: String,
    pub description: String,
    pub license: String,
    pub detector: ModelFile,
    /// The multi-face scan's detector; without one the scan re-runs `detector` at twice its size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face_finder: Option<FaceFinder>,
    pub classifiers: Vec<Member>,
    pub fusion: Fusion,
    /// The threshold the set was calibrated for (the decision default unless `--threshold`).
    pub threshold: f32,
    /// Provenance of trained members: sources, licences, report (free-form, documented in
    /// `models/README.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model set {origin}: {message}")]
    Set { origin: String, message: String },
    #[error(
        "unknown model set {name:?}: built-in sets are {known}; or pass the path of a model-set \
         JSON file"
    )]
    UnknownSet { name: String, known: String },
    #[error("cannot read model set {path}: {source}")]
    SetIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "model file {file} not found (looked in {tried}); pass --models DIR or set \
         LIVECHECK_MODEL_DIR, or fill ./models with `livecheck models fetch --from DIR|URL`"
    )]
    Missing { file: String, tried: String },
    #[error(
        "model file {path} has SHA-256 {actual}, expected {expected} (altered or wrong file); replace it \
         with a verified copy (`livecheck models fetch`)"
    )]
    HashMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("cannot read model file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A set together with where its files are looked for.
#[derive(Debug, Clone)]
pub struct LoadedSet {
    pub set: ModelSet,
    /// Places searched for each file, in order.
    pub search: Vec<Place>,
}

/// A place model files are looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Dir(PathBuf),
    /// The files compiled into the binary ([`EMBEDDED_FILES`]).
    Embedded,
}

/// Where a model file was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    File(PathBuf),
    Embedded,
}

impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelSource::File(p) => write!(f, "{}", p.display()),
            ModelSource::Embedded => f.write_str("embedded in the binary"),
        }
    }
}

/// The model files of the built-in sets, compiled into the binary by the default feature
/// `embedded-models` (`models/*.onnx`, with their licences beside them): `livecheck` then runs
/// from any directory with no files around it. Their bytes are verified by SHA-256 like any file.
#[cfg(feature = "embedded-models")]
pub const EMBEDDED_FILES: &[(&str, &[u8])] = &[
    (
        "retinaface_silentface.onnx",
        include_bytes!("../models/retinaface_silentface.onnx"),
    ),
    (
        "MiniFASNetV2.onnx",
        include_bytes!("../models/MiniFASNetV2.onnx"),
    ),
    (
        "MiniFASNetV1SE.onnx",
        include_bytes!("../models/MiniFASNetV1SE.onnx"),
    ),
    (
        "faceantispoof_minifas_97.80.onnx",
        include_bytes!("../models/faceantispoof_minifas_97.80.onnx"),
    ),
    (
        "face_detection_yunet_2023mar.onnx",
        include_bytes!("../models/face_detection_yunet_2023mar.onnx"),
    ),
];

/// Built without the `embedded-models` feature: no file is compiled in.
#[cfg(not(feature = "embedded-models"))]
pub const EMBEDDED_FILES: &[(&str, &[u8])] = &[];

/// The embedded copy of the file named `name`, if there is one.
pub fn embedded(name: &str) -> Option<&'static [u8]> {
    EMBEDDED_FILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| *b)
}

impl ModelSet {
    /// Parse and validate a set's JSON; `origin` names it in errors.
    pub fn parse(json: &str, origin: &str) -> Result<ModelSet, ModelError> {
        let err = |message: String| ModelError::Set {
            origin: origin.to_string(),
            message,
        };
        let set: ModelSet = serde_json::from_str(json).map_err(|e| err(e.to_string()))?;
        set.validate().map_err(err)?;
        Ok(set)
    }

    /// A built-in set by name.
    pub fn builtin(name: &str) -> Result<ModelSet, ModelError> {
        let (_, json) = BUILTIN_SETS
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| ModelError::UnknownSet {
                name: name.to_string(),
                known: BUILTIN_SETS.map(|(n, _)| n).join(", "),
            })?;
        ModelSet::parse(json, &format!("built-in {name:?}"))
    }

    /// The default built-in set.
    pub fn default_set() -> Result<ModelSet, ModelError> {
        ModelSet::builtin(DEFAULT_MODEL_SET)
    }

    fn validate(&self) -> Result<(), String> {
        let mut names = std::collections::HashSet::new();
        check_file(&self.detector)?;
        if let Some(f) = &self.face_finder {
            let ctx = |e: String| format!("face_finder: {e}");
            check_file(&f.model).map_err(ctx)?;
            if !(32..=MAX_FINDER_SIDE).contains(&f.size) || !f.size.is_multiple_of(32) {
                return Err(ctx(format!(
                    "input size {} is not a multiple of 32 in [32, {MAX_FINDER_SIDE}]",
                    f.size
                )));
            }
            for (what, v) in [("score", f.score), ("nms", f.nms)] {
                if !(v.is_finite() && v > 0.0 && v <= 1.0) {
                    return Err(ctx(format!("{what} {v} is outside (0, 1]")));
                }
            }
        }
        if self.classifiers.is_empty() {
            return Err("a set needs at least one classifier".into());
        }
        for m in &self.classifiers {
            let ctx = |e: String| format!("classifier {:?}: {e}", m.name);
            if m.name.is_empty() || !names.insert(m.name.as_str()) {
                return Err(ctx("names must be non-empty and unique".into()));
            }
            check_file(&m.model).map_err(ctx)?;
            let scale = match m.crop {
                CropSpec::Clamp { scale } | CropSpec::SquareReflect { scale } => scale,
            };
            if !(scale.is_finite() && (0.5..=10.0).contains(&scale)) {
                return Err(ctx(format!("crop scale {scale} is outside [0.5, 10]")));
            }
            if !(8..=MAX_INPUT_SIDE).contains(&m.size) {
                return Err(ctx(format!(
                    "input size {} is outside [8, {MAX_INPUT_SIDE}]",
                    m.size
                )));
            }
            let finite = m.scale.is_finite() && m.mean.iter().all(|v| v.is_finite());
            if !finite || m.scale == 0.0 || m.std.iter().any(|s| !s.is_finite() || *s == 0.0) {
                return Err(ctx(
                    "scale, mean and std must be finite, scale and std non-zero".into(),
                ));
            }
            if m.output == OutputKind::Sigmoid && m.real_index != 0 {
                return Err(ctx(
                    "a sigmoid output has one logit: real_index must be 0".into()
                ));
            }
            if m.real_index > 15 {
                return Err(ctx(format!("real_index {} is not plausible", m.real_index)));
            }
        }
        let n = self.classifiers.len();
        match &self.fusion {
            Fusion::Mean { weights } => {
                if weights.len() != n {
                    return Err(format!(
                        "fusion has {} weights for {n} classifiers",
                        weights.len()
                    ));
                }
                if weights.iter().any(|w| !w.is_finite() || *w < 0.0)
                    || weights.iter().sum::<f64>() <= 0.0
                {
                    return Err(
                        "fusion weights must be finite, non-negative and not all zero".into(),
                    );
                }
            }
            Fusion::Logistic {
                intercept,
                coefficients,
            } => {
                if coefficients.len() != n {
                    return Err(format!(
                        "fusion has {} coefficients for {n} classifiers",
                        coefficients.len()
                    ));
                }
                if !intercept.is_finite() || coefficients.iter().any(|c| !c.is_finite()) {
                    return Err("fusion intercept and coefficients must be finite".into());
                }
            }
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(format!("threshold {} is outside [0, 1]", self.threshold));
        }
        Ok(())
    }

    /// Every file of the set: the detector first, then the face finder if any, then the
    /// classifiers in order.
    pub fn files(&self) -> impl Iterator<Item = &ModelFile> {
        std::iter::once(&self.detector)
            .chain(self.face_finder.iter().map(|f| &f.model))
            .chain(self.classifiers.iter().map(|m| &m.model))
    }

    /// A short identity of the set: the first 16 hex digits of SHA-256 over its canonical JSON
    /// without name, description, licence and training notes — the files' hashes, every
    /// preprocessing parameter, the fusion and the threshold. Two sets that score alike share it.
    pub fn hash(&self) -> String {
        let scoring = ModelSet {
            name: String::new(),
            description: String::new(),
            license: String::new(),
            training: None,
            detector: strip_notes(&self.detector),
            face_finder: self.face_finder.as_ref().map(|f| FaceFinder {
                model: strip_notes(&f.model),
                ..f.clone()
            }),
            classifiers: self
                .classifiers
                .iter()
                .map(|m| Member {
                    model: strip_notes(&m.model),
                    ..m.clone()
                })
                .collect(),
            ..self.clone()
        };
        let json = serde_json::to_string(&scoring).unwrap_or_default();
        sha256_hex(json.as_bytes())[..16].to_string()
    }
}

fn strip_notes(f: &ModelFile) -> ModelFile {
    ModelFile {
        url: None,
        note: None,
        ..f.clone()
    }
}

fn check_file(f: &ModelFile) -> Result<(), String> {
    let plain =
        !f.file.is_empty() && !f.file.contains(['/', '\\']) && f.file != "." && f.file != "..";
    if !plain {
        return Err(format!("file {:?} must be a plain file name", f.file));
    }
    if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("file {}: sha256 must be 64 hex digits", f.file));
    }
    Ok(())
}

/// The places searched for model files, in order: `flag` (`--models`, which clap fills from
/// `LIVECHECK_MODEL_DIR`; the library reads no environment itself), the files embedded in the
/// binary, then `./models`, then `../shared/models` and its `candidates/`.
pub fn search_path(flag: Option<&Path>) -> Vec<Place> {
    let mut places = Vec::new();
    if let Some(dir) = flag {
        places.push(Place::Dir(dir.to_path_buf()));
    }
    places.push(Place::Embedded);
    for d in ["models", "../shared/models", "../shared/models/candidates"] {
        let d = Place::Dir(PathBuf::from(d));
        if !places.contains(&d) {
            places.push(d);
        }
    }
    places
}

impl LoadedSet {
    /// Resolve `--model-set NAME|FILE`: a built-in name, else a JSON file (whose own directory is
    /// searched first for its model files). `None` is the default set.
    pub fn resolve(set: Option<&str>, models_dir: Option<&Path>) -> Result<LoadedSet, ModelError> {
        let mut search = search_path(models_dir);
        let name = set.unwrap_or(DEFAULT_MODEL_SET);
        let set = if BUILTIN_SETS.iter().any(|(n, _)| *n == name) {
            ModelSet::builtin(name)?
        } else if name.ends_with(".json") || Path::new(name).is_file() {
            let path = Path::new(name);
            let json = std::fs::read_to_string(path).map_err(|source| ModelError::SetIo {
                path: path.to_path_buf(),
                source,
            })?;
            if let Some(parent) = path.parent() {
                let parent = if parent.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    parent.to_path_buf()
                };
                search.insert(0, Place::Dir(parent));
            }
            ModelSet::parse(&json, &path.display().to_string())?
        } else {
            return Err(ModelError::UnknownSet {
                name: name.to_string(),
                known: BUILTIN_SETS.map(|(n, _)| n).join(", "),
            });
        };
        Ok(LoadedSet { set, search })
    }

    /// Where `f` is: the first place holding a file of that name.
    pub fn locate(&self, f: &ModelFile) -> Result<ModelSource, ModelError> {
        self.search
            .iter()
            .find_map(|place| match place {
                Place::Dir(d) => {
                    let p = d.join(&f.file);
                    p.is_file().then_some(ModelSource::File(p))
                }
                Place::Embedded => embedded(&f.file).map(|_| ModelSource::Embedded),
            })
            .ok_or_else(|| ModelError::Missing {
                file: f.file.clone(),
                tried: self
                    .search
                    .iter()
                    .map(|place| match place {
                        Place::Dir(d) => d.display().to_string(),
                        Place::Embedded => "the binary's embedded files".to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Locate, read and verify `f`; returns the bytes.
    pub fn read(&self, f: &ModelFile) -> Result<Vec<u8>, ModelError> {
        self.read_located(f).map(|(bytes, _)| bytes)
    }

    fn read_located(&self, f: &ModelFile) -> Result<(Vec<u8>, ModelSource), ModelError> {
        let source = self.locate(f)?;
        let bytes = match &source {
            ModelSource::File(p) => read_verified(p, f)?,
            ModelSource::Embedded => {
                let bytes = embedded(&f.file).unwrap_or_default();
                check_hash(bytes, f, Path::new("<embedded>").join(&f.file))?;
                bytes.to_vec()
            }
        };
        Ok((bytes, source))
    }

    /// Verify every file of the set: one result per file, with where it was found.
    pub fn verify(&self) -> Vec<(ModelFile, Result<ModelSource, ModelError>)> {
        self.set
            .files()
            .map(|f| (f.clone(), self.read_located(f).map(|(_, s)| s)))
            .collect()
    }
}

/// Check `bytes` against `f`'s hash (`path` names them in the error).
fn check_hash(bytes: &[u8], f: &ModelFile, path: PathBuf) -> Result<(), ModelError> {
    let actual = sha256_hex(bytes);
    if actual != f.sha256 {
        return Err(ModelError::HashMismatch {
            path,
            expected: f.sha256.clone(),
            actual,
        });
    }
    Ok(())
}

pub use crate::sha256_hex;

/// Read the file at `path` and check it against `f`'s hash; returns the bytes.
pub fn read_verified(path: &Path, f: &ModelFile) -> Result<Vec<u8>, ModelError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ModelError::Missing {
                file: f.file.clone(),
                tried: path.display().to_string(),
            })
        }
        Err(source) => {
            return Err(ModelError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    check_hash(&bytes, f, path.to_path_buf())?;
    Ok(bytes)
}

/// Check `bytes` against `f` and write them to `dir/f.file` atomically (temp file + rename).
pub fn install_verified(dir: &Path, f: &ModelFile, bytes: &[u8]) -> Result<PathBuf, ModelError> {
    let path = dir.join(&f.file);
    check_hash(bytes, f, path.clone())?;
    let io = |source| ModelError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join(format!(".{}.partial", f.file));
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn silentface_json() -> serde_json::Value {
        serde_json::from_str(BUILTIN_SETS[0].1).unwrap()
    }

    fn parse_value(v: &serde_json::Value) -> Result<ModelSet, ModelError> {
        ModelSet::parse(&v.to_string(), "test")
    }

    #[test]
    fn builtin_sets_parse() {
        for (name, _) in BUILTIN_SETS {
            let s = ModelSet::builtin(name).unwrap();
            assert_eq!(s.name, name);
            assert_eq!(s.hash().len(), 16);
            assert!(s.files().all(|f| f.sha256.len() == 64));
        }
        assert_eq!(ModelSet::default_set().unwrap().name, DEFAULT_MODEL_SET);
        let sf = ModelSet::builtin("silentface").unwrap();
        assert_eq!(sf.classifiers.len(), 2);
        assert_eq!(
            sf.fusion,
            Fusion::Mean {
                weights: vec![1.0, 1.0]
            }
        );
        assert_ne!(
            sf.hash(),
            ModelSet::builtin("silentface-minifas128").unwrap().hash()
        );
    }

    #[test]
    fn hash_covers_scoring_not_prose() {
        let a = ModelSet::builtin("silentface").unwrap();
        let mut b = a.clone();
        b.description = "other words".into();
        b.detector.note = Some("moved".into());
        assert_eq!(a.hash(), b.hash());
        b.fusion = Fusion::Mean {
            weights: vec![1.0, 2.0],
        };
        assert_ne!(a.hash(), b.hash());
        let mut c = a.clone();
        c.classifiers[0].crop = CropSpec::Clamp { scale: 2.8 };
        assert_ne!(a.hash(), c.hash());
        // The face finder decides `multiple_faces`: its score floor is part of the identity.
        let mut d = a.clone();
        if let Some(f) = d.face_finder.as_mut() {
            f.score = 0.8;
        }
        assert_ne!(a.hash(), d.hash());
        d.face_finder = None;
        assert_ne!(a.hash(), d.hash());
    }

    #[test]
    fn parser_rejects_bad_sets_with_a_reason() {
        type Edit = Box<dyn Fn(&mut serde_json::Value)>;
        let cases: Vec<(&str, Edit)> = vec![
            (
                "unknown variant",
                Box::new(|v| v["classifiers"][0]["resize"] = "cubic".into()),
            ),
            (
                "unknown variant",
                Box::new(|v| v["classifiers"][0]["crop"]["kind"] = "letterbox".into()),
            ),
            (
                "unknown field",
                Box::new(|v| v["classifiers"][0]["gamma"] = 2.2.into()),
            ),
            (
                "unknown variant",
                Box::new(|v| v["classifiers"][0]["channels"] = "yuv".into()),
            ),
            (
                "2 weights for 1 classifiers",
                Box::new(|v| {
                    v["classifiers"].as_array_mut().unwrap().pop();
                }),
            ),
            (
                "non-negative",
                Box::new(|v| v["fusion"]["weights"] = serde_json::json!([1.0, -1.0])),
            ),
            (
                "not all zero",
                Box::new(|v| v["fusion"]["weights"] = serde_json::json!([0.0, 0.0])),
            ),
            (
                "3 coefficients for 2",
                Box::new(|v| {
                    v["fusion"] = serde_json::json!(
                        {"rule": "logistic", "intercept": 0.0, "coefficients": [1, 1, 1]})
                }),
            ),
            (
                "unknown variant",
                Box::new(|v| v["fusion"] = serde_json::json!({"rule": "max"})),
            ),
            (
                "sha256 must be 64 hex",
                Box::new(|v| v["classifiers"][1]["sha256"] = "abc".into()),
            ),
            (
                "plain file name",
                Box::new(|v| v["detector"]["file"] = "../etc/passwd".into()),
            ),
            (
                "unique",
                Box::new(|v| v["classifiers"][1]["name"] = "MiniFASNetV2".into()),
            ),
            (
                "input size",
                Box::new(|v| v["classifiers"][0]["size"] = 100000.into()),
            ),
            (
                "std must be finite",
                Box::new(|v| v["classifiers"][0]["std"] = serde_json::json!([1, 0, 1])),
            ),
            (
                "crop scale",
                Box::new(|v| v["classifiers"][0]["crop"]["scale"] = 0.0.into()),
            ),
            ("threshold", Box::new(|v| v["threshold"] = 1.5.into())),
            (
                "face_finder: input size 600 is not a multiple of 32",
                Box::new(|v| v["face_finder"]["size"] = 600.into()),
            ),
            (
                "face_finder: score 0 is outside (0, 1]",
                Box::new(|v| v["face_finder"]["score"] = 0.0.into()),
            ),
            (
                "face_finder: nms 1.5 is outside (0, 1]",
                Box::new(|v| v["face_finder"]["nms"] = 1.5.into()),
            ),
            (
                "face_finder: file",
                Box::new(|v| v["face_finder"]["file"] = "a/b.onnx".into()),
            ),
            (
                "missing field `score`",
                Box::new(|v| {
                    v["face_finder"].as_object_mut().unwrap().remove("score");
                }),
            ),
            (
                "at least one classifier",
                Box::new(|v| {
                    v["classifiers"] = serde_json::json!([]);
                    v["fusion"]["weights"] = serde_json::json!([]);
                }),
            ),
        ];
        for (want, edit) in cases {
            let mut v = silentface_json();
            edit(&mut v);
            let err = parse_value(&v).unwrap_err().to_string();
            assert!(err.contains(want), "expected {want:?} in {err:?}");
            assert!(err.starts_with("model set test:"), "{err}");
        }
        assert!(parse_value(&silentface_json()).is_ok());
    }

    #[test]
    fn unknown_names_and_missing_files_are_named() {
        let err = LoadedSet::resolve(Some("nope"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("silentface") && err.contains("nope"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.json");
        assert!(matches!(
            LoadedSet::resolve(Some(missing.to_str().unwrap()), None),
            Err(ModelError::SetIo { .. })
        ));
    }

    #[test]
    fn set_files_are_found_beside_the_set_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = silentface_json();
        let body = b"not really a model";
        v["classifiers"][0]["file"] = "local.onnx".into();
        v["classifiers"][0]["sha256"] = sha256_hex(body).into();
        let path = dir.path().join("set.json");
        std::fs::write(&path, v.to_string()).unwrap();
        let empty = tempfile::tempdir().unwrap();
        let loaded = LoadedSet::resolve(Some(path.to_str().unwrap()), Some(empty.path())).unwrap();
        let member = &loaded.set.classifiers[0].model;
        assert!(matches!(
            loaded.read(member),
            Err(ModelError::Missing { .. })
        ));
        std::fs::write(dir.path().join("local.onnx"), b"altered").unwrap();
        let err = loaded.read(member).unwrap_err();
        assert!(matches!(err, ModelError::HashMismatch { .. }), "{err}");
        assert!(err.to_string().contains("local.onnx"));
        std::fs::write(dir.path().join("local.onnx"), body).unwrap();
        assert_eq!(loaded.read(member).unwrap(), body);
        assert!(install_verified(empty.path(), member, b"nope").is_err());
        let installed = install_verified(empty.path(), member, body).unwrap();
        assert_eq!(std::fs::read(installed).unwrap(), body);
    }
}
