//! A 1x1 convolution (pointwise) for tract plans, with the per-channel affine that follows it
//! (bias, batch norm) folded into its weights and ReLU or PReLU in its epilogue.
//!
//! Why hand-written: tract 0.23 turns a 1x1 convolution into an `EinSum`, then a matrix product
//! that first packs its activations into panels (about 0.3 ms per model on the sample), and
//! leaves a PReLU after it as separate element-wise passes (about 0.4 ms per classifier): tract's
//! matrix kernels fuse per-row additions and `max(x, 0)`, not a per-row slope. An NCHW tensor
//! already has what an outer-product kernel wants: each input channel's pixels are contiguous,
//! so a block of [`MR`] output channels by [`NR`] pixels accumulates, for every input channel,
//! two vector loads times [`MR`] broadcast weights, with no packing of the activations at all
//! (the weights are packed once, at load). The bias, the activation and the tails (masked
//! AVX-512 loads and stores) are handled in registers before the single store.
//!
//! [`fuse_pointwise`] rewrites a concrete, decluttered model before codegen: each `EinSum` that
//! is a 1x1 convolution (tract's declutter makes every 1x1, stride 1, unpadded `Conv` one) with
//! constant weights becomes a [`Pointwise`], folding the per-channel additions and
//! multiplications that follow it (its bias, batch norm, Caffe's Scale), then `max(x, 0)` or the
//! engine's PReLU wiring, while each is the only consumer of the previous one.

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::einsum::EinSum;

use super::depthwise::{affine_step, const_f32, prelu_after, single_successor};

/// Output channels per block (rows of the outer product).
pub const MR: usize = 8;
/// Pixels per block: two 16-lane vectors.
pub const NR: usize = 32;

/// `out[o, p] = act(bias[o] + sum_i w[o, i] * x[i, p])` over `[Ci, P]` inputs.
#[derive(Debug, Clone)]
pub struct Pointwise {
    co: usize,
    ci: usize,
    /// Unit axes before the channel axis in the input and in the output (tract's einsums drop
    /// or add the batch axis of 1 on either side: `NIHW,OI->OHW`, `IHW,OI->NOHW`).
    lead_in: usize,
    lead_out: usize,
    /// Weights in blocks of [`MR`] output channels, `[co / MR][ci][MR]`, rows past `co` zero.
    packed: Arc<Vec<f32>>,
    /// `[co]` padded with zeros to a whole number of blocks, like `slopes`.
    bias: Arc<Vec<f32>>,
    relu: bool,
    /// Per-channel PReLU slopes, applied as `max(x, slope * x)` (the engine's PReLU wiring).
    slopes: Option<Arc<Vec<f32>>>,
}

impl PartialEq for Pointwise {
    fn eq(&self, other: &Self) -> bool {
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        self.co == other.co
            && self.ci == other.ci
            && self.lead_in == other.lead_in
            && self.lead_out == other.lead_out
            && self.relu == other.relu
            && self.slopes.as_deref().map(|v| bits(v)) == other.slopes.as_deref().map(|v| bits(v))
            && bits(&self.packed) == bits(&other.packed)
            && bits(&self.bias) == bits(&other.bias)
    }
}

impl Eq for Pointwise {}

/// `v` padded with zeros to `n` values.
fn padded(mut v: Vec<f32>, n: usize) -> Vec<f32> {
    v.resize(n, 0.0);
    v
}

impl Pointwise {
    /// From row-major `[co][ci]` weights and a `[co]` bias; `None` when the sizes disagree.
    pub fn new(co: usize, ci: usize, weights: &[f32], bias: Vec<f32>) -> Option<Self> {
        if co == 0 || ci == 0 || weights.len() != co * ci || bias.len() != co {
            return None;
        }
        let blocks = co.div_ceil(MR);
        let mut packed = vec![0f32; blocks * ci * MR];
        for (o, row) in weights.chunks_exact(ci).enumerate() {
            let (b, r) = (o / MR, o % MR);
            for (i, &w) in row.iter().enumerate() {
                packed[(b * ci + i) * MR + r] = w;
            }
        }
        Some(Pointwise {
            co,
            ci,
            lead_in: 0,
            lead_out: 0,
            packed: Arc::new(packed),
            bias: Arc::new(padded(bias, blocks * MR)),
            relu: false,
            slopes: None,
        })
    }

