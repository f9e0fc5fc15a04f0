//! Image signals: facts about a picture reported beside its verdict (`data.signals`), never
//! deciding it. Each signal has a `flagged` boolean and the measurements it was drawn from, so an
//! operator can route flagged checks to review or ignore them.
//!
//! - **editor**: the EXIF `Software` tag names a photo editor ([`EDITORS`]).
//! - **screenshot**: no camera EXIF (neither `Make` nor `Model`) and screen-like dimensions
//!   ([`screen_sized`]).
//! - **double_jpeg**: the luma DCT coefficients show the traces of a second JPEG compression
//!   ([`double_jpeg`]); the quantisation table also gives the IJG-equivalent quality.
//! - **face_share**: the face box is under 10 % or over 60 % of the image width
//!   ([`FACE_SHARE_TOO_SMALL`], [`FACE_SHARE_TOO_LARGE`]).
//!
//! The re-submission signal lives in [`crate::resubmission`]: it needs the audit store.
//! Every threshold here is fixed from first principles (stated at each constant), never fitted to
//! labelled data; how often each signal fires on live and attack images of the devset is in
//! docs/accuracy.md (`cargo test --test signals -- --nocapture`).
//!
//! Pure functions of the bytes and the verdict: no I/O.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::pipeline::{decode, Verdict};
use crate::resubmission::Resubmission;

/// `data.signals`: facts about the picture reported beside the verdict. They never change the
/// verdict unless the operator asks (`--reject-resubmissions`). Each member is absent when it was
/// not looked for (rows audited before it existed read back without it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Signals {
    /// Whether the picture (the same bytes or a near-copy) was checked before; present when
    /// the server keeps re-submission hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resubmission: Option<Resubmission>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub editor: Option<EditorSignal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screenshot: Option<ScreenshotSignal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub double_jpeg: Option<DoubleJpegSignal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face_share: Option<FaceShareSignal>,
}

impl Signals {
    /// The names of the signals that are flagged, in field order.
    pub fn flagged(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.resubmission.is_some_and(|r| r.seen_before) {
            out.push("resubmission");
        }
        if self.editor.as_ref().is_some_and(|s| s.flagged) {
            out.push("editor");
        }
        if self.screenshot.is_some_and(|s| s.flagged) {
            out.push("screenshot");
        }
        if self.double_jpeg.is_some_and(|s| s.flagged) {
            out.push("double_jpeg");
        }
        if self.face_share.is_some_and(|s| s.flagged) {
            out.push("face_share");
        }
        out
    }
}

/// `data.signals.editor`: the EXIF `Software` tag names a photo editor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EditorSignal {
    pub flagged: bool,
    /// The `Software` tag (printable ASCII, at most 64 characters), `null` when absent.
    pub software: Option<String>,
}

/// `data.signals.screenshot`: no camera EXIF and screen-like dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScreenshotSignal {
    /// `!camera_exif && screen_sized`.
    pub flagged: bool,
    /// EXIF names the camera (`Make` or `Model`).
    pub camera_exif: bool,
    /// The dimensions are a display's: long side at least 1.95 times the short side (phone
    /// screens), or one of the display-only resolutions in [`SCREEN_SIZES`].
    pub screen_sized: bool,
}

/// `data.signals.double_jpeg`: traces of two JPEG compressions in the luma coefficients.
/// `Default` is the signal of a file whose coefficients were not analysed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DoubleJpegSignal {
    /// `evidence >= 2`.
    pub flagged: bool,
    /// Whether the coefficients were analysed: a YCbCr or greyscale DCT JPEG of at most 24 MP
    /// (a sequential file's first 128 KiB; a progressive file only up to 128 KiB).
    pub analysed: bool,
    /// IJG-equivalent quality (1 to 100) of the luma quantisation table; `null` when not a JPEG.
    pub quality: Option<u8>,
    /// How many of the 9 lowest AC frequencies have a coefficient histogram that rises where a
    /// single compression's falls (a one-sided Poisson z above 5).
    pub evidence: u8,
}

/// `data.signals.face_share`: how much of the image width the face box spans.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FaceShareSignal {
    /// The share is under [`FACE_SHARE_TOO_SMALL`] or over [`FACE_SHARE_TOO_LARGE`].
    pub flagged: bool,
    /// Face box width / upright image width, 4 decimals; `null` when no face was found.
    pub share: Option<f64>,
}

