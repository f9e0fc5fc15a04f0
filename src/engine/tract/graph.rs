//! The graph side of the engine's own ops: matching tract's decluttered graph (3x3 convolutions,
//! the per-channel affine and activation after them, the detector's canvas masks), folding what
//! follows a convolution into its weights, the one fusion driver that wires a replacement op in
//! ([`fuse_nodes`]), and the tensor plumbing the ops share at run time.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};
use tract_onnx::tract_core::ops::nn::DataFormat;

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

/// An f32 tensor of `dims`, filled by `fill`, which must write every element (the fused
/// kernels all do: each output element is one assignment).
///
/// Release builds hand `fill` uninitialised memory: zeroing outputs that are then overwritten
/// was 5-7 % of a check's CPU (memset of every activation). Debug builds, which run the parity
/// tests, fill with NaN first instead, so an element a kernel failed to write would reach the
/// scores and fail those tests rather than go unseen.
pub(super) fn output_f32(
    dims: &[usize],
    op: &str,
    fill: impl FnOnce(&mut [f32]) -> Result<(), String>,
) -> TractResult<TValue> {
    let mut t = if cfg!(debug_assertions) {
        let n = dims.iter().product();
        Tensor::from_shape(dims, &vec![f32::NAN; n])?
    } else {
        // SAFETY: f32 has no invalid bit patterns and no drop; `fill` writes every element
        // before the tensor is read (the contract above, checked by the debug builds' NaN
        // fill), and on an error the tensor is dropped unread.
        unsafe { Tensor::uninitialized::<f32>(dims)? }
    };
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

/// One rewrite found by a fusion pass: the op that replaces the matched node, and the last node
/// folded into it (the node itself when nothing was).
pub(super) struct Fused {
    pub op: Box<dyn TypedOp>,
    pub last: OutletId,
}

/// The fusion driver every op of the engine goes through: for each node (in evaluation order)
/// that `rewrite` turns into a [`Fused`], wire its op in place of the node and of what was folded
/// after it (up to `last`). The op reads the node's first input; with `mask_aware`, when that
/// input is a canvas mask's `x * mask` ([`masked_input`]), it reads `x` and the mask instead.
/// Returns how many nodes were replaced.
pub(super) fn fuse_nodes(
    model: &mut TypedModel,
    suffix: &str,
    mask_aware: bool,
    mut rewrite: impl FnMut(&TypedModel, usize) -> Option<Fused>,
) -> TractResult<usize> {
    let mut replaced = 0;
    for n in model.eval_order()? {
        let Some(Fused { op, last }) = rewrite(model, n) else {
            continue;
        };
        let mut patch = TypedModelPatch::default();
        let input = model.node(n).inputs[0];
        let masked = if mask_aware {
            masked_input(model, input)?
        } else {
            None
        };
        let inputs = match masked {
            Some((x, mask)) => tvec![patch.tap_model(model, x)?, patch.tap_model(model, mask)?],
            None => tvec![patch.tap_model(model, input)?],
        };
        let y = patch.wire_node(format!("{}.{suffix}", model.node(n).name), op, &inputs)?[0];
        patch.shunt_outside(model, last, y)?;
        patch.apply(model)?;
        replaced += 1;
    }
    model.compact()?;
    Ok(replaced)
}
