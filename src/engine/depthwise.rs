//! A 3x3 depthwise convolution for tract plans, with the per-channel affine that follows it
//! (batch norm) folded into its weights and an optional ReLU.
//!
//! Why hand-written: tract 0.23 runs depthwise convolutions through a generic per-pixel
//! kernel (`DepthWiseConv`) at about 1-2 GMAC/s on this machine, and leaves the batch norm that
//! follows each of them as a separate element-wise pass. In the three models that was about
//! 4 ms of 19 per image (`examples/profile_ops.rs`). Every depthwise convolution in them is
//! 3x3, stride 1 or 2, zero padding 1, NCHW, batch 1: this module does exactly that shape
//! with row loops the compiler vectorises (AVX2 when the CPU has it), and nothing else — any
//! other convolution stays with tract.
//!
//! [`fuse_depthwise`] rewrites a concrete, decluttered model before codegen: each matching
//! `Conv` with constant weights and bias becomes a [`Depthwise3x3`], and a following
//! multiplication and addition by per-channel constants (and then `max(x, 0)`) are folded in
//! when the convolution is their only input.

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

/// Per-channel weights (`[C][3][3]`) and bias (`[C]`) of a depthwise 3x3 convolution.
#[derive(Debug, Clone)]
pub struct Depthwise3x3 {
    pub stride: usize,
    pub relu: bool,
    /// Per-channel PReLU slopes, applied as `max(x, slope * x)` (the engine's PReLU wiring).
    prelu: Option<Arc<Vec<f32>>>,
    weights: Arc<Vec<f32>>,
    bias: Arc<Vec<f32>>,
}

impl PartialEq for Depthwise3x3 {
    fn eq(&self, other: &Self) -> bool {
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        self.stride == other.stride
            && self.relu == other.relu
            && self.prelu.as_deref().map(|v| bits(v.as_slice()))
                == other.prelu.as_deref().map(|v| bits(v.as_slice()))
            && bits(&self.weights) == bits(&other.weights)
            && bits(&self.bias) == bits(&other.bias)
    }
}

impl Eq for Depthwise3x3 {}

impl Depthwise3x3 {
    pub fn new(stride: usize, weights: Vec<f32>, bias: Vec<f32>, relu: bool) -> Self {
        Depthwise3x3 {
            stride,
            relu,
            prelu: None,
            weights: Arc::new(weights),
            bias: Arc::new(bias),
        }
    }

    /// Follow the convolution by `max(x, slope * x)` with one slope per channel.
    pub fn with_prelu(mut self, slopes: Vec<f32>) -> Self {
        self.prelu = Some(Arc::new(slopes));
        self
    }

    pub fn channels(&self) -> usize {
        self.bias.len()
    }

    /// Output side for an input side `v`.
    pub fn out_side(&self, v: usize) -> usize {
        out_side(v, self.stride)
    }

    /// Run on one `[C, H, W]` plane stack into `out` (`[C, Ho, Wo]`). With `mask` (`[H, W]`),
    /// the input is multiplied by it first (the detector's canvas masks, folded in here).
    pub fn run(
        &self,
        input: &[f32],
        mask: Option<&[f32]>,
        h: usize,
        w: usize,
        out: &mut [f32],
    ) -> Result<(), String> {
        let c = self.channels();
        let (ho, wo) = (self.out_side(h), self.out_side(w));
        if h == 0 || w == 0 || input.len() != c * h * w || out.len() != c * ho * wo {
            return Err(format!(
                "depthwise: {} inputs for {c}x{h}x{w}, {} outputs for {c}x{ho}x{wo}",
                input.len(),
                out.len()
            ));
        }
        if mask.is_some_and(|m| m.len() != h * w) {
            return Err(format!("depthwise: mask of the wrong size for {h}x{w}"));
        }
        if !matches!(self.stride, 1 | 2)
            || self.weights.len() != 9 * c
            || self.prelu.as_ref().is_some_and(|p| p.len() != c)
        {
            return Err(format!(
                "depthwise: stride {} / {} weights",
                self.stride,
                self.weights.len()
            ));
        }
        let planes = Planes { input, mask, h, w };
        PADDED.with(|p| {
            let mut p = p.borrow_mut();
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above); `run_avx2` is plain safe
                // Rust compiled with AVX2 enabled.
                unsafe { run_avx2(self, planes, out, &mut p) };
                return;
            }
            run_planes(self, planes, out, &mut p);
        });
        Ok(())
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn run_avx2(op: &Depthwise3x3, x: Planes<'_>, out: &mut [f32], p: &mut Vec<f32>) {
    run_planes(op, x, out, p)
}

