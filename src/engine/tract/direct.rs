//! Direct convolutions for tract plans: 1x1 ([`Pointwise`]) and dense 3x3 ([`Dense3x3`]), both
//! as one outer-product kernel over rows of a channels-first tensor, with the per-channel affine
//! that follows them (bias, batch norm, Caffe's Scale) folded into the weights and ReLU or
//! PReLU in the kernel's epilogue.
//!
//! Why hand-written: tract 0.23 runs these convolutions as matrix products that first pack
//! their activations into panels (im2col for the 3x3 ones: 0.27 ms of each classifier's first
//! convolution, 1.4 MMAC), and leaves a PReLU after them as separate element-wise passes
//! (about 0.4 ms per classifier); its matrix kernels fuse per-row additions and `max(x, 0)`,
//! not a per-row slope. A channels-first tensor already has what an outer-product kernel wants:
//!
//! - `out[o][q] = act(bias[o] + sum_k w[o][k] * src[offset[k] + q])`, computed in blocks of
//!   [`MR`] output channels by [`NR`] consecutive `q`: for every `k`, two vector loads of `src`
//!   times [`MR`] broadcast weights, all accumulated in registers, then one masked store.
//! - For a 1x1 convolution, `k` is the input channel, `offset[k] = k * pixels` and `q` the
//!   pixel: the activation is read in place.
//! - For a 3x3 convolution with zero padding 1, the input is copied once into zero-padded planes
//!   of width `Wq` (split by row and column parity for stride 2, so that each tap is again a
//!   constant shift), `k = (channel, ky, kx)` with `offset[k]` the tap's shift, and
//!   `q = y * Wq + x`: the kernel computes `Wq - Wo` junk columns per row, dropped when the
//!   result is compacted into the output. No im2col matrix is ever built.
//!
//! The weights are packed once, at load. The AVX-512 path (runtime detection) uses masked loads
//! and stores for the tails; the AVX2 + FMA path computes passes of 6 output rows over 16
//! outputs (12 accumulators, 15 of the 16 vector registers), reading each row's weights from the
//! same [`MR`]-row packing; the portable path is the same loops in plain Rust. Every path sums
//! each output over `k` in the same order, so the AVX2 and AVX-512 paths give the same bits.
//!
//! [`fuse_pointwise`] and [`fuse_dense3x3`] rewrite a concrete, decluttered model before codegen.

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::einsum::EinSum;

mod amx;
mod bf16;

pub use self::amx::available as amx_available;
use self::amx::TileWeights;
pub use self::bf16::available as bf16_available;
pub use self::bf16::pays as bf16_pays;
use self::bf16::PairWeights;

use super::graph::{
    const_f32, conv_output_fact, fold_tail, fuse_nodes, match_conv3x3, out_side, output_f32,
    plain_f32, Fused, SpatialInput,
};
use super::isa::Isa;

/// Whether this CPU runs one of [`Product`]'s vector kernels (AVX-512F, or AVX2 + FMA). Without
/// them the portable path is correct but built for the baseline target (SSE2 on x86-64), so the
/// engine leaves these convolutions to tract's own kernels there.
pub fn fast_kernels() -> bool {
    Isa::detected() >= Isa::Avx2Fma
}

/// Output channels per block (rows of the outer product).
pub const MR: usize = 8;
/// Outputs per block along `q`: two 16-lane vectors.
pub const NR: usize = 32;

/// Packed weights and epilogue of `out[o][q] = act(bias[o] + sum_k w[o][k] * src[offset[k] + q])`.
#[derive(Debug, Clone)]
pub struct Product {
    co: usize,
    k: usize,
    /// Weights in blocks of [`MR`] output channels, `[co / MR][k][MR]`, rows past `co` zero;
    /// empty once the product runs in bf16 ([`Product::with_pairs`]).
    packed: Arc<Vec<f32>>,
    /// `[co]` padded with zeros to a whole number of blocks, like `slopes`.
    bias: Arc<Vec<f32>>,
    relu: bool,
    /// Per-channel PReLU slopes, applied as `max(x, slope * x)` (the engine's PReLU wiring).
    slopes: Option<Arc<Vec<f32>>>,
    /// The weights as bfloat16 pairs of input channels ([`bf16`]), when the product is to run
    /// in that precision (and not on `tiles`).
    pairs: Option<PairWeights>,
    /// The bf16 weights as AMX tiles ([`amx`]) instead: a 1x1 product in bf16 runs on them
    /// where this process may use AMX.
    tiles: Option<TileWeights>,
    /// The widest vector path [`Product::run`] takes; never more than the CPU has
    /// ([`Isa::capped`] is its only source).
    isa: Isa,
}

impl PartialEq for Product {
    fn eq(&self, other: &Self) -> bool {
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        self.co == other.co
            && self.k == other.k
            && self.relu == other.relu
            && self.slopes.as_deref().map(|v| bits(v)) == other.slopes.as_deref().map(|v| bits(v))
            && bits(&self.packed) == bits(&other.packed)
            && bits(&self.bias) == bits(&other.bias)
            && self.pairs == other.pairs
            && self.tiles == other.tiles
            && self.isa == other.isa
    }
}

impl Eq for Product {}

/// `v` padded with zeros to `n` values.
fn padded(mut v: Vec<f32>, n: usize) -> Vec<f32> {
    v.resize(n, 0.0);
    v
}

impl Product {
    /// From row-major `[co][k]` weights and a `[co]` bias; `None` when the sizes disagree.
    pub fn new(co: usize, k: usize, weights: &[f32], bias: Vec<f32>) -> Option<Self> {
        if co == 0 || k == 0 || weights.len() != co * k || bias.len() != co {
            return None;
        }
        let blocks = co.div_ceil(MR);
        let mut packed = vec![0f32; blocks * k * MR];
        for (o, row) in weights.chunks_exact(k).enumerate() {
            let (b, r) = (o / MR, o % MR);
            for (i, &w) in row.iter().enumerate() {
                packed[(b * k + i) * MR + r] = w;
            }
        }
        Some(Product {
            co,
            k,
            packed: Arc::new(packed),
            bias: Arc::new(padded(bias, blocks * MR)),
            relu: false,
            slopes: None,
            pairs: None,
            tiles: None,
            isa: Isa::detected(),
        })
    }

    /// Take no vector path wider than `cap` (nor than the CPU has).
    pub fn with_isa(mut self, cap: Isa) -> Self {
        self.isa = Isa::capped(cap);
        self
    }

    /// Run in bfloat16 ([`bf16`]; a 1x1 product on AMX tiles where that is granted, [`amx`])
    /// from now on, with `weights` (`[co][ci * taps]`, as given to
    /// [`Product::new`], `k = c * taps + t`) packed in pairs of input channels; `None` when the
    /// sizes disagree with this product's.
    ///
    /// The weights are then kept once, in the one layout the product reads: the f32 packing is
    /// dropped, and a 1x1 product on AMX tiles keeps no pairs. Holding all three copied the
    /// classifiers' weights two to three times over (docs/benchmarks.md, session 38).
    pub fn with_pairs(mut self, ci: usize, taps: usize, weights: &[f32]) -> Option<Self> {
        if ci * taps != self.k {
            return None;
        }
        // A 1x1 product (one tap) as AMX tiles, where its path is AVX-512 and AMX is granted.
        if taps == 1 && self.isa == Isa::Avx512 && amx::available() {
            self.tiles = Some(TileWeights::new(self.co, ci, weights)?);
        } else {
            self.pairs = Some(PairWeights::new(self.co, ci, taps, weights)?);
        }
        self.packed = Arc::new(Vec::new());
        Some(self)
    }

