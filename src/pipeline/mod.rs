//! The liveness pipeline: image bytes in, [`Verdict`] out.
//!
//! This module knows nothing of HTTP, SQL or the network. It follows the reference recipe of
//! `shared/models/MODELS.md` step by step: decode (+EXIF) → detector input → priors/box decode →
//! per-classifier crop → OpenCV-compatible bilinear resize → BGR 0-255 NCHW → softmax → fusion.

pub mod classify;
pub mod crop;
pub mod decode;
pub mod detect;
pub mod finder;
pub mod print;
pub mod resize;
pub mod square;

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::engine::{Engine, EngineError};
use crate::models::{CropSpec, FaceFinder, Member, ModelSet, ResizeKind};
pub use decode::{
    BgrImage, DecodeError, DecodeLimits, DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_PIXELS,
};

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
    /// The picture was checked before within the re-submission window, and the service rejects
    /// re-submissions (`--reject-resubmissions`). Never produced by the pipeline itself: the
    /// service decides it (`crate::resubmission`).
    ResubmittedImage,
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
            Reason::ResubmittedImage => "resubmitted_image",
        }
    }

    /// Every reason, in declaration order.
    pub const ALL: [Reason; 8] = [
        Reason::Live,
        Reason::Spoof,
        Reason::NoFace,
        Reason::MultipleFaces,
        Reason::FaceTooSmall,
        Reason::FaceTooClose,
        Reason::ImageTooSmall,
        Reason::ResubmittedImage,
    ];

    /// The reason with this stable code.
    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.code() == code)
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
            Reason::ResubmittedImage => {
                "This image was already submitted; a new photo must be taken for each check"
            }
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
    /// When the detector's own pass finds one face and a weaker candidate beside it
    /// ([`MULTI_FACE_CANDIDATE`]), look for another face with the set's face finder (YuNet at
    /// 640 px, its own score floor), or, for a set without one, with the detector at twice its
    /// working size ([`MULTI_FACE_SCALE`]): small second faces of group photos score low at the
    /// detector's ~192 px.
    #[serde(default = "default_true")]
    pub multi_face_scan: bool,
    /// When the detector's best face is below `min_face_confidence`, look again at twice the
    /// detector's working size ([`FACE_CONFIRM_SCALE`]) and accept upstream's box if a face
    /// overlapping it ([`FACE_CONFIRM_IOU`]) reaches the floor there: at ~192 px the detector
    /// under-scores many clear faces.
    #[serde(default = "default_true")]
    pub face_confirm_scan: bool,
}

fn default_true() -> bool {
    true
}

/// The face the verdict is about.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Face {
    /// `[x, y, w, h]` in pixels of the upright image (upstream integer arithmetic).
    pub bbox: [i32; 4],
    /// Detector confidence of this face.
    pub confidence: f32,
}

/// One classifier's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberScore {
    /// The member's name in the model set.
    pub name: String,
    /// Raw outputs.
    pub logits: Vec<f32>,
    /// Softmax (or `[sigmoid]`) of the logits.
    pub probs: Vec<f32>,
    /// `probs[real_index]`.
    pub p_real: f32,
}

/// Every member's answer, in set order. Serialized as `{"<member name>": [probabilities...]}`
/// (for Silent-Face: `{"MiniFASNetV2": [3 values], "MiniFASNetV1SE": [3 values]}`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scores(pub Vec<MemberScore>);

impl Serialize for Scores {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for m in &self.0 {
            map.serialize_entry(&m.name, &m.probs)?;
        }
        map.end()
    }
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
#[derive(Debug, Clone, PartialEq, Serialize)]
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
    /// The picture's perceptual print (re-submission detection; absent for images too small to
    /// be checked and featureless ones).
    #[serde(skip)]
    pub print: Option<Box<print::ImagePrint>>,
    pub timings: Timings,
}

