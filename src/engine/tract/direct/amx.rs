//! AMX tile products for the 1x1 convolutions that run in bfloat16 ([`super::bf16`]), where the
//! CPU has AMX-TILE and AMX-BF16 (Intel Sapphire Rapids and later) and Linux grants this process
//! the tile state ([`available`]). `tdpbf16ps` multiplies a 16 x 32 bf16 tile of weights by a
//! 16 x 16 tile of channel-pair words into 16 x 16 f32 sums: 8,192 products an instruction,
//! against 32 for `vdpbf16ps`.
//!
//! Why hand-written, and in inline assembly: tract has no AMX kernels, and std's AMX intrinsics
//! and their feature detection are not stable. On Sapphire Rapids the `vdpbf16ps` kernel runs
//! no faster than the f32 FMA one, while tiles ran the classifiers' 1x1 shapes 4-14x faster in
//! a probe, and the whole check 22 % faster (docs/benchmarks.md, session 33).
//!
//! The products are [`super::bf16::run`]'s (bf16 operands, f32 sums), laid out as tiles: the
//! input as the engine's channel-pair words, `[k2p][np]` with `k2p` pairs (rounded up to whole
//! tiles, the extra rows zero) and `np` positions per row (rounded up to two tiles), the
//! weights as `[cop][k2p]` ([`TileWeights`]). Each output block is 2 x 2 tiles (32 channels x
//! 32 positions, tiles 0-3) fed by two weight tiles (4-5) and two input tiles (6-7). Every call
//! loads its tile configuration and releases the tiles before it returns, so no tile state
//! outlives a call; tiles are per thread, and nothing else in the process uses them.

use std::sync::{Arc, OnceLock};

use super::bf16::pair;
use super::Product;

/// Rows of a tile, and words (channel pairs or positions) in a tile row.
const T: usize = 16;

/// Whether this process may run [`run`]: the CPU has AMX-TILE, AMX-BF16 and the AVX-512 the
/// epilogue uses ([`super::bf16::available`]), and Linux granted the tile state (asked once, on
/// the first call; a refusal leaves the `vdpbf16ps` kernel in use).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| cpu_has_amx_bf16() && super::bf16::available() && request_tiles())
}

#[cfg(target_arch = "x86_64")]
fn cpu_has_amx_bf16() -> bool {
    // CPUID leaf 7, sub-leaf 0: EDX bit 22 is AMX-BF16, bit 24 AMX-TILE. Leaf 7 exists on every
    // CPU with AVX2; without it (max leaf below 7) the answer is no.
    #[allow(unused_unsafe)]
    // SAFETY: CPUID is available on every x86-64 CPU.
    let max_leaf = unsafe { std::arch::x86_64::__cpuid(0) }.eax;
    if max_leaf < 7 {
        return false;
    }
    #[allow(unused_unsafe)]
    // SAFETY: as above; leaf 7 exists (checked just above).
    let edx = unsafe { std::arch::x86_64::__cpuid_count(7, 0) }.edx;
    edx & (1 << 22) != 0 && edx & (1 << 24) != 0
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_has_amx_bf16() -> bool {
    false
}

/// Ask Linux for the tile data state (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`);
/// until a process has it, its first tile instruction faults.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_tiles() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: this arch_prctl only extends the process's permitted register state; it reads
    // and writes no memory of ours.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn request_tiles() -> bool {
    false
}

/// A 1x1 convolution's weights as AMX weight tiles: `[cop][k2p]` words, each the bf16 pair of
/// input channels `2j` and `2j + 1` of output channel `o` (an odd last channel paired with
/// zero), zero past `co` rows and `k2` pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileWeights {
    packed: Arc<Vec<u32>>,
    /// Output channels rounded up to two tiles.
    cop: usize,
    /// Channel pairs.
    k2: usize,
    /// Channel pairs rounded up to a whole tile.
    k2p: usize,
}

