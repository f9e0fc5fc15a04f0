//! OpenCV-compatible preprocessing for the square-crop classifier (face-antispoof-onnx's
//! MiniFASNetV2-SE at 128x128): a square crop padded with `BORDER_REFLECT_101`, then a letterbox
//! resize (`INTER_AREA` to shrink, `INTER_LANCZOS4` to enlarge) padded with `BORDER_REFLECT_101`.
//!
//! The reference is Python + OpenCV (`crop` and `preprocess` of face-antispoof-onnx, quoted in
//! `scripts/opencv-square-vectors.py`). Hand-written because no crate reproduces OpenCV's
//! arithmetic, which the classifier was trained on:
//!
//! - [`square_reflect_crop`]: the crop box uses Python's `int()` (truncation toward zero, also for
//!   negative values) on `f64` arithmetic; the pads reflect inside the cropped region as
//!   `cv::borderInterpolate(BORDER_REFLECT_101)` does, repeating the reflection when a pad is
//!   wider than the region, and giving index 0 for a 1-pixel region.
//! - [`resize_area`]: `cv::resize(INTER_AREA)`: for integer factors `resizeAreaFast_` (integer sums;
//!   `(s + 2) >> 2` for 2x2 as OpenCV's SIMD kernel, otherwise `cvRound(s * (1.f/area))`), for other
//!   shrinking factors `resizeArea_` (`computeResizeAreaTab` weights in `f32`, accumulated in the
//!   same order), and when an axis grows the bilinear emulation of the generic path (area-mode
//!   coefficients, 11-bit weights, OpenCV's vertical rounding).
//! - [`resize_lanczos4`]: `cv::resize(INTER_LANCZOS4)` for 8-bit: `interpolateLanczos4` in `f32`/`f64`
//!   exactly as written in OpenCV, taps rounded to 11-bit `i16`, horizontal pass into `i32` with
//!   clamped (replicated) indices, vertical pass with clamped rows and a rounding shift of 22 bits.
//!   Its taps do not always sum to 2048, so OpenCV itself moves a flat image by 1 level now and then;
//!   this module does the same.
//! - [`letterbox_resize`]: `preprocess` up to (not including) the transpose and `/ 255`.
//!
//! Bit-exact against `cv2.resize` / `cv2.copyMakeBorder` of opencv-python-headless 4.10.0.84 and
//! 5.0.0 (IPP on or off gives the same bytes): `tests/square_opencv.rs` with vectors from
//! `scripts/opencv-square-vectors.py` (0 differing bytes over 920 area, 920 Lanczos and 750
//! crop + letterbox cases, seeds 2 and 11), and the small fixed cases in this module's tests.
//!
//! All functions accept any input without panicking: invalid views (stride or data too short),
//! empty or oversized sizes, boxes outside the image and non-finite factors are refused.

use std::f64::consts::PI;

use crate::pipeline::resize::ImageView;

const CN: usize = 3;
/// Largest crop side (and letterbox size) accepted; larger requests are refused.
pub const MAX_SIDE: usize = 8192;
/// `INTER_RESIZE_COEF_BITS`.
const COEF_BITS: u32 = 11;
/// `INTER_RESIZE_COEF_SCALE`.
const COEF_SCALE: f32 = (1 << COEF_BITS) as f32;

/// True when every row of `v` lies inside `v.data`.
fn view_ok(v: &ImageView<'_>) -> bool {
    if v.width == 0 || v.height == 0 {
        return false;
    }
    let Some(row_bytes) = v.width.checked_mul(CN) else {
        return false;
    };
    v.stride >= row_bytes
        && (v.height - 1)
            .checked_mul(v.stride)
            .and_then(|o| o.checked_add(row_bytes))
            .is_some_and(|end| end <= v.data.len())
}

/// Row `y` of a view checked by [`view_ok`].
fn row<'a>(v: &ImageView<'a>, y: usize) -> &'a [u8] {
    let start = y * v.stride;
    &v.data[start..start + v.width * CN]
}

/// `dst_w * dst_h * 3` when `dst` holds that many bytes.
fn packed_len(dst_w: usize, dst_h: usize, dst: &[u8]) -> Option<usize> {
    let n = dst_w.checked_mul(dst_h)?.checked_mul(CN)?;
    (dst_w > 0 && dst_h > 0 && dst.len() >= n).then_some(n)
}

/// `cv::borderInterpolate(p, len, BORDER_REFLECT_101)`: `gfedcb|abcdefgh|gfedcba`, repeated when
/// `p` is more than one period away; 0 when `len == 1` (OpenCV's special case).
fn reflect_101(p: i64, len: i64) -> i64 {
    if len <= 1 {
        return 0;
    }
    // OpenCV reflects in a loop until the index is inside; the mapping is periodic with period
    // 2*(len-1), so one Euclidean remainder gives the same index (checked against the loop in the
    // tests).
    let period = 2 * (len - 1);
    let q = p.rem_euclid(period);
    if q < len {
        q
    } else {
        period - q
    }
}

/// Python's `int(f)` for a finite `f` inside the `i64` range: truncation toward zero.
fn py_int(f: f64) -> i64 {
    f.trunc() as i64
}

/// The square crop of face-antispoof-onnx's `crop(img, (x, y, x+w, y+h), factor)`: a
/// `side x side` region centred on the box, `side = int(max(w, h) * factor)`, with the parts
/// outside the image filled by `BORDER_REFLECT_101` of the part inside. Writes `side*side*3`
/// interleaved bytes to `out` and returns `side`.
///
/// `None` (and `out` cleared) for an invalid view, a box with `w <= 0` or `h <= 0`, a non-finite
/// or non-positive factor, `side == 0`, `side > MAX_SIDE`, or a square that does not overlap the
/// image. (Python raises on an empty slice too; when the square lies entirely left of or above the
/// image, numpy's negative slice end would instead wrap around, which is meaningless, so this is
/// refused here as well.)
pub fn square_reflect_crop(
    view: &ImageView<'_>,
    bbox: [i32; 4],
    factor: f64,
    out: &mut Vec<u8>,
) -> Option<usize> {
    out.clear();
    if !view_ok(view) || !factor.is_finite() || factor <= 0.0 {
        return None;
    }
    let [bx, by, bw, bh] = bbox.map(i64::from);
    if bw <= 0 || bh <= 0 {
        return None;
    }
    // Python: w = (x + w) - x; max_dim = max(w, h); center = x + w / 2 (float division).
    let max_dim = bw.max(bh) as f64;
    let size_f = max_dim * factor;
    if size_f >= (MAX_SIDE + 1) as f64 {
        return None;
    }
    let side = py_int(size_f);
    if side <= 0 {
        return None;
    }
    let half = max_dim * factor / 2.0;
    let x = py_int(bx as f64 + bw as f64 / 2.0 - half);
    let y = py_int(by as f64 + bh as f64 / 2.0 - half);

    let (iw, ih) = (view.width as i64, view.height as i64);
    let (x1, y1) = (x.max(0), y.max(0));
    let (x2, y2) = (iw.min(x + side), ih.min(y + side));
    if x2 <= x1 || y2 <= y1 {
        return None;
    }
    let (rw, rh) = (x2 - x1, y2 - y1);
    let (left, top) = ((-x).max(0), (-y).max(0));

    // copyMakeBorder of the region [x1, x2) x [y1, y2): output index o maps to region index
    // o - pad, reflected into the region when outside. The pads are only non-zero on sides where
    // the region touches the image edge, so OpenCV's ROI extension would not change this.
    let side = side as usize;
    // Every output row takes the same source columns: consecutive ones are copied as one slice
    // (`(start, bytes)` runs; the reflected margins are runs of one pixel).
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for o in 0..side as i64 {
        let c = (x1 + reflect_101(o - left, rw)) as usize * CN;
        match runs.last_mut() {
            Some((start, len)) if *start + *len == c => *len += CN,
            _ => runs.push((c, CN)),
        }
    }
    out.reserve(side * side * CN);
    for o in 0..side as i64 {
        let src = row(view, (y1 + reflect_101(o - top, rh)) as usize);
        for &(c, n) in &runs {
            out.extend_from_slice(&src[c..c + n]);
        }
    }
    Some(side)
}