/// Errors that stop a check before any verdict: the bytes did not decode, or inference failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("inference failed: {0}")]
    Engine(#[from] EngineError),
    /// The face box gave no crop for a member (a degenerate box; never seen on real detections).
    #[error("no {member} crop for face box {bbox:?}")]
    Crop { member: String, bbox: [i32; 4] },
}

/// Default of [`PipelineConfig::threshold`] when no model set says otherwise.
pub const DEFAULT_THRESHOLD: f32 = 0.5;
/// Default of [`PipelineConfig::min_face_confidence`] (`--min-face-confidence`).
pub const DEFAULT_MIN_FACE_CONFIDENCE: f32 = 0.6;
/// Default of [`PipelineConfig::min_face_px`] (`--min-face-px`).
pub const DEFAULT_MIN_FACE_PX: u32 = 32;
/// Default of [`PipelineConfig::min_context_ratio`] (`--min-context-ratio`; docs/accuracy.md).
pub const DEFAULT_MIN_CONTEXT_RATIO: f32 = 0.75;
/// Default of [`PipelineConfig::min_image_side`].
pub const DEFAULT_MIN_IMAGE_SIDE: u32 = 32;

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            threshold: DEFAULT_THRESHOLD,
            min_face_confidence: DEFAULT_MIN_FACE_CONFIDENCE,
            min_face_px: DEFAULT_MIN_FACE_PX,
            min_context_ratio: DEFAULT_MIN_CONTEXT_RATIO,
            min_image_side: DEFAULT_MIN_IMAGE_SIDE,
            limits: DecodeLimits::default(),
            multi_face_scan: true,
            face_confirm_scan: true,
        }
    }
}

impl Verdict {
    /// A "not live" verdict for a quality outcome that stopped before the classifiers.
    pub fn quality(reason: Reason, threshold: f32) -> Verdict {
        Verdict {
            live: false,
            p_real: 0.0,
            threshold,
            reason,
            face: None,
            scores: None,
            image_size: None,
            print: None,
            timings: Timings::default(),
        }
    }
}

/// What the quality gates say about a picture ([`Pipeline::precheck`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Precheck {
    /// The gate the picture stops at (`NoFace`, `MultipleFaces`, `FaceTooSmall`, `FaceTooClose`,
    /// `ImageTooSmall`); `None` when it passes them all.
    pub blocked: Option<Reason>,
    /// The face found, if any.
    pub face: Option<Face>,
    /// Mean luma (0-255, BT.601 weights) of the face box, or of the whole picture without one.
    pub brightness: f32,
}

/// Mean luma of `img` inside `region` (`[x, y, w, h]`, clipped to the image), or of the whole
/// image; every 2nd pixel of every 2nd row is enough for a mean.
pub fn mean_luma(img: &BgrImage, region: Option<[i32; 4]>) -> f32 {
    let (w, h) = (img.width as i64, img.height as i64);
    let [x, y, bw, bh] = region.map_or([0, 0, w, h], |r| r.map(i64::from));
    let (x0, y0) = (x.clamp(0, w), y.clamp(0, h));
    let (x1, y1) = ((x + bw).clamp(0, w), (y + bh).clamp(0, h));
    let (mut sum, mut n) = (0u64, 0u64);
    for row in (y0..y1).step_by(2) {
        for col in (x0..x1).step_by(2) {
            let i = ((row * w + col) * 3) as usize;
            if let Some(&[b, g, r]) = img
                .data
                .get(i..i + 3)
                .and_then(|p| <&[u8; 3]>::try_from(p).ok())
            {
                sum += 29 * u64::from(b) + 150 * u64::from(g) + 77 * u64::from(r);
                n += 1;
            }
        }
    }
    if n == 0 {
        0.0
    } else {
        (sum as f64 / n as f64 / 256.0) as f32
    }
}

/// Lowest detector confidence at which a second detection counts as another person.
pub const MIN_SECOND_FACE_CONFIDENCE: f32 = 0.6;

