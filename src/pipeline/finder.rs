//! The face finder of the multi-face scan: YuNet (libfacedetection.train; the model of OpenCV's
//! `FaceDetectorYN`) over the whole image, whose only job is to find faces besides the one the
//! verdict is about.
//!
//! Input: the upright image shrunk to fit a `size x size` square (OpenCV `INTER_AREA`, never
//! enlarged: enlarging a small image only makes YuNet see faces in skin texture), at the
//! square's top-left corner, zeros elsewhere (what `FaceDetectorYN` does with its bottom/right
//! padding), BGR 0-255 NCHW with no mean or scale. Decoding and NMS follow OpenCV's
//! `FaceDetectorYNImpl::postProcess` (modules/objdetect/src/face_detect.cpp) step by step:
//! `score = sqrt(clamp(cls) * clamp(obj))`, box centre `(cell + delta) * stride`, size
//! `exp(delta) * stride`, then `dnn::NMSBoxes` over integer-truncated boxes.

use super::detect::Detection;
use super::resize::ImageView;
use super::square::resize_area;
use crate::engine::FinderOutput;

/// The finder's three levels.
pub const STRIDES: [usize; 3] = [8, 16, 32];

/// One face found, in pixels of the finder's input square.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FoundFace {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
    pub score: f32,
}

impl FoundFace {
    /// The box in normalised coordinates of an image that was shrunk by `scale` to make the
    /// input, so it compares directly with the detector's [`Detection`]s.
    pub fn detection(&self, scale: f64, img_w: usize, img_h: usize) -> Detection {
        let (sx, sy) = (scale * img_w as f64, scale * img_h as f64);
        Detection {
            x1: (self.x as f64 / sx) as f32,
            y1: (self.y as f64 / sy) as f32,
            x2: ((self.x + self.w) as f64 / sx) as f32,
            y2: ((self.y + self.h) as f64 / sy) as f32,
            confidence: self.score,
        }
    }
}

/// The scale and size (`w`, `h`) an image of `w x h` has inside a `size` square: shrunk to fit,
/// never enlarged.
pub fn fit(w: usize, h: usize, size: usize) -> (f64, usize, usize) {
    let s = (size as f64 / w.max(h).max(1) as f64).min(1.0);
    let side = |v: usize| ((v as f64 * s).round() as usize).clamp(1, size);
    (s, side(w), side(h))
}

/// Build the finder's input tensor `[1,3,size,size]` into `out` (`resized` receives the shrunk
/// BGR pixels). Returns the scale from image to input pixels, or `None` for an empty image.
pub fn finder_input(
    img: &ImageView<'_>,
    size: usize,
    resized: &mut Vec<u8>,
    out: &mut Vec<f32>,
) -> Option<f64> {
    if img.width == 0 || img.height == 0 || size == 0 {
        return None;
    }
    let (s, nw, nh) = fit(img.width, img.height, size);
    let (pixels, stride): (&[u8], usize) = if (nw, nh) == (img.width, img.height) {
        (img.data, img.stride)
    } else {
        resized.clear();
        resized.resize(nw * nh * 3, 0);
        if !resize_area(img, nw, nh, resized) {
            return None;
        }
        (resized.as_slice(), nw * 3)
    };
    let plane = size * size;
    out.clear();
    out.resize(3 * plane, 0.0);
    for y in 0..nh {
        let row = pixels.get(y * stride..y * stride + nw * 3)?;
        for (x, px) in row.chunks_exact(3).enumerate() {
            let i = y * size + x;
            out[i] = f32::from(px[0]);
            out[plane + i] = f32::from(px[1]);
            out[2 * plane + i] = f32::from(px[2]);
        }
    }
    Some(s)
}

