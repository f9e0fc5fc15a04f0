//! Steps 6-8 of the recipe: classifier tensors, softmax, fusion.

/// Classifier input side (both models take 80x80).
pub const INPUT_SIDE: usize = 80;

/// Numerically stable softmax of three logits.
pub fn softmax3(logits: [f32; 3]) -> [f32; 3] {
    let m = logits[0].max(logits[1]).max(logits[2]);
    let e = logits.map(|l| (l - m).exp());
    let s: f32 = e.iter().sum();
    if !(s.is_finite() && s > 0.0) {
        return [0.0, 0.0, 0.0];
    }
    e.map(|v| v / s)
}

/// Fuse the two models' softmax outputs: `p_real = (v2[1] + v1se[1]) / 2` (index 1 = real).
/// Summed in f64 like upstream's numpy, then rounded once.
pub fn fuse(v2: [f32; 3], v1se: [f32; 3]) -> f32 {
    ((f64::from(v2[1]) + f64::from(v1se[1])) / 2.0) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_orders() {
        let s = softmax3([0.583_398_46, -3.556_739_6, 2.974_991_6]);
        assert!((s.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((s[1] - 0.001_332_627_5).abs() < 1e-6);
        assert_eq!(softmax3([f32::NAN, 0.0, 0.0]), [0.0, 0.0, 0.0]);
        let big = softmax3([1000.0, 0.0, -1000.0]);
        assert!((big[0] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn fusion_is_mean_of_real_column() {
        assert!((fuse([0.0, 0.2, 0.8], [0.0, 0.4, 0.6]) - 0.3).abs() < 1e-7);
    }
}