    /// Inputs have `lead_in` unit axes before the channel axis, outputs `lead_out`.
    pub fn with_leading_axes(mut self, lead_in: usize, lead_out: usize) -> Self {
        self.lead_in = lead_in;
        self.lead_out = lead_out;
        self
    }

    /// Follow the product by `max(x, 0)`.
    pub fn with_relu(mut self) -> Self {
        self.relu = true;
        self.slopes = None;
        self
    }

    /// Follow the product by `max(x, slope * x)` with one slope per output channel.
    pub fn with_prelu(mut self, slopes: Vec<f32>) -> Option<Self> {
        if slopes.len() != self.co {
            return None;
        }
        self.slopes = Some(Arc::new(padded(slopes, self.bias.len())));
        self.relu = false;
        Some(self)
    }

    pub fn output_channels(&self) -> usize {
        self.co
    }

    pub fn input_channels(&self) -> usize {
        self.ci
    }

    /// Run on `[ci, pixels]` into `out` (`[co, pixels]`).
    pub fn run(&self, x: &[f32], pixels: usize, out: &mut [f32]) -> Result<(), String> {
        if pixels == 0 || x.len() != self.ci * pixels || out.len() != self.co * pixels {
            return Err(format!(
                "pointwise: {} inputs for {}x{pixels}, {} outputs for {}x{pixels}",
                x.len(),
                self.ci,
                out.len(),
                self.co
            ));
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above), and the sizes of `x` and `out`
            // were checked against `ci`, `co` and `pixels`, which is all `run_avx512` relies on.
            unsafe { avx512::run(self, x, pixels, out) };
            return Ok(());
        }
        self.run_portable(x, pixels, out);
        Ok(())
    }

    /// The same product in plain Rust (any CPU; the reference for the AVX-512 path's tests).
    fn run_portable(&self, x: &[f32], pixels: usize, out: &mut [f32]) {
        let ci = self.ci;
        for p0 in (0..pixels).step_by(NR) {
            let lanes = NR.min(pixels - p0);
            for (b, w) in self.packed.chunks_exact(ci * MR).enumerate() {
                let mut acc = [[0f32; NR]; MR];
                for (i, wk) in w.chunks_exact(MR).enumerate() {
                    let row = &x[i * pixels + p0..][..lanes];
                    for (a, &wr) in acc.iter_mut().zip(wk) {
                        for (a, &v) in a.iter_mut().zip(row) {
                            *a += wr * v;
                        }
                    }
                }
                for (r, a) in acc.iter().enumerate() {
                    let o = b * MR + r;
                    if o >= self.co {
                        break;
                    }
                    let dst = &mut out[o * pixels + p0..][..lanes];
                    for (d, &a) in dst.iter_mut().zip(a) {
                        *d = self.activate(a + self.bias[o], o);
                    }
                }
            }
        }
    }

    #[inline(always)]
    fn activate(&self, v: f32, o: usize) -> f32 {
        if self.relu {
            v.max(0.0)
        } else if let Some(s) = &self.slopes {
            v.max(s[o] * v)
        } else {
            v
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Pointwise, MR, NR};
    use std::arch::x86_64::*;

    /// Lane masks of the two 16-lane halves of a block of `lanes` (1 to [`NR`]) pixels.
    fn masks(lanes: usize) -> (__mmask16, __mmask16) {
        let bits = |n: usize| -> __mmask16 {
            if n >= 16 {
                0xFFFF
            } else {
                ((1u32 << n) - 1) as __mmask16
            }
        };
        (bits(lanes), bits(lanes.saturating_sub(16)))
    }

    /// # Safety
    /// The CPU must have AVX-512F; `x.len() == op.ci * pixels` and `out.len() == op.co * pixels`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn run(op: &Pointwise, x: &[f32], pixels: usize, out: &mut [f32]) {
        let ci = op.ci;
        let zero = _mm512_setzero_ps();
        for p0 in (0..pixels).step_by(NR) {
            let (m0, m1) = masks(NR.min(pixels - p0));
            for (b, w) in op.packed.chunks_exact(ci * MR).enumerate() {
                let mut acc = [zero; 2 * MR];
                let xp = x.as_ptr().wrapping_add(p0);
                for (i, wk) in w.chunks_exact(MR).enumerate() {
                    let Ok(wk) = <&[f32; MR]>::try_from(wk) else {
                        continue;
                    };
                    let row = xp.wrapping_add(i * pixels);
                    // SAFETY: row i of x holds `pixels` values; lanes p0..p0 + lanes of it
                    // exist, and the masks keep the loads to those lanes (masked-off lanes are
                    // not read, so the second half may point past the row when it is empty).
                    let (lo, hi) = unsafe {
                        (
                            _mm512_maskz_loadu_ps(m0, row),
                            _mm512_maskz_loadu_ps(m1, row.wrapping_add(16)),
                        )
                    };
                    for r in 0..MR {
                        let s = _mm512_set1_ps(wk[r]);
                        acc[2 * r] = _mm512_fmadd_ps(s, lo, acc[2 * r]);
                        acc[2 * r + 1] = _mm512_fmadd_ps(s, hi, acc[2 * r + 1]);
                    }
                }
                for r in 0..MR {
                    let o = b * MR + r;
                    if o >= op.co {
                        break;
                    }
                    let bias = _mm512_set1_ps(op.bias[o]);
                    let mut lo = _mm512_add_ps(acc[2 * r], bias);
                    let mut hi = _mm512_add_ps(acc[2 * r + 1], bias);
                    if op.relu {
                        lo = _mm512_max_ps(lo, zero);
                        hi = _mm512_max_ps(hi, zero);
                    } else if let Some(s) = &op.slopes {
                        let s = _mm512_set1_ps(s[o]);
                        lo = _mm512_max_ps(lo, _mm512_mul_ps(s, lo));
                        hi = _mm512_max_ps(hi, _mm512_mul_ps(s, hi));
                    }
                    let dst = out.as_mut_ptr().wrapping_add(o * pixels + p0);
                    // SAFETY: as for the loads: row o of out holds `pixels` values and the masks
                    // keep the stores to lanes p0..p0 + lanes.
                    unsafe {
                        _mm512_mask_storeu_ps(dst, m0, lo);
                        _mm512_mask_storeu_ps(dst.wrapping_add(16), m1, hi);
                    }
                }
            }
        }
    }
}

