//! The default engine: tract (pure Rust ONNX inference).
//!
//! Models are parsed once. The classifiers have fixed shapes and get one optimized plan each.
//!
//! The detector's input size follows the image's aspect ratio, and tract's fast kernels need
//! concrete shapes, so optimized detector plans are built per input size and kept in a bounded
//! LRU cache, keyed by a *canvas* size (below). To make a new size cheap, the detector is cut before its output head
//! (Transpose/Flatten/Concat/Reshape/Softmax, which cannot be typed with symbolic H/W: tract
//! cannot divide a sum of symbol products), typed and decluttered **once** with symbolic H and W,
//! and a new size only substitutes the symbols and runs the codegen passes (~40 ms instead of
//! ~130 ms for a plan from the ONNX graph). The head is six reshapes and a two-way softmax per
//! prior, done here in Rust ([`assemble_head`]); tract's softmax over an axis of length 2 was
//! 9% of the detector's time. Plans are `Send + Sync` and shared by all threads without locks;
//! only the cache lookup takes a short mutex.
//!
//! **Canvases.** Image aspect ratios vary freely (the devset has 214 detector sizes in 312
//! images), and even a cheap plan build (~40 ms) costs more than running it (~7 ms). So an
//! input of a size without a plan is placed at the top-left of a zero canvas whose sides are
//! rounded up to [`DETECTOR_CANVAS_STEP`], and one plan serves every size that rounds to that
//! canvas. That is exact, not an approximation: the detector is convolutions (3x3, stride 1 or
//! 2, zero padding 1; 1x1), element-wise ops and 2x2/stride-2 transposed convolutions cropped to
//! the lateral map. A valid output cell only reads valid cells, except that a 3x3 convolution at
//! the valid border reads one cell past it, which the real network sees as zero padding. So at
//! load time a multiplication by a 0/1 mask (an extra model input per feature-map resolution) is
//! inserted in front of every convolution wider than 1x1: cells past the valid region are zero
//! exactly where the real network pads, and the valid region of every map, heads included,
//! holds the values the network computes at the exact size. The heads are cropped to the valid
//! region in [`assemble_head`]. `headless_detector_matches_the_full_model` checks it against the
//! full ONNX model at sizes that do and do not land on a canvas.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use tract_onnx::prelude::*;
use tract_onnx::tract_core;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::expandable::expand;

mod depthwise;
mod direct;
mod graph;
mod isa;

use self::depthwise::fuse_depthwise;
pub use self::direct::{amx_available, bf16_available, bf16_pays, fast_kernels, Product};
use self::direct::{fuse_dense3x3, fuse_pointwise};
pub use self::isa::Isa;
use super::{DetectorOutput, Engine, EngineError, FinderOutput};
use crate::models::LoadedSet;
use crate::LoadError;

/// A runnable tract plan, shared between the threads that run it.
pub type Plan = Arc<TypedRunnableModel>;

/// How many detector plans (canvas sizes) are kept. The devset's 312 images need 20 canvases at
/// step 32; `livecheck check` over it peaks at about 160-170 MB RSS with all of them cached
/// (`scripts/bench.sh`), so 24 leaves room for other aspect ratios without evictions.
pub const DETECTOR_PLAN_CACHE: usize = 24;

/// Canvas sides are multiples of this (see the module documentation), except for the sizes in
/// [`EXACT_DETECTOR_SIZES`]. A coarser step means fewer plans to build but more padding to run:
/// measured on the devset (throughput bench, 1 thread), step 16 gave 38 canvases and 25.4 ms per
/// image (detect 13.3, with a 16-plan cache), step 32 gave 20 canvases, 19% more area on
/// average, and 19.2 ms (detect 8.0).
pub const DETECTOR_CANVAS_STEP: usize = 32;

/// Detector input sizes (w, h) that run on a plan of their own size instead of a rounded-up
/// canvas, built at load time: 3:4 (e.g. 480x640) and 9:16 (e.g. 1080x1920) photos, portrait
/// and landscape, the common phone geometries.
pub const EXACT_DETECTOR_SIZES: [(usize, usize); 4] =
    [(166, 221), (221, 166), (144, 256), (256, 144)];

/// The canvas a detector input of `w` x `h` runs on.
pub fn detector_canvas(w: usize, h: usize) -> (usize, usize) {
    if EXACT_DETECTOR_SIZES.contains(&(w, h)) {
        return (w, h);
    }
    let up = |v: usize| v.div_ceil(DETECTOR_CANVAS_STEP) * DETECTOR_CANVAS_STEP;
    (up(w), up(h))
}