/// A separate detection at least this confident in the detector's own pass, though below the
/// second-face floor, is a candidate face that the multi-face scan re-examines (with the set's
/// face finder, or at [`MULTI_FACE_SCALE`]). On the devset, 1 of the 312 single-face images has
/// such a candidate (a blurred bystander at 0.38), so the scan costs almost nothing on ordinary
/// selfies; the finder costs 30-90 ms where it runs (docs/accuracy.md).
pub const MULTI_FACE_CANDIDATE: f32 = 0.3;

/// Detector input scale of the multi-face scan, relative to the detector's working size
/// (capped at the image's size). A second face there counts with the usual
/// [`MIN_SECOND_FACE_CONFIDENCE`]: no new floor is tuned for it.
pub const MULTI_FACE_SCALE: f64 = 2.0;

/// Detector input scale of the face-confirmation scan ([`PipelineConfig::face_confirm_scan`]),
/// relative to the detector's working size (capped at the image's size). The face must reach the
/// usual `min_face_confidence` there: no new floor is tuned for it.
pub const FACE_CONFIRM_SCALE: f64 = 2.0;

/// Overlap (intersection over union) with upstream's box at which a face found by the
/// confirmation scan is the same face.
pub const FACE_CONFIRM_IOU: f32 = 0.5;

/// Reusable per-thread buffers: preprocessing allocates nothing once warm.
#[derive(Default)]
struct Scratch {
    resized: Vec<u8>,
    det_input: Vec<f32>,
    /// A member's padded crop (square-reflect crops; clamp crops are views into the image).
    patch: Vec<u8>,
    crop: Vec<u8>,
    cls_input: Vec<f32>,
    /// Priors of the last detector input size (they depend on the size only).
    priors: Vec<detect::Prior>,
    priors_size: (usize, usize),
    finder_input: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Somewhere to run part of a check beside the calling thread. The server lends a CPU slot that
/// is idle while no check waits for one (`server::admission`), so that a check on a quiet server
/// runs its classifiers on two cores; under load there is no idle slot and a check runs on one
/// thread as before. The pipeline knows nothing more of it.
pub trait Spare: Sync {
    /// Runs `here` on this thread and `beside` on another one if one is idle now, or both here
    /// (`here` first) if none is. Returns when both have run. A panic in either reaches the
    /// caller after both have finished.
    fn join(&self, here: &mut dyn FnMut(), beside: &mut (dyn FnMut() + Send));
}

/// Member indices split into two groups of about equal total cost (greedy, costliest first;
/// ties keep set order): the group run here, then the group run beside. Each group in set order.
fn split_by_cost(costs: impl Iterator<Item = usize>) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<(usize, usize)> = costs.enumerate().collect();
    order.sort_by_key(|&(i, c)| (std::cmp::Reverse(c), i));
    let (mut here, mut beside) = ((Vec::new(), 0usize), (Vec::new(), 0usize));
    for (i, c) in order {
        let group = if here.1 <= beside.1 {
            &mut here
        } else {
            &mut beside
        };
        group.0.push(i);
        group.1 += c;
    }
    here.0.sort_unstable();
    beside.0.sort_unstable();
    (here.0, beside.0)
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// The loaded pipeline: engine, model set and configuration. Share it as `Arc<Pipeline>`; it is
/// `Send + Sync`.
pub struct Pipeline {
    engine: Box<dyn Engine>,
    set: ModelSet,
    set_hash: String,
    config: PipelineConfig,
}

impl Pipeline {
    /// `engine` must have loaded `set`'s classifiers, in set order.
    pub fn new(engine: Box<dyn Engine>, set: ModelSet, config: PipelineConfig) -> Self {
        let set_hash = set.hash();
        Pipeline {
            engine,
            set,
            set_hash,
            config,
        }
    }

    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    /// The model set this pipeline runs.
    pub fn model_set(&self) -> &ModelSet {
        &self.set
    }