/// Decode the finder's outputs for a `size` square: every cell whose score reaches `floor`, then
/// OpenCV's NMS at `nms` (best first). An error string when the outputs do not fit the size.
pub fn decode(
    out: &FinderOutput,
    size: usize,
    floor: f32,
    nms: f32,
) -> Result<Vec<FoundFace>, String> {
    let mut faces = Vec::new();
    for (level, &stride) in STRIDES.iter().enumerate() {
        let cols = size / stride;
        let cells = cols * cols;
        let (cls, obj, bbox) = (&out.cls[level], &out.obj[level], &out.bbox[level]);
        if cls.len() != cells || obj.len() != cells || bbox.len() != 4 * cells {
            return Err(format!(
                "stride {stride}: {} / {} / {} values for {cells} cells",
                cls.len(),
                obj.len(),
                bbox.len()
            ));
        }
        let st = stride as f32;
        for idx in 0..cells {
            let score = (cls[idx].clamp(0.0, 1.0) * obj[idx].clamp(0.0, 1.0)).sqrt();
            // A NaN score is never a face.
            if score.is_nan() || score < floor {
                continue;
            }
            let (r, c) = ((idx / cols) as f32, (idx % cols) as f32);
            let d = &bbox[idx * 4..idx * 4 + 4];
            let cx = (c + d[0]) * st;
            let cy = (r + d[1]) * st;
            let w = d[2].exp() * st;
            let h = d[3].exp() * st;
            let face = FoundFace {
                x: cx - w / 2.0,
                y: cy - h / 2.0,
                w,
                h,
                score,
            };
            if [face.x, face.y, face.w, face.h]
                .iter()
                .all(|v| v.is_finite())
            {
                faces.push(face);
            }
        }
    }
    Ok(nms_boxes(faces, nms))
}

/// The integer rectangle OpenCV's NMS sees (`Rect2i(int(x), int(y), int(w), int(h))`).
fn rect(f: &FoundFace) -> [i64; 4] {
    [f.x, f.y, f.w, f.h].map(|v| v as i64)
}

/// IoU of two integer rectangles as OpenCV's `rectOverlap` computes it (an empty intersection
/// or union gives 0).
fn rect_iou(a: [i64; 4], b: [i64; 4]) -> f64 {
    let (x1, y1) = (a[0].max(b[0]), a[1].max(b[1]));
    let (x2, y2) = (
        (a[0] + a[2]).min(b[0] + b[2]),
        (a[1] + a[3]).min(b[1] + b[3]),
    );
    let inter = if x2 > x1 && y2 > y1 {
        (x2 - x1) * (y2 - y1)
    } else {
        0
    };
    let area = |r: [i64; 4]| if r[2] > 0 && r[3] > 0 { r[2] * r[3] } else { 0 };
    let union = area(a) + area(b) - inter;
    if union <= 0 {
        0.0
    } else {
        inter as f64 / union as f64
    }
}