/// `saturate_cast<uchar>(float)`: `cvRound` (half to even, as `cvtss2si`) then clamp.
fn sat_u8_f32(v: f32) -> u8 {
    // Clamped first (the same result for every input, NaN included), then rounded half to even
    // by adding and removing 2^23, where an f32's unit in the last place is 1: on the baseline
    // x86-64 target `round_ties_even` is a call to `rintf`, 6% of the letterbox resize.
    const ROUND: f32 = 8_388_608.0;
    ((v.clamp(0.0, 255.0) + ROUND) - ROUND) as u8
}

/// `saturate_cast<short>(float)`.
fn sat_i16_f32(v: f32) -> i32 {
    v.round_ties_even().clamp(-32768.0, 32767.0) as i32
}

/// Copy `src` into a `dst` with row pitch `dst_stride` (same size).
fn copy_into(src: &ImageView<'_>, dst: &mut [u8], dst_stride: usize) {
    let n = src.width * CN;
    for y in 0..src.height {
        dst[y * dst_stride..y * dst_stride + n].copy_from_slice(row(src, y));
    }
}

/// Checks shared by the resize entry points writing `dst_w x dst_h` pixels with row pitch
/// `dst_stride` into `dst`.
fn dst_ok(src: &ImageView<'_>, dst_w: usize, dst_h: usize, dst: &[u8], dst_stride: usize) -> bool {
    view_ok(src)
        && dst_w > 0
        && dst_h > 0
        && dst_w.checked_mul(CN).is_some_and(|rb| {
            dst_stride >= rb
                && (dst_h - 1)
                    .checked_mul(dst_stride)
                    .and_then(|o| o.checked_add(rb))
                    .is_some_and(|end| end <= dst.len())
        })
        // OpenCV works in `int`; keep every index product far from overflow.
        && dst_w <= i32::MAX as usize / 64
        && dst_h <= i32::MAX as usize / 64
}

/// Resize `src` to `dst_w x dst_h` into `dst` (packed, `dst_w * dst_h * 3` bytes) as
/// `cv2.resize(src, (dst_w, dst_h), interpolation=cv2.INTER_AREA)`.
///
/// Returns `false` and writes nothing for an invalid view, an empty size or a short `dst`.
pub fn resize_area(src: &ImageView<'_>, dst_w: usize, dst_h: usize, dst: &mut [u8]) -> bool {
    packed_len(dst_w, dst_h, dst).is_some() && resize_area_into(src, dst_w, dst_h, dst, dst_w * CN)
}

fn resize_area_into(
    src: &ImageView<'_>,
    dst_w: usize,
    dst_h: usize,
    dst: &mut [u8],
    dst_stride: usize,
) -> bool {
    if !dst_ok(src, dst_w, dst_h, dst, dst_stride) {
        return false;
    }
    if src.width == dst_w && src.height == dst_h {
        copy_into(src, dst, dst_stride);
        return true;
    }
    // cv::resize: inv_scale = dsize/ssize, hal::resize: scale = 1/inv_scale, both in double.
    let inv_x = dst_w as f64 / src.width as f64;
    let inv_y = dst_h as f64 / src.height as f64;
    let (scale_x, scale_y) = (1.0 / inv_x, 1.0 / inv_y);
    // saturate_cast<int>(double) is cvRound: half to even.
    let (isx, isy) = (scale_x.round_ties_even(), scale_y.round_ties_even());
    let fast = (scale_x - isx).abs() < f64::EPSILON && (scale_y - isy).abs() < f64::EPSILON;
    if scale_x >= 1.0 && scale_y >= 1.0 {
        let (fx, fy) = (isx as usize, isy as usize);
        if fast && dst_w * fx <= src.width && dst_h * fy <= src.height {
            area_fast(src, fx, fy, dst_w, dst_h, dst, dst_stride);
        } else {
            area_generic(src, scale_x, scale_y, dst_w, dst_h, dst, dst_stride);
        }
    } else {
        area_linear(src, inv_x, inv_y, dst_w, dst_h, dst, dst_stride);
    }
    true
}

/// `resizeAreaFast_` for integer factors `sx x sy` (the destination tiles the source exactly).
fn area_fast(
    src: &ImageView<'_>,
    sx: usize,
    sy: usize,
    dst_w: usize,
    dst_h: usize,
    dst: &mut [u8],
    dst_stride: usize,
) {
    let area = sx * sy;
    // resizeAreaFast_Invoker: float scale = 1.f/area; D = saturate_cast<T>(sum * scale).
    let scale = 1.0f32 / area as f32;
    let simd_2x2 = sx == 2 && sy == 2;
    for dy in 0..dst_h {
        let out = &mut dst[dy * dst_stride..dy * dst_stride + dst_w * CN];
        for dx in 0..dst_w {
            for c in 0..CN {
                let mut sum: i32 = 0;
                for r in 0..sy {
                    let s = row(src, dy * sy + r);
                    for q in 0..sx {
                        sum += i32::from(s[(dx * sx + q) * CN + c]);
                    }
                }
                out[dx * CN + c] = if simd_2x2 {
                    // ResizeAreaFastVec (2x2, cn 1/3/4): (a + b + c + d + 2) >> 2.
                    ((sum + 2) >> 2) as u8
                } else {
                    sat_u8_f32(sum as f32 * scale)
                };
            }
        }
    }
}

/// One entry of OpenCV's `DecimateAlpha` table (pixel indices, not multiplied by `cn`).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Decimate {
    si: usize,
    di: usize,
    alpha: f32,
}

/// `computeResizeAreaTab(ssize, dsize, 1, scale, tab)`.
fn area_tab(ssize: usize, dsize: usize, scale: f64) -> Vec<Decimate> {
    let mut tab = Vec::with_capacity(ssize * 2);
    let ss = ssize as i64;
    for dx in 0..dsize {
        let fsx1 = dx as f64 * scale;
        let fsx2 = fsx1 + scale;
        let cell_width = scale.min(ss as f64 - fsx1);
        let mut sx1 = fsx1.ceil() as i64;
        let mut sx2 = fsx2.floor() as i64;
        sx2 = sx2.min(ss - 1);
        sx1 = sx1.min(sx2);
        if sx1 as f64 - fsx1 > 1e-3 && sx1 >= 1 {
            tab.push(Decimate {
                si: (sx1 - 1) as usize,
                di: dx,
                alpha: ((sx1 as f64 - fsx1) / cell_width) as f32,
            });
        }
        for sx in sx1.max(0)..sx2 {
            tab.push(Decimate {
                si: sx as usize,
                di: dx,
                alpha: (1.0 / cell_width) as f32,
            });
        }
        if fsx2 - sx2 as f64 > 1e-3 && sx2 >= 0 {
            tab.push(Decimate {
                si: sx2 as usize,
                di: dx,
                alpha: ((fsx2 - sx2 as f64).min(1.0).min(cell_width) / cell_width) as f32,
            });
        }
    }
    tab
}

