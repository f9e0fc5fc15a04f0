//! OpenCV-compatible bilinear resize of 8-bit, 3-channel images (`cv2.resize(..., INTER_LINEAR)`).
//!
//! Hand-written because no crate reproduces OpenCV's arithmetic, and the classifiers were trained
//! on it: half-pixel centres, no antialiasing, edge clamping, weights rounded to 11-bit fixed point
//! (`INTER_RESIZE_COEF_BITS`), a horizontal pass into `i32` and a vertical pass whose rounding
//! matches OpenCV's SIMD kernel (`VResizeLinearVec_32s8u`: `((S0>>4)*b0 >> 16) + ((S1>>4)*b1 >> 16)`,
//! then `(x + 2) >> 2`) for every element of the row, the row tail included (measured against the
//! reference tensors: the exact scalar formula differs by 1 level on the last columns). An exact
//! 2x2 downscale is an area average, as OpenCV switches to `INTER_AREA` there.

/// A borrowed 8-bit BGR image region: `height` rows of `width` pixels, `stride` bytes apart.
#[derive(Debug, Clone, Copy)]
pub struct ImageView<'a> {
    pub data: &'a [u8],
    pub width: usize,
    pub height: usize,
    pub stride: usize,
}

impl<'a> ImageView<'a> {
    /// The sub-rectangle with top-left `(x, y)` and size `w x h`; `None` when it does not fit.
    pub fn sub(&self, x: usize, y: usize, w: usize, h: usize) -> Option<ImageView<'a>> {
        if w == 0 || h == 0 || x + w > self.width || y + h > self.height {
            return None;
        }
        let start = y * self.stride + x * 3;
        let end = (y + h - 1) * self.stride + (x + w) * 3;
        Some(ImageView {
            data: self.data.get(start..end)?,
            width: w,
            height: h,
            stride: self.stride,
        })
    }

    fn row(&self, y: usize) -> &'a [u8] {
        &self.data[y * self.stride..y * self.stride + self.width * 3]
    }
}

const CN: usize = 3;
const COEF_BITS: u32 = 11;
const COEF_SCALE: f32 = (1 << COEF_BITS) as f32;

/// Per-axis tap: first source index (may be -1 or `len-1` before clamping) and the two
/// fixed-point weights.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Tap {
    src: i64,
    w0: i32,
    w1: i32,
}

/// Taps along one axis. OpenCV treats the axes differently at the borders: horizontally the
/// position is clamped (weight 1 on the edge pixel); vertically the weights are kept and the row
/// indices are clamped when read (`clamp_weights = false`). Both behaviours were measured against
/// `cv2.resize` on random sizes.
fn taps(src_len: usize, dst_len: usize, clamp_weights: bool) -> Vec<Tap> {
    // OpenCV computes scale as 1/(dst/src) in double precision; keep the same rounding.
    let scale = 1.0 / (dst_len as f64 / src_len as f64);
    (0..dst_len)
        .map(|d| {
            let mut f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut s = f.floor() as i64;
            f -= s as f32;
            if clamp_weights && s < 0 {
                f = 0.0;
                s = 0;
            }
            if clamp_weights && s >= src_len as i64 - 1 {
                f = 0.0;
                s = src_len as i64 - 1;
            }
            // saturate_cast<short>(float) rounds half to even.
            let w0 = ((1.0 - f) * COEF_SCALE).round_ties_even() as i32;
            let w1 = (f * COEF_SCALE).round_ties_even() as i32;
            Tap { src: s, w0, w1 }
        })
        .collect()
}