impl TileWeights {
    /// From `[co][ci]` row-major weights; `None` when the sizes disagree.
    pub fn new(co: usize, ci: usize, weights: &[f32]) -> Option<Self> {
        if co == 0 || ci == 0 || weights.len() != co * ci {
            return None;
        }
        let (k2, cop) = (ci.div_ceil(2), co.div_ceil(2 * T) * 2 * T);
        let k2p = k2.div_ceil(T) * T;
        let mut packed = vec![0u32; cop * k2p];
        for (row, w) in packed.chunks_exact_mut(k2p).zip(weights.chunks_exact(ci)) {
            for (j, dst) in row.iter_mut().take(k2).enumerate() {
                *dst = pair(w[2 * j], w.get(2 * j + 1).copied().unwrap_or(0.0));
            }
        }
        Some(TileWeights {
            packed: Arc::new(packed),
            cop,
            k2,
            k2p,
        })
    }
}

/// Positions per row of the input words and of the sums: `pixels` rounded up to two tiles.
fn padded_positions(pixels: usize) -> usize {
    pixels.div_ceil(2 * T) * 2 * T
}

/// `out[o * pixels + p] = act(bias[o] + sum_i w[o][i] * x[i][p])` for `x` as `[ci][pixels]`,
/// with operands rounded to bfloat16 ([`super::bf16`]) and the sums in f32, on AMX tiles.
/// `words` and `sums` are scratch, grown as needed. Errors on sizes that disagree; the caller
/// must have checked [`available`] (an error too, otherwise).
pub fn run(
    op: &Product,
    w: &TileWeights,
    x: &[f32],
    pixels: usize,
    out: &mut [f32],
    words: &mut Vec<u32>,
    sums: &mut Vec<f32>,
) -> Result<(), String> {
    let ci = op.k;
    if !available()
        || pixels == 0
        || x.len() != ci * pixels
        || out.len() != op.co * pixels
        || w.k2 != ci.div_ceil(2)
        || w.cop < op.co
        || w.packed.len() != w.cop * w.k2p
    {
        return Err(format!(
            "AMX pointwise: {} inputs and {} outputs for {ci} x {} channels of {pixels}",
            x.len(),
            out.len(),
            op.co
        ));
    }
    let np = padded_positions(pixels);
    // Every word of `words[..k2p * np]` is written below: the packed pairs, then zeros in the
    // padding columns and rows (a padding row meets zero weights, and 0 x NaN would not be 0).
    // So the scratch only grows: resizing it to each layer's size shrank it and then cleared
    // the regrown part on the next larger layer, about 2.3 % of a check's CPU in `memset`
    // (docs/benchmarks.md, session 37).
    super::grow(words, w.k2p * np);
    let words = &mut words[..w.k2p * np];
    let mut channels = x.chunks_exact(pixels);
    for row in words.chunks_exact_mut(np) {
        let (packed, pad) = row.split_at_mut(pixels);
        match channels.next() {
            Some(a) => super::bf16::pack_rows(a, channels.next(), packed),
            None => packed.fill(0),
        }
        pad.fill(0);
    }
    // Every sum is stored by `tiles` (all `cop / 32` by `np / 32` blocks) before it is read.
    super::grow(sums, w.cop * np);
    let sums = &mut sums[..w.cop * np];
    // SAFETY: `available` (checked above) means the CPU has AMX-TILE, AMX-BF16 and AVX-512F
    // and this process holds the tile state; `words` is `[k2p][np]`, `sums` `[cop][np]`,
    // `w.packed` `[cop][k2p]`, with `cop` and `np` multiples of 32 and `k2p` of 16, and `out`
    // holds `co * pixels` values (`co <= cop`, `pixels <= np`): what `tiles` relies on.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        tiles(op, w, words, np, pixels, sums, out)
    };
    Ok(())
}

/// The 64-byte configuration `ldtilecfg` reads (palette 1): eight tiles of 16 rows of 64 bytes.
#[cfg(target_arch = "x86_64")]
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

#[cfg(target_arch = "x86_64")]
static CONFIG: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    colsb: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
};