/// A `[C, H, W]` input and its optional `[H, W]` mask.
#[derive(Clone, Copy)]
struct Planes<'a> {
    input: &'a [f32],
    mask: Option<&'a [f32]>,
    h: usize,
    w: usize,
}

thread_local! {
    static PADDED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One output row: `row[x] = bias + sum of the nine taps`, where `a`, `b`, `c` are the slices
/// of each of the three padded input rows under taps 0, 1 and 2.
// Indexing ten slices cut to the same length is clearer than a ten-way zip, and the compiler
// drops the bounds checks and vectorises it.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn accumulate(
    row: &mut [f32],
    bias: f32,
    k: &[f32],
    a: [&[f32]; 3],
    b: [&[f32]; 3],
    c: [&[f32]; 3],
) {
    let n = row.len();
    let [a0, a1, a2] = a.map(|s| &s[..n]);
    let [b0, b1, b2] = b.map(|s| &s[..n]);
    let [c0, c1, c2] = c.map(|s| &s[..n]);
    let k: &[f32; 9] = match k.try_into() {
        Ok(k) => k,
        Err(_) => return,
    };
    for i in 0..n {
        let r0 = k[0] * a0[i] + k[1] * b0[i] + k[2] * c0[i];
        let r1 = k[3] * a1[i] + k[4] * b1[i] + k[5] * c1[i];
        let r2 = k[6] * a2[i] + k[7] * b2[i] + k[8] * c2[i];
        row[i] = bias + r0 + r1 + r2;
    }
}

#[inline(always)]
fn run_planes(op: &Depthwise3x3, x: Planes<'_>, out: &mut [f32], p: &mut Vec<f32>) {
    let Planes { input, mask, h, w } = x;
    let (ho, wo) = (op.out_side(h), op.out_side(w));
    let (ph, pw) = (h + 2, w + 2);
    // Even padded columns first, then odd ones, for stride 2 (see below).
    let half = pw.div_ceil(2);
    p.clear();
    p.resize(ph * pw, 0.0);
    for (ch, ((plane, o), (k, &b))) in input
        .chunks_exact(h * w)
        .zip(out.chunks_exact_mut(ho * wo))
        .zip(op.weights.chunks_exact(9).zip(op.bias.iter()))
        .enumerate()
    {
        let slope = op.prelu.as_ref().and_then(|p| p.get(ch).copied());
        // Zero-padded copy of the plane (borders are never written, so they stay zero). For
        // stride 2 the padded columns are split into even and odd halves so that every tap
        // reads a contiguous slice: padded column j + 1 holds input column j.
        for (y, (src, dst)) in plane
            .chunks_exact(w)
            .zip(p.chunks_exact_mut(pw).skip(1))
            .enumerate()
        {
            let m = mask.map(|m| &m[y * w..(y + 1) * w]);
            if op.stride == 1 {
                let dst = &mut dst[1..=w];
                match m {
                    Some(m) => {
                        for ((d, s), m) in dst.iter_mut().zip(src).zip(m) {
                            *d = s * m;
                        }
                    }
                    None => dst.copy_from_slice(src),
                }
            } else {
                // Input column i is padded column i + 1: even input columns are odd padded
                // ones (odd[i / 2]), odd input columns even padded ones (even[i / 2 + 1]).
                let (even, odd) = dst.split_at_mut(half);
                let (odd, even) = (&mut odd[..w.div_ceil(2)], &mut even[1..=w / 2]);
                match m {
                    Some(m) => {
                        let pairs = src.chunks_exact(2).zip(m.chunks_exact(2));
                        for ((s, m), (o, e)) in pairs.zip(odd.iter_mut().zip(even.iter_mut())) {
                            *o = s[0] * m[0];
                            *e = s[1] * m[1];
                        }
                        if w % 2 == 1 {
                            odd[w / 2] = src[w - 1] * m[w - 1];
                        }
                    }
                    None => {
                        for (s, (o, e)) in
                            src.chunks_exact(2).zip(odd.iter_mut().zip(even.iter_mut()))
                        {
                            *o = s[0];
                            *e = s[1];
                        }
                        if w % 2 == 1 {
                            odd[w / 2] = src[w - 1];
                        }
                    }
                }
            }
        }
        for (y, row) in o.chunks_exact_mut(wo).enumerate() {
            let r: [&[f32]; 3] = std::array::from_fn(|ky| &p[(op.stride * y + ky) * pw..][..pw]);
            if op.stride == 1 {
                accumulate(
                    row,
                    b,
                    k,
                    r.map(|r| &r[..wo]),
                    r.map(|r| &r[1..=wo]),
                    r.map(|r| &r[2..wo + 2]),
                );
            } else {
                // Padded columns 2x, 2x+1, 2x+2 = even[x], odd[x], even[x+1].
                accumulate(
                    row,
                    b,
                    k,
                    r.map(|r| &r[..wo]),
                    r.map(|r| &r[half..half + wo]),
                    r.map(|r| &r[1..=wo]),
                );
            }
            if op.relu {
                for v in row.iter_mut() {
                    *v = v.max(0.0);
                }
            }
            if let Some(s) = slope {
                for v in row.iter_mut() {
                    *v = v.max(s * *v);
                }
            }
        }
    }
}