/// `resizeArea_<uchar, float>` (`ResizeArea_Invoker`), for non-integer shrinking factors.
///
/// Bit-exact with OpenCV's loop, which for every `(source row, destination row)` pair of the
/// vertical table walks the whole horizontal table, accumulating into a row buffer in memory.
/// Here each destination pixel's taps (a contiguous run of the table) are summed in registers in
/// the same order, and a source row shared by two destination rows is resized once: the same
/// float operations in the same order, so the same bits (`area_generic_matches_the_plain_loop`
/// checks it against that loop). With the reflect crop, the default set's 128 px member input
/// went from 0.98 to about 0.5 ms (`cargo bench --bench pipeline -- stage/crop`).
fn area_generic(
    src: &ImageView<'_>,
    scale_x: f64,
    scale_y: f64,
    dst_w: usize,
    dst_h: usize,
    dst: &mut [u8],
    dst_stride: usize,
) {
    let xtab = area_tab(src.width, dst_w, scale_x);
    let ytab = area_tab(src.height, dst_h, scale_y);
    // Each destination column's taps, pixel offsets (times `CN`) and weights in table order,
    // padded to the longest run with zero weights on pixel 0 (adding `0.0 * pixel` to a sum
    // that starts at +0.0 changes no bit), so that every column has `k` of them.
    let mut filled = vec![0usize; dst_w];
    for t in &xtab {
        filled[t.di] += 1;
    }
    let k = filled.iter().copied().max().unwrap_or(0).max(1);
    filled.fill(0);
    let mut taps = vec![(0usize, 0f32); dst_w * k];
    for t in &xtab {
        taps[t.di * k + filled[t.di]] = (t.si * CN, t.alpha);
        filled[t.di] += 1;
    }
    let width = dst_w * CN;
    let mut buf = vec![0f32; width];
    let mut buf_row = None;
    let mut sum = vec![0f32; width];
    let mut j = 0;
    for dy in 0..dst_h {
        sum.iter_mut().for_each(|v| *v = 0.0);
        while let Some(t) = ytab.get(j).filter(|t| t.di == dy) {
            j += 1;
            if buf_row != Some(t.si) {
                let s = row(src, t.si);
                match k {
                    2 => area_row::<2>(s, &taps, &mut buf),
                    3 => area_row::<3>(s, &taps, &mut buf),
                    4 => area_row::<4>(s, &taps, &mut buf),
                    5 => area_row::<5>(s, &taps, &mut buf),
                    _ => area_row_n(s, &taps, k, &mut buf),
                }
                buf_row = Some(t.si);
            }
            let beta = t.alpha;
            for (acc, &b) in sum.iter_mut().zip(&buf) {
                *acc += beta * b;
            }
        }
        let out = &mut dst[dy * dst_stride..dy * dst_stride + width];
        for (o, &v) in out.iter_mut().zip(&sum) {
            *o = sat_u8_f32(v);
        }
    }
}

/// One source row through the horizontal taps of [`area_generic`], `K` per destination pixel.
fn area_row<const K: usize>(s: &[u8], taps: &[(usize, f32)], buf: &mut [f32]) {
    area_row_n(s, taps, K, buf)
}

#[inline(always)]
fn area_row_n(s: &[u8], taps: &[(usize, f32)], k: usize, buf: &mut [f32]) {
    for (b, taps) in buf.chunks_exact_mut(CN).zip(taps.chunks_exact(k)) {
        let mut acc = [0f32; CN];
        for &(o, alpha) in taps {
            let px = &s[o..o + CN];
            for c in 0..CN {
                acc[c] += f32::from(px[c]) * alpha;
            }
        }
        b.copy_from_slice(&acc);
    }
}

/// Source index and 11-bit weights of one output position of the generic linear path.
#[derive(Clone, Copy, Debug, PartialEq)]
struct LinTap {
    src: usize,
    w0: i32,
    w1: i32,
}

/// Area-mode taps of `cv::resize`'s generic path (`area_mode`), one axis. `clamp_edge`: the
/// horizontal axis moves a position at or past the last pixel onto it with weight 1; vertically the
/// weights are kept and the rows clamped when read.
fn area_linear_taps(
    src_len: usize,
    dst_len: usize,
    inv_scale: f64,
    clamp_edge: bool,
) -> Vec<LinTap> {
    let scale = 1.0 / inv_scale;
    let last = src_len as i64 - 1;
    (0..dst_len)
        .map(|d| {
            let mut s = (d as f64 * scale).floor() as i64;
            let mut f = ((d + 1) as f64 - (s + 1) as f64 * inv_scale) as f32;
            f = if f <= 0.0 { 0.0 } else { f - f.floor() };
            if clamp_edge && s >= last {
                f = 0.0;
                s = last;
            }
            LinTap {
                src: s.clamp(0, last) as usize,
                w0: sat_i16_f32((1.0 - f) * COEF_SCALE),
                w1: sat_i16_f32(f * COEF_SCALE),
            }
        })
        .collect()
}

/// `INTER_AREA` when an axis grows: OpenCV's bilinear emulation (generic 2-tap path with area-mode
/// coefficients, `VResizeLinear` 8-bit rounding).
fn area_linear(
    src: &ImageView<'_>,
    inv_x: f64,
    inv_y: f64,
    dst_w: usize,
    dst_h: usize,
    dst: &mut [u8],
    dst_stride: usize,
) {
    let xt = area_linear_taps(src.width, dst_w, inv_x, true);
    let yt = area_linear_taps(src.height, dst_h, inv_y, false);
    let width = dst_w * CN;
    let last_col = src.width - 1;
    let hresize = |y: usize, out: &mut [i32]| {
        let s = row(src, y);
        for (dx, t) in xt.iter().enumerate() {
            let a = t.src * CN;
            let b = (t.src + 1).min(last_col) * CN;
            for c in 0..CN {
                out[dx * CN + c] = i32::from(s[a + c]) * t.w0 + i32::from(s[b + c]) * t.w1;
            }
        }
    };
    let mut rows = [vec![0i32; width], vec![0i32; width]];
    let mut tags: [Option<usize>; 2] = [None, None];
    let last_row = src.height - 1;
    for (dy, t) in yt.iter().enumerate() {
        let want = [t.src.min(last_row), (t.src + 1).min(last_row)];
        // Moving down, yesterday's second row is usually today's first: swap, don't recompute.
        if tags[0] != Some(want[0]) && tags[1] == Some(want[0]) {
            rows.swap(0, 1);
            tags.swap(0, 1);
        }
        for (k, &r) in want.iter().enumerate() {
            if tags[k] != Some(r) {
                hresize(r, &mut rows[k]);
                tags[k] = Some(r);
            }
        }
        let out = &mut dst[dy * dst_stride..dy * dst_stride + width];
        for ((o, &p0), &p1) in out.iter_mut().zip(&rows[0]).zip(&rows[1]) {
            let a = ((p0 >> 4) * t.w0) >> 16;
            let b = ((p1 >> 4) * t.w1) >> 16;
            *o = ((a + b + 2) >> 2).clamp(0, 255) as u8;
        }
    }
}

