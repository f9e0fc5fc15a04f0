//! A 3x3 depthwise convolution for tract plans, with the per-channel affine that follows it
//! (batch norm) folded into its weights and an optional ReLU.
//!
//! Why hand-written: tract 0.23 runs depthwise convolutions through a generic per-pixel
//! kernel (`DepthWiseConv`) at about 1-2 GMAC/s on this machine, and leaves the batch norm that
//! follows each of them as a separate element-wise pass. In the three models that was about
//! 4 ms of 19 per image (`examples/profile_ops.rs`). Every depthwise convolution in them is
//! 3x3, stride 1 or 2, zero padding 1, NCHW, batch 1: this module does exactly that shape
//! with row loops the compiler vectorises over a zero-padded copy of each plane (AVX2 when the
//! CPU has it; narrow planes at stride 1 as one flat run of vectors over that copy,
//! `avx2::stride1`), or for stride 2 with hand-written loads straight from the input (`avx512`,
//! `avx2`), and nothing else — any other convolution stays with tract.
//!
//! [`fuse_depthwise`] rewrites a concrete, decluttered model before codegen: each matching
//! `Conv` with constant weights and bias becomes a [`Depthwise3x3`], and a following
//! multiplication and addition by per-channel constants (and then `max(x, 0)`) are folded in
//! when the convolution is their only input.

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use super::graph::{
    conv_output_fact, fold_tail, fuse_nodes, match_conv3x3, out_side, output_f32, Fused,
    SpatialInput,
};
use super::isa::Isa;

/// One channel of a run: its input plane, its output plane, its nine taps, its bias and its
/// PReLU slope.
type Channel<'a> = (&'a [f32], &'a mut [f32], &'a [f32], f32, Option<f32>);

/// Per-channel weights (`[C][3][3]`) and bias (`[C]`) of a depthwise 3x3 convolution.
#[derive(Debug, Clone)]
pub struct Depthwise3x3 {
    pub stride: usize,
    pub relu: bool,
    /// Per-channel PReLU slopes, applied as `max(x, slope * x)` (the engine's PReLU wiring).
    prelu: Option<Arc<Vec<f32>>>,
    weights: Arc<Vec<f32>>,
    bias: Arc<Vec<f32>>,
    /// The widest vector path [`Depthwise3x3::run`] takes; never more than the CPU has
    /// ([`Isa::capped`] is its only source).
    isa: Isa,
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
            && self.isa == other.isa
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
            isa: Isa::detected(),
        }
    }

    /// Take no vector path wider than `cap` (nor than the CPU has).
    pub fn with_isa(mut self, cap: Isa) -> Self {
        self.isa = Isa::capped(cap);
        self
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

    /// Per channel: its input plane (`plane` values), its output plane (`out_plane`), its nine
    /// taps, its bias and its PReLU slope.
    fn planes<'a>(
        &'a self,
        input: &'a [f32],
        plane: usize,
        out: &'a mut [f32],
        out_plane: usize,
    ) -> impl Iterator<Item = Channel<'a>> {
        input
            .chunks_exact(plane)
            .zip(out.chunks_exact_mut(out_plane))
            .zip(self.weights.chunks_exact(9).zip(self.bias.iter()))
            .enumerate()
            .map(|(ch, ((x, o), (k, &b)))| {
                let slope = self.prelu.as_ref().and_then(|p| p.get(ch).copied());
                (x, o, k, b, slope)
            })
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
        #[cfg(target_arch = "x86_64")]
        if self.stride == 2 && self.isa == Isa::Avx512 {
            // SAFETY: `self.isa` is never more than the CPU has (`Isa::capped`), so it has
            // AVX-512F; the stride is 2, and the sizes of `input`, `mask` and `out` were checked
            // against `c`, `h`, `w` above, which is all `avx512::stride2` relies on.
            unsafe { avx512::stride2(self, planes, out) };
            return Ok(());
        }
        #[cfg(target_arch = "x86_64")]
        if self.stride == 2 && self.isa == Isa::Avx2Fma {
            // SAFETY: as above, the CPU has AVX2 and FMA; the stride is 2, and the sizes were
            // checked as for the AVX-512 path, which is all `avx2::stride2` relies on.
            unsafe { avx2::stride2(self, planes, out) };
            return Ok(());
        }
        PADDED.with(|p| {
            let mut p = p.borrow_mut();
            #[cfg(target_arch = "x86_64")]
            if self.isa >= Isa::Avx2Fma {
                if w < FLAT_BELOW_WIDTH {
                    // SAFETY: the CPU has at least AVX2 and FMA (`self.isa`, as above); the
                    // stride is 1 (stride 2 returned above on these tiers), and the sizes were
                    // checked as for the stride-2 paths, which is all `avx2::stride1` relies on.
                    unsafe { avx2::stride1(self, planes, out, &mut p) };
                } else {
                    // SAFETY: as above, the CPU has AVX2; `run_avx2` is plain safe Rust
                    // compiled with AVX2 enabled.
                    unsafe { run_avx2(self, planes, out, &mut p) };
                }
                return;
            }
            run_planes(self, planes, out, &mut p);
        });
        Ok(())
    }
}