/// Editors whose name in EXIF `Software` flags the picture (case-insensitive substrings).
/// Camera firmware writes a version there (`17.1`, `G991BXXU5CVLL`, `HDR+ 1.0`), never these.
pub const EDITORS: [&str; 27] = [
    "photoshop",
    "lightroom",
    "adobe",
    "gimp",
    "snapseed",
    "picsart",
    "pixelmator",
    "affinity photo",
    "paint.net",
    "paintshop",
    "canva",
    "facetune",
    "faceapp",
    "meitu",
    "airbrush",
    "photoscape",
    "fotor",
    "polarr",
    "vsco",
    "darktable",
    "rawtherapee",
    "capture one",
    "acdsee",
    "photodirector",
    "krita",
    "luminar",
    "picasa",
];

/// Display resolutions (long x short side) that no camera or webcam mode produces: desktop,
/// laptop, tablet and older 16:9 phone screens. 16:9 video sizes (1280x720, 1920x1080,
/// 3840x2160) and 4:3 sizes are left out on purpose: webcams, a browser capture and cameras make
/// them too.
pub const SCREEN_SIZES: [(u32, u32); 21] = [
    (1366, 768),
    (1536, 864),
    (1440, 900),
    (1600, 900),
    (1680, 1050),
    (1920, 1200),
    (2560, 1440),
    (2560, 1600),
    (2880, 1800),
    (1280, 800),
    (1280, 1024),
    (3024, 1964),
    (3456, 2234),
    (2732, 2048),
    (2388, 1668),
    (2360, 1640),
    (2224, 1668),
    (2266, 1488),
    (1334, 750),
    (2208, 1242),
    (1920, 1280),
];

/// Long side over short side from which dimensions are a phone screen's: phone screens since
/// 2017 are 18.5:9 to 21:9 (2.06 to 2.33); camera sensors give 4:3, 3:2 and 16:9 (at most 1.78).
pub const SCREEN_ASPECT: f64 = 1.95;

/// Face share under which the face is too small: with a phone held upright (front camera about
/// 60 degrees across the short side) a 14 cm face spans under 10 % of the width only beyond
/// about 1.2 m, out of arm's reach; likely a picture of a scene holding a face (a print or a
/// screen held up).
pub const FACE_SHARE_TOO_SMALL: f64 = 0.10;
/// Face share over which the face is too large: over 60 % of the width means the face is closer
/// than about 20 cm to the lens, or the picture is a tight crop of a face.
pub const FACE_SHARE_TOO_LARGE: f64 = 0.60;

/// One-sided z from which a rise between adjacent histogram bins is significant: 5 gives p of
/// 3e-7 per test, 4e-5 over the 135 tests of one image under the Poisson null.
const RISE_Z: f64 = 5.0;
/// Frequencies that must show a rise before the picture is flagged: one frequency can rise on
/// its own on a strongly periodic texture.
const MIN_EVIDENCE: u8 = 2;
/// Coefficient magnitudes histogrammed: 0 to 16.
const BINS: usize = 17;
/// The 9 lowest AC frequencies (zig-zag positions 1 to 9) as natural-order indices.
const FREQUENCIES: [usize; 9] = [1, 8, 16, 9, 2, 3, 10, 17, 24];
/// The IJG (JPEG Annex K) luminance table, natural order, from which quality is estimated.
const IJG_LUMA: [u16; 64] = [
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113,
    92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
];

/// The image signals of a picture (all but `resubmission`): `bytes` as received and the verdict
/// made on them.
pub fn examine(bytes: &[u8], verdict: &Verdict) -> Signals {
    examine_with(bytes, verdict, double_jpeg(bytes))
}

/// [`examine`] with the double-compression signal already computed (from the blocks the
/// decode walked: [`DoubleJpegScan`]).
pub fn examine_with(bytes: &[u8], verdict: &Verdict, double_jpeg: DoubleJpegSignal) -> Signals {
    // A JPEG's EXIF is in its header: the parser gets only that (it would otherwise scan all
    // of the image data for a marker when there is none, 7 ms on a 12 MP photo).
    let container = if bytes.starts_with(&[0xFF, 0xD8]) {
        &bytes[..decode::jpeg_header_len(bytes).unwrap_or(bytes.len())]
    } else {
        bytes
    };
    let exif = exif::Reader::new()
        .read_from_container(&mut Cursor::new(container))
        .ok();
    let ascii = |tag: exif::Tag| -> Option<String> {
        let field = exif.as_ref()?.get_field(tag, exif::In::PRIMARY)?;
        match &field.value {
            exif::Value::Ascii(parts) => {
                let text: String = parts
                    .iter()
                    .flat_map(|p| p.iter())
                    .map(|&b| b as char)
                    .filter(|c| c.is_ascii_graphic() || *c == ' ')
                    .take(64)
                    .collect();
                let text = text.trim();
                (!text.is_empty()).then(|| text.to_owned())
            }
            _ => None,
        }
    };
    let software = ascii(exif::Tag::Software);
    let editor = EditorSignal {
        flagged: software.as_deref().is_some_and(names_editor),
        software,
    };
    let camera_exif = ascii(exif::Tag::Make).is_some() || ascii(exif::Tag::Model).is_some();
    let screen = verdict.image_size.is_some_and(|[w, h]| screen_sized(w, h));
    let screenshot = ScreenshotSignal {
        flagged: !camera_exif && screen,
        camera_exif,
        screen_sized: screen,
    };
    let share = match (verdict.face, verdict.image_size) {
        (Some(face), Some([w, _])) if w > 0 => {
            Some((f64::from(face.bbox[2]) / f64::from(w) * 1e4).round() / 1e4)
        }
        _ => None,
    };
    Signals {
        resubmission: None,
        editor: Some(editor),
        screenshot: Some(screenshot),
        double_jpeg: Some(double_jpeg),
        face_share: Some(FaceShareSignal {
            flagged: share
                .is_some_and(|s| !(FACE_SHARE_TOO_SMALL..=FACE_SHARE_TOO_LARGE).contains(&s)),
            share,
        }),
    }
}