/// OpenCV's `interpolateLanczos4(x, coeffs)`, with its float/double mix kept as written.
fn lanczos4_coeffs(x: f32) -> [f32; 8] {
    const S45: f64 = std::f64::consts::FRAC_1_SQRT_2;
    const CS: [[f64; 2]; 8] = [
        [1.0, 0.0],
        [-S45, -S45],
        [0.0, 1.0],
        [S45, -S45],
        [-1.0, 0.0],
        [S45, S45],
        [0.0, -1.0],
        [-S45, S45],
    ];
    let mut coeffs = [0f32; 8];
    let mut sum = 0f32;
    let y0 = f64::from(-(x + 3.0)) * PI * 0.25;
    let (s0, c0) = (y0.sin(), y0.cos());
    for (i, (c, cs)) in coeffs.iter_mut().zip(CS).enumerate() {
        let y0_ = x + 3.0 - i as f32;
        *c = if y0_.abs() >= 1e-6 {
            let y = f64::from(-y0_) * PI * 0.25;
            ((cs[0] * s0 + cs[1] * c0) / (y * y)) as f32
        } else {
            1e30
        };
        sum += *c;
    }
    let inv = 1.0f32 / sum;
    for c in &mut coeffs {
        *c *= inv;
    }
    coeffs
}

/// Lanczos-4 taps along one axis: first of the 8 source indices (`floor(f) - 3`, may be outside
/// the image) and the 11-bit weights.
fn lanczos_taps(src_len: usize, dst_len: usize) -> Vec<(i64, [i32; 8])> {
    let scale = 1.0 / (dst_len as f64 / src_len as f64);
    (0..dst_len)
        .map(|d| {
            let mut f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let s = f.floor() as i64;
            f -= s as f32;
            let c = lanczos4_coeffs(f);
            (s - 3, c.map(|v| sat_i16_f32(v * COEF_SCALE)))
        })
        .collect()
}

/// Resize `src` to `dst_w x dst_h` into `dst` (packed, `dst_w * dst_h * 3` bytes) as
/// `cv2.resize(src, (dst_w, dst_h), interpolation=cv2.INTER_LANCZOS4)`.
///
/// Returns `false` and writes nothing for an invalid view, an empty size or a short `dst`.
pub fn resize_lanczos4(src: &ImageView<'_>, dst_w: usize, dst_h: usize, dst: &mut [u8]) -> bool {
    packed_len(dst_w, dst_h, dst).is_some()
        && resize_lanczos4_into(src, dst_w, dst_h, dst, dst_w * CN)
}

fn resize_lanczos4_into(
    src: &ImageView<'_>,
    dst_w: usize,
    dst_h: usize,
    dst: &mut [u8],
    dst_stride: usize,
) -> bool {
    if !dst_ok(src, dst_w, dst_h, dst, dst_stride) {
        return false;
    }
    if src.width == dst_w && src.height == dst_h {
        copy_into(src, dst, dst_stride);
        return true;
    }
    let xt = lanczos_taps(src.width, dst_w);
    let yt = lanczos_taps(src.height, dst_h);
    let width = dst_w * CN;
    let (last_col, last_row) = (src.width as i64 - 1, src.height as i64 - 1);
    // HResizeLanczos4: out-of-range taps are moved back inside by whole pixels (replicate).
    let hresize = |y: usize, out: &mut [i32]| {
        let s = row(src, y);
        for (dx, (sx, a)) in xt.iter().enumerate() {
            let mut idx = [0usize; 8];
            for (j, i) in idx.iter_mut().enumerate() {
                *i = (sx + j as i64).clamp(0, last_col) as usize * CN;
            }
            for c in 0..CN {
                let mut v = 0i32;
                for (&i, &w) in idx.iter().zip(a) {
                    v += i32::from(s[i + c]) * w;
                }
                out[dx * CN + c] = v;
            }
        }
    };
    // Ring of 8 horizontally resized rows, slot = row % 8: the (clamped) rows of one output row
    // lie within 8 consecutive indices, so distinct rows never share a slot.
    let mut rows: Vec<Vec<i32>> = (0..8).map(|_| vec![0; width]).collect();
    let mut tags = [usize::MAX; 8];
    for (dy, (sy, b)) in yt.iter().enumerate() {
        let mut slots = [0usize; 8];
        for (k, slot) in slots.iter_mut().enumerate() {
            let r = (sy + k as i64).clamp(0, last_row) as usize;
            *slot = r % 8;
            if tags[*slot] != r {
                hresize(r, &mut rows[*slot]);
                tags[*slot] = r;
            }
        }
        let out = &mut dst[dy * dst_stride..dy * dst_stride + width];
        for (x, o) in out.iter_mut().enumerate() {
            // VResizeLanczos4 + FixedPtCast<int, uchar, 22>, in C `int` (wrapping here so that
            // the arithmetic is the same even if it overflowed; it cannot, see the tests).
            let mut v = 0i32;
            for (&slot, &w) in slots.iter().zip(b) {
                v = v.wrapping_add(rows[slot][x].wrapping_mul(w));
            }
            *o = (v.wrapping_add(1 << (2 * COEF_BITS - 1)) >> (2 * COEF_BITS)).clamp(0, 255) as u8;
        }
    }
    true
}