    /// The model set's identity ([`ModelSet::hash`]): in every answer, audit row and report.
    pub fn model_hash(&self) -> &str {
        &self.set_hash
    }

    /// The engine's name (`tract`).
    pub fn engine_name(&self) -> &'static str {
        self.engine.name()
    }

    /// Run the whole pipeline on encoded image bytes.
    ///
    /// `Err` when the bytes do not decode ([`DecodeError`]: not an image, unsupported, corrupt, too
    /// many pixels — callers that want a verdict for those use [`DecodeError::reason`] with
    /// [`Verdict::quality`]) or the engine failed. Every face or quality outcome is a [`Verdict`].
    pub fn check(&self, bytes: &[u8]) -> Result<Verdict, PipelineError> {
        let t0 = Instant::now();
        let img = decode::decode(bytes, &self.config.limits)?;
        self.check_decoded(&img, t0, None)
    }

    /// [`Pipeline::check`], also passing a JPEG's luma blocks to `visit` from the decode that
    /// made the pixels ([`decode::decode_with_luma`]): what the double-compression signal reads,
    /// without a second entropy decode. The same verdict as [`Pipeline::check`].
    ///
    /// With `spare`, the classifiers are split over this thread and one that `spare` lends when
    /// it has one idle (see [`Spare`]): the same verdict, bit for bit, sooner.
    pub fn check_with_luma(
        &self,
        bytes: &[u8],
        visit: &mut decode::LumaVisitor<'_>,
        spare: Option<&dyn Spare>,
    ) -> Result<(Verdict, decode::LumaRead), PipelineError> {
        let t0 = Instant::now();
        let (img, luma) = decode::decode_with_luma(bytes, &self.config.limits, visit)?;
        Ok((self.check_decoded(&img, t0, spare)?, luma))
    }

    /// The rest of a check once `img` is decoded; `t0` is when decoding began.
    fn check_decoded(
        &self,
        img: &BgrImage,
        t0: Instant,
        spare: Option<&dyn Spare>,
    ) -> Result<Verdict, PipelineError> {
        let decode_ms = ms(t0);
        let mut v = self.check_image_with(img, spare)?;
        v.timings.decode = decode_ms;
        v.timings.total = ms(t0);
        Ok(v)
    }

    /// Run detection and classification on an already decoded, upright image.
    pub fn check_image(&self, img: &BgrImage) -> Result<Verdict, PipelineError> {
        self.check_image_with(img, None)
    }

    /// [`Pipeline::check_image`], with the classifiers split over this thread and `spare`'s.
    fn check_image_with(
        &self,
        img: &BgrImage,
        spare: Option<&dyn Spare>,
    ) -> Result<Verdict, PipelineError> {
        let t0 = Instant::now();
        let cfg = &self.config;
        let mut v = Verdict::quality(Reason::NoFace, cfg.threshold);
        let Some(bbox) = self.gates(img, &mut v, t0)? else {
            v.timings.total = ms(t0);
            return Ok(v);
        };
        let view = img.view();

        // Classification.
        let t1 = Instant::now();
        let members = self.classify_all(&view, bbox, spare)?;
        let p: Vec<f32> = members.iter().map(|m| m.p_real).collect();
        v.timings.classify = ms(t1);
        v.p_real = classify::fuse(&self.set.fusion, &p);
        v.scores = Some(Scores(members));
        v.live = v.p_real >= cfg.threshold;
        v.reason = if v.live { Reason::Live } else { Reason::Spoof };
        v.timings.total = ms(t0);
        Ok(v)
    }