    /// Whether the product runs in bfloat16 ([`Product::with_pairs`]): it then has no f32
    /// weights, and [`Product::run`] refuses.
    fn is_bf16(&self) -> bool {
        self.pairs.is_some() || self.tiles.is_some()
    }

    /// That a product over `taps` offsets (`k` for f32, the channel pairs for [`bf16`]) reads
    /// `src[offsets[k] + q]` and writes `out[o * out_stride + q]` (`q < len`, `o < co`) within
    /// inputs of `src_len` and outputs of `out_len` values: what the vector kernels rely on.
    fn check_reach(
        &self,
        taps: usize,
        src_len: usize,
        offsets: &[usize],
        len: usize,
        out_len: usize,
        out_stride: usize,
    ) -> Result<(), String> {
        let reach = offsets.iter().max().map(|m| m + len);
        let out_reach = (self.co - 1) * out_stride + len;
        if len == 0
            || offsets.len() != taps
            || reach.is_none_or(|r| r > src_len)
            || out_stride < len
            || out_reach > out_len
        {
            return Err(format!(
                "direct convolution: {} offsets for {taps} taps reaching {reach:?} of {src_len} \
                 inputs, {len} x {} outputs of stride {out_stride} in {out_len}",
                offsets.len(),
                self.co,
            ));
        }
        Ok(())
    }

    /// The epilogue for output channel `o`: bias already added, then the activation.
    fn activate(&self, o: usize, v: f32) -> f32 {
        if self.relu {
            v.max(0.0)
        } else if let Some(s) = &self.slopes {
            v.max(s[o] * v)
        } else {
            v
        }
    }

    /// Follow the product by `max(x, 0)`, or by `max(x, slope * x)` with one slope per output
    /// channel; `None` when there are not `co` slopes.
    pub fn with_activation(mut self, relu: bool, slopes: Option<Vec<f32>>) -> Option<Self> {
        self.relu = relu;
        self.slopes = match slopes {
            Some(s) if s.len() != self.co => return None,
            Some(s) => Some(Arc::new(padded(s, self.bias.len()))),
            None => None,
        };
        Some(self)
    }

