//! The image print: a perceptual descriptor of the whole picture, for re-submission detection.
//!
//! What it is: the detector's own input (the image resized with `INTER_LINEAR` to about 192x192
//! pixels, which the pipeline makes anyway), shrunk with OpenCV `INTER_AREA` to 32x32, converted
//! to grey with OpenCV's `BGR2GRAY` arithmetic, transformed with the orthonormal 2-D DCT-II
//! (`cv2.dct`), and the 8x8 lowest frequencies without the DC term taken in a fixed zig-zag order:
//! 63 coefficients, scaled to unit length. Two prints compare by the Euclidean distance of those
//! unit vectors ([`ImagePrint::distance`]); [`ImagePrint::bits`] (each coefficient above or below
//! their median: the classic pHash) gives the 64-bit key whose four 16-bit bands find candidates
//! in a store.
//!
//! Why so: dropping the DC term and scaling to unit length cancel brightness and contrast
//! changes; the low frequencies of a 32x32 thumbnail do not see JPEG re-encoding or resizing;
//! working from the detector input makes the print cost a 32x32 resize and a small DCT (it never
//! reads the full-size picture). A print of the face crop instead was measured and rejected: the
//! detector's box moves by several per cent between an image and its resized or re-encoded copy,
//! which moved the descriptor more than the differences between different people's photos
//! (docs/accuracy.md, "Re-submission").
//!
//! The reference implementation is `training/reference/print_reference.py` (OpenCV itself); the
//! parity test is `tests/parity.rs::image_print_matches_opencv_reference`.

use super::resize::ImageView;
use super::square::resize_area;

/// Side of the thumbnail the DCT runs on.
pub const THUMB: usize = 32;
/// Side of the low-frequency block kept.
pub const LOW: usize = 8;
/// Number of coefficients in a print (the `LOW x LOW` block without the DC term).
pub const COEFFS: usize = LOW * LOW - 1;
/// Prints at or below this Euclidean distance are the same picture (see docs/accuracy.md,
/// "Re-submission": on the devset every re-encoded, resized, brightened and contrast-changed
/// copy is within 0.2 of its original, and no two images of different sources come closer
/// than 0.35).
pub const MATCH_DISTANCE: f32 = 0.2;
/// A thumbnail whose AC energy (the L2 norm of the 63 coefficients, grey levels 0-255) is below
/// this is featureless (a blank or nearly uniform picture): it gets no print, since every blank
/// picture would match every other.
pub const MIN_ENERGY: f64 = 16.0;
/// Bands of [`ImagePrint::bits`] (16 bits each) used to find candidates.
pub const BANDS: usize = 4;

/// The perceptual print of one picture.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImagePrint {
    /// The 63 low-frequency DCT coefficients in zig-zag order, scaled to unit length.
    pub coeffs: [f32; COEFFS],
}

/// `(row, column)` of the low block in the print's order: by `row + column`, then by row
/// (as `sorted(..., key=lambda p: (p[0] + p[1], p[0]))` in the reference), DC first.
const fn zigzag() -> [(usize, usize); LOW * LOW] {
    let mut out = [(0, 0); LOW * LOW];
    let mut n = 0;
    let mut s = 0;
    while s <= 2 * (LOW - 1) {
        let mut r = 0;
        while r < LOW {
            if s >= r && s - r < LOW {
                out[n] = (r, s - r);
                n += 1;
            }
            r += 1;
        }
        s += 1;
    }
    out
}
const ZIGZAG: [(usize, usize); LOW * LOW] = zigzag();

impl ImagePrint {
    /// The print of a decoded, upright image, as [`super::Pipeline::check`] makes it (from the
    /// detector input), for callers that have only the picture.
    pub fn of_image(img: &super::BgrImage) -> Option<ImagePrint> {
        let (w, h) = (img.width as usize, img.height as usize);
        let (dw, dh) = super::detect::detector_input_size(w, h);
        let mut resized = vec![0u8; dw.checked_mul(dh)?.checked_mul(3)?];
        super::resize::resize_bilinear(&img.view(), dw, dh, &mut resized);
        Self::of_bgr(&resized, dw, dh)
    }

