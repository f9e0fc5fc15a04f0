//! BF16 products for [`Product`]: the same outer-product kernel as the f32 one, with weights and
//! activations rounded to bfloat16 and multiplied by AVX512-BF16's `vdpbf16ps`, which takes two
//! products per f32 lane and adds them to an f32 accumulator: half the multiply instructions
//! of the f32 kernel for the same work.
//!
//! Why hand-written: tract 0.23 has no bf16 matrix kernels for x86-64, and the fused f32 kernel
//! runs near this class of CPU's f32 peak already.
//!
//! The two products of a lane come from a *pair* of input channels, so the input is read as
//! 32-bit words holding channel `2c` in the low half and `2c + 1` in the high half at the same
//! position ([`pack_rows`]; an odd channel count pairs the last channel with zeros). For a
//! product over `k = c * taps + t` (a 1x1 convolution: `taps = 1`; a 3x3 one: `taps = 9`, the
//! taps of a channel) the pairs are `k2 = c2 * taps + t`, reading channels `2 * c2` and
//! `2 * c2 + 1` at tap `t`: the caller's offsets index those words, one per pair.
//!
//! bfloat16 keeps 8 significant bits, so the result moves by about 2^-9 of the products'
//! magnitude: this is a precision choice, not the reference recipe
//! ([`crate::engine::tract::Kernels::Bf16`]). Rounding is to nearest even with subnormals
//! flushed to zero, as `vcvtneps2bf16` does; [`round`] is the same in plain Rust.

use std::sync::Arc;

use super::{Product, MR, NR};

/// Whether this CPU has the instructions of the vector path (AVX-512F, BW and BF16). Without
/// them [`run`] takes the portable path: correct, and slower than the f32 kernel, so the engine
/// only packs bf16 weights where this holds.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512bf16");
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// Whether the bf16 products run faster than the f32 ones on this CPU, which is what
/// [`crate::engine::tract::Kernels::Auto`] chooses by: where the CPU has [`available`]'s
/// instructions and either AMX ([`super::amx::available`]: the 1x1 products on tiles, 3.7-14x
/// the `vdpbf16ps` kernel's rate) or an AMD core.
///
/// Why the vendor: what decides is how many multiply-adds a `vdpbf16ps` retires per cycle
/// against f32 FMAs, and no CPUID bit says that. AMD's Zen 4 runs 512-bit FMAs on 256-bit pipes,
/// one a cycle, and a `vdpbf16ps` does two products per lane: the classifiers ran faster in
/// bf16 there (docs/benchmarks.md, session 20). Intel's AVX512-BF16 server cores issue two
/// 512-bit FMAs a cycle, as many multiply-adds as `vdpbf16ps` retires, so the channel-pair
/// packing is pure cost there: classify took 7.20 ms in bf16 against 7.36 in f32 on a Sapphire
/// Rapids (session 33) and 9.33 against 7.00 on an Emerald Rapids without AMX (session 39). A
/// timing probe at start-up could decide on any CPU, but then one machine could give different
/// bits from one start to the next.
pub fn pays() -> bool {
    available() && (super::amx::available() || amd())
}

/// Whether CPUID's vendor string is AMD's.
#[cfg(target_arch = "x86_64")]
fn amd() -> bool {
    #[allow(unused_unsafe)]
    // SAFETY: CPUID is available on every x86-64 CPU; leaf 0 always exists.
    let id = unsafe { std::arch::x86_64::__cpuid(0) };
    // The vendor string is EBX, EDX, ECX in that order: "Auth", "enti", "cAMD".
    let mut vendor = [0u8; 12];
    for (bytes, reg) in vendor.chunks_exact_mut(4).zip([id.ebx, id.edx, id.ecx]) {
        bytes.copy_from_slice(&reg.to_le_bytes());
    }
    &vendor == b"AuthenticAMD"
}

#[cfg(not(target_arch = "x86_64"))]
fn amd() -> bool {
    false
}

