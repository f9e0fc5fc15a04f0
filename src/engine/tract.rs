//! The default engine: tract (pure Rust ONNX inference).
//!
//! Models are parsed once. The classifiers have fixed shapes and get one optimized plan each.
//!
//! The detector's input size follows the image's aspect ratio, and tract's fast kernels need
//! concrete shapes, so optimized detector plans are built per input size and kept in a bounded
//! LRU cache. To make a new size cheap, the detector is cut before its output head
//! (Transpose/Flatten/Concat/Reshape/Softmax, which cannot be typed with symbolic H/W: tract
//! cannot divide a sum of symbol products), typed and decluttered **once** with symbolic H and W,
//! and a new size only substitutes the symbols and runs the codegen passes (~40 ms instead of
//! ~130 ms for a plan from the ONNX graph). The head is six reshapes and a two-way softmax per
//! prior, done here in Rust ([`assemble_head`]); tract's softmax over an axis of length 2 was
//! 9% of the detector's time. Plans are `Send + Sync` and shared by all threads without locks;
//! only the cache lookup takes a short mutex.

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tract_onnx::prelude::*;
use tract_onnx::tract_core;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::expandable::expand;

use super::{Classifier, DetectorOutput, Engine, EngineError};
use crate::models::{read_verified, Manifest, ModelError, Role};

type Plan = Arc<TypedRunnableModel>;

/// How many detector plans (input sizes) are kept. Each optimized plan holds its own packed
/// weights (several MB): with 32 plans `check` over the devset (214 distinct detector sizes)
/// peaked at 251 MB RSS. Phone cameras produce a handful of aspect ratios, so 8 covers real
/// traffic; an image of a new size costs one plan build (~0.1-0.2 s).
pub const DETECTOR_PLAN_CACHE: usize = 8;

pub struct TractEngine {
    /// The detector up to its six head convolutions, typed and decluttered with symbolic H/W.
    detector: TypedModel,
    height: Symbol,
    width: Symbol,
    plans: Mutex<lru::LruCache<(usize, usize), Plan>>,
    v2: Plan,
    v1se: Plan,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

fn load_err(file: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Load {
        file: file.to_string(),
        message: format!("{e:#}"),
    }
}

fn parse(bytes: &[u8], file: &str) -> Result<InferenceModel, EngineError> {
    let mut onnx = tract_onnx::onnx();
    onnx.op_register
        .insert("PRelu", |_, _| Ok((expand(FastPrelu), vec![])));
    onnx.model_for_read(&mut std::io::Cursor::new(bytes))
        .map_err(|e| load_err(file, e))
}

/// ONNX `PRelu` as `max(x, slope * x)`, exact when every slope is at most 1 (for x >= 0,
/// slope*x <= x; for x < 0, slope*x >= x — negative slopes included). Checked on the constant
/// slopes (the MiniFASNets' lie in [-0.28, 0.59]); otherwise tract's own select formulation.
///
/// Why: tract lowers PRelu to three element-wise ops (compare, multiply, select), each writing a
/// tensor; in the MiniFASNets that was two thirds of the inference time
/// (`examples/profile_ops.rs`). `mul` + `max` fuse into tract's binary chains.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct FastPrelu;

fn slopes_at_most_one(model: &TypedModel, slope: OutletId) -> bool {
    let Ok(fact) = model.outlet_fact(slope) else {
        return false;
    };
    let Some(k) = fact.konst.as_ref() else {
        return false;
    };
    let Ok(t) = k.cast_to::<f32>() else {
        return false;
    };
    t.to_plain_array_view::<f32>()
        .is_ok_and(|s| s.iter().all(|v| v.is_finite() && *v <= 1.0))
}

impl Expansion for FastPrelu {
    fn name(&self) -> StaticName {
        "FastPrelu".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        Ok(())
    }