/// Whether an EXIF `Software` value names one of [`EDITORS`].
pub fn names_editor(software: &str) -> bool {
    let lower = software.to_ascii_lowercase();
    EDITORS.iter().any(|e| lower.contains(e))
}

/// Whether `w x h` (either orientation) are a display's dimensions: [`SCREEN_ASPECT`] or
/// [`SCREEN_SIZES`].
pub fn screen_sized(w: u32, h: u32) -> bool {
    let (long, short) = (w.max(h), w.min(h));
    if short == 0 {
        return false;
    }
    f64::from(long) / f64::from(short) >= SCREEN_ASPECT || SCREEN_SIZES.contains(&(long, short))
}

/// The double-compression signal of a file (`analysed: false` unless a readable JPEG).
///
/// A JPEG's quantised DCT coefficients of one frequency, histogrammed by magnitude, fall from
/// bin 1 on after a single compression (natural images have unimodal, Laplacian-like
/// coefficient distributions). Compressing a decoded JPEG again with a different step maps the
/// first compression's multiples onto the new grid unevenly: some bins are left nearly empty and
/// others collect two old bins, so the histogram rises between neighbours (Lukáš and Fridrich,
/// "Estimation of primary quantization matrix in double compressed JPEG images", 2003). Each
/// rise is tested against Poisson noise; see [`rises`].
///
/// Blind spots: a second compression with the same table, a resize or crop off the 8-pixel grid
/// between the two, and a second compression much coarser than the first leave no trace.
pub fn double_jpeg(bytes: &[u8]) -> DoubleJpegSignal {
    if !bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return DoubleJpegSignal::default();
    }
    let mut scan = DoubleJpegScan::default();
    let quant = decode::jpeg_luma_coefficients(bytes, |block| scan.visit(block));
    scan.finish(quant.ok().flatten())
}

/// [`double_jpeg`] in two steps, for a reader that already walks the luma blocks (the decode
/// of [`crate::service::CheckService::check`]): [`DoubleJpegScan::visit`] every block, then
/// [`DoubleJpegScan::finish`] with the luma quantisation table.
#[derive(Debug, Clone)]
pub struct DoubleJpegScan {
    hist: [[u32; BINS]; FREQUENCIES.len()],
}

impl Default for DoubleJpegScan {
    fn default() -> Self {
        DoubleJpegScan {
            hist: [[0; BINS]; FREQUENCIES.len()],
        }
    }
}

impl DoubleJpegScan {
    /// Counts one 8x8 block of quantised luma coefficients (natural order).
    pub fn visit(&mut self, block: &[i16; 64]) {
        for (h, &i) in self.hist.iter_mut().zip(FREQUENCIES.iter()) {
            let a = usize::from(block[i].unsigned_abs());
            if a < BINS {
                h[a] += 1;
            }
        }
    }

    /// The signal from the blocks visited and the luma table; `None`: the coefficients could not
    /// be read (`analysed: false`).
    pub fn finish(self, quant: Option<[u16; 64]>) -> DoubleJpegSignal {
        let Some(quant) = quant else {
            return DoubleJpegSignal::default();
        };
        let evidence = self.hist.iter().filter(|h| rises(&h[..])).count() as u8;
        DoubleJpegSignal {
            flagged: evidence >= MIN_EVIDENCE,
            analysed: true,
            quality: Some(ijg_quality(&quant)),
            evidence,
        }
    }
}