    /// `out[o * out_stride + q]` for `q < len`, from `src[offsets[k] + q]`.
    pub fn run(
        &self,
        src: &[f32],
        offsets: &[usize],
        len: usize,
        out: &mut [f32],
        out_stride: usize,
    ) -> Result<(), String> {
        if self.is_bf16() {
            return Err("direct convolution: this product runs in bfloat16".to_owned());
        }
        self.check_reach(self.k, src.len(), offsets, len, out.len(), out_stride)?;
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                // SAFETY: `self.isa` is never more than the CPU has (`Isa::capped`), so it has
                // AVX-512F; every read `src[offsets[k] + q]` and write `out[o * out_stride + q]`
                // (`q < len`, `o < co`) was checked in bounds above, which is all `avx512::run`
                // relies on.
                unsafe { avx512::run(self, src, offsets, len, out, out_stride) };
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => {
                // SAFETY: as above, the CPU has AVX2 and FMA; the bounds are as for the AVX-512
                // path.
                unsafe { avx2::run(self, src, offsets, len, out, out_stride) };
            }
            _ => self.run_portable(src, offsets, len, out, out_stride),
        }
        Ok(())
    }

    /// The same product in plain Rust (any CPU; the reference for the AVX-512 path's tests).
    fn run_portable(
        &self,
        src: &[f32],
        offsets: &[usize],
        len: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        for q0 in (0..len).step_by(NR) {
            let lanes = NR.min(len - q0);
            for (b, w) in self.packed.chunks_exact(self.k * MR).enumerate() {
                let mut acc = [[0f32; NR]; MR];
                for (wk, &off) in w.chunks_exact(MR).zip(offsets) {
                    let row = &src[off + q0..][..lanes];
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
                    let dst = &mut out[o * out_stride + q0..][..lanes];
                    for (d, &a) in dst.iter_mut().zip(a) {
                        *d = self.activate(o, a + self.bias[o]);
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Product, MR, NR};
    use std::arch::x86_64::*;

    /// Lane masks of the two 16-lane halves of a block of `lanes` (1 to [`NR`]) outputs.
    pub(super) fn masks(lanes: usize) -> (__mmask16, __mmask16) {
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
    /// The CPU must have AVX-512F; `offsets.len() == op.k`, `src[offsets[k] + q]` must be in
    /// bounds for every `k` and `q < len`, and `out[o * out_stride + q]` for `o < op.co`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn run(
        op: &Product,
        src: &[f32],
        offsets: &[usize],
        len: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        let zero = _mm512_setzero_ps();
        for q0 in (0..len).step_by(NR) {
            let (m0, m1) = masks(NR.min(len - q0));
            let base = src.as_ptr().wrapping_add(q0);
            for (b, w) in op.packed.chunks_exact(op.k * MR).enumerate() {
                let mut acc = [zero; 2 * MR];
                for (wk, &off) in w.chunks_exact(MR).zip(offsets) {
                    let Ok(wk) = <&[f32; MR]>::try_from(wk) else {
                        continue;
                    };
                    let row = base.wrapping_add(off);
                    // SAFETY: src[off + q0 + lane] is in bounds for the lanes the masks keep
                    // (the caller's contract); masked-off lanes are not read, so the second
                    // half may point past the data when it is empty.
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
                    // SAFETY: the CPU has AVX-512F; out[o * out_stride + q0 + lane] is in
                    // bounds for the lanes the masks keep (the caller's contract).
                    unsafe {
                        finish(
                            op,
                            o,
                            acc[2 * r],
                            acc[2 * r + 1],
                            out.as_mut_ptr().wrapping_add(o * out_stride + q0),
                            (m0, m1),
                        )
                    };
                }
            }
        }
    }

    /// Store one output channel's block: `op`'s bias and activation for channel `o` after the
    /// accumulators `lo` (outputs 0-15) and `hi` (16-31), under the lane masks.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; `dst + lane` must be writable for the lanes the masks keep.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn finish(
        op: &Product,
        o: usize,
        lo: __m512,
        hi: __m512,
        dst: *mut f32,
        (m0, m1): (__mmask16, __mmask16),
    ) {
        let bias = _mm512_set1_ps(op.bias[o]);
        let mut lo = _mm512_add_ps(lo, bias);
        let mut hi = _mm512_add_ps(hi, bias);
        if op.relu {
            let zero = _mm512_setzero_ps();
            lo = _mm512_max_ps(lo, zero);
            hi = _mm512_max_ps(hi, zero);
        } else if let Some(s) = &op.slopes {
            let s = _mm512_set1_ps(s[o]);
            lo = _mm512_max_ps(lo, _mm512_mul_ps(s, lo));
            hi = _mm512_max_ps(hi, _mm512_mul_ps(s, hi));
        }
        // SAFETY: the caller's contract.
        unsafe {
            _mm512_mask_storeu_ps(dst, m0, lo);
            _mm512_mask_storeu_ps(dst.wrapping_add(16), m1, hi);
        }
    }
}

/// The same kernel for AVX2 + FMA (AMD Zen 2/3, Zen 4 without AVX-512 exposed, Intel before
/// AVX-512). Output rows are computed in passes of 6 over 16 outputs: 12 accumulators, two
/// input vectors and one broadcast weight, 15 of the 16 vector registers. A pass's rows may
/// straddle two [`MR`]-row blocks of the packing: each row reads its own weights in place.
///
/// Why 6 rows: with 4 x 24 outputs (12 accumulators and three input vectors, all 16 registers)
/// LLVM kept one accumulator on the stack, every step waiting on a store and a reload (session
/// 22's profile); 4 x 16 (8 accumulators, session 22) is just enough to cover the FMA latency
/// (4 cycles, 2 pipes) and leaves no slack for a late load. Six rows give 12 independent sums
/// and waste fewer rows on channel counts that are not a multiple of 8 (26, 52, 77, 103, 231 in
/// the classifiers), since the last pass takes 2, 4 or 6 rows. Chosen by an in-process A/B
/// against the 4 x 16 kernel (session 23, not kept); its effect on the service is in
/// `docs/benchmarks.md` (session 23).
///
/// Loop order, chosen by measurement on the models (`examples/profile_ops.rs --nodes`, session
/// 22): a dense 3x3 convolution runs one pass of rows over all outputs, then the next (its
/// weights, 9 x the input channels x 6, stay in L1). A 1x1 convolution instead copies each
/// 16-output block's inputs into a contiguous panel and runs every pass over it: its
/// inputs are whole planes apart, and planes of 64x64, 32x32 or 16x16 values put every input
/// of a block in the same L1 set (8 ways for 32 to 128 inputs). The 128 px classifier's two
/// largest 1x1 layers went from 1.04 and 0.74-1.02 ms to 0.58 and 0.47-0.50 ms with the panel.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Product, MR};
    use std::arch::x86_64::*;

    /// Outputs per block along `q`: two 8-lane vectors.
    const NQ: usize = 16;

    /// `maskload`/`maskstore` masks (lane on when its sign bit is set) of the two vectors of a
    /// block of `lanes` (1 to [`NQ`]) outputs.
    #[target_feature(enable = "avx2")]
    fn masks(lanes: usize) -> [__m256i; 2] {
        let lane = |v: usize| if v < lanes { -1 } else { 0 };
        let m = |j: usize| {
            _mm256_setr_epi32(
                lane(8 * j),
                lane(8 * j + 1),
                lane(8 * j + 2),
                lane(8 * j + 3),
                lane(8 * j + 4),
                lane(8 * j + 5),
                lane(8 * j + 6),
                lane(8 * j + 7),
            )
        };
        [m(0), m(1)]
    }

    /// Rows of a full pass (why 6: the module's docs).
    const ROWS: usize = 6;

    /// How far ahead (in values) the 1x1 path asks for its input planes while it copies a
    /// block into the panel, and for a pass's output rows before the pass stores them: four
    /// blocks, one 64-byte line per plane or row and block. Each input plane and output row is
    /// a stream of its own, 13 to 308 of them, and on a CPU whose last-level cache cannot hold
    /// a check's data (Zen 2: 16 MB) a layer's planes come from memory. With its data in memory
    /// the kernel alone ran 10-15 % faster on the classifiers' large 1x1 shapes
    /// (`examples/product_probe.rs --avx2 --evict 1024`); with it in a 480 MB L3, 2-3 % slower
    /// inside the network. Distances from a C model of the kernel on Zen 2 (docs/benchmarks.md,
    /// sessions 35 and 36).
    const PREFETCH_IN: usize = 64;
    const PREFETCH_OUT: usize = 64;

    /// The first `R` rows of a pass over the 16 outputs at `base + offsets[k]`: row `i`'s weight
    /// for `k` at `rows[i] + k * MR` (the `[k][MR]` packing). `FULL` passes use plain loads; a
    /// tail pass masked ones. A `PANEL` pass (the 1x1 path's panel) reads input `k` at
    /// `base + k * 16` and takes only the count of `offsets`, not their values.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; `rows[i] + k * MR` must be readable for every `k <
    /// offsets.len()`, and `base + off + lane` for every `off` in `offsets` and every lane
    /// that `mask` keeps (every lane when `FULL`); with `PANEL`, `base + k * 16 + lane` instead.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn pass<const R: usize, const FULL: bool, const PANEL: bool>(
        rows: &[*const f32; ROWS],
        offsets: &[usize],
        base: *const f32,
        mask: &[__m256i; 2],
    ) -> [[__m256; 2]; R] {
        let zero = _mm256_setzero_ps();
        let mut acc = [[zero; 2]; R];
        for (k, &off) in offsets.iter().enumerate() {
            let row = base.wrapping_add(if PANEL { k * NQ } else { off });
            // SAFETY: the caller's contract; masked-off lanes are not read.
            let (lo, hi) = unsafe {
                if FULL {
                    (_mm256_loadu_ps(row), _mm256_loadu_ps(row.wrapping_add(8)))
                } else {
                    (
                        _mm256_maskload_ps(row, mask[0]),
                        _mm256_maskload_ps(row.wrapping_add(8), mask[1]),
                    )
                }
            };
            for (a, &w) in acc.iter_mut().zip(rows) {
                // SAFETY: the caller's contract.
                let s = unsafe { _mm256_broadcast_ss(&*w.wrapping_add(k * MR)) };
                *a = [_mm256_fmadd_ps(s, lo, a[0]), _mm256_fmadd_ps(s, hi, a[1])];
            }
        }
        acc
    }

    /// Output rows `o0 .. o0 + R` (those below `op.co`) over the 16 outputs at `q0`: the pass,
    /// bias, activation and the stores. Rows past `op.co` read row `op.co - 1`'s weights and
    /// are not stored.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; `offsets.len() == op.k`, `base + off + lane` readable
    /// as for [`pass`], and `out[o * out_stride + q0 + lane]` writable for `o < op.co` and the
    /// lanes `mask` keeps (every lane when `full`).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn store_rows<const R: usize>(
        op: &Product,
        (o0, rows): (usize, &[*const f32; ROWS]),
        offsets: &[usize],
        base: *const f32,
        (full, mask, padded): (bool, &[__m256i; 2], bool),
        out: &mut [f32],
        out_stride: usize,
        q0: usize,
    ) {
        let zero = _mm256_setzero_ps();
        // SAFETY: the caller's contract.
        let acc = unsafe {
            if padded {
                pass::<R, true, true>(rows, offsets, base, mask)
            } else if full {
                pass::<R, true, false>(rows, offsets, base, mask)
            } else {
                pass::<R, false, false>(rows, offsets, base, mask)
            }
        };
        // Rows `o0 .. o0 + n` are stored: the count is taken once and the rows past it skipped,
        // and the weights' padding makes `bias` and `slopes` readable for every stored row
        // without a bounds check. Against a per-row `break` and checked indexing, `pass_rows`
        // is a third shorter and the 1x1 products 2-5 % faster alone (`examples/product_probe.rs`;
        // docs/benchmarks.md, session 35). The sums still go through the stack before the stores.
        let n = op.co.saturating_sub(o0).min(R);
        let slopes = op.slopes.as_deref().map(|s| s.as_ptr());
        for (i, a) in acc.iter().enumerate() {
            if i >= n {
                continue;
            }
            let o = o0 + i;
            // SAFETY: o < op.co, and `bias` (like `slopes`) holds at least `op.co` values.
            let bias = _mm256_set1_ps(unsafe { *op.bias.as_ptr().add(o) });
            // SAFETY: as for `bias`.
            let slope = slopes.map(|s| _mm256_set1_ps(unsafe { *s.add(o) }));
            let dst = out.as_mut_ptr().wrapping_add(o * out_stride + q0);
            for (j, &a) in a.iter().enumerate() {
                let mut x = _mm256_add_ps(a, bias);
                if op.relu {
                    x = _mm256_max_ps(x, zero);
                } else if let Some(s) = slope {
                    x = _mm256_max_ps(x, _mm256_mul_ps(s, x));
                }
                // SAFETY: out[o * out_stride + q0 + lane] is in bounds for every lane of a
                // full block, else for the lanes the mask keeps (the caller's contract).
                // (Masked stores are slow on AMD: full blocks avoid them.)
                unsafe {
                    let p = dst.wrapping_add(8 * j);
                    if full {
                        _mm256_storeu_ps(p, x);
                    } else {
                        _mm256_maskstore_ps(p, mask[j], x);
                    }
                }
            }
        }
    }

    /// The passes over `op`'s output rows, [`ROWS`] rows each: each with its first row and its
    /// rows' weights (rows past `op.co` read row `op.co - 1`'s and are not stored). Computed as
    /// they are walked (a few pointer sums), nothing allocated.
    fn passes(op: &Product) -> impl Iterator<Item = (usize, [*const f32; ROWS])> + '_ {
        (0..op.co).step_by(ROWS).map(|o0| {
            let rows = std::array::from_fn(|i| {
                let o = (o0 + i).min(op.co - 1);
                op.packed
                    .as_ptr()
                    .wrapping_add((o / MR) * op.k * MR + o % MR)
            });
            (o0, rows)
        })
    }

    /// One pass of [`passes`] over the 16 outputs at `q0`, or a tail of fewer: the last pass
    /// computes 2, 4 or 6 rows, to fit what is left.
    ///
    /// # Safety
    /// As for [`store_rows`].
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn pass_rows(
        op: &Product,
        (o0, rows): (usize, [*const f32; ROWS]),
        offsets: &[usize],
        base: *const f32,
        tail: (bool, &[__m256i; 2], bool),
        out: &mut [f32],
        out_stride: usize,
        q0: usize,
    ) {
        let pass = (o0, &rows);
        // SAFETY: the caller's contract; the row pointers are rows of `op.packed`, `op.k`
        // weights of stride MR each.
        unsafe {
            match op.co - o0 {
                1..=2 => store_rows::<2>(op, pass, offsets, base, tail, out, out_stride, q0),
                3..=4 => store_rows::<4>(op, pass, offsets, base, tail, out, out_stride, q0),
                _ => store_rows::<ROWS>(op, pass, offsets, base, tail, out, out_stride, q0),
            }
        }
    }

    thread_local! {
        /// The inputs of one 16-output block of a 1x1 convolution, `[k][16]`, for [`run`].
        static PANEL: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// # Safety
    /// The CPU must have AVX2 and FMA; `offsets.len() == op.k`, `src[offsets[k] + q]` must be in
    /// bounds for every `k` and `q < len`, and `out[o * out_stride + q]` for `o < op.co`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn run(
        op: &Product,
        src: &[f32],
        offsets: &[usize],
        len: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        // A 1x1 convolution (its inputs a whole plane apart): each 16-output block's inputs are
        // copied into one contiguous panel and every pass of rows runs over it.
        let step = offsets.get(1).map_or(0, |o| o.wrapping_sub(offsets[0]));
        if offsets.windows(2).all(|p| p[1].wrapping_sub(p[0]) == step) {
            PANEL.with(|panel| {
                let panel = &mut *panel.borrow_mut();
                super::grow(panel, op.k * NQ);
                for q0 in (0..len).step_by(NQ) {
                    let lanes = NQ.min(len - q0);
                    let mask = masks(lanes);
                    let fetch_in = q0 + PREFETCH_IN < len;
                    // Lanes past `lanes` keep older values: their sums are never stored.
                    for (dst, &off) in panel.chunks_exact_mut(NQ).zip(offsets) {
                        if fetch_in {
                            // A hint: it reads nothing the program sees and never faults (the
                            // address is inside the plane anyway).
                            _mm_prefetch::<_MM_HINT_T0>(
                                src.as_ptr().wrapping_add(off + q0 + PREFETCH_IN).cast(),
                            );
                        }
                        let src = &src[off + q0..][..lanes];
                        // A whole block is a fixed-size copy, two vector moves (a
                        // `copy_from_slice` of a variable length is a call to memmove).
                        match (
                            <&mut [f32; NQ]>::try_from(&mut *dst),
                            <&[f32; NQ]>::try_from(src),
                        ) {
                            (Ok(d), Ok(s)) => *d = *s,
                            _ => dst[..lanes].copy_from_slice(src),
                        }
                    }
                    let fetch_out = q0 + PREFETCH_OUT < len;
                    for pass in passes(op) {
                        if fetch_out {
                            for o in pass.0..op.co.min(pass.0 + ROWS) {
                                // A hint, inside row `o` of `out`.
                                _mm_prefetch::<_MM_HINT_T0>(
                                    out.as_ptr()
                                        .wrapping_add(o * out_stride + q0 + PREFETCH_OUT)
                                        .cast(),
                                );
                            }
                        }
                        let tail = (lanes == NQ, &mask, true);
                        // SAFETY: the panel holds 16 values per input, one per offset (a
                        // panel pass reads input `k` at `k * 16`); the stores as the caller's
                        // contract.
                        unsafe {
                            pass_rows(op, pass, offsets, panel.as_ptr(), tail, out, out_stride, q0)
                        };
                    }
                }
            });
            return;
        }
        for pass in passes(op) {
            for q0 in (0..len).step_by(NQ) {
                let lanes = NQ.min(len - q0);
                let mask = masks(lanes);
                let base = src.as_ptr().wrapping_add(q0);
                // SAFETY: the caller's contract.
                unsafe {
                    pass_rows(
                        op,
                        pass,
                        offsets,
                        base,
                        (lanes == NQ, &mask, false),
                        out,
                        out_stride,
                        q0,
                    )
                };
            }
        }
    }
}