impl Op for Depthwise3x3 {
    fn name(&self) -> StaticName {
        "Depthwise3x3".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} channels, stride {}, relu {}, prelu {}",
            self.channels(),
            self.stride,
            self.relu,
            self.prelu.is_some()
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for Depthwise3x3 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = SpatialInput::of(&inputs, "Depthwise3x3")?;
        ensure!(
            x.c == self.channels(),
            "Depthwise3x3: {} channels, {} expected",
            x.c,
            self.channels()
        );
        let dims = x.output_dims(x.c, self.out_side(x.h), self.out_side(x.w));
        let y = output_f32(&dims, "Depthwise3x3", |out| {
            self.run(x.values, x.mask, x.h, x.w, out)
        })?;
        Ok(tvec!(y))
    }
}

impl TypedOp for Depthwise3x3 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let fact = conv_output_fact(inputs[0], None, |v| self.out_side(v), "Depthwise3x3")?;
        Ok(tvec!(fact))
    }

    as_op!();
}

/// Output side of a 3x3 convolution with zero padding 1 for an input side `v`:
/// `(v + 2 - 3) / stride + 1`.
pub(super) fn out_side(v: usize, stride: usize) -> usize {
    v.saturating_sub(1) / stride + 1
}

/// The inputs of a 3x3 op: a contiguous f32 `[1, C, H, W]` or `[C, H, W]` activation and an
/// optional `[.., H, W]` mask, as slices.
pub(super) struct SpatialInput<'a> {
    /// Whether the activation has the unit batch axis (the output keeps the same form).
    pub batch: bool,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub values: &'a [f32],
    pub mask: Option<&'a [f32]>,
}

/// The values of a contiguous f32 tensor.
pub(super) fn plain_f32<'a>(t: &'a TValue, op: &str) -> TractResult<&'a [f32]> {
    t.to_plain_array_view::<f32>()?
        .to_slice()
        .with_context(|| format!("{op}: non-contiguous input"))
}

impl<'a> SpatialInput<'a> {
    pub fn of(inputs: &'a [TValue], op: &str) -> TractResult<Self> {
        let (x, mask) = match inputs {
            [x] => (x, None),
            [x, m] => (x, Some(plain_f32(m, op)?)),
            _ => bail!("{op} takes 1 or 2 inputs, got {}", inputs.len()),
        };
        let (batch, c, h, w) = match *x.shape() {
            [1, c, h, w] => (true, c, h, w),
            [c, h, w] => (false, c, h, w),
            ref other => bail!("{op} input shape {other:?}"),
        };
        Ok(SpatialInput {
            batch,
            c,
            h,
            w,
            values: plain_f32(x, op)?,
            mask,
        })
    }

