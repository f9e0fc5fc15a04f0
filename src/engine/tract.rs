//! The default engine: tract (pure Rust ONNX inference).
//!
//! Models are parsed once. The classifiers have fixed shapes and get one optimized plan each.
//! The detector's input size follows the image's aspect ratio, so its optimized plans are built
//! per input size (about 0.1 s each) and kept in a bounded LRU cache. Plans are `Send + Sync`
//! and shared by all threads without locks; only the cache lookup takes a short mutex.

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
    detector: InferenceModel,
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
        let detector = parse(&read_verified(dir, det)?, &det.file)?;
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
        let plan = optimize(self.detector.clone(), [1, 3, h, w], "detector")?;
        if let Ok(mut c) = self.plans.lock() {
            c.put((w, h), plan.clone());
        }
        Ok(plan)
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
        if out.len() != 2 {
            return Err(EngineError::Output {
                model: "detector",
                message: format!("{} outputs", out.len()),
            });
        }
        Ok(DetectorOutput {
            loc: to_vec(&out[0], "detector")?,
            conf: to_vec(&out[1], "detector")?,
        })
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

    #[test]
    fn prelu_becomes_mul_max_in_the_classifiers() {
        let dir = std::env::var_os("LIVECHECK_MODEL_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/models"));
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