/// face-antispoof-onnx's `preprocess(img, size)` up to (not including) the transpose and `/ 255`:
/// scale the longer side to `size` (`ratio = size / max(h, w)`, each side `int(side * ratio)` in
/// `f64`, so 127 can come out for 128), `INTER_LANCZOS4` when `ratio > 1` else `INTER_AREA`, then
/// pad to `size x size` with `BORDER_REFLECT_101` (`delta // 2` before, the rest after).
/// Writes `size*size*3` bytes to `dst`.
///
/// Returns `false` (and `dst` cleared) for an invalid view, `size == 0`, `size > MAX_SIDE`, or a
/// side that scales to 0 pixels (Python's `cv2.resize` raises there).
pub fn letterbox_resize(square: &ImageView<'_>, size: usize, dst: &mut Vec<u8>) -> bool {
    dst.clear();
    if !view_ok(square) || size == 0 || size > MAX_SIDE {
        return false;
    }
    let (w, h) = (square.width, square.height);
    let ratio = size as f64 / w.max(h) as f64;
    let sh = (h as f64 * ratio) as usize;
    let sw = (w as f64 * ratio) as usize;
    if sw == 0 || sh == 0 || sw > size || sh > size {
        return false;
    }
    let (top, left) = ((size - sh) / 2, (size - sw) / 2);
    let stride = size * CN;
    dst.resize(size * stride, 0);
    let start = top * stride + left * CN;
    let ok = if ratio > 1.0 {
        resize_lanczos4_into(square, sw, sh, &mut dst[start..], stride)
    } else {
        resize_area_into(square, sw, sh, &mut dst[start..], stride)
    };
    if !ok {
        dst.clear();
        return false;
    }
    // copyMakeBorder: left/right columns of the inner rows, then whole top/bottom rows.
    let cols: Vec<(usize, usize)> = (0..size as i64)
        .filter(|&o| o < left as i64 || o >= (left + sw) as i64)
        .map(|o| {
            let s = left as i64 + reflect_101(o - left as i64, sw as i64);
            (o as usize * CN, s as usize * CN)
        })
        .collect();
    for y in top..top + sh {
        let r = &mut dst[y * stride..(y + 1) * stride];
        for &(o, s) in &cols {
            r.copy_within(s..s + CN, o);
        }
    }
    for o in (0..size as i64).filter(|&o| o < top as i64 || o >= (top + sh) as i64) {
        let s = (top as i64 + reflect_101(o - top as i64, sh as i64)) as usize;
        dst.copy_within(s * stride..(s + 1) * stride, o as usize * stride);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn view(data: &[u8], w: usize, h: usize) -> ImageView<'_> {
        ImageView {
            data,
            width: w,
            height: h,
            stride: w * CN,
        }
    }

    /// Literal port of `cv::borderInterpolate` for BORDER_REFLECT_101.
    fn reflect_101_loop(mut p: i64, len: i64) -> i64 {
        if len == 1 {
            return 0;
        }
        loop {
            if p < 0 {
                p = -p - 1 + 1;
            } else {
                p = len - 1 - (p - len) - 1;
            }
            if (0..len).contains(&p) {
                return p;
            }
        }
    }

    #[test]
    fn reflect_matches_opencv_loop() {
        for len in 1..20 {
            for p in -200..200 {
                let want = if (0..len).contains(&p) {
                    p
                } else {
                    reflect_101_loop(p, len)
                };
                assert_eq!(reflect_101(p, len), want, "p={p} len={len}");
            }
        }
        assert_eq!(reflect_101(-1, 5), 1);
        assert_eq!(reflect_101(5, 5), 3);
        assert_eq!(reflect_101(-7, 3), 1);
    }

    #[test]
    fn lanczos_taps_fit_in_i32() {
        // The vertical sum is at most 255 * (P_a * P_b + N_a * N_b), P/N the sums of the positive
        // and negative 11-bit taps of one phase. Check it stays below 2^31 (with the rounding
        // term) over a dense sweep of phases, so OpenCV's `int` arithmetic never wraps.
        let pn: Vec<(i64, i64)> = (0..=100_000)
            .map(|i| {
                let c = lanczos4_coeffs(i as f32 / 100_000.0)
                    .map(|v| i64::from(sat_i16_f32(v * COEF_SCALE)));
                (
                    c.iter().filter(|&&v| v > 0).sum(),
                    -c.iter().filter(|&&v| v < 0).sum::<i64>(),
                )
            })
            .collect();
        let pmax = pn.iter().map(|a| a.0).max().unwrap_or(0);
        let nmax = pn.iter().map(|a| a.1).max().unwrap_or(0);
        let worst = pn
            .iter()
            .map(|&(p, n)| 255 * (p * pmax + n * nmax).max(p * nmax + n * pmax))
            .max()
            .unwrap_or(0);
        assert!(
            worst + (1 << 21) < i64::from(i32::MAX),
            "{pmax} {nmax} {worst}"
        );
        let c = lanczos4_coeffs(0.0).map(|v| sat_i16_f32(v * COEF_SCALE));
        assert_eq!(c, [0, 0, 0, 2048, 0, 0, 0, 0]);
    }

    #[test]
    fn area_tab_sums_to_one() {
        for (s, d) in [(7, 3), (700, 127), (129, 128), (5, 4)] {
            let t = area_tab(s, d, 1.0 / (d as f64 / s as f64));
            for dx in 0..d {
                let sum: f32 = t.iter().filter(|e| e.di == dx).map(|e| e.alpha).sum();
                assert!((sum - 1.0).abs() < 1e-4, "{s}->{d} dx={dx}: {sum}");
            }
            assert!(t.iter().all(|e| e.si < s));
        }
    }

    #[test]
    fn crop_inside_is_a_plain_copy() {
        let (w, h) = (20, 16);
        let data: Vec<u8> = (0..w * h * CN).map(|i| (i * 7 % 251) as u8).collect();
        let v = view(&data, w, h);
        let mut out = Vec::new();
        // box 6x4 at (7,6), factor 1.5: side 9, x = int(10 - 4.5) = 5, y = int(8 - 4.5) = 3.
        assert_eq!(
            square_reflect_crop(&v, [7, 6, 6, 4], 1.5, &mut out),
            Some(9)
        );
        for y in 0..9 {
            for x in 0..9 {
                let s = ((3 + y) * w + 5 + x) * CN;
                assert_eq!(&out[(y * 9 + x) * CN..][..CN], &data[s..s + CN]);
            }
        }
    }

    #[test]
    fn crop_truncates_toward_zero() {
        // x = int(1 + 1.5 - 3.75) = int(-1.25) = -1 (floor would give -2).
        let data = vec![9u8; 10 * 10 * CN];
        let v = view(&data, 10, 10);
        let mut out = Vec::new();
        assert_eq!(
            square_reflect_crop(&v, [1, 1, 3, 5], 1.5, &mut out),
            Some(7)
        );
        assert_eq!(out.len(), 7 * 7 * CN);
    }

    #[test]
    fn crop_refuses_degenerate_input() {
        let data = vec![1u8; 8 * 8 * CN];
        let v = view(&data, 8, 8);
        let mut out = vec![1];
        for (b, f) in [
            ([0, 0, 0, 5], 1.5),
            ([0, 0, 5, -1], 1.5),
            ([0, 0, 5, 5], 0.0),
            ([0, 0, 5, 5], f64::NAN),
            ([0, 0, 5, 5], f64::INFINITY),
            ([0, 0, 5, 5], 0.1), // side int(0.5) = 0
            ([100, 0, 5, 5], 1.5),
            ([-100, -100, 5, 5], 1.5),
            ([0, 0, 10_000, 10], 1.0),
            ([i32::MAX, i32::MAX, i32::MAX, i32::MAX], 1.5),
            ([i32::MIN, i32::MIN, 1, 1], 1.5),
        ] {
            assert_eq!(square_reflect_crop(&v, b, f, &mut out), None, "{b:?} {f}");
            assert!(out.is_empty());
        }
        let short = ImageView {
            data: &data[..10],
            width: 8,
            height: 8,
            stride: 24,
        };
        assert_eq!(
            square_reflect_crop(&short, [0, 0, 4, 4], 1.5, &mut out),
            None
        );
    }

    #[test]
    fn one_pixel_region_repeats_it() {
        // The square overlaps only the last column: every output column is that column (OpenCV
        // returns index 0 for a 1-wide region).
        let (w, h) = (4, 4);
        let data: Vec<u8> = (0..w * h * CN).map(|i| i as u8).collect();
        let v = view(&data, w, h);
        let mut out = Vec::new();
        // Factor 1: the square is the box itself. At x = 4 it misses the image entirely.
        assert_eq!(square_reflect_crop(&v, [4, 0, 4, 4], 1.0, &mut out), None);
        let side = square_reflect_crop(&v, [3, 0, 4, 4], 1.0, &mut out).unwrap();
        assert_eq!(side, 4);
        for y in 0..4 {
            for x in 0..4 {
                let s = (y * w + 3) * CN;
                assert_eq!(&out[(y * 4 + x) * CN..][..CN], &data[s..s + CN]);
            }
        }
    }

    #[test]
    fn resize_refuses_bad_buffers() {
        let data = vec![3u8; 5 * 4 * CN];
        let v = view(&data, 5, 4);
        let mut small = vec![0u8; 10];
        assert!(!resize_area(&v, 2, 2, &mut small));
        assert!(!resize_lanczos4(&v, 2, 2, &mut small));
        assert!(!resize_area(&v, 0, 2, &mut small));
        assert!(!resize_lanczos4(&v, 2, 0, &mut small));
        let bad = ImageView {
            data: &data,
            width: 5,
            height: 4,
            stride: 2,
        };
        let mut out = vec![0u8; 12];
        assert!(!resize_area(&bad, 2, 2, &mut out));
        assert!(!resize_lanczos4(&bad, 2, 2, &mut out));
        let mut lb = Vec::new();
        assert!(!letterbox_resize(&bad, 8, &mut lb));
        assert!(!letterbox_resize(&v, 0, &mut lb));
        // 1 x 200 at size 128: the short side scales to int(0.64) = 0 (cv2.resize would raise).
        let strip = vec![0u8; 200 * CN];
        assert!(!letterbox_resize(&view(&strip, 200, 1), 128, &mut lb));
        assert!(lb.is_empty());
    }

    #[test]
    fn letterbox_of_127_pads_one_row_and_column() {
        // 161 * (128/161) = 127.99999999999999 -> 127: one reflected row/column at the end.
        let side = 161;
        assert_eq!((side as f64 * (128.0 / side as f64)) as usize, 127);
        let data: Vec<u8> = (0..side * side * CN)
            .map(|i| (i * 13 % 256) as u8)
            .collect();
        let mut out = Vec::new();
        assert!(letterbox_resize(&view(&data, side, side), 128, &mut out));
        let mut inner = vec![0u8; 127 * 127 * CN];
        assert!(resize_area(&view(&data, side, side), 127, 127, &mut inner));
        let stride = 128 * CN;
        for y in 0..127 {
            assert_eq!(
                &out[y * stride..y * stride + 127 * CN],
                &inner[y * 127 * CN..(y + 1) * 127 * CN]
            );
            // column 127 reflects column 125
            assert_eq!(
                &out[y * stride + 127 * CN..(y + 1) * stride],
                &inner[(y * 127 + 125) * CN..(y * 127 + 126) * CN]
            );
        }
        assert_eq!(&out[127 * stride..], &out[125 * stride..126 * stride]);
    }

    // Generated by scripts/opencv-square-vectors.py --rust (OpenCV 5.0.0).
    /// (kind, src w, src h, src, dst w, dst h, cv2.resize output)
    type ResizeCase = (
        &'static str,
        usize,
        usize,
        &'static [u8],
        usize,
        usize,
        &'static [u8],
    );
    const RESIZE_CASES: &[ResizeCase] = &[
        (
            "area",
            7,
            5,
            &[
                139, 74, 229, 241, 169, 65, 6, 160, 149, 106, 38, 175, 188, 205, 175, 229, 98, 249,
                10, 148, 95, 86, 147, 198, 66, 39, 106, 213, 171, 45, 167, 57, 69, 81, 55, 14, 153,
                178, 215, 76, 52, 39, 250, 72, 215, 50, 161, 223, 112, 172, 161, 233, 38, 17, 89,
                1, 221, 6, 242, 127, 143, 6, 60, 210, 94, 25, 166, 33, 249, 189, 12, 204, 33, 57,
                124, 30, 199, 149, 202, 119, 72, 220, 3, 209, 122, 136, 147, 77, 133, 82, 115, 87,
                162, 230, 70, 71, 240, 62, 47, 184, 31, 34, 63, 65, 146,
            ],
            3,
            2,
            &[
                133, 117, 156, 134, 97, 109, 111, 118, 136, 145, 98, 149, 142, 76, 121, 145, 74,
                113,
            ],
        ),
        (
            "area",
            9,
            6,
            &[
                81, 133, 240, 113, 30, 247, 103, 122, 31, 19, 42, 129, 141, 136, 33, 149, 161, 0,
                178, 141, 107, 35, 107, 130, 72, 27, 217, 254, 99, 13, 195, 206, 59, 228, 235, 202,
                183, 47, 69, 179, 82, 35, 71, 159, 110, 121, 77, 87, 3, 126, 44, 253, 233, 225, 90,
                119, 137, 120, 30, 55, 33, 165, 87, 216, 229, 167, 3, 41, 109, 203, 129, 219, 63,
                101, 207, 156, 27, 220, 93, 29, 143, 200, 63, 11, 11, 180, 219, 113, 190, 87, 34,
                9, 133, 29, 61, 36, 244, 192, 207, 131, 254, 67, 99, 248, 47, 71, 89, 119, 137, 85,
                246, 206, 214, 129, 203, 234, 113, 121, 206, 210, 200, 248, 20, 161, 52, 114, 255,
                112, 206, 54, 157, 131, 133, 69, 42, 68, 243, 24, 51, 127, 8, 205, 30, 97, 79, 35,
                93, 63, 131, 188, 69, 254, 233, 238, 4, 3, 167, 155, 225, 24, 84, 68,
            ],
            3,
            2,
            &[
                135, 127, 119, 129, 114, 97, 108, 96, 153, 133, 152, 104, 111, 132, 137, 130, 130,
                101,
            ],
        ),
        (
            "area",
            6,
            4,
            &[
                124, 147, 17, 248, 94, 4, 41, 177, 159, 126, 192, 225, 86, 246, 90, 51, 34, 231,
                145, 184, 128, 238, 153, 94, 63, 13, 48, 125, 47, 186, 244, 0, 105, 58, 23, 158,
                13, 2, 126, 212, 229, 139, 231, 169, 235, 194, 138, 39, 29, 67, 167, 136, 85, 99,
                129, 68, 235, 102, 3, 247, 178, 114, 93, 225, 31, 230, 172, 47, 136, 166, 129, 130,
            ],
            3,
            2,
            &[
                189, 145, 61, 89, 107, 155, 110, 76, 146, 114, 76, 187, 207, 113, 149, 126, 82, 133,
            ],
        ),
        (
            "area",
            3,
            4,
            &[
                134, 151, 147, 240, 170, 214, 222, 216, 17, 110, 58, 181, 22, 129, 196, 163, 116,
                254, 199, 10, 104, 179, 228, 189, 201, 43, 56, 121, 135, 65, 108, 23, 236, 144,
                150, 62,
            ],
            5,
            2,
            &[
                122, 105, 164, 125, 119, 178, 131, 150, 205, 172, 160, 159, 193, 166, 136, 160, 73,
                85, 154, 90, 127, 144, 126, 213, 163, 106, 110, 173, 97, 59,
            ],
        ),
        (
            "lanczos",
            3,
            2,
            &[
                199, 102, 136, 138, 180, 184, 14, 186, 124, 92, 253, 129, 18, 27, 234, 156, 238, 24,
            ],
            7,
            5,
            &[
                212, 69, 130, 211, 97, 143, 197, 153, 166, 152, 198, 178, 80, 205, 166, 12, 186,
                142, 0, 173, 129, 194, 108, 126, 187, 119, 144, 168, 143, 175, 129, 168, 188, 78,
                184, 165, 34, 189, 126, 15, 190, 106, 154, 191, 117, 137, 165, 146, 105, 121, 194,
                78, 103, 209, 72, 139, 162, 82, 197, 92, 89, 228, 55, 114, 255, 109, 88, 211, 148,
                43, 99, 213, 27, 39, 230, 67, 95, 160, 129, 205, 58, 162, 255, 4, 95, 255, 105, 64,
                233, 149, 14, 88, 222, 4, 9, 240, 65, 74, 159, 151, 208, 42, 197, 255, 0,
            ],
        ),
        (
            "lanczos",
            9,
            7,
            &[
                213, 22, 159, 175, 38, 205, 123, 92, 48, 200, 171, 164, 77, 151, 34, 153, 232, 199,
                180, 27, 154, 29, 43, 15, 24, 6, 0, 169, 116, 214, 59, 99, 50, 32, 44, 153, 142,
                130, 178, 82, 44, 73, 196, 57, 76, 125, 115, 38, 91, 106, 175, 97, 178, 136, 251,
                208, 174, 207, 167, 102, 97, 98, 35, 97, 30, 118, 76, 147, 170, 56, 143, 250, 189,
                10, 106, 100, 18, 178, 9, 151, 30, 45, 130, 112, 118, 247, 228, 154, 184, 250, 25,
                114, 113, 190, 83, 163, 68, 43, 18, 140, 218, 215, 43, 173, 15, 138, 238, 244, 42,
                11, 154, 38, 215, 79, 199, 143, 37, 98, 184, 112, 16, 151, 165, 91, 85, 16, 84, 61,
                39, 237, 96, 13, 227, 32, 10, 103, 73, 48, 127, 211, 120, 153, 193, 24, 129, 154,
                246, 103, 67, 148, 195, 247, 170, 95, 147, 243, 44, 129, 10, 55, 202, 123, 241, 1,
                60, 205, 248, 171, 138, 180, 166, 3, 153, 84, 232, 76, 190, 59, 63, 127, 17, 131,
                195, 223, 131, 117, 197, 23, 180,
            ],
            4,
            3,
            &[
                114, 84, 132, 159, 155, 191, 207, 103, 85, 70, 115, 125, 79, 211, 177, 22, 117,
                116, 65, 60, 34, 59, 181, 59, 159, 169, 125, 89, 161, 199, 154, 216, 193, 72, 155,
                53,
            ],
        ),
    ];
    /// (image w, image h, image, bbox x y w h, factor, size, preprocess output before /255)
    type LetterboxCase = (
        usize,
        usize,
        &'static [u8],
        [i32; 4],
        f64,
        usize,
        &'static [u8],
    );
    const LETTERBOX_CASES: &[LetterboxCase] = &[
        (
            6,
            5,
            &[
                170, 223, 116, 136, 248, 146, 177, 33, 145, 56, 122, 216, 106, 202, 86, 216, 83,
                28, 146, 123, 147, 31, 232, 241, 110, 121, 91, 155, 51, 23, 103, 231, 18, 219, 232,
                245, 51, 29, 217, 145, 127, 1, 230, 71, 16, 221, 60, 37, 244, 210, 22, 144, 160,
                73, 69, 49, 53, 85, 14, 192, 25, 58, 139, 237, 23, 131, 213, 62, 201, 68, 101, 141,
                29, 40, 150, 12, 68, 176, 56, 46, 147, 67, 142, 96, 120, 141, 81, 226, 121, 161,
            ],
            [3, 2, 4, 4],
            1.5,
            8,
            &[
                90, 134, 102, 148, 53, 66, 121, 103, 0, 105, 241, 55, 216, 237, 253, 146, 246, 129,
                91, 166, 0, 161, 36, 33, 218, 96, 26, 195, 52, 33, 184, 135, 0, 193, 245, 6, 191,
                197, 123, 192, 235, 49, 190, 191, 0, 184, 55, 25, 162, 67, 49, 214, 27, 63, 255,
                70, 95, 238, 148, 101, 89, 128, 74, 184, 145, 93, 255, 108, 100, 252, 23, 75, 1,
                59, 152, 139, 42, 127, 248, 38, 159, 176, 71, 194, 86, 101, 153, 146, 83, 181, 221,
                48, 182, 212, 35, 125, 51, 41, 151, 64, 105, 122, 77, 152, 76, 136, 134, 96, 219,
                120, 162, 171, 131, 119, 86, 141, 76, 71, 138, 101, 13, 50, 156, 109, 65, 128, 188,
                78, 135, 162, 87, 164, 131, 104, 155, 154, 95, 162, 174, 77, 151, 161, 73, 120, 78,
                70, 97, 192, 23, 92, 255, 36, 133, 212, 107, 158, 69, 118, 116, 161, 114, 145, 255,
                67, 150, 255, 10, 100, 249, 76, 5, 216, 45, 29, 233, 131, 15, 234, 225, 12, 158,
                168, 67, 206, 210, 32, 249, 180, 2, 209, 54, 33,
            ],
        ),
        (
            7,
            6,
            &[
                19, 11, 62, 164, 189, 47, 93, 149, 229, 123, 215, 145, 67, 109, 132, 15, 78, 102,
                84, 96, 129, 53, 187, 251, 136, 93, 52, 105, 89, 164, 155, 54, 64, 42, 79, 61, 204,
                72, 159, 182, 81, 31, 190, 9, 229, 215, 43, 248, 52, 224, 79, 224, 40, 202, 73,
                145, 224, 42, 189, 119, 39, 159, 237, 194, 6, 210, 49, 140, 168, 184, 40, 122, 111,
                75, 121, 82, 9, 87, 93, 114, 119, 212, 86, 192, 246, 232, 26, 14, 88, 77, 115, 6,
                96, 245, 107, 184, 181, 136, 71, 95, 112, 102, 193, 205, 113, 9, 197, 7, 154, 147,
                62, 232, 87, 219, 117, 31, 242, 35, 114, 106, 217, 6, 151, 247, 73, 247,
            ],
            [-2, 1, 5, 6],
            1.5,
            5,
            &[
                92, 117, 104, 120, 133, 140, 86, 115, 103, 120, 133, 140, 92, 117, 104, 120, 75,
                160, 127, 115, 141, 165, 51, 214, 127, 115, 141, 120, 75, 160, 153, 94, 127, 125,
                64, 123, 124, 147, 77, 125, 64, 123, 153, 94, 127, 151, 98, 134, 132, 67, 127, 118,
                159, 59, 132, 67, 127, 151, 98, 134, 120, 72, 164, 128, 114, 144, 169, 43, 217,
                128, 114, 144, 120, 72, 164,
            ],
        ),
        (
            3,
            3,
            &[
                216, 1, 99, 168, 201, 163, 86, 186, 145, 215, 159, 109, 36, 238, 58, 20, 235, 212,
                19, 134, 216, 250, 239, 110, 158, 108, 112,
            ],
            [1, 1, 2, 3],
            2.9,
            6,
            &[
                45, 224, 168, 142, 174, 95, 106, 201, 90, 45, 224, 168, 142, 174, 95, 106, 201, 90,
                65, 213, 162, 159, 150, 107, 130, 185, 109, 65, 213, 162, 159, 150, 107, 130, 185,
                109, 142, 164, 127, 132, 190, 143, 164, 214, 120, 142, 164, 127, 132, 190, 143,
                164, 214, 120, 45, 224, 168, 142, 174, 95, 106, 201, 90, 45, 224, 168, 142, 174,
                95, 106, 201, 90, 65, 213, 162, 159, 150, 107, 130, 185, 109, 65, 213, 162, 159,
                150, 107, 130, 185, 109, 142, 164, 127, 132, 190, 143, 164, 214, 120, 142, 164,
                127, 132, 190, 143, 164, 214, 120,
            ],
        ),
    ];

    #[test]
    fn resize_matches_opencv_fixtures() {
        for &(kind, sw, sh, src, dw, dh, want) in RESIZE_CASES {
            let mut out = vec![0u8; dw * dh * CN];
            let v = view(src, sw, sh);
            let ok = if kind == "area" {
                resize_area(&v, dw, dh, &mut out)
            } else {
                resize_lanczos4(&v, dw, dh, &mut out)
            };
            assert!(ok);
            assert_eq!(out, want, "{kind} {sw}x{sh} -> {dw}x{dh}");
        }
    }

    #[test]
    fn crop_and_letterbox_match_opencv_fixtures() {
        for &(w, h, img, bbox, factor, size, want) in LETTERBOX_CASES {
            let mut sq = Vec::new();
            let side = square_reflect_crop(&view(img, w, h), bbox, factor, &mut sq).unwrap();
            let mut out = Vec::new();
            assert!(letterbox_resize(&view(&sq, side, side), size, &mut out));
            assert_eq!(out, want, "{w}x{h} {bbox:?} {factor} -> {size}");
        }
    }

    fn arb_view() -> impl Strategy<Value = (Vec<u8>, usize, usize, usize)> {
        (1usize..40, 1usize..40, 0usize..4).prop_flat_map(|(w, h, pad)| {
            let stride = w * CN + pad;
            let len = (h - 1) * stride + w * CN;
            (
                proptest::collection::vec(any::<u8>(), len),
                Just(w),
                Just(h),
                Just(stride),
            )
        })
    }

    /// OpenCV's `ResizeArea_Invoker` loop as written: every vertical tap walks the whole
    /// horizontal table into a row buffer in memory (the reference for [`area_generic`]).
    fn area_generic_plain(src: &ImageView<'_>, dw: usize, dh: usize) -> Vec<u8> {
        let (sx, sy) = (src.width as f64 / dw as f64, src.height as f64 / dh as f64);
        let (xtab, ytab) = (area_tab(src.width, dw, sx), area_tab(src.height, dh, sy));
        let width = dw * CN;
        let mut dst = vec![0u8; dh * width];
        let (mut buf, mut sum) = (vec![0f32; width], vec![0f32; width]);
        let mut j = 0;
        for dy in 0..dh {
            sum.iter_mut().for_each(|v| *v = 0.0);
            while let Some(t) = ytab.get(j).filter(|t| t.di == dy) {
                j += 1;
                let s = row(src, t.si);
                buf.iter_mut().for_each(|v| *v = 0.0);
                for x in &xtab {
                    for c in 0..CN {
                        buf[x.di * CN + c] += f32::from(s[x.si * CN + c]) * x.alpha;
                    }
                }
                for (acc, &b) in sum.iter_mut().zip(&buf) {
                    *acc += t.alpha * b;
                }
            }
            for (o, &v) in dst[dy * width..].iter_mut().zip(&sum) {
                *o = sat_u8_f32(v);
            }
        }
        dst
    }

    /// The reflect-padded square as written in face-antispoof-onnx: every output pixel looked
    /// up through `BORDER_REFLECT_101` (the reference for [`square_reflect_crop`]'s row copies).
    fn square_plain(v: &ImageView<'_>, bbox: [i32; 4], factor: f64) -> Option<Vec<u8>> {
        let [bx, by, bw, bh] = bbox.map(i64::from);
        let max_dim = bw.max(bh) as f64;
        let side = py_int(max_dim * factor);
        let half = max_dim * factor / 2.0;
        let x = py_int(bx as f64 + bw as f64 / 2.0 - half);
        let y = py_int(by as f64 + bh as f64 / 2.0 - half);
        let (x1, y1) = (x.max(0), y.max(0));
        let (x2, y2) = (
            (v.width as i64).min(x + side),
            (v.height as i64).min(y + side),
        );
        if side <= 0 || x2 <= x1 || y2 <= y1 {
            return None;
        }
        let (left, top) = ((-x).max(0), (-y).max(0));
        let mut out = Vec::new();
        for oy in 0..side {
            let r = row(v, (y1 + reflect_101(oy - top, y2 - y1)) as usize);
            for ox in 0..side {
                let c = (x1 + reflect_101(ox - left, x2 - x1)) as usize * CN;
                out.extend_from_slice(&r[c..c + CN]);
            }
        }
        Some(out)
    }

    #[test]
    fn saturating_round_is_cv_round() {
        let edge = [
            -1e30, -0.5, -0.0, 0.0, 0.5, 1.5, 2.5, 254.5, 255.49, 255.5, 1e30,
        ];
        for v in edge
            .into_iter()
            .chain((0..20_000).map(|i| i as f32 * 0.0137 - 5.0))
        {
            assert_eq!(
                sat_u8_f32(v),
                v.round_ties_even().clamp(0.0, 255.0) as u8,
                "{v}"
            );
        }
        assert_eq!(sat_u8_f32(f32::NAN), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn area_generic_matches_the_plain_loop(
            (data, w, h, stride) in arb_view(),
            dw in 1usize..40,
            dh in 1usize..40,
        ) {
            prop_assume!(dw < w && dh < h);
            let v = ImageView { data: &data, width: w, height: h, stride };
            let (sx, sy) = (w as f64 / dw as f64, h as f64 / dh as f64);
            let mut out = vec![0u8; dw * dh * CN];
            area_generic(&v, sx, sy, dw, dh, &mut out, dw * CN);
            prop_assert_eq!(out, area_generic_plain(&v, dw, dh));
        }

        #[test]
        fn crop_matches_the_per_pixel_lookup(
            (data, w, h, stride) in arb_view(),
            bbox in proptest::array::uniform4(-30i32..50),
            factor in 0.5f64..3.0,
        ) {
            prop_assume!(bbox[2] > 0 && bbox[3] > 0);
            let v = ImageView { data: &data, width: w, height: h, stride };
            let mut out = Vec::new();
            let got = square_reflect_crop(&v, bbox, factor, &mut out).map(|_| out);
            prop_assert_eq!(got, square_plain(&v, bbox, factor));
        }

        #[test]
        fn crop_never_panics(
            (data, w, h, stride) in arb_view(),
            bbox in proptest::array::uniform4(-100i32..100),
            factor in prop_oneof![0.0f64..5.0, any::<f64>()],
            cut in 0usize..8,
        ) {
            let data = &data[..data.len().saturating_sub(cut)];
            let v = ImageView { data, width: w, height: h, stride };
            let mut out = Vec::new();
            match square_reflect_crop(&v, bbox, factor, &mut out) {
                Some(side) => {
                    prop_assert!((1..=MAX_SIDE).contains(&side));
                    prop_assert_eq!(out.len(), side * side * CN);
                }
                None => prop_assert!(out.is_empty()),
            }
        }

        #[test]
        fn resizes_never_panic(
            (data, w, h, stride) in arb_view(),
            dw in 0usize..70,
            dh in 0usize..70,
            short in 0usize..2,
        ) {
            let v = ImageView { data: &data, width: w, height: h, stride };
            let n = (dw * dh * CN).saturating_sub(short);
            let mut out = vec![0u8; n];
            let ok = dw > 0 && dh > 0 && short == 0;
            prop_assert_eq!(resize_area(&v, dw, dh, &mut out), ok);
            prop_assert_eq!(resize_lanczos4(&v, dw, dh, &mut out), ok);
        }

        #[test]
        fn letterbox_never_panics((data, w, h, stride) in arb_view(), size in 0usize..100) {
            let v = ImageView { data: &data, width: w, height: h, stride };
            let mut out = Vec::new();
            if letterbox_resize(&v, size, &mut out) {
                prop_assert_eq!(out.len(), size * size * CN);
            } else {
                prop_assert!(out.is_empty());
            }
        }

        #[test]
        fn constant_stays_constant(w in 1usize..60, h in 1usize..60, dw in 1usize..90, dh in 1usize..90, c in any::<u8>(), bx in -20i32..60, by in -20i32..60, bs in 1i32..40) {
            let data = vec![c; w * h * CN];
            let v = view(&data, w, h);
            let mut out = vec![0u8; dw * dh * CN];
            prop_assert!(resize_area(&v, dw, dh, &mut out));
            prop_assert!(out.iter().all(|&p| p == c));
            // Lanczos taps need not sum to 2048: OpenCV itself moves a flat image by 1 at times.
            prop_assert!(resize_lanczos4(&v, dw, dh, &mut out));
            prop_assert!(out.iter().all(|&p| p.abs_diff(c) <= 1));
            let mut sq = Vec::new();
            if let Some(side) = square_reflect_crop(&v, [bx, by, bs, bs], 1.5, &mut sq) {
                prop_assert!(sq.iter().all(|&p| p == c));
                let mut lb = Vec::new();
                prop_assert!(letterbox_resize(&view(&sq, side, side), 32, &mut lb));
                prop_assert!(lb.iter().all(|&p| p.abs_diff(c) <= 1));
            }
        }
    }
}