    /// `[(1,) c, h, w]`, with the batch axis when the input has one.
    pub fn output_dims(&self, c: usize, h: usize, w: usize) -> TVec<usize> {
        if self.batch {
            tvec![1, c, h, w]
        } else {
            tvec![c, h, w]
        }
    }
}

/// A zeroed f32 tensor of `dims`, filled by `fill`.
pub(super) fn output_f32(
    dims: &[usize],
    op: &str,
    fill: impl FnOnce(&mut [f32]) -> Result<(), String>,
) -> TractResult<TValue> {
    let mut t = Tensor::zero::<f32>(dims)?;
    {
        let mut view = t.to_plain_array_view_mut::<f32>()?;
        let out = view
            .as_slice_mut()
            .with_context(|| format!("{op}: non-contiguous output"))?;
        fill(out).map_err(|e| anyhow!(e))?;
    }
    Ok(t.into_tvalue())
}

/// The output fact of a 3x3 op over a concrete `[(1,) C, H, W]` input: `co` channels (the
/// input's when None) and sides mapped by `side`.
pub(super) fn conv_output_fact(
    input: &TypedFact,
    co: Option<usize>,
    side: impl Fn(usize) -> usize,
    op: &str,
) -> TractResult<TypedFact> {
    let dims = input
        .shape
        .as_concrete()
        .with_context(|| format!("{op} needs concrete shapes"))?;
    Ok(match *dims {
        [1, c, h, w] => f32::fact([1, co.unwrap_or(c), side(h), side(w)]),
        [c, h, w] => f32::fact([co.unwrap_or(c), side(h), side(w)]),
        ref other => bail!("{op} input shape {other:?}"),
    })
}

/// Constant per-channel values of `outlet` broadcast against a `[(1,) C, H, W]` tensor
/// (shapes `[C, 1, 1]`, `[1, C, 1, 1]`, or one value), or None.
fn per_channel(model: &TypedModel, outlet: OutletId, c: usize) -> Option<Vec<f32>> {
    let (dims, v) = const_f32(model, outlet)?;
    if v.len() == 1 {
        return Some(vec![v[0]; c]);
    }
    // Aligned from the right, the channel axis is third from last; every other axis is 1.
    let channel_axis = dims.len().checked_sub(3)?;
    let ok = dims
        .iter()
        .enumerate()
        .all(|(i, &d)| d == if i == channel_axis { c } else { 1 });
    ok.then_some(v)
}

/// The shape and values (as f32) of a constant outlet, or None when it is not a constant.
pub(super) fn const_f32(model: &TypedModel, outlet: OutletId) -> Option<(Vec<usize>, Vec<f32>)> {
    let k = model.outlet_fact(outlet).ok()?.konst.as_ref()?;
    let t = k.cast_to::<f32>().ok()?;
    let v = t.to_plain_array_view::<f32>().ok()?;
    Some((v.shape().to_vec(), v.iter().copied().collect()))
}

/// A convolution bias: `[C]` or one value.
fn bias_values(model: &TypedModel, outlet: OutletId, c: usize) -> Option<Vec<f32>> {
    let (_, v) = const_f32(model, outlet)?;
    match v.len() {
        1 => Some(vec![v[0]; c]),
        n if n == c => Some(v),
        _ => None,
    }
}

/// The only successor of `outlet` when `outlet` has exactly one, with the node id.
pub(super) fn single_successor(model: &TypedModel, outlet: OutletId) -> Option<usize> {
    let succ = model.outlet_successors(outlet);
    (succ.len() == 1 && !model.output_outlets().ok()?.contains(&outlet)).then(|| succ[0].node)
}

/// If node `n` is a binary op of kind `name` between `from` and a per-channel constant, that
/// constant.
pub(super) fn affine_step(
    model: &TypedModel,
    n: usize,
    from: OutletId,
    name: &str,
    c: usize,
) -> Option<Vec<f32>> {
    let node = model.node(n);
    let op = node.op_as::<TypedBinOp>()?;
    if op.0.name() != name || node.inputs.len() != 2 {
        return None;
    }
    let other = if node.inputs[0] == from {
        node.inputs[1]
    } else if node.inputs[1] == from {
        node.inputs[0]
    } else {
        return None;
    };
    per_channel(model, other, c)
}