    /// The print of a packed BGR image (`width * height * 3` bytes: the detector input), or
    /// `None` for an empty or featureless image.
    pub fn of_bgr(pixels: &[u8], width: usize, height: usize) -> Option<ImagePrint> {
        let view = ImageView {
            data: pixels,
            width,
            height,
            stride: width.checked_mul(3)?,
        };
        let mut thumb = [0u8; THUMB * THUMB * 3];
        if !resize_area(&view, THUMB, THUMB, &mut thumb) {
            return None;
        }
        let mut grey = [0f64; THUMB * THUMB];
        for (g, px) in grey.iter_mut().zip(thumb.chunks_exact(3)) {
            *g = f64::from(grey_level(px[0], px[1], px[2]));
        }
        Self::of_grey(&grey)
    }

    /// The print of a 32x32 grey thumbnail (row-major).
    fn of_grey(grey: &[f64; THUMB * THUMB]) -> Option<ImagePrint> {
        let basis = &*DCT_BASIS;
        // Rows first: t[y][v] = sum_x grey[y][x] * basis[v][x]; then columns.
        let mut t = [[0f64; LOW]; THUMB];
        for (y, row) in grey.chunks_exact(THUMB).enumerate() {
            for (v, b) in basis.iter().enumerate() {
                t[y][v] = row.iter().zip(b).map(|(p, c)| p * c).sum();
            }
        }
        let mut low = [[0f64; LOW]; LOW];
        for (u, b) in basis.iter().enumerate() {
            for v in 0..LOW {
                low[u][v] = (0..THUMB).map(|y| b[y] * t[y][v]).sum();
            }
        }
        let mut ac = [0f64; COEFFS];
        for (c, &(u, v)) in ac.iter_mut().zip(&ZIGZAG[1..]) {
            *c = low[u][v];
        }
        let norm = ac.iter().map(|c| c * c).sum::<f64>().sqrt();
        if !norm.is_finite() || norm < MIN_ENERGY {
            return None;
        }
        let mut coeffs = [0f32; COEFFS];
        for (o, c) in coeffs.iter_mut().zip(ac) {
            *o = (c / norm) as f32;
        }
        Some(ImagePrint { coeffs })
    }

    /// Euclidean distance between two prints (0 = the same picture, 2 = opposite).
    pub fn distance(&self, other: &ImagePrint) -> f32 {
        self.coeffs
            .iter()
            .zip(&other.coeffs)
            .map(|(a, b)| {
                let d = f64::from(*a) - f64::from(*b);
                d * d
            })
            .sum::<f64>()
            .sqrt() as f32
    }

    /// Whether two prints are of the same picture ([`MATCH_DISTANCE`]).
    pub fn matches(&self, other: &ImagePrint) -> bool {
        self.distance(other) <= MATCH_DISTANCE
    }

    /// The 64-bit pHash: bit `i` (from the least significant, `i` in 1..=63) is coefficient
    /// `i - 1` above the median of the 63; bit 0 (the DC term's place) is always 0.
    pub fn bits(&self) -> u64 {
        let mut sorted = self.coeffs;
        sorted.sort_by(f32::total_cmp);
        let median = sorted[COEFFS / 2];
        self.coeffs
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > median)
            .fold(0u64, |acc, (i, _)| acc | (1 << (i + 1)))
    }

    /// The [`BANDS`] 16-bit bands of [`Self::bits`], low bits first. Two prints whose bits
    /// differ in at most three places share at least one band exactly.
    pub fn bands(&self) -> [u16; BANDS] {
        let b = self.bits();
        std::array::from_fn(|i| (b >> (16 * i)) as u16)
    }

    /// The coefficients quantized to `i16` (x 32767), for storage.
    pub fn quantized(&self) -> [i16; COEFFS] {
        std::array::from_fn(|i| (self.coeffs[i].clamp(-1.0, 1.0) * 32767.0).round() as i16)
    }

    /// A print from [`Self::quantized`] values.
    pub fn from_quantized(q: &[i16; COEFFS]) -> ImagePrint {
        ImagePrint {
            coeffs: std::array::from_fn(|i| f32::from(q[i]) / 32767.0),
        }
    }
}

/// OpenCV's `COLOR_BGR2GRAY` for 8-bit pixels: 0.114 B + 0.587 G + 0.299 R in fixed point with
/// 15 fractional bits, rounded (OpenCV 4's SIMD path; the older 14-bit weights differ on 0.3 %
/// of pixels; these matched `cv2.cvtColor` on a million random pixels).
fn grey_level(b: u8, g: u8, r: u8) -> u8 {
    const B: u32 = 3735;
    const G: u32 = 19235;
    const R: u32 = 9798;
    ((u32::from(b) * B + u32::from(g) * G + u32::from(r) * R + (1 << 14)) >> 15) as u8
}