impl Op for Pointwise {
    fn name(&self) -> StaticName {
        "Pointwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} -> {} channels, relu {}, prelu {}",
            self.ci,
            self.co,
            self.relu,
            self.slopes.is_some()
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

/// The output shape for an input of `dims` (`[1 x lead_in, ci, rest...]`):
/// `[1 x lead_out, co, rest...]`, or None when the input does not have that form.
fn output_dims(op: &Pointwise, dims: &[usize]) -> Option<TVec<usize>> {
    let (lead, rest) = dims.split_at_checked(op.lead_in)?;
    let (&c, rest) = rest.split_first()?;
    (c == op.ci && lead.iter().all(|&d| d == 1)).then(|| {
        let mut out: TVec<usize> = tvec![1; op.lead_out];
        out.push(op.co);
        out.extend_from_slice(rest);
        out
    })
}

impl EvalOp for Pointwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let dims = output_dims(self, input.shape())
            .with_context(|| format!("Pointwise: input shape {:?}", input.shape()))?;
        let pixels = input.len() / self.ci;
        let x = input.to_plain_array_view::<f32>()?;
        let x = x.as_slice().context("Pointwise: non-contiguous input")?;
        let mut t = Tensor::zero::<f32>(&dims)?;
        {
            let mut view = t.to_plain_array_view_mut::<f32>()?;
            let out = view
                .as_slice_mut()
                .context("Pointwise: non-contiguous output")?;
            self.run(x, pixels, out).map_err(|e| anyhow!(e))?;
        }
        Ok(tvec!(t.into_tvalue()))
    }
}