/// A 1x1 convolution: `out[o, p] = act(bias[o] + sum_i w[o, i] * x[i, p])`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointwise {
    product: Product,
    /// Unit axes before the channel axis in the input and in the output (tract's einsums drop
    /// or add the batch axis of 1 on either side: `NIHW,OI->OHW`, `IHW,OI->NOHW`).
    lead_in: usize,
    lead_out: usize,
}

impl Pointwise {
    /// Input and output channels.
    pub fn shape(&self) -> (usize, usize) {
        (self.product.k, self.product.co)
    }

    /// Run on `[ci, pixels]` into `out` (`[co, pixels]`).
    pub fn run(&self, x: &[f32], pixels: usize, out: &mut [f32]) -> Result<(), String> {
        let ci = self.product.k;
        if pixels == 0 || x.len() != ci * pixels || out.len() != self.product.co * pixels {
            return Err(format!(
                "pointwise: {} inputs, {} outputs",
                x.len(),
                out.len()
            ));
        }
        if let Some(tiles) = &self.product.tiles {
            return SCRATCH.with(|s| {
                let s = &mut *s.borrow_mut();
                amx::run(
                    &self.product,
                    tiles,
                    x,
                    pixels,
                    out,
                    &mut s.words,
                    &mut s.sums,
                )
            });
        }
        let Some(pairs) = &self.product.pairs else {
            let offsets: Vec<usize> = (0..ci).map(|i| i * pixels).collect();
            return self.product.run(x, &offsets, pixels, out, pixels);
        };
        SCRATCH.with(|s| {
            let words = &mut s.borrow_mut().words;
            // Every word of `words[..k2 * pixels]` is written by the packing below.
            grow(words, pairs.k2 * pixels);
            let words = &mut words[..pairs.k2 * pixels];
            let mut channels = x.chunks_exact(pixels);
            for dst in words.chunks_exact_mut(pixels) {
                if let Some(a) = channels.next() {
                    bf16::pack_rows(a, channels.next(), dst);
                }
            }
            let offsets: Vec<usize> = (0..pairs.k2).map(|j| j * pixels).collect();
            bf16::run(&self.product, pairs, words, &offsets, pixels, out, pixels)
        })
    }