    /// The quality gates a check passes before its classifiers, in order: image size, a face
    /// (with the confirmation scan), one face only (with the multi-face scan), face size, context
    /// around the face. Fills `v`'s image size, face, print and detection time; returns the face
    /// box when every gate passes, else `None` with `v.reason` naming the gate.
    fn gates(
        &self,
        img: &BgrImage,
        v: &mut Verdict,
        t0: Instant,
    ) -> Result<Option<[i32; 4]>, PipelineError> {
        let cfg = &self.config;
        let (w, h) = (img.width as usize, img.height as usize);
        v.image_size = Some([img.width, img.height]);
        if w.min(h) < cfg.min_image_side.max(1) as usize {
            v.reason = Reason::ImageTooSmall;
            return Ok(None);
        }
        let view = img.view();

        // Detection.
        let (dw, dh) = detect::detector_input_size(w, h);
        let floor = cfg.min_face_confidence.min(MULTI_FACE_CANDIDATE);
        let faces = self.detect_at(&view, dw, dh, floor)?;
        // The print reads the detector input `detect_at` just made (before any scan reuses it).
        v.print = SCRATCH
            .with(|s| print::ImagePrint::of_bgr(&s.borrow().resized, dw, dh))
            .map(Box::new);
        v.timings.detect = ms(t0);

        // Upstream's box, and the confidence it was accepted at: its own, or the confirmation
        // scan's when that had to look again.
        let (best, accepted_at) = match faces.best {
            Some(b) if b.confidence >= cfg.min_face_confidence => (b, b.confidence),
            Some(b) if cfg.face_confirm_scan => {
                match self.confirm_face(&view, &b, cfg.min_face_confidence)? {
                    Some(c) => (b, c),
                    None => {
                        v.reason = Reason::NoFace;
                        return Ok(None);
                    }
                }
            }
            _ => {
                v.reason = Reason::NoFace;
                return Ok(None);
            }
        };
        let bbox = best.bbox(w, h);
        v.face = Some(Face {
            bbox,
            confidence: accepted_at,
        });
        let min_px = cfg.min_face_px.max(1) as i32;
        // A second face must clear the floor *and* MIN_SECOND_FACE_CONFIDENCE: lowering the floor
        // (down to upstream's "no floor") must not turn background clutter into faces.
        let second_floor = cfg.min_face_confidence.max(MIN_SECOND_FACE_CONFIDENCE);
        let others = |d: &&detect::Detection| {
            let b = d.bbox(w, h);
            detect::is_separate_face(&best, d) && b[2].min(b[3]) >= min_px
        };
        let mut candidates = faces.kept.iter().skip(1).filter(others);
        let second = candidates.clone().any(|d| d.confidence >= second_floor);
        let candidate = candidates.any(|d| d.confidence >= MULTI_FACE_CANDIDATE);
        let second = second
            || (cfg.multi_face_scan
                && candidate
                && match &self.set.face_finder {
                    Some(f) => self.finder_finds_another_face(&view, &best, f, min_px)?,
                    None => self.finds_another_face(&view, &best, second_floor, min_px)?,
                });
        v.timings.detect = ms(t0);
        let quality = if second {
            Some(Reason::MultipleFaces)
        } else if bbox[2].min(bbox[3]) < min_px {
            Some(Reason::FaceTooSmall)
        } else if context_ratio(bbox, w, h) < cfg.min_context_ratio {
            Some(Reason::FaceTooClose)
        } else {
            None
        };
        match quality {
            Some(r) => {
                v.reason = r;
                Ok(None)
            }
            None => Ok(Some(bbox)),
        }
    }

    /// The quality gates alone, without the classifiers: what the capture page asks about a
    /// preview frame before the one check a session allows. `blocked` is the gate the picture
    /// would stop at in a check with this pipeline (`None`: it reaches the classifiers).
    pub fn precheck(&self, img: &BgrImage) -> Result<Precheck, PipelineError> {
        let t0 = Instant::now();
        let mut v = Verdict::quality(Reason::NoFace, self.config.threshold);
        let passed = self.gates(img, &mut v, t0)?;
        let region = v.face.as_ref().map(|f| f.bbox);
        Ok(Precheck {
            blocked: passed.is_none().then_some(v.reason),
            face: v.face,
            brightness: mean_luma(img, region),
        })
    }