    fn wire(
        &self,
        name: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let a = inputs[0];
        let mut b = inputs[1];
        let fast = slopes_at_most_one(model, b);
        let rank = model.outlet_fact(a)?.rank();
        while model.outlet_fact(b)?.rank() < rank {
            b = model.wire_node(
                format!("{}.add-axis-{}", name, model.outlet_fact(b)?.rank()),
                AxisOp::Add(0),
                &[b],
            )?[0];
        }
        let ab = model.wire_node(format!("{name}.mul"), tract_core::ops::math::mul(), &[a, b])?[0];
        if fast {
            return model.wire_node(
                format!("{name}.max"),
                tract_core::ops::math::max(),
                &[a, ab],
            );
        }
        let zero = tensor0(0.0f32)
            .cast_to_dt(model.outlet_fact(a)?.datum_type)?
            .into_owned()
            .broadcast_into_rank(rank)?;
        let zero = model.add_const(format!("{name}.zero"), zero)?;
        let test = model.wire_node(
            format!("{name}.test"),
            tract_core::ops::binary::TypedBinOp(tract_core::ops::logic::comp_gt(), None),
            &[zero, a],
        )?;
        model.wire_node(
            format!("{name}.iff"),
            tract_core::ops::logic::Iff,
            &[test[0], ab, a],
        )
    }
}

/// The detector's six head convolutions, in the order of its output concatenation: box deltas
/// and face scores at strides 8, 16 and 32 (ONNX output names of the pinned model file).
pub const DETECTOR_HEADS: [&str; 6] = [
    "conv_blob48__243",
    "conv_blob49__244",
    "conv_blob50__245",
    "conv_blob51__246",
    "conv_blob52__247",
    "conv_blob53__248",
];

/// Cut the detector after its head convolutions and type it with symbolic height and width.
fn headless_detector(model: InferenceModel) -> TractResult<(TypedModel, Symbol, Symbol)> {
    let h = model.symbols.sym("h");
    let w = model.symbols.sym("w");
    let typed = model
        .with_input_fact(
            0,
            f32::fact([1.to_dim(), 3.to_dim(), h.to_dim(), w.to_dim()]).into(),
        )?
        .with_outputs_by_name(DETECTOR_HEADS)?
        // Drop the head nodes, which cannot be typed with symbolic shapes.
        .into_compact()?
        .into_typed()?
        .into_decluttered()?;
    Ok((typed, h, w))
}

/// Rebuild the detector's `loc` `[P,4]` and softmaxed `conf` `[P,2]` outputs from its six head
/// convolutions (NCHW, pairs of (loc, conf) per level): per level, NCHW → NHWC and flatten
/// (the model's Transpose + Flatten), levels concatenated, and a softmax over each prior's two
/// scores.
pub fn assemble_head(heads: &[(&[usize], &[f32])]) -> Result<DetectorOutput, String> {
    if !heads.len().is_multiple_of(2) {
        return Err(format!("{} head outputs", heads.len()));
    }
    let mut out = DetectorOutput::default();
    for pair in heads.chunks_exact(2) {
        let [(ls, loc), (cs, conf)] = pair else {
            continue;
        };
        let (&[1, lc, lh, lw], &[1, cc, ch, cw]) = (*ls, *cs) else {
            return Err(format!("head shapes {ls:?} / {cs:?}"));
        };
        let anchors = lc / 4;
        if !lc.is_multiple_of(4) || cc != anchors * 2 || (lh, lw) != (ch, cw) {
            return Err(format!("head shapes {ls:?} / {cs:?}"));
        }
        let plane = lh * lw;
        if loc.len() != lc * plane || conf.len() != cc * plane {
            return Err("head output sizes do not match their shapes".into());
        }
        out.loc.reserve(lc * plane);
        out.conf.reserve(cc * plane);
        for p in 0..plane {
            for c in 0..lc {
                out.loc.push(loc[c * plane + p]);
            }
            for a in 0..anchors {
                let (bg, face) = (conf[2 * a * plane + p], conf[(2 * a + 1) * plane + p]);
                let m = bg.max(face);
                let (eb, ef) = ((bg - m).exp(), (face - m).exp());
                let sum = eb + ef;
                out.conf.push(eb / sum);
                out.conf.push(ef / sum);
            }
        }
    }
    Ok(out)
}

fn optimize(model: InferenceModel, shape: [usize; 4], file: &str) -> Result<Plan, EngineError> {
    model
        .with_input_fact(0, f32::fact(shape).into())
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .map_err(|e| load_err(file, e))
}

impl TractEngine {
    /// Load and verify (SHA-256) the three models of `manifest` from `dir`.
    pub fn load(dir: &Path, manifest: &Manifest) -> Result<TractEngine, LoadError> {
        let det = manifest.file(Role::Detector)?;
        let v2 = manifest.file(Role::ClassifierV2)?;
        let v1se = manifest.file(Role::ClassifierV1se)?;
        let (detector, height, width) =
            headless_detector(parse(&read_verified(dir, det)?, &det.file)?)
                .map_err(|e| load_err(&det.file, e))?;
        let v2_plan = optimize(
            parse(&read_verified(dir, v2)?, &v2.file)?,
            [1, 3, 80, 80],
            &v2.file,
        )?;
        let v1se_plan = optimize(
            parse(&read_verified(dir, v1se)?, &v1se.file)?,
            [1, 3, 80, 80],
            &v1se.file,
        )?;
        let cap = NonZeroUsize::new(DETECTOR_PLAN_CACHE).unwrap_or(NonZeroUsize::MIN);
        let engine = TractEngine {
            detector,
            height,
            width,
            plans: Mutex::new(lru::LruCache::new(cap)),
            v2: v2_plan,
            v1se: v1se_plan,
        };
        // The sample geometry (480x640 portrait and its landscape twin) is by far the most common
        // phone shape; build those plans now rather than on the first request.
        engine.detector_plan(166, 221)?;
        engine.detector_plan(221, 166)?;
        Ok(engine)
    }