/// The bfloat16 bits of `v`: rounded to nearest even, subnormals flushed to (signed) zero.
pub fn round(v: f32) -> u16 {
    let b = v.to_bits();
    if b & 0x7F80_0000 == 0 {
        return (b >> 16) as u16 & 0x8000;
    }
    if v.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

/// The value of bfloat16 bits.
pub fn widen(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// `lo` and `hi` rounded to bfloat16 in one word, `lo` in the low half.
pub fn pair(lo: f32, hi: f32) -> u32 {
    u32::from(round(lo)) | (u32::from(round(hi)) << 16)
}

/// `out[q] = pair(a[q], b[q])` for every `q < a.len()`, with `b[q] = 0` when `b` is `None`.
/// `b` and `out` must be as long as `a`.
pub fn pack_rows(a: &[f32], b: Option<&[f32]>, out: &mut [u32]) {
    debug_assert!(b.is_none_or(|b| b.len() == a.len()) && out.len() == a.len());
    #[cfg(target_arch = "x86_64")]
    if available() && b.is_none_or(|b| b.len() == a.len()) && out.len() == a.len() {
        // SAFETY: the CPU has AVX-512F, BW and BF16 (checked just above) and the three slices
        // have the same length (checked just above), which is all `avx512::pack` relies on.
        unsafe { avx512::pack(a, b, out) };
        return;
    }
    pack_rows_portable(a, b, out);
}

fn pack_rows_portable(a: &[f32], b: Option<&[f32]>, out: &mut [u32]) {
    match b {
        Some(b) => {
            for ((o, &lo), &hi) in out.iter_mut().zip(a).zip(b) {
                *o = pair(lo, hi);
            }
        }
        None => {
            for (o, &lo) in out.iter_mut().zip(a) {
                *o = pair(lo, 0.0);
            }
        }
    }
}

/// A product's weights as bfloat16 pairs of input channels, `[co / MR][k2][MR]`, rows past `co`
/// and the missing partner of an odd last channel zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairWeights {
    packed: Arc<Vec<u32>>,
    /// Channel pairs times taps: the number of offsets [`run`] takes.
    pub k2: usize,
}

impl PairWeights {
    /// From `[co][ci * taps]` row-major weights, `k = c * taps + t` within a row; `None` when
    /// the sizes disagree.
    pub fn new(co: usize, ci: usize, taps: usize, weights: &[f32]) -> Option<Self> {
        let k = ci * taps;
        if co == 0 || k == 0 || weights.len() != co * k {
            return None;
        }
        let k2 = ci.div_ceil(2) * taps;
        let mut packed = vec![0u32; co.div_ceil(MR) * k2 * MR];
        for (o, row) in weights.chunks_exact(k).enumerate() {
            let (b, r) = (o / MR, o % MR);
            for j in 0..k2 {
                let (c2, t) = (j / taps, j % taps);
                let lo = row[2 * c2 * taps + t];
                let hi = if 2 * c2 + 1 < ci {
                    row[(2 * c2 + 1) * taps + t]
                } else {
                    0.0
                };
                packed[(b * k2 + j) * MR + r] = pair(lo, hi);
            }
        }
        Some(PairWeights {
            packed: Arc::new(packed),
            k2,
        })
    }
}

/// `out[o * out_stride + q]` for `q < len` and `o < op.co`: `op`'s bias and activation after
/// `sum_j dot(w[o][j], src[offsets[j] + q])`, each word a pair of bfloat16 (see the module
/// documentation).
pub fn run(
    op: &Product,
    w: &PairWeights,
    src: &[u32],
    offsets: &[usize],
    len: usize,
    out: &mut [f32],
    out_stride: usize,
) -> Result<(), String> {
    op.check_reach(w.k2, src.len(), offsets, len, out.len(), out_stride)?;
    if w.packed.len() != op.co.div_ceil(MR) * w.k2 * MR {
        return Err(format!(
            "bf16 convolution: {} packed weights for {} outputs and {} channel pairs",
            w.packed.len(),
            op.co,
            w.k2
        ));
    }
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: the CPU has AVX-512F, BW and BF16 (checked just above); every read
        // `src[offsets[j] + q]`, every weight block and every write `out[o * out_stride + q]`
        // (`q < len`, `o < co`) was checked in bounds above, which is all `avx512::run` relies on.
        unsafe { avx512::run(op, w, src, offsets, len, out, out_stride) };
        return Ok(());
    }
    run_portable(op, w, src, offsets, len, out, out_stride);
    Ok(())
}