    /// Runs the detector on `view` resized to `dw x dh` and selects faces at `floor` or above.
    fn detect_at(
        &self,
        view: &resize::ImageView<'_>,
        dw: usize,
        dh: usize,
        floor: f32,
    ) -> Result<detect::Faces, PipelineError> {
        SCRATCH.with(|s| -> Result<detect::Faces, PipelineError> {
            let mut s = s.borrow_mut();
            let Scratch {
                resized,
                det_input,
                priors,
                priors_size,
                ..
            } = &mut *s;
            detect::detector_input(view, dw, dh, resized, det_input);
            let out = self.engine.detect(det_input, dw, dh)?;
            if *priors_size != (dw, dh) || priors.is_empty() {
                *priors = detect::priors(dw, dh);
                *priors_size = (dw, dh);
            }
            detect::select_faces(&out, priors, floor).map_err(|message| {
                EngineError::Output {
                    model: "detector".to_string(),
                    message,
                }
                .into()
            })
        })
    }

    /// The multi-face scan: detection at [`MULTI_FACE_SCALE`] times the detector's working size,
    /// looking only for a face separate from `best` at `floor` or above (boxes are in normalised
    /// image coordinates at every scale, so they compare directly).
    fn finds_another_face(
        &self,
        view: &resize::ImageView<'_>,
        best: &detect::Detection,
        floor: f32,
        min_px: i32,
    ) -> Result<bool, PipelineError> {
        let (w, h) = (view.width, view.height);
        let Some(faces) = self.detect_scaled(view, MULTI_FACE_SCALE, floor)? else {
            return Ok(false);
        };
        Ok(faces.kept.iter().any(|d| {
            let b = d.bbox(w, h);
            detect::is_separate_face(best, d) && b[2].min(b[3]) >= min_px
        }))
    }

    /// The multi-face scan with the set's face finder: any face of at least `finder.score`,
    /// separate from `best` ([`detect::is_separate_face`]) and at least `min_px` on its
    /// shorter side in the image.
    fn finder_finds_another_face(
        &self,
        view: &resize::ImageView<'_>,
        best: &detect::Detection,
        finder: &FaceFinder,
        min_px: i32,
    ) -> Result<bool, PipelineError> {
        let (w, h) = (view.width, view.height);
        let faces = self.find_faces(view, finder)?;
        Ok(faces.iter().any(|d| {
            let b = d.bbox(w, h);
            detect::is_separate_face(best, d) && b[2].min(b[3]) >= min_px
        }))
    }

    /// Every face the set's face finder sees in `view` at its own score floor, as detections in
    /// normalised image coordinates.
    pub fn find_faces(
        &self,
        view: &resize::ImageView<'_>,
        finder: &FaceFinder,
    ) -> Result<Vec<detect::Detection>, PipelineError> {
        let out = SCRATCH.with(|s| -> Result<_, PipelineError> {
            let mut s = s.borrow_mut();
            let Scratch {
                resized,
                finder_input,
                ..
            } = &mut *s;
            let Some(scale) = finder::finder_input(view, finder.size, resized, finder_input) else {
                return Ok(None);
            };
            Ok(Some((scale, self.engine.find_faces(finder_input)?)))
        })?;
        let Some((scale, out)) = out else {
            return Ok(Vec::new());
        };
        let faces =
            finder::decode(&out, finder.size, finder.score, finder.nms).map_err(|message| {
                PipelineError::Engine(EngineError::Output {
                    model: finder.model.file.clone(),
                    message,
                })
            })?;
        Ok(faces
            .into_iter()
            .map(|f| f.detection(scale, view.width, view.height))
            .collect())
    }