    fn detector_plan(&self, w: usize, h: usize) -> Result<Plan, EngineError> {
        if let Some(p) = self
            .plans
            .lock()
            .ok()
            .and_then(|mut c| c.get(&(w, h)).cloned())
        {
            return Ok(p);
        }
        // Built outside the lock: two threads may race to build the same size; both results are
        // valid and the second insert wins.
        let plan = self
            .concrete_detector(w, h)
            .map_err(|e| load_err("detector", e))?;
        if let Ok(mut c) = self.plans.lock() {
            c.put((w, h), plan.clone());
        }
        Ok(plan)
    }

    fn concrete_detector(&self, w: usize, h: usize) -> TractResult<Plan> {
        let subs = [
            (self.height.clone(), TDim::Val(h as i64)),
            (self.width.clone(), TDim::Val(w as i64)),
        ]
        .into_iter()
        .collect();
        let mut model = self.detector.set_symbols(&subs)?;
        // Substituting the symbols leaves the Shape/Slice crops of the upsampling path constant;
        // declutter folds them before codegen.
        model.declutter()?;
        model.optimize()?;
        model.into_runnable()
    }

    /// Number of detector plans currently cached.
    pub fn cached_detector_plans(&self) -> usize {
        self.plans.lock().map(|c| c.len()).unwrap_or(0)
    }
}

fn run_err(model: &'static str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Run {
        model,
        message: format!("{e:#}"),
    }
}

fn to_vec(t: &TValue, model: &'static str) -> Result<Vec<f32>, EngineError> {
    let view = t
        .to_plain_array_view::<f32>()
        .map_err(|e| EngineError::Output {
            model,
            message: e.to_string(),
        })?;
    Ok(view.iter().copied().collect())
}