/// Which convolution kernels the engine runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Kernels {
    /// The engine's own fused kernels where they are fast on this CPU (3x3 depthwise everywhere;
    /// 1x1 and dense 3x3 where AVX-512F or AVX2 + FMA is present), tract's elsewhere. Each
    /// kernel takes its widest path this CPU runs ([`Isa`]).
    #[default]
    Fused,
    /// [`Kernels::Fused`] with the AVX2 + FMA paths even where the CPU has AVX-512: the same
    /// f32 bits, at the speed of CPUs without AVX-512 (AMD Zen 2/3, hypervisors that hide it).
    /// For measuring and testing that deployment case on any x86-64 machine; tract's own kernels
    /// (the few operations the engine leaves to tract) still choose by the CPU.
    Avx2,
    /// [`Kernels::Fused`] with the classifiers' (and the face finder's) 1x1 and dense 3x3
    /// products in bfloat16 where the CPU has AVX512-BF16 ([`bf16_available`]), the 1x1 ones on
    /// AMX tiles where the CPU has AMX-BF16 and Linux grants it ([`amx_available`]), exactly
    /// [`Kernels::Fused`] elsewhere. The detector, and each network's first convolution (the
    /// one that reads the image), stay in f32. Weights and activations keep 8 significant bits,
    /// so p_real moves slightly from the reference recipe's (`docs/benchmarks.md` measures by
    /// how much, and the verdicts' agreement on the devset).
    Bf16,
    /// tract's kernels only: what the models cost without the engine's own (for comparison with
    /// other runtimes, and as a fallback).
    Tract,
    /// [`Kernels::Bf16`] where bf16 runs faster than f32 on this CPU ([`bf16_pays`]: AMX, or an
    /// AMD core with AVX512-BF16), [`Kernels::Fused`] elsewhere. The CLI's default. The choice
    /// depends on the CPU only, never on a timing, so one machine always gives the same bits.
    /// The engine resolves it when it loads ([`Kernels::resolve`]).
    Auto,
}

/// A kernel choice by its name on the command line: `auto`, `bf16`, `fused`, `avx2` or `tract`.
impl std::str::FromStr for Kernels {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fused" => Ok(Kernels::Fused),
            "bf16" => Ok(Kernels::Bf16),
            "avx2" => Ok(Kernels::Avx2),
            "tract" => Ok(Kernels::Tract),
            "auto" => Ok(Kernels::Auto),
            other => Err(format!(
                "{other:?} is not `auto`, `bf16`, `fused`, `avx2` or `tract`"
            )),
        }
    }
}

impl Kernels {
    /// The choice [`Kernels::Auto`] makes on this CPU; any other choice is itself.
    pub fn resolve(self) -> Kernels {
        match self {
            Kernels::Auto if bf16_pays() => Kernels::Bf16,
            Kernels::Auto => Kernels::Fused,
            other => other,
        }
    }

    /// What these kernels run on this CPU, in words (for logs and reports).
    pub fn describe(self) -> &'static str {
        let this = self.resolve();
        #[cfg(target_arch = "x86_64")]
        let avx512 = std::arch::is_x86_feature_detected!("avx512f");
        #[cfg(not(target_arch = "x86_64"))]
        let avx512 = false;
        match this {
            Kernels::Tract => "tract's own",
            _ if !fast_kernels() => {
                "fused depthwise, tract's own for the rest (no AVX-512 or AVX2 + FMA)"
            }
            Kernels::Bf16 if bf16_available() && amx_available() => {
                "fused, classifiers in bf16 (1x1 on AMX tiles, AVX512-BF16 elsewhere), detector in f32"
            }
            Kernels::Bf16 if bf16_available() => {
                "fused, classifiers in bf16 (AVX512-BF16), detector in f32"
            }
            Kernels::Avx2 if avx512 => "fused, f32 (AVX2 + FMA; AVX-512 present, not used)",
            _ if avx512 => "fused, f32 (AVX-512)",
            _ => "fused, f32 (AVX2 + FMA)",
        }
    }

    /// The widest tier the engine's own kernels may take under this choice.
    fn isa_cap(self) -> Isa {
        match self {
            Kernels::Avx2 => Isa::Avx2Fma,
            _ => Isa::Avx512,
        }
    }
}

pub struct TractEngine {
    kernels: Kernels,
    /// The detector up to its six head convolutions, typed and decluttered with symbolic H/W,
    /// with canvas masks as extra inputs.
    detector: TypedModel,
    height: Symbol,
    width: Symbol,
    /// Rank and symbolic (H, W) of each mask input, in input order after the image.
    masks: Vec<MaskDims>,
    /// Symbolic (H, W) of each head output.
    heads: Vec<(TDim, TDim)>,
    plans: Mutex<lru::LruCache<(usize, usize), Plan>>,
    /// One plan per classifier of the set, in set order.
    classifiers: Vec<ClassifierPlan>,
    /// The set's face finder, if it has one.
    finder: Option<FinderPlan>,
}

struct FinderPlan {
    size: usize,
    plan: Plan,
}