impl TypedOp for Pointwise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let dims = inputs[0]
            .shape
            .as_concrete()
            .context("Pointwise needs concrete shapes")?;
        let out =
            output_dims(self, dims).with_context(|| format!("Pointwise: input shape {dims:?}"))?;
        Ok(tvec!(f32::fact(&*out)))
    }

    as_op!();
}

/// The 1x1 convolution at node `n`, if it is one [`Pointwise`] can run: an f32 `EinSum` of a
/// channels-first activation `[1.., ci, rest...]` (letters `..I rest`) with constant weights
/// (`OI` or `IO`) into `[1.., co, rest...]` (letters `..O rest`), where only unit axes come before
/// the channel axis on either side. Returns the op (bias zero, no activation) and `[co][ci]`
/// weights.
fn match_einsum(model: &TypedModel, n: usize) -> Option<(Vec<f32>, usize, usize, usize, usize)> {
    let node = model.node(n);
    let op = node.op_as::<EinSum>()?;
    if op.q_params.is_some() || op.operating_dt != f32::datum_type() || node.inputs.len() != 2 {
        return None;
    }
    let (ins, outs) = op.axes.to_strs();
    let [x, w] = [&ins[0], &ins[1]].map(|s| s.chars().collect::<Vec<_>>());
    let y = outs.first()?.chars().collect::<Vec<_>>();
    // I: summed (in x and w, not y); O: output channels (in w and y, not x).
    let i = *w.iter().find(|c| x.contains(c) && !y.contains(c))?;
    let o = *w.iter().find(|c| y.contains(c) && !x.contains(c))?;
    let (xi, yo) = (
        x.iter().position(|&c| c == i)?,
        y.iter().position(|&c| c == o)?,
    );
    let fact = model.outlet_fact(node.inputs[0]).ok()?;
    let out = model.outlet_fact(OutletId::new(n, 0)).ok()?;
    let (dims, odims) = (fact.shape.as_concrete()?, out.shape.as_concrete()?);
    let channels_first = dims.len() == x.len()
        && odims.len() == y.len()
        && dims[..xi].iter().all(|&d| d == 1)
        && odims[..yo].iter().all(|&d| d == 1)
        && x[xi + 1..] == y[yo + 1..]
        // Exactly (H, W) after the channel: what the per-channel folding below assumes.
        && x.len() == xi + 3;
    if fact.datum_type != f32::datum_type() || !channels_first || w.len() != 2 {
        return None;
    }
    let (wdims, wv) = const_f32(model, node.inputs[1])?;
    let (ci, co) = (dims[xi], odims[yo]);
    let transposed = w == [i, o];
    if wdims.len() != 2 || wdims.iter().product::<usize>() != co * ci || co * ci == 0 {
        return None;
    }
    let weights = if transposed {
        (0..co * ci).map(|k| wv[(k % ci) * co + k / ci]).collect()
    } else {
        wv
    };
    Some((weights, co, ci, xi, yo))
}