/// A 3x3 convolution at node `n` with stride 1 or 2, zero padding 1, constant OIHW weights and
/// bias over a channels-first f32 activation (`[1, C, H, W]` or `[C, H, W]`): depthwise (one
/// group per channel) when `depthwise`, else dense (one group).
pub(super) fn match_conv3x3(model: &TypedModel, n: usize, depthwise: bool) -> Option<Conv3x3> {
    let node = model.node(n);
    let conv = node.op_as::<Conv>()?;
    let spec = &conv.pool_spec;
    let (ci, co) = (spec.input_channels, spec.output_channels);
    let stride = match spec.strides.as_deref() {
        None => 1,
        Some([1, 1]) => 1,
        Some([2, 2]) => 2,
        _ => return None,
    };
    let padded_by_one = match &spec.padding {
        PaddingSpec::Explicit(b, a) => b.as_slice() == [1, 1] && a.as_slice() == [1, 1],
        _ => false,
    };
    let grouping = if depthwise {
        conv.group == ci && co == ci
    } else {
        conv.group == 1
    };
    let plain = conv.q_params.is_none()
        && grouping
        && spec.kernel_shape.as_slice() == [3, 3]
        && matches!(spec.data_format, DataFormat::NCHW | DataFormat::CHW)
        && spec
            .dilations
            .as_deref()
            .is_none_or(|d| d.iter().all(|&x| x == 1))
        && padded_by_one
        && node.inputs.len() == 3;
    if !plain {
        return None;
    }
    let x = model.outlet_fact(node.inputs[0]).ok()?;
    let channels_first = match x.shape.as_concrete()? {
        [1, ch, _, _] => spec.data_format == DataFormat::NCHW && *ch == ci,
        [ch, _, _] => spec.data_format == DataFormat::CHW && *ch == ci,
        _ => false,
    };
    if x.datum_type != f32::datum_type() || !channels_first {
        return None;
    }
    let (shape, weights) = const_f32(model, node.inputs[1])?;
    let per_group = if depthwise { 1 } else { ci };
    if conv.kernel_fmt != KernelFormat::OIHW || shape != [co, per_group, 3, 3] {
        return None;
    }
    let bias = bias_values(model, node.inputs[2], co)?;
    Some(Conv3x3 {
        stride,
        weights,
        bias,
        ci,
        co,
    })
}

/// A 3x3 convolution found by [`match_conv3x3`]: weights `[co][ci / group][3][3]`, bias `[co]`.
pub(super) struct Conv3x3 {
    pub stride: usize,
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
    pub ci: usize,
    pub co: usize,
}

/// What [`fold_tail`] folded into a convolution: the outlet that the fused op replaces, and the
/// activation found after the per-channel affine steps.
pub(super) struct Tail {
    pub last: OutletId,
    pub relu: bool,
    pub slopes: Option<Vec<f32>>,
}

/// Fold what follows the convolution output `out` into its `weights` (one row per output
/// channel) and `bias`: per-channel `* scale` and `+ shift` steps (bias, batch norm, Caffe's
/// Scale layer) while each is the only consumer of the previous one, then `max(., 0)` or the
/// engine's PReLU wiring.
pub(super) fn fold_tail(
    model: &TypedModel,
    out: OutletId,
    weights: &mut [f32],
    bias: &mut [f32],
) -> Tail {
    let c = bias.len();
    let k = weights.len() / c.max(1);
    let mut last = out;
    while let Some(next) = single_successor(model, last) {
        if let Some(scale) = affine_step(model, next, last, "Mul", c) {
            for ((row, s), b) in weights.chunks_exact_mut(k).zip(&scale).zip(bias.iter_mut()) {
                row.iter_mut().for_each(|w| *w *= s);
                *b *= s;
            }
        } else if let Some(shift) = affine_step(model, next, last, "Add", c) {
            bias.iter_mut().zip(&shift).for_each(|(b, s)| *b += s);
        } else {
            break;
        }
        last = OutletId::new(next, 0);
    }
    if let Some(r) = single_successor(model, last) {
        if affine_step(model, r, last, "Max", c).is_some_and(|z| z.iter().all(|v| *v == 0.0)) {
            let last = OutletId::new(r, 0);
            return Tail {
                last,
                relu: true,
                slopes: None,
            };
        }
    }
    match prelu_after(model, last, c) {
        Some((slopes, last)) => Tail {
            last,
            relu: false,
            slopes: Some(slopes),
        },
        None => Tail {
            last,
            relu: false,
            slopes: None,
        },
    }
}