/// Resize `src` to `dst_w x dst_h` into `dst` (packed, `dst_w * dst_h * 3` bytes).
/// Empty sizes or a short `dst` are programming errors: a debug assertion, and nothing is written.
pub fn resize_bilinear(src: &ImageView<'_>, dst_w: usize, dst_h: usize, dst: &mut [u8]) {
    let need = dst_w * dst_h * CN;
    if dst.len() < need || src.width == 0 || src.height == 0 || dst_w == 0 || dst_h == 0 {
        debug_assert!(false, "resize_bilinear called with empty or short buffers");
        return;
    }
    if src.width == dst_w && src.height == dst_h {
        for y in 0..dst_h {
            dst[y * dst_w * CN..(y + 1) * dst_w * CN].copy_from_slice(src.row(y));
        }
        return;
    }
    if src.width == dst_w * 2 && src.height == dst_h * 2 {
        area_half(src, dst_w, dst_h, dst);
        return;
    }

    let xt = taps(src.width, dst_w, true);
    let yt = taps(src.height, dst_h, false);
    let last_row = src.height as i64 - 1;
    let row_len = dst_w * CN;
    // Two horizontally-resized rows (i32, scaled by 2^11), reused across output rows like OpenCV's
    // ring buffer: a source row is resized horizontally at most once per output row pair.
    let mut rows: [Vec<i32>; 2] = [vec![0; row_len], vec![0; row_len]];
    let mut cached: [Option<usize>; 2] = [None, None];

    // Per output pixel: the byte offsets of its two source pixels in a row (the right one
    // clamped to the last pixel, where `w1 == 0`) and the weights.
    let xo: Vec<(usize, usize, i32, i32)> = xt
        .iter()
        .map(|t| {
            let a = (t.src.max(0) as usize).min(src.width - 1);
            let b = (a + 1).min(src.width - 1);
            (a * CN, b * CN, t.w0, t.w1)
        })
        .collect();
    let hresize = |y: usize, out: &mut [i32]| {
        let s = src.row(y);
        if s.len() < src.width * CN {
            debug_assert!(false, "short source row");
            return;
        }
        for (o, &(a, b, w0, w1)) in out.chunks_exact_mut(CN).zip(&xo) {
            for (c, o) in o.iter_mut().enumerate() {
                // SAFETY: `a` and `b` are at most `(width - 1) * CN` (clamped above) and
                // `c < CN`, so both lie in `s` (checked to hold `width * CN` bytes).
                let (pa, pb) = unsafe { (*s.get_unchecked(a + c), *s.get_unchecked(b + c)) };
                *o = i32::from(pa) * w0 + i32::from(pb) * w1;
            }
        }
    };

    for (dy, t) in yt.iter().enumerate() {
        let y0 = t.src.clamp(0, last_row) as usize;
        let y1 = (t.src + 1).clamp(0, last_row) as usize;
        // Slot 0 holds source row y0, slot 1 row y1 (both horizontally resized); moving down the
        // image, yesterday's y1 is usually today's y0, so swap instead of recomputing.
        if cached[0] != Some(y0) && cached[1] == Some(y0) {
            rows.swap(0, 1);
            cached.swap(0, 1);
        }
        if cached[0] != Some(y0) {
            hresize(y0, &mut rows[0]);
            cached[0] = Some(y0);
        }
        if cached[1] != Some(y1) {
            hresize(y1, &mut rows[1]);
            cached[1] = Some(y1);
        }
        let (b0, b1) = (t.w0, t.w1);
        let (s0, s1) = (&rows[0], &rows[1]);
        let out = &mut dst[dy * row_len..(dy + 1) * row_len];
        for ((o, &p0), &p1) in out.iter_mut().zip(s0.iter()).zip(s1.iter()) {
            let a = ((p0 >> 4) * b0) >> 16;
            let b = ((p1 >> 4) * b1) >> 16;
            *o = ((a + b + 2) >> 2).clamp(0, 255) as u8;
        }
    }
}

/// Exact 2x downscale: OpenCV uses INTER_AREA here, the rounded mean of each 2x2 block.
fn area_half(src: &ImageView<'_>, dst_w: usize, dst_h: usize, dst: &mut [u8]) {
    for dy in 0..dst_h {
        let r0 = src.row(dy * 2);
        let r1 = src.row(dy * 2 + 1);
        for dx in 0..dst_w {
            for c in 0..CN {
                let i = dx * 2 * CN + c;
                let sum = u32::from(r0[i])
                    + u32::from(r0[i + CN])
                    + u32::from(r1[i])
                    + u32::from(r1[i + CN]);
                dst[(dy * dst_w + dx) * CN + c] = ((sum + 2) >> 2) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(w: usize, h: usize, f: impl Fn(usize, usize, usize) -> u8) -> Vec<u8> {
        let mut v = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    v.push(f(x, y, c));
                }
            }
        }
        v
    }

    #[test]
    fn identity_is_a_copy() {
        let data = img(7, 5, |x, y, c| (x * 31 + y * 17 + c * 5) as u8);
        let v = ImageView {
            data: &data,
            width: 7,
            height: 5,
            stride: 21,
        };
        let mut out = vec![0; data.len()];
        resize_bilinear(&v, 7, 5, &mut out);
        assert_eq!(out, data);
    }

    #[test]
    fn constant_image_stays_constant() {
        for (sw, sh, dw, dh) in [
            (10, 10, 80, 80),
            (481, 300, 80, 80),
            (3, 2, 166, 221),
            (640, 480, 80, 80),
        ] {
            let data = vec![173u8; sw * sh * 3];
            let v = ImageView {
                data: &data,
                width: sw,
                height: sh,
                stride: sw * 3,
            };
            let mut out = vec![0; dw * dh * 3];
            resize_bilinear(&v, dw, dh, &mut out);
            assert!(out.iter().all(|&p| p == 173), "{sw}x{sh}->{dw}x{dh}");
        }
    }

    #[test]
    fn taps_clamp_at_edges() {
        let t = taps(4, 8, true);
        assert_eq!(
            t[0],
            Tap {
                src: 0,
                w0: 2048,
                w1: 0
            }
        );
        assert_eq!(t[7].src, 3);
        assert_eq!(t[7].w1, 0);
        let t = taps(4, 8, false);
        assert_eq!(t[0].src, -1);
        assert!(t[0].w1 > 0);
        let t = taps(640, 221, true);
        assert!(t
            .iter()
            .all(|t| t.src < 640 && t.w0 + t.w1 >= 2047 && t.w0 + t.w1 <= 2049));
    }

    #[test]
    fn sub_view_bounds() {
        let data = vec![0u8; 10 * 4 * 3];
        let v = ImageView {
            data: &data,
            width: 10,
            height: 4,
            stride: 30,
        };
        assert!(v.sub(0, 0, 10, 4).is_some());
        assert!(v.sub(9, 3, 1, 1).is_some());
        assert!(v.sub(9, 3, 2, 1).is_none());
        assert!(v.sub(0, 0, 0, 1).is_none());
    }
}