impl Engine for TractEngine {
    fn detect(
        &self,
        input: &[f32],
        width: usize,
        height: usize,
    ) -> Result<DetectorOutput, EngineError> {
        let plan = self.detector_plan(width, height)?;
        let t = Tensor::from_shape(&[1, 3, height, width], input)
            .map_err(|e| run_err("detector", e))?;
        let out = plan
            .run(tvec!(t.into()))
            .map_err(|e| run_err("detector", e))?;
        let output_err = |message: String| EngineError::Output {
            model: "detector",
            message,
        };
        let views = out
            .iter()
            .map(|t| t.to_plain_array_view::<f32>())
            .collect::<TractResult<Vec<_>>>()
            .map_err(|e| output_err(e.to_string()))?;
        let heads = views
            .iter()
            .map(|v| {
                v.as_slice()
                    .map(|d| (v.shape(), d))
                    .ok_or_else(|| output_err("non-contiguous head output".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        assemble_head(&heads).map_err(output_err)
    }

    fn classify(&self, model: Classifier, input: &[f32]) -> Result<[f32; 3], EngineError> {
        let (plan, name) = match model {
            Classifier::V2 => (&self.v2, "MiniFASNetV2"),
            Classifier::V1Se => (&self.v1se, "MiniFASNetV1SE"),
        };
        let t = Tensor::from_shape(&[1, 3, 80, 80], input).map_err(|e| run_err(name, e))?;
        let out = plan.run(tvec!(t.into())).map_err(|e| run_err(name, e))?;
        let v = out
            .first()
            .map(|o| to_vec(o, name))
            .transpose()?
            .unwrap_or_default();
        match v.as_slice() {
            [a, b, c] => Ok([*a, *b, *c]),
            _ => Err(EngineError::Output {
                model: name,
                message: format!("{} logits", v.len()),
            }),
        }
    }

    fn name(&self) -> &'static str {
        "tract"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_dir() -> std::path::PathBuf {
        std::env::var_os("LIVECHECK_MODEL_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/models"))
    }

    #[test]
    fn assemble_head_transposes_levels_and_softmaxes_pairs() {
        // One level, 1x2 cells, 1 anchor: loc channels 4, conf channels 2 (NCHW).
        let loc: Vec<f32> = vec![0., 10., 1., 11., 2., 12., 3., 13.];
        let conf: Vec<f32> = vec![0.0, 1.0, 0.0, -1.0];
        let out = assemble_head(&[(&[1, 4, 1, 2], &loc), (&[1, 2, 1, 2], &conf)]).unwrap();
        assert_eq!(out.loc, vec![0., 1., 2., 3., 10., 11., 12., 13.]);
        assert_eq!(out.len(), 2);
        assert!((out.conf[0] - 0.5).abs() < 1e-7 && (out.conf[1] - 0.5).abs() < 1e-7);
        // Second cell: background logit 1, face logit -1.
        let e2 = 2.0f32.exp();
        assert!((out.conf[3] - 1.0 / (1.0 + e2)).abs() < 1e-7);
        assert!((out.conf[2] + out.conf[3] - 1.0).abs() < 1e-7);
        // Mismatched shapes are an error, not a panic.
        assert!(assemble_head(&[(&[1, 4, 1, 2], &loc)]).is_err());
        assert!(assemble_head(&[(&[1, 4, 1, 2], &loc), (&[1, 4, 1, 2], &loc)]).is_err());
        assert!(assemble_head(&[(&[1, 4, 2, 2], &loc), (&[1, 2, 2, 2], &conf)]).is_err());
    }

    /// The cut detector with the head rebuilt in Rust gives the full ONNX model's outputs, at
    /// the sample geometry and at odd, tiny and extreme sizes (the upsampling crops differ).
    #[test]
    fn headless_detector_matches_the_full_model() {
        let manifest = Manifest::builtin().unwrap();
        let engine = TractEngine::load(&model_dir(), &manifest).unwrap();
        let bytes = std::fs::read(model_dir().join("retinaface_silentface.onnx")).unwrap();
        let full = parse(&bytes, "detector").unwrap();
        for (w, h) in [(166usize, 221usize), (97, 131), (13, 9), (1, 1), (301, 40)] {
            // Deterministic pseudo-image around the mean-subtracted range.
            let input: Vec<f32> = (0..3 * w * h)
                .map(|i| ((i * 7919 % 255) as f32) - 117.0)
                .collect();
            let ours = engine.detect(&input, w, h).unwrap();
            let plan = optimize(full.clone(), [1, 3, h, w], "detector").unwrap();
            let t = Tensor::from_shape(&[1, 3, h, w], &input).unwrap();
            let out = plan.run(tvec!(t.into())).unwrap();
            let loc = to_vec(&out[0], "detector").unwrap();
            let conf = to_vec(&out[1], "detector").unwrap();
            assert_eq!(ours.loc.len(), loc.len(), "{w}x{h}");
            assert_eq!(ours.conf.len(), conf.len(), "{w}x{h}");
            let max_diff = |a: &[f32], b: &[f32]| {
                a.iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max)
            };
            assert!(max_diff(&ours.loc, &loc) < 1e-4, "{w}x{h} loc");
            assert!(max_diff(&ours.conf, &conf) < 1e-5, "{w}x{h} conf");
        }
        assert!(engine.cached_detector_plans() <= DETECTOR_PLAN_CACHE);
    }

    #[test]
    fn prelu_becomes_mul_max_in_the_classifiers() {
        let dir = model_dir();
        for file in ["MiniFASNetV2.onnx", "MiniFASNetV1SE.onnx"] {
            let bytes = std::fs::read(dir.join(file)).unwrap();
            let typed = parse(&bytes, file)
                .unwrap()
                .with_input_fact(0, f32::fact([1, 3, 80, 80]).into())
                .unwrap()
                .into_typed()
                .unwrap();
            let names: Vec<String> = typed.nodes().iter().map(|n| n.name.clone()).collect();
            assert!(
                names.iter().any(|n| n.ends_with(".max")),
                "{file}: no fused PReLU"
            );
            assert!(
                !names.iter().any(|n| n.ends_with(".iff")),
                "{file}: PReLU fell back to Iff"
            );
        }
    }
}