    /// The output shape for an input of `dims` (`[1 x lead_in, ci, rest...]`):
    /// `[1 x lead_out, co, rest...]`, or None when the input does not have that form.
    fn output_dims(&self, dims: &[usize]) -> Option<TVec<usize>> {
        let (lead, rest) = dims.split_at_checked(self.lead_in)?;
        let (&c, rest) = rest.split_first()?;
        (c == self.product.k && lead.iter().all(|&d| d == 1)).then(|| {
            let mut out: TVec<usize> = tvec![1; self.lead_out];
            out.push(self.product.co);
            out.extend_from_slice(rest);
            out
        })
    }
}

impl Op for Pointwise {
    fn name(&self) -> StaticName {
        "Pointwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let p = &self.product;
        Ok(vec![format!(
            "{} -> {} channels, relu {}, prelu {}",
            p.k,
            p.co,
            p.relu,
            p.slopes.is_some()
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for Pointwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let dims = self
            .output_dims(input.shape())
            .with_context(|| format!("Pointwise: input shape {:?}", input.shape()))?;
        let pixels = input.len() / self.product.k;
        let x = plain_f32(&input, "Pointwise")?;
        let y = output_f32(&dims, "Pointwise", |out| self.run(x, pixels, out))?;
        Ok(tvec!(y))
    }
}

impl TypedOp for Pointwise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let dims = inputs[0]
            .shape
            .as_concrete()
            .context("Pointwise needs concrete shapes")?;
        let out = self
            .output_dims(dims)
            .with_context(|| format!("Pointwise: input shape {dims:?}"))?;
        Ok(tvec!(f32::fact(&*out)))
    }

    as_op!();
}

/// A dense 3x3 convolution, stride 1 or 2, zero padding 1, over `[(1,) ci, H, W]`, with an
/// optional `[.., H, W]` 0/1 mask input multiplied into the input first (the detector's canvas
/// masks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dense3x3 {
    product: Product,
    ci: usize,
    stride: usize,
}

/// The zero-padded planes a [`Dense3x3`] reads: per input channel `stride * stride` planes (row
/// parity, column parity) of `rows x width` values plus `width + 2` of slack for the junk
/// columns of the last row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    stride: usize,
    rows: usize,
    width: usize,
    /// Values per plane, slack included.
    plane: usize,
    /// Output size.
    ho: usize,
    wo: usize,
}

impl Geometry {
    fn new(stride: usize, h: usize, w: usize) -> Self {
        let (rows, width) = ((h + 2).div_ceil(stride), (w + 2).div_ceil(stride));
        Geometry {
            stride,
            rows,
            width,
            plane: rows * width + width + 2,
            ho: out_side(h, stride),
            wo: out_side(w, stride),
        }
    }

    /// Index of padded position `(r, c)` (input `(r - 1, c - 1)`) of channel `ch`. Output
    /// `q = y * width + x` reads tap `(ky, kx)` at padded `(stride * y + ky, stride * x + kx)`,
    /// which is `index(ch, ky, kx) + q`: the tap's offset.
    fn index(&self, ch: usize, r: usize, c: usize) -> usize {
        let s = self.stride;
        let plane = (ch * s + r % s) * s + c % s;
        plane * self.plane + (r / s) * self.width + c / s
    }
}

/// Buffers of [`Pointwise`] and [`Dense3x3`], reused across calls on a thread.
struct Scratch {
    /// Padded f32 input planes.
    padded: Vec<f32>,
    /// The product before compaction.
    wide: Vec<f32>,
    /// The input as bfloat16 channel pairs (padded planes for [`Dense3x3`]).
    words: Vec<u32>,
    /// One masked row of each channel of a pair, and the pair packed.
    rows: (Vec<f32>, Vec<f32>, Vec<u32>),
    /// The AMX tiles' sums before the epilogue ([`amx`]).
    sums: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = const {
        std::cell::RefCell::new(Scratch {
            padded: Vec::new(),
            wide: Vec::new(),
            words: Vec::new(),
            rows: (Vec::new(), Vec::new(), Vec::new()),
            sums: Vec::new(),
        })
    };
}

/// `v` grown to at least `n` values (new ones zero), never shrunk: for scratch whose first `n`
/// values the caller writes before reading them, so that a smaller layer between two larger ones
/// does not make the next one clear the regrown part again.
pub(super) fn grow<T: Copy + Default>(v: &mut Vec<T>, n: usize) {
    if v.len() < n {
        v.resize(n, T::default());
    }
}

/// Place input row `y` of channel (or channel pair) `c`, `row`, where [`Geometry::index`] puts
/// it in the padded planes: at padded row `y + 1`, columns from 1, split by column parity for
/// stride 2.
fn place<T: Copy>(g: &Geometry, c: usize, y: usize, row: &[T], padded: &mut [T]) {
    let w = row.len();
    if g.stride == 1 {
        let start = g.index(c, y + 1, 1);
        padded[start..start + w].copy_from_slice(row);
    } else {
        // Input column xx is padded column xx + 1: even input columns land in the odd-column
        // plane at xx / 2 (from padded column 1), odd ones in the even-column plane at xx / 2
        // (from padded column 2).
        // One pass over the row's column pairs: a strided iterator per plane
        // (`row.iter().skip(parity).step_by(2)`) copied a value at a time, 3.4x slower on the
        // networks' first convolutions (3 x 221 x 166: 43 against 13 us; docs/benchmarks.md,
        // session 37). The even-column plane comes first in `padded` (`Geometry::index`).
        let (even, odd) = (g.index(c, y + 1, 2), g.index(c, y + 1, 1));
        let (head, tail) = padded.split_at_mut(odd);
        let to_odd = &mut tail[..w.div_ceil(2)];
        let to_even = &mut head[even..even + w / 2];
        let pairs = row.chunks_exact(2);
        if let (Some(&last), Some(d)) = (pairs.remainder().first(), to_odd.last_mut()) {
            *d = last;
        }
        for ((pair, a), b) in pairs.zip(to_odd.iter_mut()).zip(to_even.iter_mut()) {
            *a = pair[0];
            *b = pair[1];
        }
    }
}

/// `row` times `mask` (0/1 values) into `buf`, or `row` itself without a mask.
fn masked<'a>(row: &'a [f32], mask: Option<&[f32]>, buf: &'a mut Vec<f32>) -> &'a [f32] {
    match mask {
        Some(m) => {
            buf.clear();
            buf.extend(row.iter().zip(m).map(|(v, m)| v * m));
            buf
        }
        None => row,
    }
}

impl Dense3x3 {
    /// Input and output channels.
    pub fn shape(&self) -> (usize, usize) {
        (self.ci, self.product.co)
    }

    /// Output side for an input side `v`.
    pub fn out_side(&self, v: usize) -> usize {
        out_side(v, self.stride)
    }