/// Planes narrower than this take the flat stride-1 path ([`avx2::stride1`]); wider ones the
/// per-row loops of [`run_planes`], whose rows are then long enough to be whole vectors but for
/// one tail, and which write the output in place instead of compacting a flat run into it.
/// Both give the same bits. Measured per layer (`examples/profile_ops.rs --nodes`, AMD EPYC
/// Zen 2): the flat path 2-2.5x faster on the 7x6 to 20x20 planes, 1.2-1.3x on 56x42 and
/// 40x40, and 1.2x slower on 64x64.
const FLAT_BELOW_WIDTH: usize = 48;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn run_avx2(op: &Depthwise3x3, x: Planes<'_>, out: &mut [f32], p: &mut Vec<f32>) {
    run_planes(op, x, out, p)
}

/// The AVX-512 path for stride 2: taps read straight from the input planes, without the
/// de-interleaved padded copy the other paths make, which cost more than the arithmetic (the
/// stride-2 layers ran at 3-4 GMAC/s, about two thirds of the depthwise time, `examples/
/// profile_ops.rs --nodes`). Two masked loads of 16 input columns each (the masks are the zero
/// padding: masked-off lanes are neither read nor counted) are split into even and odd columns
/// in registers (`vpermt2ps`); the column left of each output is the odd vector shifted by one
/// lane, carrying the previous block's last odd column. Sums are one fused multiply-add chain
/// per row, then `bias + r0 + r1 + r2`: not bit-identical to the other paths (the proptests
/// bound the difference, the parity tests the models').
///
/// Stride 1 stays on the padded copy everywhere: the same direct approach with three masked
/// loads per row was slower there than the vectorised loops over the padded copy (a throwaway
/// A/B of both on the models' layer shapes, best of 200 runs each: 70 against 48 µs on
/// [32, 64, 64], 34 against 21 µs on [231, 10, 10]; stride 2: 74 against 146 µs on
/// [103, 64, 64], 34 against 48 µs on [231, 20, 20]).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Depthwise3x3, Planes};
    use std::arch::x86_64::*;

    /// The lowest `n` lanes (all 16 when `n >= 16`).
    fn lanes(n: usize) -> __mmask16 {
        if n >= 16 {
            0xFFFF
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    }

    /// `row[col + lane]` (times the mask row's) for the lanes of `m`, zero elsewhere.
    ///
    /// # Safety
    /// AVX-512F; every lane kept by `m` must be in bounds of `row` (and of `mrow`).
    #[inline(always)]
    unsafe fn load(row: &[f32], mrow: Option<&[f32]>, col: isize, m: __mmask16) -> __m512 {
        // SAFETY: the caller keeps only in-bounds lanes; masked-off lanes are not read, so the
        // pointer may lie outside the row (wrapping arithmetic, never dereferenced there).
        unsafe {
            let v = _mm512_maskz_loadu_ps(m, row.as_ptr().wrapping_offset(col));
            match mrow {
                Some(mr) => _mm512_mul_ps(
                    v,
                    _mm512_maskz_loadu_ps(m, mr.as_ptr().wrapping_offset(col)),
                ),
                None => v,
            }
        }
    }

    /// # Safety
    /// The CPU must have AVX-512F; `op.stride == 2`; `x.input` is `[C, h, w]`, `x.mask` (if
    /// any) `[h, w]` and `out` `[C, ho, wo]` for the op's channels, `h, w >= 1`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn stride2(op: &Depthwise3x3, x: Planes<'_>, out: &mut [f32]) {
        let Planes { input, mask, h, w } = x;
        let (ho, wo) = (op.out_side(h), op.out_side(w));
        // Lanes 0, 2, .., 30 and 1, 3, .., 31 of two concatenated vectors.
        let even_idx = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd_idx = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        let zero = _mm512_setzero_ps();
        for (plane, o, k, b, slope) in op.planes(input, h * w, out, ho * wo) {
            let kv: [__m512; 9] = std::array::from_fn(|i| _mm512_set1_ps(k[i]));
            let bias = _mm512_set1_ps(b);
            for (y, orow) in o.chunks_exact_mut(wo).enumerate() {
                let rows = super::stride2_rows(plane, mask, y, h, w);
                // The odd input column left of each block's first output, per row.
                let mut carry = [zero; 3];
                for x0 in (0..wo).step_by(16) {
                    let n = (wo - x0).min(16);
                    // One partial sum per row (three short dependency chains, not one of nine
                    // fused multiply-adds), then `bias + r0 + r1 + r2` as in the other paths.
                    let mut part = [zero; 3];
                    for (ky, row) in rows.iter().enumerate() {
                        let Some((row, mrow)) = *row else { continue };
                        // Columns 2x0 .. 2x0+32 in two vectors, within 0..w.
                        let c = 2 * x0;
                        // SAFETY: the masks keep the lanes whose column is below w.
                        let (lo, hi) = unsafe {
                            (
                                load(row, mrow, c as isize, lanes(w.saturating_sub(c))),
                                load(row, mrow, c as isize + 16, lanes(w.saturating_sub(c + 16))),
                            )
                        };
                        let even = _mm512_permutex2var_ps(lo, even_idx, hi);
                        let odd = _mm512_permutex2var_ps(lo, odd_idx, hi);
                        // Column 2x-1: the odd vector one lane up, the carry in lane 0.
                        let left = _mm512_castsi512_ps(_mm512_alignr_epi32(
                            _mm512_castps_si512(odd),
                            _mm512_castps_si512(carry[ky]),
                            15,
                        ));
                        carry[ky] = odd;
                        // Taps 0, 1, 2: columns 2x-1, 2x, 2x+1.
                        let r = _mm512_mul_ps(kv[3 * ky], left);
                        let r = _mm512_fmadd_ps(kv[3 * ky + 1], even, r);
                        part[ky] = _mm512_fmadd_ps(kv[3 * ky + 2], odd, r);
                    }
                    let mut acc = _mm512_add_ps(
                        _mm512_add_ps(_mm512_add_ps(bias, part[0]), part[1]),
                        part[2],
                    );
                    if op.relu {
                        acc = _mm512_max_ps(acc, zero);
                    }
                    if let Some(sl) = slope {
                        acc = _mm512_max_ps(acc, _mm512_mul_ps(_mm512_set1_ps(sl), acc));
                    }
                    // SAFETY: lanes x0..x0+n of the output row, n <= wo - x0.
                    unsafe { _mm512_mask_storeu_ps(orow.as_mut_ptr().add(x0), lanes(n), acc) };
                }
            }
        }
    }
}