    /// Detection at `scale` times the detector's working size (capped at the image's size);
    /// `None` when the image is no larger than the detector's input (nothing more to see).
    fn detect_scaled(
        &self,
        view: &resize::ImageView<'_>,
        scale: f64,
        floor: f32,
    ) -> Result<Option<detect::Faces>, PipelineError> {
        let (w, h) = (view.width, view.height);
        let (dw0, dh0) = detect::detector_input_size(w, h);
        let dw = ((dw0 as f64 * scale) as usize).clamp(1, w);
        let dh = ((dh0 as f64 * scale) as usize).clamp(1, h);
        if (dw, dh) == (dw0, dh0) {
            return Ok(None);
        }
        self.detect_at(view, dw, dh, floor).map(Some)
    }

    /// The face-confirmation scan: detection at [`FACE_CONFIRM_SCALE`] times the detector's
    /// working size. Returns the confidence of the best face there that reaches `floor` and
    /// overlaps `best` by at least [`FACE_CONFIRM_IOU`]; `None` when there is none, or when the
    /// image is no larger than the detector's input (nothing more to see).
    fn confirm_face(
        &self,
        view: &resize::ImageView<'_>,
        best: &detect::Detection,
        floor: f32,
    ) -> Result<Option<f32>, PipelineError> {
        let Some(faces) = self.detect_scaled(view, FACE_CONFIRM_SCALE, floor)? else {
            return Ok(None);
        };
        Ok(faces
            .kept
            .iter()
            .find(|d| d.iou(best) >= FACE_CONFIRM_IOU)
            .map(|d| d.confidence))
    }

    /// Member `index`'s input crop (BGR pixels, `size x size`) and answer for face box `bbox` in
    /// an upright image: exactly what a check runs, for `livecheck crops` (training data).
    pub fn member_sample(
        &self,
        img: &BgrImage,
        bbox: [i32; 4],
        index: usize,
    ) -> Result<(Vec<u8>, MemberScore), PipelineError> {
        let member = self
            .set
            .classifiers
            .get(index)
            .ok_or_else(|| EngineError::Run {
                model: format!("classifier #{index}"),
                message: format!("the set has {} classifiers", self.set.classifiers.len()),
            })?;
        let mut pixels = Vec::new();
        let score = self.classify(&img.view(), bbox, index, member, |c| {
            pixels.extend_from_slice(c)
        })?;
        Ok((pixels, score))
    }

    /// Every member's score for face box `bbox`, in set order. With `spare` and two or more
    /// members, the members are split into two groups of about equal cost (input pixels), one
    /// run here and one on the spare thread when there is one: each member's arithmetic is the
    /// same on any thread, so the scores are the same bits. The first failing member in set
    /// order gives the error, as in the one-thread loop.
    fn classify_all(
        &self,
        view: &resize::ImageView<'_>,
        bbox: [i32; 4],
        spare: Option<&dyn Spare>,
    ) -> Result<Vec<MemberScore>, PipelineError> {
        let all = &self.set.classifiers;
        let run = |i: usize| self.classify(view, bbox, i, &all[i], |_| ());
        let Some(spare) = spare.filter(|_| all.len() >= 2) else {
            return (0..all.len()).map(run).collect();
        };
        let (here, beside) = split_by_cost(all.iter().map(|m| m.size * m.size));
        let (mut mine, mut theirs) = (Vec::new(), Vec::new());
        spare.join(
            &mut || mine = here.iter().map(|&i| (i, run(i))).collect(),
            &mut || theirs = beside.iter().map(|&i| (i, run(i))).collect(),
        );
        let mut scores: Vec<_> = mine.into_iter().chain(theirs).collect();
        scores.sort_by_key(|(i, _)| *i);
        if scores.len() != all.len() {
            return Err(EngineError::Run {
                model: "classifiers".into(),
                message: format!("{} of {} members ran", scores.len(), all.len()),
            }
            .into());
        }
        scores.into_iter().map(|(_, s)| s).collect()
    }