/// If `x` feeds exactly `m = x * slope` (per-channel constant) and `max(x, m)` (the engine's
/// PReLU wiring, `FastPrelu` in `tract.rs`), the slopes and the max's output.
fn prelu_after(model: &TypedModel, x: OutletId, c: usize) -> Option<(Vec<f32>, OutletId)> {
    if model.output_outlets().ok()?.contains(&x) {
        return None;
    }
    let succ = model.outlet_successors(x);
    let [a, b] = succ else {
        return None;
    };
    for (mul, max) in [(a.node, b.node), (b.node, a.node)] {
        let Some(slopes) = affine_step(model, mul, x, "Mul", c) else {
            continue;
        };
        let m = OutletId::new(mul, 0);
        let node = model.node(max);
        let is_max = node
            .op_as::<TypedBinOp>()
            .is_some_and(|op| op.0.name() == "Max");
        let wired = node.inputs.len() == 2 && node.inputs.contains(&x) && node.inputs.contains(&m);
        if is_max && wired && single_successor(model, m) == Some(max) {
            return Some((slopes, OutletId::new(max, 0)));
        }
    }
    None
}

/// If `outlet` is `x * mask` with `mask` a model input of shape `[(1,) 1, H, W]` over an `x` of
/// `[(1,) C, H, W]` (the detector's canvas masks), `(x, mask)`.
fn masked_input(model: &TypedModel, outlet: OutletId) -> TractResult<Option<(OutletId, OutletId)>> {
    let node = model.node(outlet.node);
    let is_mul = node
        .op_as::<TypedBinOp>()
        .is_some_and(|op| op.0.name() == "Mul");
    if !is_mul || node.inputs.len() != 2 {
        return Ok(None);
    }
    let sources = model.input_outlets()?;
    for (x, m) in [
        (node.inputs[0], node.inputs[1]),
        (node.inputs[1], node.inputs[0]),
    ] {
        if !sources.contains(&m) {
            continue;
        }
        let (xs, ms) = (
            model.outlet_fact(x)?.shape.as_concrete(),
            model.outlet_fact(m)?.shape.as_concrete(),
        );
        if let (Some(xs), Some(ms)) = (xs, ms) {
            let r = xs.len();
            let spatial = r >= 3 && ms.len() == r && ms[r - 2..] == xs[r - 2..];
            if spatial && ms[..r - 2].iter().all(|&d| d == 1) {
                return Ok(Some((x, m)));
            }
        }
    }
    Ok(None)
}

/// Put `op` in place of the 3x3 convolution node `n` and of what was folded after it (up to
/// `last`). `op` reads the convolution's input, or `x` and the mask when that input is a canvas
/// mask's `x * mask` ([`masked_input`]).
pub(super) fn replace_conv3x3(
    model: &mut TypedModel,
    n: usize,
    last: OutletId,
    op: impl Into<Box<dyn TypedOp>>,
    suffix: &str,
) -> TractResult<()> {
    let mut patch = TypedModelPatch::default();
    let input = model.node(n).inputs[0];
    let inputs = match masked_input(model, input)? {
        Some((x, mask)) => tvec![patch.tap_model(model, x)?, patch.tap_model(model, mask)?],
        None => tvec![patch.tap_model(model, input)?],
    };
    let y = patch.wire_node(format!("{}.{suffix}", model.node(n).name), op, &inputs)?[0];
    patch.shunt_outside(model, last, y)?;
    patch.apply(model)
}