/// [`dct_basis`], computed once.
static DCT_BASIS: std::sync::LazyLock<[[f64; THUMB]; LOW]> = std::sync::LazyLock::new(dct_basis);

/// The first [`LOW`] rows of the orthonormal DCT-II matrix of size [`THUMB`] (`cv2.dct`'s).
fn dct_basis() -> [[f64; THUMB]; LOW] {
    let n = THUMB as f64;
    std::array::from_fn(|k| {
        let scale = if k == 0 {
            (1.0 / n).sqrt()
        } else {
            (2.0 / n).sqrt()
        };
        std::array::from_fn(|x| {
            scale * (std::f64::consts::PI * (2 * x + 1) as f64 * k as f64 / (2.0 * n)).cos()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picture(w: usize, h: usize, seed: u32) -> Vec<u8> {
        // A smooth synthetic scene with structure at low frequencies.
        let mut out = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let fx = x as f64 / w as f64;
                let fy = y as f64 / h as f64;
                let s = f64::from(seed);
                let v = 128.0
                    + 60.0 * (6.0 * fx + s).sin() * (4.0 * fy + 0.5 * s).cos()
                    + 40.0 * ((fx - 0.5).powi(2) + (fy - 0.4).powi(2) < 0.04) as u8 as f64;
                let v = v.clamp(0.0, 255.0) as u8;
                out.extend_from_slice(&[v, v.saturating_add(10), v.saturating_sub(10)]);
            }
        }
        out
    }

    #[test]
    fn zigzag_order_is_by_frequency_sum_then_row() {
        assert_eq!(
            &ZIGZAG[..6],
            &[(0, 0), (0, 1), (1, 0), (0, 2), (1, 1), (2, 0)]
        );
        assert_eq!(ZIGZAG[63], (7, 7));
        let mut seen = ZIGZAG.to_vec();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 64);
    }

    #[test]
    fn grey_level_matches_opencv_weights() {
        assert_eq!(grey_level(0, 0, 0), 0);
        assert_eq!(grey_level(255, 255, 255), 255);
        // cv2.cvtColor(np.uint8([[[10, 200, 30]]]), cv2.COLOR_BGR2GRAY) == 128 (the 14-bit
        // weights give 127 here)
        assert_eq!(grey_level(10, 200, 30), 128);
    }

    #[test]
    fn brightness_and_contrast_do_not_move_the_print() {
        let (w, h) = (160, 200);
        let p = picture(w, h, 1);
        let a = ImagePrint::of_bgr(&p, w, h).expect("print");
        let brighter: Vec<u8> = p.iter().map(|v| v.saturating_add(12)).collect();
        let contrast: Vec<u8> = p
            .iter()
            .map(|&v| (f64::from(v) * 1.1 - 8.0).clamp(0.0, 255.0) as u8)
            .collect();
        for q in [brighter, contrast] {
            let b = ImagePrint::of_bgr(&q, w, h).expect("print");
            assert!(a.distance(&b) < 0.05, "{}", a.distance(&b));
        }
        let other = ImagePrint::of_bgr(&picture(w, h, 4), w, h).expect("print");
        assert!(!a.matches(&other), "{}", a.distance(&other));
    }

    #[test]
    fn featureless_images_have_no_print() {
        assert!(ImagePrint::of_bgr(&vec![90; 64 * 64 * 3], 64, 64).is_none());
        assert!(ImagePrint::of_bgr(&[], 0, 0).is_none());
        assert!(ImagePrint::of_bgr(&[1, 2], 64, 64).is_none());
    }

    #[test]
    fn bits_bands_and_quantization_are_consistent() {
        let (w, h) = (120, 90);
        let a = ImagePrint::of_bgr(&picture(w, h, 2), w, h).expect("print");
        let bits = a.bits();
        assert_eq!(bits & 1, 0);
        // 31 of the 63 coefficients lie strictly above their median.
        assert_eq!(bits.count_ones(), 31);
        let bands = a.bands();
        let joined = bands
            .iter()
            .enumerate()
            .fold(0u64, |acc, (i, b)| acc | (u64::from(*b) << (16 * i)));
        assert_eq!(joined, bits);
        let back = ImagePrint::from_quantized(&a.quantized());
        assert!(a.distance(&back) < 1e-3);
        assert_eq!(back.bits(), bits);
    }
}