    /// Run on `[ci, h, w]` (times `mask`, `[h, w]`, when given) into `out` (`[co, ho, wo]`).
    pub fn run(
        &self,
        x: &[f32],
        mask: Option<&[f32]>,
        h: usize,
        w: usize,
        out: &mut [f32],
    ) -> Result<(), String> {
        let co = self.product.co;
        if h == 0 || w == 0 || x.len() != self.ci * h * w || mask.is_some_and(|m| m.len() != h * w)
        {
            return Err(format!(
                "dense 3x3: {} inputs for {}x{h}x{w}",
                x.len(),
                self.ci
            ));
        }
        let g = Geometry::new(self.stride, h, w);
        if out.len() != co * g.ho * g.wo {
            return Err(format!(
                "dense 3x3: {} outputs for {co}x{}x{}",
                out.len(),
                g.ho,
                g.wo
            ));
        }
        let len = g.ho * g.width;
        let planes = self.stride * self.stride * g.plane;
        let taps = |c: usize| (0..9).map(move |t| g.index(c, t / 3, t % 3));
        SCRATCH.with(|s| {
            let s = &mut *s.borrow_mut();
            // Every element of `wide[..co * len]` is written by the product (stride `len`,
            // `len` per channel): grown when needed, never cleared.
            grow(&mut s.wide, co * len);
            let wide = &mut s.wide[..co * len];
            let mask_row = |y: usize| mask.map(|m| &m[y * w..][..w]);
            if let Some(pairs) = &self.product.pairs {
                let (ra, rb, packed) = &mut s.rows;
                packed.resize(w, 0);
                let c2 = self.ci.div_ceil(2);
                s.words.clear();
                s.words.resize(c2 * planes, 0);
                for j in 0..c2 {
                    let a = &x[2 * j * h * w..][..h * w];
                    let b = (2 * j + 1 < self.ci).then(|| &x[(2 * j + 1) * h * w..][..h * w]);
                    for y in 0..h {
                        let m = mask_row(y);
                        let a = masked(&a[y * w..][..w], m, ra);
                        let b = b.map(|b| masked(&b[y * w..][..w], m, rb));
                        bf16::pack_rows(a, b, packed);
                        place(&g, j, y, packed, &mut s.words);
                    }
                }
                let offsets: Vec<usize> = (0..c2).flat_map(taps).collect();
                bf16::run(&self.product, pairs, &s.words, &offsets, len, wide, len)?;
            } else {
                s.padded.clear();
                s.padded.resize(self.ci * planes, 0.0);
                for (c, plane) in x.chunks_exact(h * w).enumerate() {
                    for (y, row) in plane.chunks_exact(w).enumerate() {
                        let row = masked(row, mask_row(y), &mut s.rows.0);
                        place(&g, c, y, row, &mut s.padded);
                    }
                }
                let offsets: Vec<usize> = (0..self.ci).flat_map(taps).collect();
                self.product.run(&s.padded, &offsets, len, wide, len)?;
            }
            for (dst, src) in out
                .chunks_exact_mut(g.ho * g.wo)
                .zip(wide.chunks_exact(len))
            {
                for (d, s) in dst.chunks_exact_mut(g.wo).zip(src.chunks_exact(g.width)) {
                    d.copy_from_slice(&s[..g.wo]);
                }
            }
            Ok(())
        })
    }
}

impl Op for Dense3x3 {
    fn name(&self) -> StaticName {
        "Dense3x3".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let p = &self.product;
        Ok(vec![format!(
            "{} -> {} channels, stride {}, relu {}, prelu {}",
            self.ci,
            p.co,
            self.stride,
            p.relu,
            p.slopes.is_some()
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for Dense3x3 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = SpatialInput::of(&inputs, "Dense3x3")?;
        ensure!(
            x.c == self.ci,
            "Dense3x3: {} channels, {} expected",
            x.c,
            self.ci
        );
        let dims = x.output_dims(self.product.co, self.out_side(x.h), self.out_side(x.w));
        let y = output_f32(&dims, "Dense3x3", |out| {
            self.run(x.values, x.mask, x.h, x.w, out)
        })?;
        Ok(tvec!(y))
    }
}

impl TypedOp for Dense3x3 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let co = Some(self.product.co);
        let fact = conv_output_fact(inputs[0], co, |v| self.out_side(v), "Dense3x3")?;
        Ok(tvec!(fact))
    }

    as_op!();
}

/// The 1x1 convolution at node `n`, if it is one [`Pointwise`] can run: an f32 `EinSum` of a
/// channels-first activation `[1.., ci, H, W]` (letters `..I H W`) with constant weights (`OI`
/// or `IO`) into `[1.., co, H, W]` (letters `..O H W`), where only unit axes come before the
/// channel axis on either side. Returns `[co][ci]` weights, `co`, `ci` and the number of unit
/// axes before the channel axis in the input and in the output.
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
        // Exactly (H, W) after the channel: what the per-channel folding after it assumes.
        && x.len() == xi + 3;
    if fact.datum_type != f32::datum_type() || !channels_first || w.len() != 2 {
        return None;
    }
    let (wdims, wv) = const_f32(model, node.inputs[1])?;
    let (ci, co) = (dims[xi], odims[yo]);
    if wdims.len() != 2 || wdims.iter().product::<usize>() != co * ci || co * ci == 0 {
        return None;
    }
    let weights = if w == [i, o] {
        (0..co * ci).map(|k| wv[(k % ci) * co + k / ci]).collect()
    } else {
        wv
    };
    Some((weights, co, ci, xi, yo))
}

/// Replace every 1x1 convolution (as tract's declutter leaves it, an `EinSum`) of a concrete,
/// decluttered model by [`Pointwise`], folding the per-channel additions and multiplications
/// after it, then `max(x, 0)` or PReLU. Returns how many were replaced.
/// With `bf16`, the products run in bfloat16 ([`bf16`]); no vector path is wider than `isa`.
pub(super) fn fuse_pointwise(model: &mut TypedModel, bf16: bool, isa: Isa) -> TractResult<usize> {
    fuse_nodes(model, "pointwise", false, |model, n| {
        let (mut weights, co, ci, lead_in, lead_out) = match_einsum(model, n)?;
        let mut bias = vec![0f32; co];
        let tail = fold_tail(model, OutletId::new(n, 0), &mut weights, &mut bias);
        let mut product = Product::new(co, ci, &weights, bias)?
            .with_activation(tail.relu, tail.slopes)?
            .with_isa(isa);
        if bf16 {
            product = product.with_pairs(ci, 1, &weights)?;
        }
        let op = Pointwise {
            product,
            lead_in,
            lead_out,
        };
        Some(Fused {
            op: Box::new(op),
            last: tail.last,
        })
    })
}