/// Replace every depthwise 3x3 convolution of a concrete, decluttered model by
/// [`Depthwise3x3`], folding a following per-channel `mul`, `add` and `max(x, 0)` into it.
/// Returns how many convolutions were replaced.
pub fn fuse_depthwise(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for n in model.eval_order()? {
        let Some(mut conv) = match_conv3x3(model, n, true) else {
            continue;
        };
        let tail = fold_tail(
            model,
            OutletId::new(n, 0),
            &mut conv.weights,
            &mut conv.bias,
        );
        let mut op = Depthwise3x3::new(conv.stride, conv.weights, conv.bias, tail.relu);
        if let Some(slopes) = tail.slopes {
            op = op.with_prelu(slopes);
        }
        replace_conv3x3(model, n, tail.last, op, "depthwise3x3")?;
        replaced += 1;
    }
    model.compact()?;
    Ok(replaced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Direct definition: zero padding 1, 3x3 taps, stride s.
    #[allow(clippy::needless_range_loop)]
    fn naive(op: &Depthwise3x3, x: &[f32], c: usize, h: usize, w: usize) -> Vec<f32> {
        let (ho, wo) = (op.out_side(h), op.out_side(w));
        let mut out = vec![0f32; c * ho * wo];
        for ch in 0..c {
            for y in 0..ho {
                for xx in 0..wo {
                    let mut acc = op.bias[ch] as f64;
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let iy = (op.stride * y + ky) as isize - 1;
                            let ix = (op.stride * xx + kx) as isize - 1;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                continue;
                            }
                            acc += op.weights[ch * 9 + ky * 3 + kx] as f64
                                * x[ch * h * w + iy as usize * w + ix as usize] as f64;
                        }
                    }
                    let v = acc as f32;
                    let v = if op.relu { v.max(0.0) } else { v };
                    let v = match &op.prelu {
                        Some(s) => v.max(s[ch] * v),
                        None => v,
                    };
                    out[ch * ho * wo + y * wo + xx] = v;
                }
            }
        }
        out
    }

    proptest! {
        #[test]
        fn matches_the_direct_definition(
            c in 1usize..5, h in 1usize..23, w in 1usize..23, stride in 1usize..3,
            relu: bool, prelu: bool, masked: bool, seed in 0u32..1000,
        ) {
            let val = |i: usize, k: u32| (((i as u32).wrapping_mul(2654435761).wrapping_add(k * 7919 + seed)) % 1000) as f32 / 250.0 - 2.0;
            let weights: Vec<f32> = (0..9 * c).map(|i| val(i, 1)).collect();
            let bias: Vec<f32> = (0..c).map(|i| val(i, 2)).collect();
            let x: Vec<f32> = (0..c * h * w).map(|i| val(i, 3)).collect();
            let mut op = Depthwise3x3::new(stride, weights, bias, relu);
            if prelu {
                op = op.with_prelu((0..c).map(|i| val(i, 5) / 2.0).collect());
            }
            let (ho, wo) = (op.out_side(h), op.out_side(w));
            let mut out = vec![f32::NAN; c * ho * wo];
            let mask: Option<Vec<f32>> = masked.then(|| (0..h * w).map(|i| (val(i, 4) > 0.0) as u8 as f32).collect());
            op.run(&x, mask.as_deref(), h, w, &mut out).unwrap();
            let xm: Vec<f32> = match &mask {
                Some(m) => x.iter().enumerate().map(|(i, v)| v * m[i % (h * w)]).collect(),
                None => x.clone(),
            };
            let want = naive(&op, &xm, c, h, w);
            for (a, b) in out.iter().zip(&want) {
                prop_assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn wrong_sizes_are_errors() {
        let op = Depthwise3x3::new(2, vec![0.0; 18], vec![0.0; 2], false);
        let mut out = vec![0f32; 2 * 2 * 2];
        assert!(op.run(&[0.0; 2 * 4 * 4], None, 4, 4, &mut out).is_ok());
        assert!(op
            .run(&[0.0; 2 * 4 * 4], Some(&[1.0; 16]), 4, 4, &mut out)
            .is_ok());
        assert!(op
            .run(&[0.0; 2 * 4 * 4], Some(&[1.0; 15]), 4, 4, &mut out)
            .is_err());
        assert!(op.run(&[0.0; 2 * 4 * 3], None, 4, 4, &mut out).is_err());
        assert!(op.run(&[], None, 0, 0, &mut []).is_err());
        let bad = Depthwise3x3::new(3, vec![0.0; 18], vec![0.0; 2], false);
        assert!(bad.run(&[0.0; 2 * 4 * 4], None, 4, 4, &mut out).is_err());
    }
}
