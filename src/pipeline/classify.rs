//! Steps 6-8 of the recipe, for any member of a model set: the input tensor, each member's
//! probability of "real", and the set's fusion rule.

use crate::models::{Channels, Fusion, Member, OutputKind, LOGIT_EPS};

/// Numerically stable softmax (f32, like upstream's numpy on f32 logits). `None` when the
/// logits are empty or not all finite.
pub fn softmax(logits: &[f32]) -> Option<Vec<f32>> {
    if logits.is_empty() || logits.iter().any(|l| !l.is_finite()) {
        return None;
    }
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = logits.iter().map(|l| (l - m).exp()).collect();
    let s: f32 = e.iter().sum();
    Some(e.iter().map(|v| v / s).collect())
}

/// A member's output turned into probabilities: the softmax, or `[sigmoid(logit)]`.
/// `None` for an output that does not fit the member (wrong length, not finite).
pub fn probabilities(member: &Member, logits: &[f32]) -> Option<Vec<f32>> {
    let probs = match member.output {
        OutputKind::Softmax => softmax(logits)?,
        OutputKind::Sigmoid => match logits {
            [l] if l.is_finite() => vec![(1.0 / (1.0 + f64::from(-*l).exp())) as f32],
            _ => return None,
        },
    };
    (member.real_index < probs.len()).then_some(probs)
}

/// Fuse the members' `p_real` (set order) by the set's rule. Computed in f64 and rounded once:
/// for Silent-Face (`mean`, weights 1 and 1) that is upstream's `(v2[1] + v1se[1]) / 2`.
pub fn fuse(fusion: &Fusion, p_real: &[f32]) -> f32 {
    match fusion {
        Fusion::Mean { weights } => {
            let total: f64 = weights.iter().sum();
            let sum: f64 = weights
                .iter()
                .zip(p_real)
                .map(|(w, p)| w * f64::from(*p))
                .sum();
            (sum / total) as f32
        }
        Fusion::Logistic {
            intercept,
            coefficients,
        } => {
            let z = intercept
                + coefficients
                    .iter()
                    .zip(p_real)
                    .map(|(c, p)| c * logit(f64::from(*p)))
                    .sum::<f64>();
            (1.0 / (1.0 + (-z).exp())) as f32
        }
    }
}

/// `ln(p / (1 - p))` with `p` clipped to `[LOGIT_EPS, 1 - LOGIT_EPS]`: the feature a logistic
/// fusion is fitted on.
pub fn logit(p: f64) -> f64 {
    let p = p.clamp(LOGIT_EPS, 1.0 - LOGIT_EPS);
    (p / (1.0 - p)).ln()
}

/// Interleaved BGR pixels of a `n`-pixel crop → the member's NCHW tensor:
/// `(pixel * scale - mean[c]) / std[c]`, channels in the member's order.
pub fn to_tensor(member: &Member, pixels: &[u8], n: usize, out: &mut Vec<f32>) {
    out.resize(3 * n, 0.0);
    // Source channel (in BGR pixels) of each tensor plane.
    let order = match member.channels {
        Channels::Bgr => [0, 1, 2],
        Channels::Rgb => [2, 1, 0],
    };
    let (scale, mean, std) = (member.scale, member.mean, member.std);
    for (plane, (dst, src)) in out.chunks_exact_mut(n).zip(order).enumerate() {
        for (d, px) in dst.iter_mut().zip(pixels.chunks_exact(3)) {
            *d = (f32::from(px[src]) * scale - mean[plane]) / std[plane];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::ModelSet;

    #[test]
    fn softmax_sums_to_one_and_orders() {
        let s = softmax(&[0.583_398_46, -3.556_739_6, 2.974_991_6]).unwrap();
        assert!((s.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((s[1] - 0.001_332_627_5).abs() < 1e-6);
        assert_eq!(softmax(&[f32::NAN, 0.0, 0.0]), None);
        assert_eq!(softmax(&[f32::INFINITY, 0.0]), None);
        assert_eq!(softmax(&[]), None);
        let big = softmax(&[1000.0, 0.0, -1000.0]).unwrap();
        assert!((big[0] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn mean_fusion_is_upstreams_for_silentface() {
        let sf = ModelSet::builtin("silentface").unwrap();
        assert!((fuse(&sf.fusion, &[0.2, 0.4]) - 0.3).abs() < 1e-7);
        // Bit-exact with upstream's f64 sum of two f32 values, halved.
        for (a, b) in [(0.993_567_9f32, 0.1f32), (1e-7, 0.999_999_9), (0.5, 0.5)] {
            let want = ((f64::from(a) + f64::from(b)) / 2.0) as f32;
            assert_eq!(fuse(&sf.fusion, &[a, b]).to_bits(), want.to_bits());
        }
        let weighted = Fusion::Mean {
            weights: vec![1.0, 1.0, 2.0],
        };
        assert!((fuse(&weighted, &[0.0, 0.4, 1.0]) - 0.6).abs() < 1e-7);
    }

    #[test]
    fn logistic_fusion_arithmetic() {
        let f = Fusion::Logistic {
            intercept: 0.5,
            coefficients: vec![2.0, -1.0],
        };
        let (p1, p2) = (0.8f64, 0.3f64);
        let z = 0.5 + 2.0 * (p1 / (1.0 - p1)).ln() - (p2 / (1.0 - p2)).ln();
        let want = 1.0 / (1.0 + (-z).exp());
        assert!((f64::from(fuse(&f, &[0.8, 0.3])) - want).abs() < 1e-6);
        // Saturated members are clipped, not infinite.
        let sat = fuse(&f, &[1.0, 0.0]);
        assert!(sat.is_finite() && sat > 0.999);
        assert!((logit(0.0) - logit(LOGIT_EPS)).abs() < 1e-12);
        assert_eq!(logit(0.5), 0.0);
    }

    #[test]
    fn probabilities_check_the_output_shape() {
        let sf = ModelSet::builtin("silentface").unwrap();
        let m = &sf.classifiers[0];
        assert_eq!(probabilities(m, &[0.0, 0.0]).map(|p| p.len()), Some(2));
        assert_eq!(
            probabilities(m, &[0.0]),
            None,
            "real_index 1 needs 2 outputs"
        );
        assert_eq!(probabilities(m, &[0.0, f32::NAN, 0.0]), None);
        let mut sig = m.clone();
        sig.output = OutputKind::Sigmoid;
        sig.real_index = 0;
        let p = probabilities(&sig, &[0.0]).unwrap();
        assert_eq!(p, vec![0.5]);
        assert_eq!(probabilities(&sig, &[0.0, 1.0]), None);
    }

    #[test]
    fn tensors_follow_channel_order_and_normalisation() {
        let sf = ModelSet::builtin("silentface-minifas128").unwrap();
        let px = [10u8, 20, 30, 40, 50, 60]; // two BGR pixels
        let mut out = Vec::new();
        to_tensor(&sf.classifiers[0], &px, 2, &mut out);
        assert_eq!(out, vec![10.0, 40.0, 20.0, 50.0, 30.0, 60.0]);
        to_tensor(&sf.classifiers[2], &px, 2, &mut out);
        let want: Vec<f32> = [30u8, 60, 20, 50, 10, 40]
            .iter()
            .map(|v| f32::from(*v) / 255.0)
            .collect();
        assert_eq!(out, want, "RGB planes, value / 255 exactly as numpy");
    }
}