/// The face finder's outputs the pipeline reads, in [`FinderOutput`] order (ONNX output names of
/// YuNet, as OpenCV's `FaceDetectorYN` reads them; the landmark heads are left out of the plan).
pub const FINDER_OUTPUTS: [&str; 9] = [
    "cls_8", "cls_16", "cls_32", "obj_8", "obj_16", "obj_32", "bbox_8", "bbox_16", "bbox_32",
];

struct ClassifierPlan {
    name: String,
    size: usize,
    plan: Plan,
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

/// A classifier file, ignoring its `value_info`: some exports (face-antispoof-onnx's) pin a
/// symbolic batch there that contradicts the fixed input fact; the input fact decides shapes.
fn parse_classifier(bytes: &[u8], file: &str) -> Result<InferenceModel, EngineError> {
    let mut onnx = tract_onnx::onnx().with_ignore_value_info(true);
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

/// Rank and symbolic spatial size of one canvas mask input.
#[derive(Debug, Clone)]
struct MaskDims {
    rank: usize,
    hw: (TDim, TDim),
}

/// The decluttered, cut detector with its symbols and the symbolic (H, W) of its mask inputs
/// and head outputs.
struct Headless {
    model: TypedModel,
    h: Symbol,
    w: Symbol,
    masks: Vec<MaskDims>,
    heads: Vec<(TDim, TDim)>,
}

/// (H, W) of an NCHW or CHW tensor (tract's declutter drops the unit batch axis inside the
/// network).
fn spatial(fact: &TypedFact) -> TractResult<(TDim, TDim)> {
    match fact.shape.dims() {
        [_, _, h, w] | [_, h, w] => Ok((h.clone(), w.clone())),
        dims => bail!("expected an NCHW or CHW tensor, got {dims:?}"),
    }
}

/// Put a multiplication by a 0/1 mask (a new model input, one per distinct feature-map size) in
/// front of every convolution with a kernel wider than 1x1, so that cells past the valid region
/// of a canvas read as the zero padding of the exact-size network (see the module docs).
fn insert_canvas_masks(model: &mut TypedModel) -> TractResult<Vec<MaskDims>> {
    use tract_core::ops::cnn::Conv;
    // One mask input per (rank, H, W): [1, 1, H, W] for NCHW maps, [1, H, W] for CHW ones.
    let mut masks: Vec<((usize, TDim, TDim), OutletId)> = Vec::new();
    let mut masked: Vec<(OutletId, OutletId)> = Vec::new();
    let convs: Vec<usize> = model
        .nodes()
        .iter()
        .filter(|n| {
            n.op_as::<Conv>()
                .is_some_and(|c| c.pool_spec.kernel_shape.iter().any(|&k| k > 1))
        })
        .map(|n| n.id)
        .collect();
    for conv in convs {
        let input = model.node(conv).inputs[0];
        if model.input_outlets()?.contains(&input) {
            // The image itself: the canvas is zero past the valid region already.
            continue;
        }
        let outlet = if let Some((_, m)) = masked.iter().find(|(i, _)| *i == input) {
            *m
        } else {
            let fact = model.outlet_fact(input)?;
            let (h, w) = spatial(fact)?;
            let key = (fact.rank(), h, w);
            let mask = match masks.iter().find(|(k, _)| *k == key) {
                Some((_, m)) => *m,
                None => {
                    let mut shape: TVec<TDim> = tvec![1.to_dim(); key.0 - 2];
                    shape.push(key.1.clone());
                    shape.push(key.2.clone());
                    let name = format!("canvas_mask_{}", masks.len());
                    let m = model.add_source(name, f32::fact(shape))?;
                    masks.push((key, m));
                    m
                }
            };
            let name = format!("{}.canvas_mask", model.node(conv).name);
            let m = model.wire_node(name, tract_core::ops::math::mul(), &[input, mask])?[0];
            masked.push((input, m));
            m
        };
        model.add_edge(outlet, InletId::new(conv, 0))?;
    }
    Ok(masks
        .into_iter()
        .map(|((rank, h, w), _)| MaskDims { rank, hw: (h, w) })
        .collect())
}

/// Cut the detector after its head convolutions, type it with symbolic height and width, and
/// give it canvas masks.
fn headless_detector(model: InferenceModel) -> TractResult<Headless> {
    let h = model.symbols.sym("h");
    let w = model.symbols.sym("w");
    let mut typed = model
        .with_input_fact(
            0,
            f32::fact([1.to_dim(), 3.to_dim(), h.to_dim(), w.to_dim()]).into(),
        )?
        .with_outputs_by_name(DETECTOR_HEADS)?
        // Drop the head nodes, which cannot be typed with symbolic shapes.
        .into_compact()?
        .into_typed()?
        .into_decluttered()?;
    let masks = insert_canvas_masks(&mut typed)?;
    let typed = typed.into_compact()?;
    let heads = typed
        .output_outlets()?
        .iter()
        .map(|o| spatial(typed.outlet_fact(*o)?))
        .collect::<TractResult<Vec<_>>>()?;
    Ok(Headless {
        model: typed,
        h,
        w,
        masks,
        heads,
    })
}

/// Rebuild the detector's `loc` `[P,4]` and softmaxed `conf` `[P,2]` outputs from its six head
/// convolutions (NCHW, pairs of (loc, conf) per level): per level, NCHW → NHWC and flatten
/// (the model's Transpose + Flatten), levels concatenated, and a softmax over each prior's two
/// scores. `valid[i]` is the (H, W) of level i's valid region (the top-left corner of a canvas
/// map); cells outside it are skipped.
pub fn assemble_head(
    heads: &[(&[usize], &[f32])],
    valid: &[(usize, usize)],
) -> Result<DetectorOutput, String> {
    if !heads.len().is_multiple_of(2) || valid.len() * 2 != heads.len() {
        return Err(format!(
            "{} head outputs for {} levels",
            heads.len(),
            valid.len()
        ));
    }
    let mut out = DetectorOutput::default();
    for (pair, &(vh, vw)) in heads.chunks_exact(2).zip(valid) {
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
        if vh > lh || vw > lw {
            return Err(format!("valid region {vh}x{vw} outside a {lh}x{lw} map"));
        }
        out.loc.reserve(lc * vh * vw);
        out.conf.reserve(cc * vh * vw);
        for p in (0..vh).flat_map(|y| (0..vw).map(move |x| y * lw + x)) {
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

/// The engine's own kernels in place of tract's before codegen: 3x3 depthwise convolutions
/// ([`fuse_depthwise`]), 1x1 convolutions ([`fuse_pointwise`]) and dense 3x3 convolutions
/// ([`fuse_dense3x3`]), each with the per-channel affine and activation after it folded in.
/// The last two only where one of their vector kernels runs (AVX-512F, or AVX2 + FMA:
/// [`fast_kernels`]): elsewhere tract's own kernels keep them. Nothing with
/// [`Kernels::Tract`]; no kernel wider than [`Kernels::Avx2`] allows.
fn fuse(model: &mut TypedModel, kernels: Kernels) -> TractResult<()> {
    let kernels = kernels.resolve();
    if kernels == Kernels::Tract {
        return Ok(());
    }
    let isa = Isa::capped(kernels.isa_cap());
    fuse_depthwise(model, isa)?;
    if isa >= Isa::Avx2Fma {
        // bf16 needs AVX-512 (AVX512-BF16), which `Kernels::Avx2` never takes.
        let bf16 = kernels == Kernels::Bf16 && bf16_available() && isa == Isa::Avx512;
        fuse_pointwise(model, bf16, isa)?;
        fuse_dense3x3(model, bf16, isa)?;
    }
    Ok(())
}

/// An optimized plan at a fixed input shape; `outputs` (ONNX names) replaces the model's own
/// outputs when given, and whatever only they did not need is pruned.
fn optimize(
    model: InferenceModel,
    shape: [usize; 4],
    outputs: Option<&[&str]>,
    file: &str,
    kernels: Kernels,
) -> Result<Plan, EngineError> {
    let build = || -> TractResult<Plan> {
        let mut model = model.with_input_fact(0, f32::fact(shape).into())?;
        if let Some(names) = outputs {
            model = model.with_outputs_by_name(names)?;
        }
        let mut typed = model.into_typed()?.into_decluttered()?;
        fuse(&mut typed, kernels)?;
        typed.into_optimized()?.into_runnable()
    };
    build().map_err(|e| load_err(file, e))
}

/// An optimized plan for one model file as the engine builds its classifier plans (PReLU as
/// mul + max, the fused kernels `kernels` chooses) at a fixed input shape; for profiling
/// (`examples/profile_ops.rs`).
pub fn optimized_plan(
    bytes: &[u8],
    file: &str,
    shape: [usize; 4],
    kernels: Kernels,
) -> Result<Plan, EngineError> {
    optimize(parse_classifier(bytes, file)?, shape, None, file, kernels)
}

/// The multiply-adds one run of `op` does when it writes `output` (its output's shape), for the
/// engine's own convolutions (1x1, dense 3x3 and depthwise 3x3); `None` for any other
/// operation. For profiling: a node's time against its work says how near the CPU's
/// multiply-add rate a kernel runs.
pub fn fused_op_macs(op: &dyn tract_core::ops::Op, output: &[usize]) -> Option<u64> {
    // Channels-first outputs: a 3x3 convolution's positions are its last two axes (`[N,] C, H,
    // W`); a 1x1 one's are all its values over its output channels (tract's einsums drop or add
    // the batch axis, and may flatten H and W).
    let positions =
        |axes: usize| -> u64 { output.iter().rev().take(axes).product::<usize>() as u64 };
    if let Some(p) = op.downcast_ref::<direct::Pointwise>() {
        let (k, co) = p.shape();
        let pixels = output.iter().product::<usize>() / co.max(1);
        return Some((k * co * pixels) as u64);
    }
    if let Some(d) = op.downcast_ref::<direct::Dense3x3>() {
        let (ci, co) = d.shape();
        return Some((ci * 9 * co) as u64 * positions(2));
    }
    if let Some(d) = op.downcast_ref::<depthwise::Depthwise3x3>() {
        return Some(9 * d.channels() as u64 * positions(2));
    }
    None
}

impl TractEngine {
    /// Load and verify (SHA-256) the detector and every classifier of `set`, with the fused
    /// kernels.
    pub fn load(set: &LoadedSet) -> Result<TractEngine, LoadError> {
        Self::load_with(set, Kernels::Fused)
    }

    /// [`TractEngine::load`] with a choice of kernels.
    pub fn load_with(set: &LoadedSet, kernels: Kernels) -> Result<TractEngine, LoadError> {
        let kernels = kernels.resolve();
        let det = &set.set.detector;
        let headless = headless_detector(parse(&set.read(det)?, &det.file)?)
            .map_err(|e| load_err(&det.file, e))?;
        let classifiers = set
            .set
            .classifiers
            .iter()
            .map(|m| -> Result<ClassifierPlan, LoadError> {
                let file = &m.model.file;
                let plan = optimize(
                    parse_classifier(&set.read(&m.model)?, file)?,
                    [1, 3, m.size, m.size],
                    None,
                    file,
                    kernels,
                )?;
                Ok(ClassifierPlan {
                    name: m.name.clone(),
                    size: m.size,
                    plan,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let finder = set
            .set
            .face_finder
            .as_ref()
            .map(|f| -> Result<FinderPlan, LoadError> {
                let file = &f.model.file;
                let plan = optimize(
                    parse_classifier(&set.read(&f.model)?, file)?,
                    [1, 3, f.size, f.size],
                    Some(&FINDER_OUTPUTS),
                    file,
                    kernels,
                )?;
                Ok(FinderPlan { size: f.size, plan })
            })
            .transpose()?;
        let cap = NonZeroUsize::new(DETECTOR_PLAN_CACHE).unwrap_or(NonZeroUsize::MIN);
        let engine = TractEngine {
            kernels,
            detector: headless.model,
            height: headless.h,
            width: headless.w,
            masks: headless.masks,
            heads: headless.heads,
            plans: Mutex::new(lru::LruCache::new(cap)),
            classifiers,
            finder,
        };
        for (w, h) in EXACT_DETECTOR_SIZES {
            engine.detector_plan(w, h)?;
        }
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
        // The detector stays in f32 under `Kernels::Bf16`. Its boxes are whole pixels, and the
        // classifiers are sensitive to where the crop falls: bf16 in the detector alone left
        // most devset boxes as they were but moved p_real by up to 0.135 where a box moved,
        // and changed 5 of 312 verdicts (docs/benchmarks.md, session 20).
        let kernels = match self.kernels {
            Kernels::Bf16 => Kernels::Fused,
            k => k,
        };
        fuse(&mut model, kernels)?;
        model.optimize()?;
        model.into_runnable()
    }

    /// Evaluate symbolic (H, W) pairs at a detector input size.
    fn eval_dims<'a>(
        &self,
        dims: impl IntoIterator<Item = &'a (TDim, TDim)>,
        w: usize,
        h: usize,
    ) -> TractResult<Vec<(usize, usize)>> {
        let values = SymbolValues::default()
            .with(&self.height, h as i64)
            .with(&self.width, w as i64);
        dims.into_iter()
            .map(|(dh, dw)| {
                let eval = |d: &TDim| -> TractResult<usize> {
                    Ok(usize::try_from(d.eval_to_i64(&values)?)?)
                };
                Ok((eval(dh)?, eval(dw)?))
            })
            .collect()
    }

    /// The detector's inputs for an image of `w` x `h` on a `cw` x `ch` canvas: the image at
    /// the canvas's top-left corner, zeros elsewhere, and the 0/1 masks of every map's valid region.
    fn canvas_inputs(
        &self,
        input: &[f32],
        (w, h): (usize, usize),
        (cw, ch): (usize, usize),
    ) -> TractResult<TVec<TValue>> {
        let image = if (cw, ch) == (w, h) {
            Tensor::from_shape(&[1, 3, h, w], input)?
        } else {
            let mut canvas = vec![0f32; 3 * ch * cw];
            for (src, dst) in input
                .chunks_exact(h * w)
                .zip(canvas.chunks_exact_mut(ch * cw))
            {
                for (s, d) in src.chunks_exact(w).zip(dst.chunks_exact_mut(cw)) {
                    d[..w].copy_from_slice(s);
                }
            }
            Tensor::from_shape(&[1, 3, ch, cw], &canvas)?
        };
        let mut inputs: TVec<TValue> = tvec!(image.into());
        let hw = || self.masks.iter().map(|m| &m.hw);
        let full = self.eval_dims(hw(), cw, ch)?;
        let valid = self.eval_dims(hw(), w, h)?;
        for ((&(mh, mw), &(vh, vw)), m) in full.iter().zip(&valid).zip(&self.masks) {
            let mut mask = vec![0f32; mh * mw];
            for row in mask.chunks_exact_mut(mw).take(vh) {
                row[..vw].fill(1.0);
            }
            let mut shape = vec![1usize; m.rank - 2];
            shape.extend([mh, mw]);
            inputs.push(Tensor::from_shape(&shape, &mask)?.into());
        }
        Ok(inputs)
    }

    /// Number of detector plans currently cached.
    pub fn cached_detector_plans(&self) -> usize {
        self.plans.lock().map(|c| c.len()).unwrap_or(0)
    }
}

fn run_err(model: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Run {
        model: model.to_string(),
        message: format!("{e:#}"),
    }
}

fn to_vec(t: &TValue, model: &str) -> Result<Vec<f32>, EngineError> {
    let view = t
        .to_plain_array_view::<f32>()
        .map_err(|e| EngineError::Output {
            model: model.to_string(),
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
        if input.len() != 3 * width * height || width == 0 || height == 0 {
            return Err(run_err(
                "detector",
                format!("{} values for a {width}x{height} input", input.len()),
            ));
        }
        let canvas = detector_canvas(width, height);
        let plan = self.detector_plan(canvas.0, canvas.1)?;
        let inputs = self
            .canvas_inputs(input, (width, height), canvas)
            .map_err(|e| run_err("detector", e))?;
        let out = plan.run(inputs).map_err(|e| run_err("detector", e))?;
        let output_err = |message: String| EngineError::Output {
            model: "detector".to_string(),
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
        let valid = self
            .eval_dims(&self.heads, width, height)
            .map_err(|e| output_err(e.to_string()))?;
        let levels: Vec<(usize, usize)> = valid.iter().step_by(2).copied().collect();
        assemble_head(&heads, &levels).map_err(output_err)
    }

    fn classify(&self, member: usize, input: &[f32]) -> Result<Vec<f32>, EngineError> {
        let c = self
            .classifiers
            .get(member)
            .ok_or_else(|| EngineError::Run {
                model: format!("classifier #{member}"),
                message: format!("the set has {} classifiers", self.classifiers.len()),
            })?;
        let name = c.name.as_str();
        let t = Tensor::from_shape(&[1, 3, c.size, c.size], input).map_err(|e| run_err(name, e))?;
        let out = c.plan.run(tvec!(t.into())).map_err(|e| run_err(name, e))?;
        let v = out
            .first()
            .map(|o| to_vec(o, name))
            .transpose()?
            .unwrap_or_default();
        if v.is_empty() || v.iter().any(|x| !x.is_finite()) {
            return Err(EngineError::NonFinite {
                model: name.to_string(),
                logits: v,
            });
        }
        Ok(v)
    }

    fn find_faces(&self, input: &[f32]) -> Result<FinderOutput, EngineError> {
        const NAME: &str = "face finder";
        let f = self
            .finder
            .as_ref()
            .ok_or_else(|| run_err(NAME, "the model set has no face finder"))?;
        let t = Tensor::from_shape(&[1, 3, f.size, f.size], input).map_err(|e| run_err(NAME, e))?;
        let out = f.plan.run(tvec!(t.into())).map_err(|e| run_err(NAME, e))?;
        if out.len() != FINDER_OUTPUTS.len() {
            return Err(EngineError::Output {
                model: NAME.to_string(),
                message: format!("{} outputs, expected {}", out.len(), FINDER_OUTPUTS.len()),
            });
        }
        let v = out
            .iter()
            .map(|o| to_vec(o, NAME))
            .collect::<Result<Vec<_>, _>>()?;
        let mut levels = v.into_iter();
        let mut three =
            || -> [Vec<f32>; 3] { std::array::from_fn(|_| levels.next().unwrap_or_default()) };
        Ok(FinderOutput {
            cls: three(),
            obj: three(),
            bbox: three(),
        })
    }

    fn name(&self) -> &'static str {
        "tract"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_names_parse() {
        for (name, k) in [
            ("bf16", Kernels::Bf16),
            ("fused", Kernels::Fused),
            ("avx2", Kernels::Avx2),
            ("tract", Kernels::Tract),
            ("auto", Kernels::Auto),
        ] {
            assert_eq!(name.parse::<Kernels>(), Ok(k));
        }
        assert_eq!(
            "avx512".parse::<Kernels>(),
            Err("\"avx512\" is not `auto`, `bf16`, `fused`, `avx2` or `tract`".to_string())
        );
    }

    /// `auto` is bf16 exactly where [`bf16_pays`] says so, read here from the CPU's own
    /// description (`/proc/cpuinfo`) rather than through the function under test; every other
    /// choice resolves to itself.
    #[test]
    fn auto_takes_bf16_where_it_pays() {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let flags: Vec<&str> = cpuinfo
            .lines()
            .find(|l| l.starts_with("flags"))
            .map(|l| l.split_whitespace().collect())
            .unwrap_or_default();
        let amd = cpuinfo
            .lines()
            .any(|l| l.starts_with("vendor_id") && l.ends_with("AuthenticAMD"));
        let has = |f: &str| flags.contains(&f);
        if cfg!(target_arch = "x86_64") && !flags.is_empty() {
            let vdpbf16ps = has("avx512f") && has("avx512bw") && has("avx512_bf16");
            let expected = vdpbf16ps && (amd || amx_available());
            assert_eq!(
                bf16_pays(),
                expected,
                "vendor AMD {amd}, AVX512-BF16 {vdpbf16ps}"
            );
            let want = if expected {
                Kernels::Bf16
            } else {
                Kernels::Fused
            };
            assert_eq!(Kernels::Auto.resolve(), want);
            eprintln!(
                "note: `auto` is {want:?} here ({})",
                Kernels::Auto.describe()
            );
        }
        for k in [Kernels::Fused, Kernels::Bf16, Kernels::Avx2, Kernels::Tract] {
            assert_eq!(k.resolve(), k);
        }
        assert_eq!(Kernels::Auto.describe(), Kernels::Auto.resolve().describe());
    }

    fn model_dir() -> std::path::PathBuf {
        std::env::var_os("LIVECHECK_MODEL_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models"))
    }

    fn test_set(name: &str) -> LoadedSet {
        LoadedSet::resolve(Some(name), Some(&model_dir())).unwrap()
    }

    #[test]
    fn assemble_head_transposes_levels_and_softmaxes_pairs() {
        // One level, 1x2 cells, 1 anchor: loc channels 4, conf channels 2 (NCHW).
        let loc: Vec<f32> = vec![0., 10., 1., 11., 2., 12., 3., 13.];
        let conf: Vec<f32> = vec![0.0, 1.0, 0.0, -1.0];
        let out =
            assemble_head(&[(&[1, 4, 1, 2], &loc), (&[1, 2, 1, 2], &conf)], &[(1, 2)]).unwrap();
        assert_eq!(out.loc, vec![0., 1., 2., 3., 10., 11., 12., 13.]);
        assert_eq!(out.len(), 2);
        assert!((out.conf[0] - 0.5).abs() < 1e-7 && (out.conf[1] - 0.5).abs() < 1e-7);
        // Second cell: background logit 1, face logit -1.
        let e2 = 2.0f32.exp();
        assert!((out.conf[3] - 1.0 / (1.0 + e2)).abs() < 1e-7);
        assert!((out.conf[2] + out.conf[3] - 1.0).abs() < 1e-7);
        // A valid region of one cell (a canvas map): only the first cell is kept.
        let one =
            assemble_head(&[(&[1, 4, 1, 2], &loc), (&[1, 2, 1, 2], &conf)], &[(1, 1)]).unwrap();
        assert_eq!(one.loc, vec![0., 1., 2., 3.]);
        assert_eq!(one.len(), 1);
        // Mismatched shapes are an error, not a panic.
        assert!(assemble_head(&[(&[1, 4, 1, 2], &loc)], &[(1, 2)]).is_err());
        assert!(assemble_head(&[(&[1, 4, 1, 2], &loc), (&[1, 4, 1, 2], &loc)], &[(1, 2)]).is_err());
        assert!(
            assemble_head(&[(&[1, 4, 2, 2], &loc), (&[1, 2, 2, 2], &conf)], &[(2, 2)]).is_err()
        );
        assert!(
            assemble_head(&[(&[1, 4, 1, 2], &loc), (&[1, 2, 1, 2], &conf)], &[(2, 2)]).is_err()
        );
        assert!(assemble_head(&[(&[1, 4, 1, 2], &loc), (&[1, 2, 1, 2], &conf)], &[]).is_err());
    }

    #[test]
    fn canvases_cover_the_input_on_the_step_grid() {
        for (w, h) in EXACT_DETECTOR_SIZES {
            assert_eq!(detector_canvas(w, h), (w, h));
        }
        for (w, h) in [(1, 1), (32, 32), (33, 31), (150, 200), (301, 40), (5000, 7)] {
            let (cw, ch) = detector_canvas(w, h);
            assert!(
                cw >= w
                    && ch >= h
                    && cw - w < DETECTOR_CANVAS_STEP
                    && ch - h < DETECTOR_CANVAS_STEP
            );
            assert!(
                cw.is_multiple_of(DETECTOR_CANVAS_STEP) && ch.is_multiple_of(DETECTOR_CANVAS_STEP)
            );
        }
    }

    /// The cut detector with the head rebuilt in Rust gives the full ONNX model's outputs, at
    /// the sample geometry (its own plan) and at odd, tiny and extreme sizes that run on a
    /// larger canvas (the upsampling crops differ), and at a size that is its own canvas.
    #[test]
    fn headless_detector_matches_the_full_model() {
        let engine = TractEngine::load(&test_set("silentface")).unwrap();
        let bytes = std::fs::read(model_dir().join("retinaface_silentface.onnx")).unwrap();
        let full = parse(&bytes, "detector").unwrap();
        let sizes = [
            (166usize, 221usize),
            (97, 131),
            (13, 9),
            (1, 1),
            (301, 40),
            (160, 240),
            (150, 200),
        ];
        for (w, h) in sizes {
            // Deterministic pseudo-image around the mean-subtracted range.
            let input: Vec<f32> = (0..3 * w * h)
                .map(|i| ((i * 7919 % 255) as f32) - 117.0)
                .collect();
            let ours = engine.detect(&input, w, h).unwrap();
            // tract's own plan: stock depthwise convolutions, exact size, full head.
            let plan = full
                .clone()
                .with_input_fact(0, f32::fact([1, 3, h, w]).into())
                .unwrap()
                .into_optimized()
                .unwrap()
                .into_runnable()
                .unwrap();
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

    /// The classifiers with the engine's kernels ([`fuse`]) give tract's own logits; every 3x3
    /// depthwise convolution (the 5x5 global one at the end stays with tract), every 1x1
    /// convolution (an `EinSum` after declutter) and the dense 3x3 stem is replaced.
    #[test]
    fn fused_classifiers_match_tract() {
        let set = test_set("silentface-minifas128");
        let engine = TractEngine::load(&set).unwrap();
        for (which, member) in set.set.classifiers.iter().enumerate() {
            let (file, n) = (member.model.file.as_str(), member.size);
            let bytes = set.read(&member.model).unwrap();
            let mut typed = parse_classifier(&bytes, file)
                .unwrap()
                .with_input_fact(0, f32::fact([1, 3, n, n]).into())
                .unwrap()
                .into_typed()
                .unwrap()
                .into_decluttered()
                .unwrap();
            let stock = typed
                .clone()
                .into_optimized()
                .unwrap()
                .into_runnable()
                .unwrap();
            let conv3x3 = |m: &TypedModel, depthwise: bool| {
                m.nodes()
                    .iter()
                    .filter(|n| {
                        n.op_as::<tract_core::ops::cnn::Conv>().is_some_and(|c| {
                            (c.group > 1) == depthwise
                                && c.pool_spec.kernel_shape.as_slice() == [3, 3]
                        })
                    })
                    .count()
            };
            let depthwise = |m: &TypedModel| conv3x3(m, true);
            let dense = |m: &TypedModel| conv3x3(m, false);
            // 1x1 convolutions: einsums from and to a (C, H, W) activation (not the final
            // fully connected layers, whose output is flat).
            let pointwise = |m: &TypedModel| {
                m.nodes()
                    .iter()
                    .filter(|n| {
                        let spatial = |o: OutletId| m.outlet_fact(o).is_ok_and(|f| f.rank() >= 3);
                        n.op_as::<tract_core::ops::einsum::EinSum>().is_some()
                            && spatial(n.inputs[0])
                            && spatial(OutletId::new(n.id, 0))
                    })
                    .count()
            };
            let (dw, pw, dn) = (depthwise(&typed), pointwise(&typed), dense(&typed));
            let isa = Isa::detected();
            let replaced = fuse_depthwise(&mut typed, isa).unwrap();
            assert!(dw > 0 && replaced == dw, "{file}: {replaced} of {dw}");
            let replaced = fuse_pointwise(&mut typed, false, isa).unwrap();
            assert!(pw > 0 && replaced == pw, "{file}: {replaced} of {pw}");
            let replaced = fuse_dense3x3(&mut typed, false, isa).unwrap();
            assert!(dn > 0 && replaced == dn, "{file}: {replaced} of {dn}");
            let left = (depthwise(&typed), pointwise(&typed), dense(&typed));
            assert_eq!(left, (0, 0, 0), "{file}");
            for seed in 0..3usize {
                // Pixel values through the member's own normalisation (/255 for the 128 model).
                let input: Vec<f32> = (0..3 * n * n)
                    .map(|i| ((i * 7919 + seed * 104729) % 256) as f32 / member.std[0])
                    .collect();
                let t = Tensor::from_shape(&[1, 3, n, n], &input).unwrap();
                let want = to_vec(&stock.run(tvec!(t.into())).unwrap()[0], "stock").unwrap();
                let got = engine.classify(which, &input).unwrap();
                for (a, b) in got.iter().zip(&want) {
                    assert!((a - b).abs() < 1e-4, "{file}: {got:?} vs {want:?}");
                }
            }
        }
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