    /// Crop and preprocess for member `index` (`seen` gets the crop's pixels), run it, and read
    /// its probabilities.
    fn classify(
        &self,
        view: &resize::ImageView<'_>,
        bbox: [i32; 4],
        index: usize,
        member: &Member,
        mut seen: impl FnMut(&[u8]),
    ) -> Result<MemberScore, PipelineError> {
        let logits = SCRATCH.with(|s| -> Result<Vec<f32>, PipelineError> {
            let mut s = s.borrow_mut();
            let Scratch {
                patch,
                crop,
                cls_input,
                ..
            } = &mut *s;
            if member_crop(view, bbox, member, patch, crop).is_none() {
                return Err(PipelineError::Crop {
                    member: member.name.clone(),
                    bbox,
                });
            }
            seen(crop);
            classify::to_tensor(member, crop, member.size * member.size, cls_input);
            Ok(self.engine.classify(index, cls_input)?)
        })?;
        let probs =
            classify::probabilities(member, &logits).ok_or_else(|| EngineError::Output {
                model: member.name.clone(),
                message: format!(
                    "{} outputs do not fit the set's member ({logits:?})",
                    logits.len()
                ),
            })?;
        Ok(MemberScore {
            name: member.name.clone(),
            p_real: probs[member.real_index],
            logits,
            probs,
        })
    }
}

/// Smallest ratio of image side to face-box side over both axes.
pub fn context_ratio(bbox: [i32; 4], w: usize, h: usize) -> f32 {
    let bw = bbox[2].max(1) as f32;
    let bh = bbox[3].max(1) as f32;
    (w as f32 / bw).min(h as f32 / bh)
}

/// A member's crop and tensor for face box `bbox` ([`member_crop`] then
/// [`classify::to_tensor`]): the classifier's input in `input`.
pub fn member_input(
    view: &resize::ImageView<'_>,
    bbox: [i32; 4],
    member: &Member,
    patch: &mut Vec<u8>,
    crop: &mut Vec<u8>,
    input: &mut Vec<f32>,
) -> Option<()> {
    member_crop(view, bbox, member, patch, crop)?;
    classify::to_tensor(member, crop, member.size * member.size, input);
    Some(())
}

/// A member's input crop for face box `bbox`: cut by its [`CropSpec`] (into `patch` when it is
/// padded), resized to `size x size` BGR pixels into `crop`. `None` for a degenerate box.
pub fn member_crop(
    view: &resize::ImageView<'_>,
    bbox: [i32; 4],
    member: &Member,
    patch: &mut Vec<u8>,
    crop: &mut Vec<u8>,
) -> Option<()> {
    let n = member.size;
    let region = match member.crop {
        CropSpec::Clamp { scale } => {
            let cb = crop::crop_box(bbox, view.width, view.height, scale)?;
            view.sub(cb.left, cb.top, cb.width(), cb.height())?
        }
        CropSpec::SquareReflect { scale } => {
            let side = square::square_reflect_crop(view, bbox, scale, patch)?;
            resize::ImageView {
                data: patch,
                width: side,
                height: side,
                stride: side * 3,
            }
        }
    };
    match member.resize {
        ResizeKind::Linear => {
            crop.resize(n * n * 3, 0);
            resize::resize_bilinear(&region, n, n, crop);
        }
        ResizeKind::Letterbox => square::letterbox_resize(&region, n, crop).then_some(())?,
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::split_by_cost;

    #[test]
    fn members_split_into_two_groups_of_about_equal_cost() {
        // The default set: two 80 px members and a 128 px one.
        let (here, beside) = split_by_cost([6400, 6400, 16384].into_iter());
        assert_eq!((here, beside), (vec![2], vec![0, 1]));
        let (here, beside) = split_by_cost([6400, 6400].into_iter());
        assert_eq!((here, beside), (vec![0], vec![1]));
        let (here, beside) = split_by_cost([1, 2, 3, 4].into_iter());
        assert_eq!((here, beside), (vec![0, 3], vec![1, 2]));
        let (here, beside) = split_by_cost([5].into_iter());
        assert_eq!((here, beside), (vec![0], vec![]));
    }
}