/// OpenCV `dnn::NMSBoxes` (eta 1): scores in descending order (stable), a box is kept when its
/// overlap with every kept box is at most `threshold`.
pub fn nms_boxes(mut faces: Vec<FoundFace>, threshold: f32) -> Vec<FoundFace> {
    faces.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<FoundFace> = Vec::new();
    for f in faces {
        let r = rect(&f);
        if kept
            .iter()
            .all(|k| rect_iou(rect(k), r) <= f64::from(threshold))
        {
            kept.push(f);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_level_output(size: usize) -> FinderOutput {
        let mut out = FinderOutput::default();
        for (level, &stride) in STRIDES.iter().enumerate() {
            let cells = (size / stride).pow(2);
            out.cls[level] = vec![0.0; cells];
            out.obj[level] = vec![0.0; cells];
            out.bbox[level] = vec![0.0; 4 * cells];
        }
        out
    }

    #[test]
    fn fit_shrinks_and_never_enlarges() {
        assert_eq!(fit(1280, 960, 640), (0.5, 640, 480));
        assert_eq!(fit(300, 200, 640), (1.0, 300, 200));
        let (s, w, h) = fit(2500, 2070, 640);
        assert_eq!((w, h), (640, 530));
        assert!((s - 0.256).abs() < 1e-12);
    }

    #[test]
    fn decode_follows_opencv_arithmetic() {
        let size = 64;
        let mut out = one_level_output(size);
        // Stride 8, row 2, column 3: cls 0.81, obj 1.0 → score 0.9.
        let idx = 2 * 8 + 3;
        out.cls[0][idx] = 0.81;
        out.obj[0][idx] = 1.5; // clamped to 1
        out.bbox[0][idx * 4..idx * 4 + 4].copy_from_slice(&[0.5, 0.25, 1f32.ln(), 2f32.ln()]);
        let faces = decode(&out, size, 0.5, 0.3).unwrap();
        assert_eq!(faces.len(), 1);
        let f = faces[0];
        assert!((f.score - 0.9).abs() < 1e-6);
        // cx = (3 + 0.5) * 8 = 28, w = 8 → x = 24; cy = (2 + 0.25) * 8 = 18, h = 16 → y = 10.
        assert!((f.x - 24.0).abs() < 1e-5 && (f.w - 8.0).abs() < 1e-5);
        assert!((f.y - 10.0).abs() < 1e-5 && (f.h - 16.0).abs() < 1e-5);
    }

    #[test]
    fn decode_refuses_outputs_of_another_size() {
        let out = one_level_output(64);
        assert!(decode(&out, 128, 0.5, 0.3).is_err());
    }

    #[test]
    fn nan_scores_are_never_faces() {
        let mut out = one_level_output(64);
        out.cls[1][0] = f32::NAN;
        out.obj[1][0] = 1.0;
        // Every other cell scores 0, under the floor; the NaN cell must not pass it either.
        assert!(decode(&out, 64, 1e-6, 0.3).unwrap().is_empty());
        out.cls[1][1] = 0.5;
        out.obj[1][1] = 0.5;
        assert_eq!(decode(&out, 64, 1e-6, 0.3).unwrap().len(), 1);
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes_like_opencv() {
        let f = |x: f32, score: f32| FoundFace {
            x,
            y: 0.0,
            w: 10.0,
            h: 10.0,
            score,
        };
        // IoU of x=0 and x=2 (integer boxes): 80 / 120 = 0.67 → dropped; x=20 is apart.
        let kept = nms_boxes(vec![f(2.0, 0.8), f(0.0, 0.9), f(20.0, 0.7)], 0.3);
        assert_eq!(kept, vec![f(0.0, 0.9), f(20.0, 0.7)]);
        // Integer truncation: x=7.9 is 7 (IoU 3/17 = 0.18 ≤ 0.3 → kept).
        assert_eq!(nms_boxes(vec![f(0.0, 0.9), f(7.9, 0.8)], 0.3).len(), 2);
    }

    #[test]
    fn input_is_the_shrunk_image_at_the_top_left_of_zeros() {
        let (w, h) = (4usize, 2usize);
        let data: Vec<u8> = (0..w * h * 3).map(|v| v as u8).collect();
        let view = ImageView {
            data: &data,
            width: w,
            height: h,
            stride: w * 3,
        };
        let (mut resized, mut input) = (Vec::new(), Vec::new());
        assert_eq!(finder_input(&view, 2, &mut resized, &mut input), Some(0.5));
        assert_eq!(resized.len(), 2 * 3);
        let s = finder_input(&view, 8, &mut resized, &mut input).unwrap();
        assert_eq!(s, 1.0);
        assert_eq!(input.len(), 3 * 64);
        // Pixel (1, 1) = bytes 15, 16, 17 (B, G, R).
        assert_eq!(
            [input[8 + 1], input[64 + 8 + 1], input[128 + 8 + 1]],
            [15.0, 16.0, 17.0]
        );
        assert_eq!(input[5], 0.0);
        assert_eq!(input[2 * 8], 0.0);
    }
}