/// The same product in plain Rust: each pair's two products are exact in f32 (8-bit
/// significands) and added to the accumulator high half first, as `vdpbf16ps` is specified.
pub(super) fn run_portable(
    op: &Product,
    w: &PairWeights,
    src: &[u32],
    offsets: &[usize],
    len: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    let half = |v: u32, high: bool| widen(if high { (v >> 16) as u16 } else { v as u16 });
    for (b, wb) in w.packed.chunks_exact(w.k2 * MR).enumerate() {
        for r in 0..MR {
            let o = b * MR + r;
            if o >= op.co {
                break;
            }
            for q in 0..len {
                let mut acc = 0f32;
                for (j, &off) in offsets.iter().enumerate() {
                    let (wv, xv) = (wb[j * MR + r], src[off + q]);
                    acc += half(wv, true) * half(xv, true);
                    acc += half(wv, false) * half(xv, false);
                }
                out[o * out_stride + q] = op.activate(o, acc + op.bias[o]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{PairWeights, Product, MR, NR};
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must have AVX-512F, BW and BF16; `b` (when given) and `out` as long as `a`.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn pack(a: &[f32], b: Option<&[f32]>, out: &mut [u32]) {
        // Word q of the result is bf16 lane q (from `a`) and lane 16 + q (from `b`) of the
        // converted pair of vectors.
        let order: [i16; 32] = core::array::from_fn(|i| ((i % 2) * 16 + i / 2) as i16);
        // SAFETY: reads 64 bytes from a local array.
        let order = unsafe { _mm512_loadu_si512(order.as_ptr().cast()) };
        for q0 in (0..a.len()).step_by(16) {
            let n = (a.len() - q0).min(16);
            let m: __mmask16 = if n == 16 { 0xFFFF } else { (1 << n) - 1 };
            // SAFETY: lanes `q0 + i` for `i < n` are in bounds of `a`, `b` and `out` (same
            // lengths, the caller's contract); masked-off lanes are not touched.
            unsafe {
                let lo = _mm512_maskz_loadu_ps(m, a.as_ptr().add(q0));
                let hi = match b {
                    Some(b) => _mm512_maskz_loadu_ps(m, b.as_ptr().add(q0)),
                    None => _mm512_setzero_ps(),
                };
                let both: __m512i =
                    std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo));
                let words = _mm512_permutexvar_epi16(order, both);
                _mm512_mask_storeu_epi32(out.as_mut_ptr().add(q0).cast(), m, words);
            }
        }
    }

    /// # Safety
    /// The CPU must have AVX-512F, BW and BF16; `offsets.len() == w.k2`, `w` packed for
    /// `op.co` rows, `src[offsets[j] + q]` in bounds for every `j` and `q < len`, and
    /// `out[o * out_stride + q]` for `o < op.co`.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn run(
        op: &Product,
        w: &PairWeights,
        src: &[u32],
        offsets: &[usize],
        len: usize,
        out: &mut [f32],
        out_stride: usize,
    ) {
        let zero = _mm512_setzero_ps();
        for q0 in (0..len).step_by(NR) {
            let (m0, m1) = super::super::avx512::masks(NR.min(len - q0));
            let base = src.as_ptr().wrapping_add(q0);
            for (b, wb) in w.packed.chunks_exact(w.k2 * MR).enumerate() {
                let mut acc = [zero; 2 * MR];
                for (wk, &off) in wb.chunks_exact(MR).zip(offsets) {
                    let Ok(wk) = <&[u32; MR]>::try_from(wk) else {
                        continue;
                    };
                    let row = base.wrapping_add(off);
                    // SAFETY: src[off + q0 + lane] is in bounds for the lanes the masks keep
                    // (the caller's contract); masked-off lanes are not read.
                    let (lo, hi) = unsafe {
                        (
                            std::mem::transmute::<__m512i, __m512bh>(_mm512_maskz_loadu_epi32(
                                m0,
                                row.cast(),
                            )),
                            std::mem::transmute::<__m512i, __m512bh>(_mm512_maskz_loadu_epi32(
                                m1,
                                row.wrapping_add(16).cast(),
                            )),
                        )
                    };
                    for r in 0..MR {
                        let s = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(
                            wk[r] as i32,
                        ));
                        acc[2 * r] = _mm512_dpbf16_ps(acc[2 * r], s, lo);
                        acc[2 * r + 1] = _mm512_dpbf16_ps(acc[2 * r + 1], s, hi);
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
                        super::super::avx512::finish(
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Values of every kind the rounding treats apart: subnormals, ties, exact bf16 values,
    /// large and small magnitudes of both signs.
    fn float() -> impl Strategy<Value = f32> {
        prop_oneof![
            any::<u32>()
                .prop_map(f32::from_bits)
                .prop_filter("finite", |v| v.is_finite()),
            (-1000.0f32..1000.0),
            any::<u16>().prop_map(|h| f32::from_bits((u32::from(h) << 16) | 0x8000)),
            (0u32..0x0080_0000).prop_map(f32::from_bits),
        ]
    }

    #[test]
    fn round_is_nearest_even_and_flushes_subnormals() {
        assert_eq!(round(1.0), 0x3F80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even (1.0).
        assert_eq!(round(1.0 + 1.0 / 256.0), 0x3F80);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: up to the even one.
        assert_eq!(round(1.0 + 3.0 / 256.0), 0x3F82);
        assert_eq!(round(1.0 + 1.0 / 256.0 + 1.0 / 65536.0), 0x3F81);
        assert_eq!(round(f32::from_bits(1)), 0);
        assert_eq!(round(-f32::from_bits(0x007F_FFFF)), 0x8000);
        assert_eq!(round(f32::MAX), 0x7F80);
        assert_eq!(widen(round(-2.5)), -2.5);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn packing_matches_the_scalar_rounding(
            a in prop::collection::vec(float(), 1..70), with_b: bool, seed in any::<u64>(),
        ) {
            let b: Vec<f32> = a.iter().enumerate()
                .map(|(i, v)| -v * (1.0 + ((seed >> (i % 60)) & 7) as f32 / 3.0))
                .collect();
            let b = with_b.then_some(&b[..]);
            let mut fast = vec![0u32; a.len()];
            pack_rows(&a, b, &mut fast);
            let mut slow = vec![1u32; a.len()];
            pack_rows_portable(&a, b, &mut slow);
            prop_assert_eq!(&fast, &slow);
        }
    }
}