/// The AVX-512 stride-2 path for AVX2 + FMA (CPUs without AVX-512): the same loads straight
/// from the input and the same arithmetic, in 8 lanes. The even and odd columns are split with
/// `vshufps` and a 64-bit lane permute; the column left of each output is the odd vector rotated
/// one lane up with the previous block's last odd column blended into lane 0. Each output is
/// `bias + r0 + r1 + r2` of the same fused multiply-add chains as `avx512::stride2`, so the two
/// give the same bits. Measured against the copying path on this kind of CPU in session 22
/// (docs/benchmarks.md).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Depthwise3x3, Planes};
    use std::arch::x86_64::*;

    /// A `maskload`/`maskstore` mask of the lowest `n` lanes (all 8 when `n >= 8`).
    #[inline(always)]
    fn lanes(n: usize) -> __m256i {
        let n = n.min(8) as i32;
        // SAFETY: register-only AVX2 operations; only called from `stride2`, which has AVX2.
        unsafe {
            _mm256_cmpgt_epi32(
                _mm256_set1_epi32(n),
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            )
        }
    }

    /// `row[col + lane]` (times the mask row's) for lanes below `n`, zero elsewhere.
    ///
    /// # Safety
    /// AVX2; `row[col..col + min(n, 8)]` (and `mrow`'s) must be in bounds.
    #[inline(always)]
    unsafe fn load(row: &[f32], mrow: Option<&[f32]>, col: usize, n: usize) -> __m256 {
        // SAFETY: full loads read 8 in-bounds values; masked loads read only the lanes below
        // `n` (the caller's contract), so the pointer may lie outside the row (wrapping
        // arithmetic, never dereferenced there).
        unsafe {
            let get = |r: &[f32]| {
                let p = r.as_ptr().wrapping_add(col);
                match n {
                    0 => _mm256_setzero_ps(),
                    8.. => _mm256_loadu_ps(p),
                    _ => _mm256_maskload_ps(p, lanes(n)),
                }
            };
            match mrow {
                Some(mr) => _mm256_mul_ps(get(row), get(mr)),
                None => get(row),
            }
        }
    }

    /// `a.max(b)` lane by lane, as Rust's `f32::max` (IEEE maxNum) gives it: `b` where `a` is
    /// NaN, else `b` where `b > a`, else `a` (so `a` where the two are equal, as for -0 and +0).
    /// `_mm256_max_ps(a, b)` alone differs from it on those two cases.
    #[inline(always)]
    fn max_num(a: __m256, b: __m256) -> __m256 {
        // SAFETY: register-only AVX operations; only called from `stride1`, which has AVX2.
        unsafe {
            let m = _mm256_max_ps(b, a);
            _mm256_blendv_ps(m, b, _mm256_cmp_ps::<_CMP_UNORD_Q>(a, a))
        }
    }

    /// `dst = src` (the same length) in 8-lane moves, the last one overlapping the one before
    /// it where the length is not a multiple of 8; a row shorter than 8 goes value by value.
    /// (A `copy_from_slice` of a variable length is a call to `memmove`, which costs more than
    /// the row on the small planes this copies.)
    #[inline(always)]
    fn copy_row(dst: &mut [f32], src: &[f32]) {
        let n = dst.len().min(src.len());
        if n < 8 {
            dst[..n].copy_from_slice(&src[..n]);
            return;
        }
        let mut at = 0;
        loop {
            let i = at.min(n - 8);
            // SAFETY: `i + 8 <= n`, within both slices; only called from `stride1`, which has
            // AVX2.
            unsafe {
                let v = _mm256_loadu_ps(src.as_ptr().add(i));
                _mm256_storeu_ps(dst.as_mut_ptr().add(i), v);
            }
            if i + 8 == n {
                break;
            }
            at += 8;
        }
    }

    /// Stride 1 over a zero-padded copy of each plane (`w + 2` wide), computed as one flat run
    /// of 8-lane vectors over `q = y * (w + 2) + x`: every tap is then a constant shift of `q`,
    /// a row's two junk columns (`x = w, w + 1`) cost less than the scalar tails of per-row
    /// loops, and the run is compacted into the output rows afterwards. On the classifiers'
    /// small planes (7x6 to 20x20, row widths that are not a multiple of 8) the per-row loops
    /// of [`super::run_planes`] ran at 2-6 GMAC/s (`examples/profile_ops.rs --nodes`).
    ///
    /// The arithmetic is `run_planes`' own, operation for operation: per tap row
    /// `(k0 * a + k1 * b) + k2 * c`, rounded after each multiplication and addition (no fused
    /// multiply-add), then `((bias + r0) + r1) + r2`, and the activations as `f32::max`
    /// ([`max_num`]): the same bits as the portable path.
    ///
    /// # Safety
    /// The CPU must have AVX2; `op.stride == 1`; `x.input` is `[C, h, w]`, `x.mask` (if any)
    /// `[h, w]` and `out` `[C, h, w]` for the op's channels, `h, w >= 1`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn stride1(
        op: &Depthwise3x3,
        x: Planes<'_>,
        out: &mut [f32],
        p: &mut Vec<f32>,
    ) {
        let Planes { input, mask, h, w } = x;
        let wq = w + 2;
        // Whole vectors over the flat run of `h * wq` outputs; the last one's taps reach
        // `2 * wq + 2` values past its start.
        let nv = (h * wq).div_ceil(8) * 8;
        let plen = (nv + 2 * wq + 2).max((h + 2) * wq);
        p.clear();
        p.resize(plen + nv, 0.0);
        let (pad, flat) = p.split_at_mut(plen);
        let zero = _mm256_setzero_ps();
        for (plane, o, k, b, slope) in op.planes(input, h * w, out, h * w) {
            // Padded row y + 1, columns 1..=w; the borders and the slack are never written, so
            // they stay zero.
            for (y, src) in plane.chunks_exact(w).enumerate() {
                let dst = &mut pad[(y + 1) * wq + 1..][..w];
                match mask {
                    Some(m) => {
                        for ((d, s), m) in dst.iter_mut().zip(src).zip(&m[y * w..][..w]) {
                            *d = s * m;
                        }
                    }
                    None => copy_row(dst, src),
                }
            }
            let kv: [__m256; 9] = std::array::from_fn(|i| _mm256_set1_ps(k[i]));
            let bias = _mm256_set1_ps(b);
            let slope = slope.map(|s| _mm256_set1_ps(s));
            let base = pad.as_ptr();
            for q in (0..nv).step_by(8) {
                // SAFETY: `q + 2 * wq + 2 + 8 <= nv + 2 * wq + 2 <= plen`: every tap's eight
                // lanes are in `pad`.
                let tap = |off: usize| unsafe { _mm256_loadu_ps(base.add(q + off)) };
                let row = |ky: usize| {
                    let r = ky * wq;
                    let ab = _mm256_add_ps(
                        _mm256_mul_ps(kv[3 * ky], tap(r)),
                        _mm256_mul_ps(kv[3 * ky + 1], tap(r + 1)),
                    );
                    _mm256_add_ps(ab, _mm256_mul_ps(kv[3 * ky + 2], tap(r + 2)))
                };
                let mut v =
                    _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(bias, row(0)), row(1)), row(2));
                if op.relu {
                    v = max_num(v, zero);
                }
                if let Some(s) = slope {
                    v = max_num(v, _mm256_mul_ps(s, v));
                }
                // SAFETY: `q + 8 <= nv == flat.len()`.
                unsafe { _mm256_storeu_ps(flat.as_mut_ptr().add(q), v) };
            }
            for (y, dst) in o.chunks_exact_mut(w).enumerate() {
                copy_row(dst, &flat[y * wq..][..w]);
            }
        }
    }

    /// # Safety
    /// The CPU must have AVX2 and FMA; `op.stride == 2`; `x.input` is `[C, h, w]`, `x.mask` (if
    /// any) `[h, w]` and `out` `[C, ho, wo]` for the op's channels, `h, w >= 1`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn stride2(op: &Depthwise3x3, x: Planes<'_>, out: &mut [f32]) {
        let Planes { input, mask, h, w } = x;
        let (ho, wo) = (op.out_side(h), op.out_side(w));
        // Lane 7 first, then lanes 0-6: a rotation one lane up.
        let up = _mm256_setr_epi32(7, 0, 1, 2, 3, 4, 5, 6);
        let zero = _mm256_setzero_ps();
        for (plane, o, k, b, slope) in op.planes(input, h * w, out, ho * wo) {
            let kv: [__m256; 9] = std::array::from_fn(|i| _mm256_set1_ps(k[i]));
            let bias = _mm256_set1_ps(b);
            for (y, orow) in o.chunks_exact_mut(wo).enumerate() {
                let rows = super::stride2_rows(plane, mask, y, h, w);
                // The odd input column left of each block's first output, per row.
                let mut carry = [zero; 3];
                for x0 in (0..wo).step_by(8) {
                    let n = (wo - x0).min(8);
                    let mut part = [zero; 3];
                    for (ky, row) in rows.iter().enumerate() {
                        let Some((row, mrow)) = *row else { continue };
                        // Columns 2x0 .. 2x0+16 in two vectors, within 0..w.
                        let c = 2 * x0;
                        // SAFETY: each load keeps the lanes whose column is below w.
                        let (lo, hi) = unsafe {
                            (
                                load(row, mrow, c, w.saturating_sub(c)),
                                load(row, mrow, c + 8, w.saturating_sub(c + 8)),
                            )
                        };
                        // 64-bit pairs (lo0 lo2)(hi0 hi2)(lo4 lo6)(hi4 hi6), put in order.
                        let pairs = |v: __m256| {
                            _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), 0xD8))
                        };
                        let even = pairs(_mm256_shuffle_ps(lo, hi, 0x88));
                        let odd = pairs(_mm256_shuffle_ps(lo, hi, 0xDD));
                        // Column 2x-1: the odd vector one lane up, the carry in lane 0.
                        let left = _mm256_blend_ps(
                            _mm256_permutevar8x32_ps(odd, up),
                            _mm256_permutevar8x32_ps(carry[ky], up),
                            1,
                        );
                        carry[ky] = odd;
                        // Taps 0, 1, 2: columns 2x-1, 2x, 2x+1.
                        let r = _mm256_mul_ps(kv[3 * ky], left);
                        let r = _mm256_fmadd_ps(kv[3 * ky + 1], even, r);
                        part[ky] = _mm256_fmadd_ps(kv[3 * ky + 2], odd, r);
                    }
                    let mut acc = _mm256_add_ps(
                        _mm256_add_ps(_mm256_add_ps(bias, part[0]), part[1]),
                        part[2],
                    );
                    if op.relu {
                        acc = _mm256_max_ps(acc, zero);
                    }
                    if let Some(sl) = slope {
                        acc = _mm256_max_ps(acc, _mm256_mul_ps(_mm256_set1_ps(sl), acc));
                    }
                    let dst = orow.as_mut_ptr().wrapping_add(x0);
                    // SAFETY: lanes x0..x0+n of the output row, n <= wo - x0 (masked stores
                    // are slow on AMD: only the row's last block uses one).
                    unsafe {
                        if n == 8 {
                            _mm256_storeu_ps(dst, acc);
                        } else {
                            _mm256_maskstore_ps(dst, lanes(n), acc);
                        }
                    }
                }
            }
        }
    }
}

