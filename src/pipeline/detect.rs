//! Steps 2-4 of the recipe: detector input, Caffe PriorBox priors, box decoding, face selection.

use super::resize::{resize_bilinear, ImageView};
use crate::engine::DetectorOutput;

/// Per-channel mean subtracted from the detector input, in B, G, R order.
pub const DETECTOR_MEAN_BGR: [f32; 3] = [104.0, 117.0, 123.0];

/// Detector input size for an upright `w x h` image (upstream: resize to ~192x192 area keeping the
/// aspect ratio when the image has at least 192*192 pixels; smaller images are used as they are).
pub fn detector_input_size(w: usize, h: usize) -> (usize, usize) {
    if (w as u64) * (h as u64) >= 192 * 192 {
        let ar = w as f64 / h as f64;
        // Python int() truncates; at least 1 pixel for absurd aspect ratios.
        let dw = ((192.0 * ar.sqrt()) as usize).max(1);
        let dh = ((192.0 / ar.sqrt()) as usize).max(1);
        (dw, dh)
    } else {
        (w, h)
    }
}

/// Build the detector tensor `[1,3,dh,dw]` (BGR planes, mean subtracted, no scaling) into `out`.
/// `scratch` receives the resized BGR pixels. Both buffers are resized as needed and reusable.
pub fn detector_input(
    img: &ImageView<'_>,
    dw: usize,
    dh: usize,
    scratch: &mut Vec<u8>,
    out: &mut Vec<f32>,
) {
    scratch.resize(dw * dh * 3, 0);
    resize_bilinear(img, dw, dh, scratch);
    bgr_to_planar(scratch, dw * dh, DETECTOR_MEAN_BGR, out);
}

/// HWC BGR bytes → CHW f32 planes minus `mean` (per channel).
pub fn bgr_to_planar(pixels: &[u8], n: usize, mean: [f32; 3], out: &mut Vec<f32>) {
    out.resize(3 * n, 0.0);
    let (b, rest) = out.split_at_mut(n);
    let (g, r) = rest.split_at_mut(n);
    for (i, px) in pixels.chunks_exact(3).take(n).enumerate() {
        b[i] = f32::from(px[0]) - mean[0];
        g[i] = f32::from(px[1]) - mean[1];
        r[i] = f32::from(px[2]) - mean[2];
    }
}

/// One prior box: centre and size, normalised to the detector input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prior {
    pub cx: f32,
    pub cy: f32,
    pub w: f32,
    pub h: f32,
}

const STEPS: [usize; 3] = [8, 16, 32];
const MIN_SIZES: [[f32; 2]; 3] = [[16.0, 32.0], [64.0, 128.0], [256.0, 512.0]];

/// Caffe PriorBox priors for a `w x h` detector input, in the detector's output order.
pub fn priors(w: usize, h: usize) -> Vec<Prior> {
    let mut out = Vec::new();
    for (k, (&step, sizes)) in STEPS.iter().zip(MIN_SIZES.iter()).enumerate() {
        let (mut fw, mut fh) = (w, h);
        for _ in 0..(k + 3) {
            fw = (fw.saturating_sub(1)) / 2 + 1;
            fh = (fh.saturating_sub(1)) / 2 + 1;
        }
        for i in 0..fh {
            for j in 0..fw {
                for &m in sizes {
                    out.push(Prior {
                        cx: (j as f32 + 0.5) * step as f32 / w as f32,
                        cy: (i as f32 + 0.5) * step as f32 / h as f32,
                        w: m / w as f32,
                        h: m / h as f32,
                    });
                }
            }
        }
    }
    out
}

/// A decoded detection, normalised corner coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
    pub confidence: f32,
}

impl Detection {
    fn area(&self) -> f32 {
        (self.x2 - self.x1).max(0.0) * (self.y2 - self.y1).max(0.0)
    }

    fn intersection(&self, o: &Detection) -> f32 {
        let w = (self.x2.min(o.x2) - self.x1.max(o.x1)).max(0.0);
        let h = (self.y2.min(o.y2) - self.y1.max(o.y1)).max(0.0);
        w * h
    }

    /// Intersection over union (0 when both are empty).
    pub fn iou(&self, o: &Detection) -> f32 {
        let i = self.intersection(o);
        let u = self.area() + o.area() - i;
        if u > 0.0 {
            i / u
        } else {
            0.0
        }
    }

    /// Upstream pixel box `[x, y, w, h]` in an image of `img_w x img_h` (Python `int()` truncation).
    pub fn bbox(&self, img_w: usize, img_h: usize) -> [i32; 4] {
        let (wf, hf) = (img_w as f64, img_h as f64);
        let left = f64::from(self.x1) * wf;
        let top = f64::from(self.y1) * hf;
        let right = f64::from(self.x2) * wf;
        let bottom = f64::from(self.y2) * hf;
        [
            trunc_i32(left),
            trunc_i32(top),
            trunc_i32(right - left + 1.0),
            trunc_i32(bottom - top + 1.0),
        ]
    }
}