/// Whether a magnitude histogram (`h[k]`: coefficients of magnitude `k`) rises significantly
/// anywhere from bin 1 on: `(h[k+1] - h[k]) / sqrt(h[k] + h[k+1]) > 5`, the one-sided z of the
/// difference of two Poisson counts with equal means. Bin 0 is left out: it is one value where
/// bin 1 folds two (+1 and -1).
pub fn rises(h: &[u32]) -> bool {
    h.windows(2).skip(1).any(|w| {
        let (a, b) = (f64::from(w[0]), f64::from(w[1]));
        a + b > 0.0 && (b - a) / (a + b).sqrt() > RISE_Z
    })
}

/// The IJG quality (1 to 100) whose scaled Annex K luminance table is closest to `quant`
/// (natural order): the mean ratio to the base table, inverted through libjpeg's
/// `jpeg_quality_scaling`. Entries clamped by the encoder (1, or 255 in baseline files) carry
/// no scale and are left out while any other remains.
pub fn ijg_quality(quant: &[u16; 64]) -> u8 {
    let ratio = |(&q, &base): (&u16, &u16)| f64::from(q) * 100.0 / f64::from(base);
    let pairs = || quant.iter().zip(IJG_LUMA.iter());
    let free = pairs().filter(|(&q, _)| q > 1 && q < 255).count();
    let scale = if free > 0 {
        pairs()
            .filter(|(&q, _)| q > 1 && q < 255)
            .map(ratio)
            .sum::<f64>()
            / free as f64
    } else {
        pairs().map(ratio).sum::<f64>() / 64.0
    };
    let quality = if scale <= 100.0 {
        (200.0 - scale) / 2.0
    } else {
        5000.0 / scale
    };
    quality.round().clamp(1.0, 100.0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editors_are_named_and_camera_firmware_is_not() {
        for s in [
            "Adobe Photoshop 24.1 (Windows)",
            "GIMP 2.10.34",
            "Snapseed 2.0",
            "PicsArt",
        ] {
            assert!(names_editor(s), "{s}");
        }
        for s in [
            "17.1",
            "G991BXXU5CVLL",
            "HDR+ 1.0.540104767zd",
            "Ver.1.00",
            "",
        ] {
            assert!(!names_editor(s), "{s}");
        }
    }

    #[test]
    fn screens_are_recognised_and_camera_sizes_are_not() {
        for (w, h) in [
            (1170, 2532),
            (1080, 2400),
            (1366, 768),
            (768, 1366),
            (1334, 750),
        ] {
            assert!(screen_sized(w, h), "{w}x{h}");
        }
        for (w, h) in [
            (4032, 3024),
            (1280, 720),
            (1920, 1080),
            (640, 480),
            (3000, 2000),
            (0, 5),
        ] {
            assert!(!screen_sized(w, h), "{w}x{h}");
        }
    }

    #[test]
    fn quality_inverts_libjpeg_scaling() {
        for q in [5u32, 10, 25, 50, 75, 90, 95, 100] {
            // libjpeg's jpeg_quality_scaling and jpeg_add_quant_table (baseline clamp).
            let scale = if q < 50 { 5000 / q } else { 200 - 2 * q };
            let table: [u16; 64] = std::array::from_fn(|i| {
                ((u32::from(IJG_LUMA[i]) * scale + 50) / 100).clamp(1, 255) as u16
            });
            let got = i32::from(ijg_quality(&table));
            assert!((got - q as i32).abs() <= 1, "quality {q} read as {got}");
        }
    }

    #[test]
    fn rises_follow_the_poisson_test() {
        // A Laplacian-like fall: no rise.
        assert!(!rises(&[5000, 8000, 4000, 2000, 1000, 500, 250, 125]));
        // Bin 0 below bin 1 is normal (bin 1 folds two values).
        assert!(!rises(&[3000, 5000, 2500]));
        // An emptied bin (first step coarser than the second): 2 rises over 1.
        assert!(rises(&[5000, 300, 3000, 2000, 1000]));
        // A rise within Poisson noise is not significant: (1040 - 1000) / sqrt(2040) < 1.
        assert!(!rises(&[5000, 3000, 1000, 1040, 500]));
        assert!(!rises(&[]));
        assert!(!rises(&[0, 0, 0]));
    }

    #[test]
    fn non_jpeg_bytes_are_not_analysed() {
        let s = double_jpeg(b"\x89PNG\r\n\x1a\n....");
        assert!(!s.analysed && !s.flagged && s.quality.is_none());
        // A JPEG signature on garbage: read fails, not analysed, no panic.
        let s = double_jpeg(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 16, b'J', b'F', 0, 0]);
        assert!(!s.analysed);
    }
}