/// An input row and its mask row (the detector's canvas masks), if any.
#[cfg(target_arch = "x86_64")]
type Row<'a> = (&'a [f32], Option<&'a [f32]>);

/// The input rows 2y-1, 2y, 2y+1 of `plane` (`h` x `w`, and of its mask) under taps 0, 1, 2 of
/// output row `y` of a stride-2 convolution; `None` where a tap falls on the zero padding.
#[cfg(target_arch = "x86_64")]
fn stride2_rows<'a>(
    plane: &'a [f32],
    mask: Option<&'a [f32]>,
    y: usize,
    h: usize,
    w: usize,
) -> [Option<Row<'a>>; 3] {
    std::array::from_fn(|ky| {
        let r = (2 * y + ky).checked_sub(1).filter(|&r| r < h)?;
        Some((&plane[r * w..][..w], mask.map(|m| &m[r * w..][..w])))
    })
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
    for (plane, o, k, b, slope) in op.planes(input, h * w, out, ho * wo) {
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

/// Replace every depthwise 3x3 convolution of a concrete, decluttered model by
/// [`Depthwise3x3`], folding a following per-channel `mul`, `add` and `max(x, 0)` into it.
/// Returns how many convolutions were replaced. No vector path is wider than `isa`.
pub(super) fn fuse_depthwise(model: &mut TypedModel, isa: Isa) -> TractResult<usize> {
    fuse_nodes(model, "depthwise3x3", true, |model, n| {
        let mut conv = match_conv3x3(model, n, true)?;
        let tail = fold_tail(
            model,
            OutletId::new(n, 0),
            &mut conv.weights,
            &mut conv.bias,
        );
        let mut op =
            Depthwise3x3::new(conv.stride, conv.weights, conv.bias, tail.relu).with_isa(isa);
        if let Some(slopes) = tail.slopes {
            op = op.with_prelu(slopes);
        }
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

    /// A value in [-2, 2) from index `i`, stream `k` and `seed`.
    fn value(i: usize, k: u32, seed: u32) -> f32 {
        (((i as u32)
            .wrapping_mul(2654435761)
            .wrapping_add(k * 7919 + seed))
            % 1000) as f32
            / 250.0
            - 2.0
    }

    /// A `c`-channel op with weights, bias and (with `prelu`) slopes from [`value`].
    fn random_op(stride: usize, c: usize, relu: bool, prelu: bool, seed: u32) -> Depthwise3x3 {
        let val = |i: usize, k: u32| value(i, k, seed);
        let op = Depthwise3x3::new(
            stride,
            (0..9 * c).map(|i| val(i, 1)).collect(),
            (0..c).map(|i| val(i, 2)).collect(),
            relu,
        );
        if prelu {
            op.with_prelu((0..c).map(|i| val(i, 5) / 2.0).collect())
        } else {
            op
        }
    }

    proptest! {
        #[test]
        fn matches_the_direct_definition(
            c in 1usize..5, h in 1usize..23, w in 1usize..70, stride in 1usize..3,
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// `run` takes the AVX-512 path where the CPU has it: the copying path (AVX2 or the
        /// baseline target) against the direct definition as well.
        #[test]
        fn the_copying_path_matches_the_direct_definition(
            c in 1usize..4, h in 1usize..40, w in 1usize..40, stride in 1usize..3,
            relu: bool, masked: bool, seed in 0u32..1000,
        ) {
            let val = |i: usize, k: u32| (((i as u32).wrapping_mul(2654435761).wrapping_add(k * 7919 + seed)) % 1000) as f32 / 250.0 - 2.0;
            let op = Depthwise3x3::new(
                stride,
                (0..9 * c).map(|i| val(i, 1)).collect(),
                (0..c).map(|i| val(i, 2)).collect(),
                relu,
            );
            let x: Vec<f32> = (0..c * h * w).map(|i| val(i, 3)).collect();
            let mask: Option<Vec<f32>> = masked.then(|| (0..h * w).map(|i| (val(i, 4) > 0.0) as u8 as f32).collect());
            let mut out = vec![f32::NAN; c * op.out_side(h) * op.out_side(w)];
            let planes = Planes { input: &x, mask: mask.as_deref(), h, w };
            run_planes(&op, planes, &mut out, &mut Vec::new());
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The AVX2 stride-2 path on any CPU with AVX2 and FMA (an AVX-512 CPU dispatches past
        /// it): against the direct definition, and bit for bit against the AVX-512 path where
        /// the CPU has that too. Widths cross its 8-lane blocks and odd edges.
        #[test]
        fn the_avx2_stride2_path_matches_the_definition_and_the_avx512_bits(
            c in 1usize..4, h in 1usize..20, w in 1usize..50, relu: bool, prelu: bool,
            masked: bool, seed in 0u32..1000,
        ) {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                let val = |i: usize, k: u32| value(i, k, seed);
                let op = random_op(2, c, relu, prelu, seed);
                let x: Vec<f32> = (0..c * h * w).map(|i| val(i, 3)).collect();
                let mask: Option<Vec<f32>> = masked.then(|| (0..h * w).map(|i| (val(i, 4) > 0.0) as u8 as f32).collect());
                let mut out = vec![f32::NAN; c * op.out_side(h) * op.out_side(w)];
                let planes = Planes { input: &x, mask: mask.as_deref(), h, w };
                // SAFETY: the CPU has AVX2 and FMA (checked above); stride 2 and sizes as `run`
                // checks them.
                unsafe { avx2::stride2(&op, planes, &mut out) };
                let xm: Vec<f32> = match &mask {
                    Some(m) => x.iter().enumerate().map(|(i, v)| v * m[i % (h * w)]).collect(),
                    None => x.clone(),
                };
                let want = naive(&op, &xm, c, h, w);
                for (a, b) in out.iter().zip(&want) {
                    prop_assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    let mut wide = vec![f32::NAN; out.len()];
                    // SAFETY: the CPU has AVX-512F (checked just above); as above otherwise.
                    unsafe { avx512::stride2(&op, planes, &mut wide) };
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    prop_assert_eq!(bits(&out), bits(&wide));
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        /// The AVX2 stride-1 path (the flat run over the padded plane) gives the copying path's
        /// bits: the same multiplications and additions in the same order. Widths and heights
        /// cross its 8-lane vectors, rows shorter than a vector, the masks, and NaN inputs.
        #[test]
        fn the_avx2_stride1_path_gives_the_copying_paths_bits(
            c in 1usize..4, h in 1usize..30, w in 1usize..40, relu: bool, prelu: bool,
            masked: bool, nan: bool, seed in 0u32..1000,
        ) {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                let val = |i: usize, k: u32| value(i, k, seed);
                let op = random_op(1, c, relu, prelu, seed);
                let mut x: Vec<f32> = (0..c * h * w).map(|i| val(i, 3)).collect();
                if nan {
                    // A NaN spreads to its neighbours' sums; the activations then see it.
                    x[seed as usize % (c * h * w)] = f32::NAN;
                }
                let mask: Option<Vec<f32>> = masked.then(|| (0..h * w).map(|i| (val(i, 4) > 0.0) as u8 as f32).collect());
                let planes = Planes { input: &x, mask: mask.as_deref(), h, w };
                let mut want = vec![f32::NAN; c * h * w];
                run_planes(&op, planes, &mut want, &mut Vec::new());
                // A scratch buffer left dirty by a larger plane, as the thread's own would be.
                let mut scratch = vec![f32::NAN; 4096];
                let mut out = vec![f32::NAN; c * h * w];
                // SAFETY: the CPU has AVX2 and FMA (checked above); stride 1 and sizes as `run`
                // checks them.
                unsafe { avx2::stride1(&op, planes, &mut out, &mut scratch) };
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                prop_assert_eq!(bits(&out), bits(&want));
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