fn trunc_i32(v: f64) -> i32 {
    // `as` saturates and maps NaN to 0: no UB, no panic on hostile numbers.
    v.trunc() as i32
}

/// Decode prior `i` (variances 0.1 / 0.2).
pub fn decode_box(p: &Prior, loc: &[f32], confidence: f32) -> Detection {
    let cx = p.cx + 0.1 * loc[0] * p.w;
    let cy = p.cy + 0.1 * loc[1] * p.h;
    let w = p.w * (0.2 * loc[2]).exp();
    let h = p.h * (0.2 * loc[3]).exp();
    Detection {
        x1: cx - w / 2.0,
        y1: cy - h / 2.0,
        x2: cx + w / 2.0,
        y2: cy + h / 2.0,
        confidence,
    }
}

/// IoU above which two detections are the same face (greedy NMS).
pub const NMS_IOU: f32 = 0.4;

/// Faces found in one detector output.
#[derive(Debug, Clone, PartialEq)]
pub struct Faces {
    /// Upstream's choice: the single prior with the highest face confidence (no threshold).
    pub best: Option<Detection>,
    /// Detections at or above `floor` after greedy NMS, best first.
    pub kept: Vec<Detection>,
}

/// Select faces from raw detector output. Returns an error string when the output shape does
/// not match the priors.
pub fn select_faces(out: &DetectorOutput, priors: &[Prior], floor: f32) -> Result<Faces, String> {
    if out.loc.len() != priors.len() * 4 || out.conf.len() != priors.len() * 2 {
        return Err(format!(
            "detector returned {} boxes / {} scores for {} priors",
            out.loc.len() / 4,
            out.conf.len() / 2,
            priors.len()
        ));
    }
    let mut best: Option<(usize, f32)> = None;
    let mut candidates: Vec<(usize, f32)> = Vec::new();
    for i in 0..priors.len() {
        let c = out.conf[i * 2 + 1];
        if !c.is_finite() {
            continue;
        }
        // Strictly greater: the first maximum wins, as numpy's argmax.
        if best.is_none_or(|(_, b)| c > b) {
            best = Some((i, c));
        }
        if c >= floor {
            candidates.push((i, c));
        }
    }
    let decode = |i: usize, c: f32| decode_box(&priors[i], &out.loc[i * 4..i * 4 + 4], c);
    candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut kept: Vec<Detection> = Vec::new();
    for (i, c) in candidates {
        let d = decode(i, c);
        if !(d.x1.is_finite() && d.y1.is_finite() && d.x2.is_finite() && d.y2.is_finite()) {
            continue;
        }
        if kept.iter().all(|k| k.iou(&d) <= NMS_IOU) {
            kept.push(d);
        }
    }
    Ok(Faces {
        best: best.map(|(i, c)| decode(i, c)),
        kept,
    })
}

/// Whether `other` is a second face rather than a part of `first`: at most a quarter of its area
/// lies inside `first`.
pub fn is_separate_face(first: &Detection, other: &Detection) -> bool {
    let a = other.area();
    a > 0.0 && first.intersection(other) <= 0.25 * a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_input_size_and_prior_count() {
        assert_eq!(detector_input_size(480, 640), (166, 221));
        assert_eq!(priors(166, 221).len(), 1568);
        assert_eq!(detector_input_size(100, 100), (100, 100));
    }

    #[test]
    fn first_prior_geometry() {
        let p = priors(166, 221);
        assert!((p[0].cx - 4.0 / 166.0).abs() < 1e-7);
        assert!((p[0].w - 16.0 / 166.0).abs() < 1e-7);
        assert!((p[1].w - 32.0 / 166.0).abs() < 1e-7);
    }

    #[test]
    fn bbox_truncates_like_python() {
        let d = Detection {
            x1: 0.5,
            y1: 0.25,
            x2: 0.75,
            y2: 0.5,
            confidence: 1.0,
        };
        assert_eq!(d.bbox(100, 100), [50, 25, 26, 26]);
        let nan = Detection {
            x1: f32::NAN,
            y1: 0.0,
            x2: 1.0,
            y2: 1.0,
            confidence: 1.0,
        };
        let _ = nan.bbox(10, 10);
    }

    #[test]
    fn separate_face_rule() {
        let a = Detection {
            x1: 0.0,
            y1: 0.0,
            x2: 0.5,
            y2: 0.5,
            confidence: 1.0,
        };
        let inside = Detection {
            x1: 0.1,
            y1: 0.1,
            x2: 0.3,
            y2: 0.3,
            confidence: 0.9,
        };
        let apart = Detection {
            x1: 0.6,
            y1: 0.6,
            x2: 0.9,
            y2: 0.9,
            confidence: 0.9,
        };
        assert!(!is_separate_face(&a, &inside));
        assert!(is_separate_face(&a, &apart));
    }
}