/// Replace every 1x1 convolution (as tract's declutter leaves it, an `EinSum`) of a concrete,
/// decluttered model by [`Pointwise`], folding the per-channel additions and multiplications
/// after it, then `max(x, 0)` or PReLU. Returns how many were replaced.
pub fn fuse_pointwise(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for n in model.eval_order()? {
        let Some((mut weights, co, ci, lead_in, lead_out)) = match_einsum(model, n) else {
            continue;
        };
        let mut bias = vec![0f32; co];
        let mut last = OutletId::new(n, 0);
        while let Some(next) = single_successor(model, last) {
            if let Some(scale) = affine_step(model, next, last, "Mul", co) {
                for (row, (s, b)) in weights
                    .chunks_exact_mut(ci)
                    .zip(scale.iter().zip(&mut bias))
                {
                    row.iter_mut().for_each(|w| *w *= s);
                    *b *= s;
                }
            } else if let Some(shift) = affine_step(model, next, last, "Add", co) {
                bias.iter_mut().zip(&shift).for_each(|(b, s)| *b += s);
            } else {
                break;
            }
            last = OutletId::new(next, 0);
        }
        let Some(mut op) = Pointwise::new(co, ci, &weights, bias) else {
            continue;
        };
        op = op.with_leading_axes(lead_in, lead_out);
        if let Some(r) = single_successor(model, last) {
            if affine_step(model, r, last, "Max", co).is_some_and(|z| z.iter().all(|v| *v == 0.0)) {
                op = op.with_relu();
                last = OutletId::new(r, 0);
            }
        }
        if !op.relu {
            if let Some((slopes, out)) = prelu_after(model, last, co) {
                if let Some(p) = op.clone().with_prelu(slopes) {
                    op = p;
                    last = out;
                }
            }
        }
        let mut patch = TypedModelPatch::default();
        let input = patch.tap_model(model, model.node(n).inputs[0])?;
        let y = patch.wire_node(format!("{}.pointwise", model.node(n).name), op, &[input])?[0];
        patch.shunt_outside(model, last, y)?;
        patch.apply(model)?;
        replaced += 1;
    }
    model.compact()?;
    Ok(replaced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Direct definition.
    fn naive(w: &[f32], bias: &[f32], x: &[f32], ci: usize, pixels: usize) -> Vec<f32> {
        let co = bias.len();
        let mut out = vec![0f32; co * pixels];
        for o in 0..co {
            for p in 0..pixels {
                let mut s = 0f64;
                for i in 0..ci {
                    s += f64::from(w[o * ci + i]) * f64::from(x[i * pixels + p]);
                }
                out[o * pixels + p] = (s + f64::from(bias[o])) as f32;
            }
        }
        out
    }

    fn values(n: usize, seed: u64) -> Vec<f32> {
        (0..n)
            .map(|k| {
                let v = (k as u64 + 1)
                    .wrapping_mul(seed | 1)
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15);
                ((v >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn matches_the_direct_definition(
            co in 1usize..40, ci in 1usize..40, pixels in 1usize..100, seed in 0u64..1000,
            act in 0u8..3,
        ) {
            let w = values(co * ci, seed);
            let bias = values(co, seed + 1);
            let x = values(ci * pixels, seed + 2);
            let slopes = values(co, seed + 3).iter().map(|s| s.abs() * 0.5).collect::<Vec<_>>();
            let mut op = Pointwise::new(co, ci, &w, bias.clone()).unwrap();
            op = match act {
                0 => op,
                1 => op.with_relu(),
                _ => op.with_prelu(slopes.clone()).unwrap(),
            };
            let mut want = naive(&w, &bias, &x, ci, pixels);
            for (k, v) in want.iter_mut().enumerate() {
                *v = match act {
                    0 => *v,
                    1 => v.max(0.0),
                    _ => v.max(slopes[k / pixels] * *v),
                };
            }
            let mut fast = vec![f32::NAN; co * pixels];
            op.run(&x, pixels, &mut fast).unwrap();
            let mut portable = vec![f32::NAN; co * pixels];
            op.run_portable(&x, pixels, &mut portable);
            for ((a, b), c) in fast.iter().zip(&portable).zip(&want) {
                prop_assert!((a - c).abs() <= 1e-5 * (1.0 + ci as f32), "{a} vs {c}");
                prop_assert!((b - c).abs() <= 1e-5 * (1.0 + ci as f32), "{b} vs {c}");
            }
        }
    }

    #[test]
    fn wrong_sizes_are_errors() {
        let op = Pointwise::new(2, 3, &[0.0; 6], vec![0.0; 2]).unwrap();
        assert!(op.run(&[0.0; 5], 2, &mut [0.0; 4]).is_err());
        assert!(op.run(&[0.0; 6], 2, &mut [0.0; 3]).is_err());
        assert!(op.run(&[], 0, &mut []).is_err());
        assert!(Pointwise::new(2, 3, &[0.0; 5], vec![0.0; 2]).is_none());
        assert!(op.with_prelu(vec![0.5]).is_none());
    }
}