/// Replace every dense 3x3 convolution (stride 1 or 2, zero padding 1) of a concrete,
/// decluttered model by [`Dense3x3`], folding the per-channel steps and activation after it and
/// a canvas mask before it. Returns how many were replaced.
/// With `bf16`, the products run in bfloat16 ([`bf16`]); no vector path is wider than `isa`.
pub(super) fn fuse_dense3x3(model: &mut TypedModel, bf16: bool, isa: Isa) -> TractResult<usize> {
    fuse_nodes(model, "dense3x3", true, |model, n| {
        let mut conv = match_conv3x3(model, n, false)?;
        let tail = fold_tail(
            model,
            OutletId::new(n, 0),
            &mut conv.weights,
            &mut conv.bias,
        );
        let mut product = Product::new(conv.co, 9 * conv.ci, &conv.weights, conv.bias)?
            .with_activation(tail.relu, tail.slopes)?
            .with_isa(isa);
        // A network's first convolution reads the image (3 channels) and stays in f32. Rounding
        // the pixels to 8 significant bits was most of the bf16 classifiers' error on the
        // devset: with it p_real moved by up to 0.013 and 2 of 312 verdicts changed, without it
        // by up to 0.005 and none did (docs/benchmarks.md, session 20). Three channels would
        // also leave a quarter of the pairs' halves zero.
        if bf16 && conv.ci > 3 {
            product = product.with_pairs(conv.ci, 9, &conv.weights)?;
        }
        let op = Dense3x3 {
            product,
            ci: conv.ci,
            stride: conv.stride,
        };
        Some(Fused {
            op: Box::new(op),
            last: tail.last,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    /// `act` 0: none, 1: ReLU, 2: PReLU with these slopes.
    fn activate(v: f32, act: u8, slope: f32) -> f32 {
        match act {
            0 => v,
            1 => v.max(0.0),
            _ => v.max(slope * v),
        }
    }

    fn make_product(
        co: usize,
        k: usize,
        seed: u64,
        act: u8,
    ) -> (Product, Vec<f32>, Vec<f32>, Vec<f32>) {
        let w = values(co * k, seed);
        let bias = values(co, seed + 1);
        let slopes: Vec<f32> = values(co, seed + 3).iter().map(|s| s.abs() * 0.5).collect();
        let p = Product::new(co, k, &w, bias.clone())
            .unwrap()
            .with_activation(act == 1, (act == 2).then(|| slopes.clone()))
            .unwrap();
        (p, w, bias, slopes)
    }

    fn close(a: &[f32], b: &[f32], k: usize) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(a, b)| (a - b).abs() <= 1e-5 * (1.0 + k as f32))
    }

    /// Operand values as the product sees them: as they are (f32 kernels) or rounded to
    /// bfloat16 ([`bf16`]); either way exact in f64.
    fn operand(rounded: bool) -> impl Fn(f32) -> f64 {
        move |v| {
            if rounded {
                f64::from(bf16::widen(bf16::round(v)))
            } else {
                f64::from(v)
            }
        }
    }

    /// A 1x1 convolution of random operands (`[co][ci]` weights, `ci x pixels` inputs) against
    /// its definition summed in f64, in f32 or (`rounded`) bf16; the portable path too.
    fn check_pointwise(
        (co, ci, pixels, seed, act): (usize, usize, usize, u64, u8),
        rounded: bool,
    ) -> Result<(), TestCaseError> {
        let (mut product, w, bias, slopes) = make_product(co, ci, seed, act);
        if rounded {
            product = product.with_pairs(ci, 1, &w).unwrap();
        }
        let b = operand(rounded);
        let x = values(ci * pixels, seed + 2);
        let mut want = vec![0f32; co * pixels];
        for o in 0..co {
            for p in 0..pixels {
                let s: f64 = (0..ci)
                    .map(|i| b(w[o * ci + i]) * b(x[i * pixels + p]))
                    .sum();
                want[o * pixels + p] = activate((s + f64::from(bias[o])) as f32, act, slopes[o]);
            }
        }
        let op = Pointwise {
            product,
            lead_in: 0,
            lead_out: 0,
        };
        let mut fast = vec![f32::NAN; co * pixels];
        op.run(&x, pixels, &mut fast).unwrap();
        prop_assert!(close(&fast, &want, ci), "{fast:?} vs {want:?}");
        let mut portable = vec![f32::NAN; co * pixels];
        if rounded {
            // The portable path reads pairs, which a product on AMX tiles does not keep.
            let pairs = &PairWeights::new(co, ci, 1, &w).unwrap();
            let mut words = vec![0u32; pairs.k2 * pixels];
            for (j, dst) in words.chunks_exact_mut(pixels).enumerate() {
                let row = |c: usize| (c < ci).then(|| &x[c * pixels..][..pixels]);
                bf16::pack_rows(&x[2 * j * pixels..][..pixels], row(2 * j + 1), dst);
            }
            let offsets: Vec<usize> = (0..pairs.k2).map(|j| j * pixels).collect();
            bf16::run_portable(
                &op.product,
                pairs,
                &words,
                &offsets,
                pixels,
                &mut portable,
                pixels,
            );
        } else {
            let offsets: Vec<usize> = (0..ci).map(|i| i * pixels).collect();
            op.product
                .run_portable(&x, &offsets, pixels, &mut portable, pixels);
        }
        prop_assert!(close(&portable, &want, ci), "{portable:?} vs {want:?}");
        Ok(())
    }

    /// A dense 3x3 convolution of random operands against its definition summed in f64, in f32
    /// or (`rounded`) bf16.
    fn check_dense3x3(
        (co, ci, h, w): (usize, usize, usize, usize),
        (stride, masked, seed, act): (usize, bool, u64, u8),
        rounded: bool,
    ) -> Result<(), TestCaseError> {
        let (mut product, wt, bias, slopes) = make_product(co, 9 * ci, seed, act);
        if rounded {
            product = product.with_pairs(ci, 9, &wt).unwrap();
        }
        let b = operand(rounded);
        let x = values(ci * h * w, seed + 2);
        let mask: Vec<f32> = (0..h * w)
            .map(|i| f32::from(u8::from(i % 3 != 1)))
            .collect();
        let op = Dense3x3 {
            product,
            ci,
            stride,
        };
        let (ho, wo) = (op.out_side(h), op.out_side(w));
        let mut want = vec![0f32; co * ho * wo];
        for o in 0..co {
            for y in 0..ho {
                for xx in 0..wo {
                    let mut s = f64::from(bias[o]);
                    for c in 0..ci {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (r, col) = (stride * y + ky, stride * xx + kx);
                                if r == 0 || col == 0 || r > h || col > w {
                                    continue;
                                }
                                let at = (r - 1) * w + col - 1;
                                let m = if masked { mask[at] } else { 1.0 };
                                s += b(wt[o * 9 * ci + c * 9 + ky * 3 + kx])
                                    * b(x[c * h * w + at] * m);
                            }
                        }
                    }
                    want[(o * ho + y) * wo + xx] = activate(s as f32, act, slopes[o]);
                }
            }
        }
        let mut got = vec![f32::NAN; co * ho * wo];
        op.run(&x, masked.then_some(&mask[..]), h, w, &mut got)
            .unwrap();
        prop_assert!(close(&got, &want, 9 * ci), "{got:?} vs {want:?}");
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn pointwise_matches_the_direct_definition(
            co in 1usize..40, ci in 1usize..40, pixels in 1usize..100, seed in 0u64..1000,
            act in 0u8..3,
        ) {
            check_pointwise((co, ci, pixels, seed, act), false)?;
        }

        #[test]
        fn dense3x3_matches_the_direct_definition(
            co in 1usize..20, ci in 1usize..6, h in 1usize..24, w in 1usize..24,
            stride in 1usize..3, masked: bool, seed in 0u64..1000, act in 0u8..3,
        ) {
            check_dense3x3((co, ci, h, w), (stride, masked, seed, act), false)?;
        }

        /// The bf16 products compute the definition on bf16-rounded weights and inputs (each
        /// product exact, the sums in f32), on whichever path this CPU takes.
        #[test]
        fn bf16_pointwise_matches_the_rounded_definition(
            co in 1usize..40, ci in 1usize..40, pixels in 1usize..100, seed in 0u64..1000,
            act in 0u8..3,
        ) {
            check_pointwise((co, ci, pixels, seed, act), true)?;
        }

        #[test]
        fn bf16_dense3x3_matches_the_rounded_definition(
            co in 1usize..20, ci in 1usize..6, h in 1usize..24, w in 1usize..24,
            stride in 1usize..3, masked: bool, seed in 0u64..1000, act in 0u8..3,
        ) {
            check_dense3x3((co, ci, h, w), (stride, masked, seed, act), true)?;
        }
    }

    /// The proptests above call `run`, which takes the AVX-512 path where the CPU has it, else
    /// the AVX2 + FMA one, else the portable one: say which ran. (Not a CI failure: CI runs on
    /// whichever x86-64 machine the session had.) The portable path is compared with the
    /// dispatched one below wherever that is not the portable path itself.
    #[test]
    fn say_which_kernel_path_was_tested() {
        #[cfg(target_arch = "x86_64")]
        let path = if std::arch::is_x86_feature_detected!("avx512f") {
            "AVX-512"
        } else if fast_kernels() {
            "AVX2 + FMA"
        } else {
            "portable"
        };
        #[cfg(not(target_arch = "x86_64"))]
        let path = "portable";
        eprintln!("note: the fused kernels' {path} path was tested here");
        if amx_available() {
            eprintln!("note: the bf16 1x1 products ran on AMX tiles here");
        }
    }

    /// A product of `co` rows over `k` inputs of `len` values at unaligned offsets, with its
    /// input, offsets and an output stride `stride_extra` past `len`.
    fn product_case(
        co: usize,
        k: usize,
        len: usize,
        stride_extra: usize,
        seed: u64,
        act: u8,
    ) -> (Product, Vec<f32>, Vec<usize>, usize) {
        let (product, ..) = make_product(co, k, seed, act);
        let src = values(k * len + 7, seed + 5);
        let offsets: Vec<usize> = (0..k).map(|i| i * len + (i % 3)).collect();
        (product, src, offsets, len + stride_extra)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn the_portable_path_matches_the_dispatched_one(
            co in 1usize..20, k in 1usize..30, len in 1usize..80, stride_extra in 0usize..5,
            seed in 0u64..1000, act in 0u8..3,
        ) {
            let (product, src, offsets, stride) = product_case(co, k, len, stride_extra, seed, act);
            let mut a = vec![0f32; co * stride];
            let mut b = a.clone();
            product.run(&src, &offsets, len, &mut a, stride).unwrap();
            product.run_portable(&src, &offsets, len, &mut b, stride);
            prop_assert!(close(&a, &b, k), "{a:?} vs {b:?}");
        }

        /// The AVX2 + FMA kernel against the portable one on any CPU that has AVX2, so that a
        /// machine with AVX-512 (which dispatches past it) still tests it. Lengths cross the
        /// kernel's 16-output blocks and its masked tail; `co` crosses the 6-row passes (some
        /// straddling two [`MR`]-row blocks of the packing) and the last pass's 2- and 4-row
        /// forms. `plane_apart` gives the inputs one plane apart (a 1x1 convolution: the panel order),
        /// else shifted by up to two values (a 3x3's taps: the direct order). Where the CPU has
        /// AVX-512F as well, the AVX2 result must also equal the AVX-512 one bit for bit.
        #[test]
        fn the_avx2_path_matches_the_portable_one(
            co in 1usize..20, k in 1usize..30, len in 1usize..80, stride_extra in 0usize..5,
            seed in 0u64..1000, act in 0u8..3, plane_apart: bool,
        ) {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                let (product, src, mut offsets, stride) =
                    product_case(co, k, len, stride_extra, seed, act);
                if plane_apart {
                    offsets = (0..k).map(|i| i * len + 1).collect();
                }
                let mut a = vec![0f32; co * stride];
                let mut b = a.clone();
                product.check_reach(k, src.len(), &offsets, len, a.len(), stride).unwrap();
                // SAFETY: the CPU has AVX2 and FMA (checked above), and the reads and writes
                // were checked in bounds just above, as `Product::run` does.
                unsafe { avx2::run(&product, &src, &offsets, len, &mut a, stride) };
                product.run_portable(&src, &offsets, len, &mut b, stride);
                prop_assert!(close(&a, &b, k), "{a:?} vs {b:?}");
                // Where the CPU also has AVX-512F, the two vector paths give the same bits (the
                // same fused sums in the same order).
                if std::arch::is_x86_feature_detected!("avx512f") {
                    let mut c = vec![0f32; co * stride];
                    // SAFETY: the CPU has AVX-512F; the bounds were checked above.
                    unsafe { avx512::run(&product, &src, &offsets, len, &mut c, stride) };
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    prop_assert_eq!(bits(&a), bits(&c));
                }
                // Untouched padding between rows stays zero.
                for o in 0..co {
                    prop_assert!(a[o * stride + len..(o + 1) * stride].iter().all(|&v| v == 0.0));
                }
            }
        }
    }

    /// As [`say_which_kernel_path_was_tested`], for the bf16 products.
    #[test]
    fn say_which_bf16_path_was_tested() {
        let path = if bf16::available() {
            "AVX512-BF16"
        } else {
            "portable"
        };
        eprintln!("note: the bf16 products' {path} path was tested here");
    }

    #[test]
    fn wrong_sizes_are_errors() {
        let (product, ..) = make_product(2, 3, 1, 0);
        let op = Pointwise {
            product: product.clone(),
            lead_in: 0,
            lead_out: 0,
        };
        assert!(op.run(&[0.0; 5], 2, &mut [0.0; 4]).is_err());
        assert!(op.run(&[0.0; 6], 2, &mut [0.0; 3]).is_err());
        assert!(op.run(&[], 0, &mut []).is_err());
        // An offset that would read past the input.
        assert!(product
            .run(&[0.0; 6], &[0, 2, 5], 2, &mut [0.0; 4], 2)
            .is_err());
        assert!(Product::new(2, 3, &[0.0; 5], vec![0.0; 2]).is_none());
        assert!(product.clone().with_pairs(2, 1, &[0.0; 6]).is_none());
        assert!(product.clone().with_pairs(3, 1, &[0.0; 5]).is_none());
        let pairs = product.clone().with_pairs(3, 1, &[0.0; 6]).unwrap();
        // A product in bf16 has no f32 weights to run on.
        assert!(pairs
            .run(&[0.0; 6], &[0, 2, 4], 2, &mut [0.0; 4], 2)
            .is_err());
        let w = &PairWeights::new(2, 3, 1, &[0.0; 6]).unwrap();
        assert!(bf16::run(&pairs, w, &[0; 4], &[0, 2], 2, &mut [0.0; 4], 2).is_ok());
        assert!(bf16::run(&pairs, w, &[0; 4], &[0, 3], 2, &mut [0.0; 4], 2).is_err());
        assert!(bf16::run(&pairs, w, &[0; 4], &[0], 2, &mut [0.0; 4], 2).is_err());
        assert!(product.with_activation(false, Some(vec![0.5])).is_none());
        let (product, ..) = make_product(2, 9, 1, 0);
        let dense = Dense3x3 {
            product,
            ci: 1,
            stride: 2,
        };
        assert!(dense.run(&[0.0; 12], None, 3, 4, &mut [0.0; 8]).is_ok());
        assert!(dense.run(&[0.0; 12], None, 3, 4, &mut [0.0; 7]).is_err());
        assert!(dense
            .run(&[0.0; 12], Some(&[1.0; 11]), 3, 4, &mut [0.0; 8])
            .is_err());
        assert!(dense.run(&[], None, 0, 4, &mut []).is_err());
    }
}
