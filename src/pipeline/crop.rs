//! Step 5 of the recipe: the context crop each classifier was trained on.

/// Scale of the crop fed to MiniFASNetV2.
pub const SCALE_V2: f64 = 2.7;
/// Scale of the crop fed to MiniFASNetV1SE.
pub const SCALE_V1SE: f64 = 4.0;

/// An inclusive pixel rectangle `[left, top, right, bottom]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    pub left: usize,
    pub top: usize,
    pub right: usize,
    pub bottom: usize,
}

impl CropBox {
    pub fn width(&self) -> usize {
        self.right - self.left + 1
    }

    pub fn height(&self) -> usize {
        self.bottom - self.top + 1
    }
}

/// Upstream `_get_new_box`: grow the face box `[x, y, w, h]` by `scale` (capped so it fits), centre
/// it on the face, shift it back inside the `img_w x img_h` image, truncate to integers.
///
/// Returns `None` for degenerate input (empty image or box). The result always lies inside the
/// image and is never empty; the final clamp only guards against floating-point residue and
/// hostile boxes far outside the image.
pub fn crop_box(bbox: [i32; 4], img_w: usize, img_h: usize, scale: f64) -> Option<CropBox> {
    let [x, y, bw, bh] = bbox;
    if img_w == 0 || img_h == 0 || bw <= 0 || bh <= 0 {
        return None;
    }
    let (wf, hf) = (img_w as f64, img_h as f64);
    let (x, y, bw, bh) = (f64::from(x), f64::from(y), f64::from(bw), f64::from(bh));
    let s = ((hf - 1.0) / bh).min((wf - 1.0) / bw).min(scale);
    let (nw, nh) = (bw * s, bh * s);
    let (cx, cy) = (x + bw / 2.0, y + bh / 2.0);
    let (mut l, mut t, mut r, mut b) = (cx - nw / 2.0, cy - nh / 2.0, cx + nw / 2.0, cy + nh / 2.0);
    if l < 0.0 {
        r -= l;
        l = 0.0;
    }
    if t < 0.0 {
        b -= t;
        t = 0.0;
    }
    if r > wf - 1.0 {
        l -= r - wf + 1.0;
        r = wf - 1.0;
    }
    if b > hf - 1.0 {
        t -= b - hf + 1.0;
        b = hf - 1.0;
    }
    let clamp = |v: f64, max: usize| -> usize { (v.trunc().max(0.0) as usize).min(max) };
    let (l, t) = (clamp(l, img_w - 1), clamp(t, img_h - 1));
    let (r, b) = (clamp(r, img_w - 1).max(l), clamp(b, img_h - 1).max(t));
    Some(CropBox {
        left: l,
        top: t,
        right: r,
        bottom: b,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reference_crop_boxes() {
        // From upstream_reference.json (image_F1: bbox 178,136,223,225 in 480x640).
        let c = crop_box([178, 136, 223, 225], 480, 640, SCALE_V2).unwrap();
        assert_eq!((c.left, c.top, c.right, c.bottom), (0, 6, 479, 490));
    }

    #[test]
    fn degenerate_inputs() {
        assert!(crop_box([0, 0, 0, 10], 10, 10, 2.7).is_none());
        assert!(crop_box([0, 0, 10, 10], 0, 10, 2.7).is_none());
        let c = crop_box([0, 0, 1, 1], 1, 1, 2.7).unwrap();
        assert_eq!((c.width(), c.height()), (1, 1));
    }

    proptest! {
        #[test]
        fn crop_always_inside_and_non_empty(
            x in -5000i32..5000, y in -5000i32..5000, w in 1i32..6000, h in 1i32..6000,
            iw in 1usize..4000, ih in 1usize..4000, scale in 0.5f64..5.0,
        ) {
            let c = crop_box([x, y, w, h], iw, ih, scale).unwrap();
            prop_assert!(c.left <= c.right && c.right < iw);
            prop_assert!(c.top <= c.bottom && c.bottom < ih);
            prop_assert!(c.width() >= 1 && c.height() >= 1);
        }

        #[test]
        fn face_inside_image_gives_crop_containing_face_centre(
            iw in 20usize..2000, ih in 20usize..2000, fx in 0.0f64..1.0, fy in 0.0f64..1.0,
            fw in 0.05f64..0.9, fh in 0.05f64..0.9,
        ) {
            let w = ((iw as f64 * fw) as i32).max(1);
            let h = ((ih as f64 * fh) as i32).max(1);
            let x = ((iw as f64 - f64::from(w)) * fx) as i32;
            let y = ((ih as f64 - f64::from(h)) * fy) as i32;
            let c = crop_box([x, y, w, h], iw, ih, SCALE_V2).unwrap();
            let (cx, cy) = ((x + w / 2) as usize, (y + h / 2) as usize);
            prop_assert!(c.left <= cx && cx <= c.right + 1 && c.top <= cy && cy <= c.bottom + 1);
        }
    }
}