/// # Safety
/// The CPU must have AMX-TILE, AMX-BF16 and AVX-512F, with the tile state granted; `words` is
/// `[w.k2p][np]`, `sums` `[w.cop][np]` and `w.packed` `[w.cop][w.k2p]`, with `w.cop` and `np`
/// multiples of 32 and `w.k2p` of 16; `out` holds `op.co * pixels` values, `op.co <= w.cop`,
/// `pixels <= np`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tiles(
    op: &Product,
    w: &TileWeights,
    words: &[u32],
    np: usize,
    pixels: usize,
    sums: &mut [f32],
    out: &mut [f32],
) {
    use std::arch::asm;
    use std::arch::x86_64::*;
    let k2p = w.k2p;
    // SAFETY: `CONFIG` is 64 bytes, 64-byte aligned; the CPU has AMX-TILE (the contract).
    unsafe { asm!("ldtilecfg [{0}]", in(reg) &CONFIG, options(nostack, readonly)) };
    for o0 in (0..w.cop).step_by(2 * T) {
        for q0 in (0..np).step_by(2 * T) {
            // SAFETY: each tile load reads 16 rows of 64 bytes: weight rows `o0..o0 + 32` (< cop)
            // at pairs `j0..j0 + 16` (< k2p), input rows `j0..j0 + 16` at positions
            // `q0..q0 + 32` (< np); each store writes sum rows `o0..o0 + 32` at positions
            // `q0..q0 + 32`: all inside the slices (the contract's sizes).
            unsafe {
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nomem, nostack)
                );
                for j0 in (0..k2p).step_by(T) {
                    let a = w.packed.as_ptr().add(o0 * k2p + j0);
                    let b = words.as_ptr().add(j0 * np + q0);
                    asm!(
                        "tileloadd tmm4, [{a0} + {sa}*1]",
                        "tileloadd tmm5, [{a1} + {sa}*1]",
                        "tileloadd tmm6, [{b0} + {sb}*1]",
                        "tileloadd tmm7, [{b1} + {sb}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        a0 = in(reg) a,
                        a1 = in(reg) a.add(T * k2p),
                        sa = in(reg) k2p * 4,
                        b0 = in(reg) b,
                        b1 = in(reg) b.add(T),
                        sb = in(reg) np * 4,
                        options(nostack, readonly),
                    );
                }
                let c = sums.as_mut_ptr().add(o0 * np + q0);
                asm!(
                    "tilestored [{c0} + {sc}*1], tmm0",
                    "tilestored [{c1} + {sc}*1], tmm1",
                    "tilestored [{c2} + {sc}*1], tmm2",
                    "tilestored [{c3} + {sc}*1], tmm3",
                    c0 = in(reg) c,
                    c1 = in(reg) c.add(T),
                    c2 = in(reg) c.add(T * np),
                    c3 = in(reg) c.add(T * np + T),
                    sc = in(reg) np * 4,
                    options(nostack),
                );
            }
        }
    }
    // SAFETY: releases this thread's tiles (the contract: the CPU has AMX-TILE).
    unsafe { asm!("tilerelease", options(nomem, nostack)) };
    for (o, row) in sums.chunks_exact(np).take(op.co).enumerate() {
        for q0 in (0..pixels).step_by(2 * T) {
            let masks = super::avx512::masks((2 * T).min(pixels - q0));
            // SAFETY: `row[q0..q0 + 32]` lies in the row (`np` is a multiple of 32 past
            // `q0`); `out[o * pixels + q0 + lane]` is in bounds for the lanes the masks keep.
            unsafe {
                let lo = _mm512_loadu_ps(row.as_ptr().add(q0));
                let hi = _mm512_loadu_ps(row.as_ptr().add(q0 + T));
                super::avx512::finish(op, o, lo, hi, out.as_mut_ptr().add(o * pixels + q0), masks);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_padded_to_whole_tiles_in_pairs() {
        assert!(TileWeights::new(0, 2, &[]).is_none());
        assert!(TileWeights::new(2, 3, &[0.0; 5]).is_none());
        // 3 output channels of 3 inputs: pairs (0, 1) and (2, 0), 32 rows of 16 words.
        let w: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let t = TileWeights::new(3, 3, &w).unwrap();
        assert_eq!((t.cop, t.k2, t.k2p), (32, 2, 16));
        assert_eq!(t.packed.len(), 32 * 16);
        for o in 0..3 {
            let row = &t.packed[o * 16..][..16];
            assert_eq!(row[0], pair(w[3 * o], w[3 * o + 1]));
            assert_eq!(row[1], pair(w[3 * o + 2], 0.0));
            assert!(row[2..].iter().all(|&v| v == 0));
        }
        assert!(t.packed[3 * 16..].iter().all(|&v| v == 0));
        assert_eq!(padded_positions(1), 32);
        assert_eq!(padded_positions(64), 64);
        assert_eq!(padded_positions(400), 416);
    }
}
