//! Calibration: fit a model set's fusion and threshold on labelled data
//! (`livecheck eval --calibrate FILE`).
//!
//! The fusion is a logistic regression over the members' `logit(p_real)`
//! ([`crate::pipeline::classify::logit`]), the [`Fusion::Logistic`] rule. With
//! [`MemberWeights::Equal`] (the default) every member gets the same coefficient and only the
//! intercept and that common slope are fitted, i.e. the set ranks images by the plain mean of its
//! members' logits and the fit only calibrates the scale; [`MemberWeights::Fitted`] fits one
//! coefficient per member. Equal weights transfer better to sources the fit never saw
//! (docs/accuracy.md, "Equal member weights"): leave-one-source-out over the corpus and the
//! devset (38 sources) they beat per-member weights on AUC, EER and BPCER at APCER 5 % and 10 %,
//! and on the devset alone (each source scored by a fit on the others) per-member weights fall to
//! AUC 0.819 where equal weights keep 0.940. Samples are weighted so
//! that live and attack carry half the weight each and, within attacks, each attack type a share
//! proportional to the square root of its count: real datasets are mostly replays, and an
//! unweighted fit learns to separate replays only, while equal shares let a handful of masks
//! decide the fit (on the devset, 3 masks and 4 prints took two thirds of the attack weight and
//! the fitted fusion ranked worse than the fixed mean). A small L2 penalty keeps the fit finite on
//! separable data.
//!
//! The threshold is the one for a target APCER ([`ScoreSweep::threshold_for_target_apcer`]) on
//! **out-of-fold** scores when the samples carry a group (the source): each group is scored by
//! a fit that never saw it, which is what an operator's new data will look like. Without groups
//! it is chosen on in-sample scores, and the report says so.
//!
//! Hand-written (Newton's method on a handful of features, a few dozen lines) rather than a
//! machine-learning crate: the fit has one intercept and one weight per member.
//!
//! Pure: no I/O, no pipeline.

use std::collections::BTreeMap;

use serde::Serialize;

use super::metrics::{Label, ScoreSweep};
use crate::models::Fusion;
use crate::pipeline::classify::logit;

/// L2 penalty on the coefficients (not the intercept), relative to a total sample weight of 1.
pub const L2: f64 = 1e-3;
/// Newton iterations (the fit converges in well under 20 on real data).
const ITERATIONS: usize = 50;

/// How the fit weighs the members against each other. Parsed from and shown as its command-line
/// name (`equal`, `fitted`), which is also its JSON form in calibration reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberWeights {
    /// One common coefficient for every member's logit (fitted with the intercept): the fused
    /// score ranks images like the mean of the members' logits.
    #[default]
    Equal,
    /// One coefficient per member.
    Fitted,
}

impl MemberWeights {
    /// The name used on the command line and in calibration reports.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberWeights::Equal => "equal",
            MemberWeights::Fitted => "fitted",
        }
    }
}

impl std::fmt::Display for MemberWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for MemberWeights {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "equal" => Ok(MemberWeights::Equal),
            "fitted" => Ok(MemberWeights::Fitted),
            _ => Err(format!("expected `equal` or `fitted`, got `{s}`")),
        }
    }
}

/// One image that reached the classifiers.
#[derive(Debug, Clone, PartialEq)]
pub struct CalSample {
    pub label: Label,
    pub attack_type: String,
    /// The leave-out unit (e.g. the source repository); `None` when not known.
    pub group: Option<String>,
    /// Each member's p_real, in set order.
    pub p_real: Vec<f32>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CalibrateError {
    #[error("calibration needs live and attack images that reached the classifiers (got {live} live, {attacks} attacks)")]
    OneClass { live: usize, attacks: usize },
    #[error("samples have {got} member scores, the set has {want} members")]
    Members { got: usize, want: usize },
    #[error("the logistic fit did not converge to finite coefficients")]
    Diverged,
}

/// Threshold-free figures and the rates at one threshold, on one set of scores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub auc: Option<f64>,
    pub eer: Option<f64>,
    pub bpcer_at_apcer_5: Option<f64>,
    pub bpcer_at_apcer_10: Option<f64>,
}

/// What `--calibrate` fitted and measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    pub fusion: Fusion,
    /// How the members were weighed (`equal` or `fitted` in JSON).
    pub member_weights: MemberWeights,
    pub threshold: f64,
    pub target_apcer: f64,
    /// `out_of_fold` or `in_sample`: which scores chose the threshold.
    pub threshold_from: &'static str,
    /// APCER (pooled) and BPCER at `threshold` on those scores.
    pub apcer_at_threshold: Option<f64>,
    pub bpcer_at_threshold: Option<f64>,
    pub in_sample: Summary,
    /// Leave-one-group-out scores (`None` without groups, or with fewer than 2).
    pub out_of_fold: Option<Summary>,
    /// The set's own fusion on the same samples, for comparison.
    pub before: Summary,
    pub live: usize,
    pub attacks: usize,
    pub groups: usize,
}

/// Per-sample weights: live 1/2 in total; attacks 1/2 in total, each attack type a share
/// proportional to the square root of its count.
fn weights(samples: &[&CalSample]) -> Vec<f64> {
    let live = samples.iter().filter(|s| s.label == Label::Live).count();
    let mut per_type = BTreeMap::<&str, usize>::new();
    for s in samples.iter().filter(|s| s.label == Label::Spoof) {
        *per_type.entry(s.attack_type.as_str()).or_default() += 1;
    }
    let roots: f64 = per_type.values().map(|n| (*n as f64).sqrt()).sum();
    samples
        .iter()
        .map(|s| match s.label {
            Label::Live => 0.5 / live.max(1) as f64,
            Label::Spoof => {
                let n = per_type[s.attack_type.as_str()] as f64;
                0.5 * n.sqrt() / roots / n
            }
        })
        .collect()
}

/// `[1, logit(p_real) of each member...]`.
fn features(s: &CalSample) -> Vec<f64> {
    std::iter::once(1.0)
        .chain(s.p_real.iter().map(|p| logit(f64::from(*p))))
        .collect()
}

/// What the fit sees: `[1, each member's logit...]`, or `[1, the mean of the members' logits]`.
fn fit_features(s: &CalSample, mode: MemberWeights) -> Vec<f64> {
    let x = features(s);
    match mode {
        MemberWeights::Fitted => x,
        MemberWeights::Equal => {
            let n = (x.len() - 1).max(1) as f64;
            vec![1.0, x[1..].iter().sum::<f64>() / n]
        }
    }
}

/// Solve `a x = b` (a small symmetric positive definite system) by Gaussian elimination with
/// partial pivoting; `None` when singular.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..n {
            let f = a[row][col] / a[col][col];
            let (upper, lower) = a.split_at_mut(row);
            for (x, p) in lower[0][col..].iter_mut().zip(&upper[col][col..]) {
                *x -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Some(x)
}

/// Weighted, L2-penalised logistic regression of "live" on the members' logits (Newton's
/// method). Returns `[intercept, coefficients...]`, one coefficient per member in either mode.
fn fit(samples: &[&CalSample], mode: MemberWeights) -> Result<Vec<f64>, CalibrateError> {
    let live = samples.iter().filter(|s| s.label == Label::Live).count();
    let attacks = samples.len() - live;
    if live == 0 || attacks == 0 {
        return Err(CalibrateError::OneClass { live, attacks });
    }
    let w = weights(samples);
    let x: Vec<Vec<f64>> = samples.iter().map(|s| fit_features(s, mode)).collect();
    let y: Vec<f64> = samples
        .iter()
        .map(|s| f64::from(u8::from(s.label == Label::Live)))
        .collect();
    let d = x[0].len();
    let mut beta = vec![0.0; d];
    for _ in 0..ITERATIONS {
        let mut hess = vec![vec![0.0; d]; d];
        let mut grad = vec![0.0; d];
        for ((xi, yi), wi) in x.iter().zip(&y).zip(&w) {
            let z: f64 = xi.iter().zip(&beta).map(|(a, b)| a * b).sum();
            let mu = 1.0 / (1.0 + (-z).exp());
            for j in 0..d {
                grad[j] += wi * (yi - mu) * xi[j];
                for k in 0..d {
                    hess[j][k] += wi * mu * (1.0 - mu) * xi[j] * xi[k];
                }
            }
        }
        for j in 1..d {
            grad[j] -= L2 * beta[j];
            hess[j][j] += L2;
        }
        let step = solve(hess, grad).ok_or(CalibrateError::Diverged)?;
        let size: f64 = step.iter().map(|s| s.abs()).sum();
        for (b, s) in beta.iter_mut().zip(&step) {
            *b += s;
        }
        if size < 1e-10 {
            break;
        }
    }
    if !beta.iter().all(|b| b.is_finite()) {
        return Err(CalibrateError::Diverged);
    }
    match mode {
        MemberWeights::Fitted => Ok(beta),
        MemberWeights::Equal => {
            // The common slope applies to the mean: each member's coefficient is slope / n.
            let members = samples[0].p_real.len().max(1);
            let each = beta[1] / members as f64;
            Ok(std::iter::once(beta[0])
                .chain(std::iter::repeat_n(each, members))
                .collect())
        }
    }
}

fn score(beta: &[f64], s: &CalSample) -> f64 {
    let z: f64 = features(s).iter().zip(beta).map(|(a, b)| a * b).sum();
    1.0 / (1.0 + (-z).exp())
}

fn sweep(samples: &[CalSample], scores: &[f64]) -> ScoreSweep {
    let (mut live, mut attack) = (Vec::new(), Vec::new());
    for (s, p) in samples.iter().zip(scores) {
        match s.label {
            Label::Live => live.push(*p),
            Label::Spoof => attack.push(*p),
        }
    }
    ScoreSweep::from_scores(live, attack)
}

fn summary(samples: &[CalSample], scores: &[f64]) -> Summary {
    let sw = sweep(samples, scores);
    Summary {
        auc: sw.auc(),
        eer: sw.eer().map(|(e, _)| e),
        bpcer_at_apcer_5: sw.bpcer_at_apcer(0.05),
        bpcer_at_apcer_10: sw.bpcer_at_apcer(0.10),
    }
}

/// Leave-one-group-out scores: each sample scored by a fit on the other groups. `None` when
/// fewer than two groups are known, or a fold lacks a class.
pub fn out_of_fold_scores(samples: &[CalSample], mode: MemberWeights) -> Option<Vec<f64>> {
    let groups: std::collections::BTreeSet<&str> =
        samples.iter().filter_map(|s| s.group.as_deref()).collect();
    if groups.len() < 2 || samples.iter().any(|s| s.group.is_none()) {
        return None;
    }
    let mut scores = vec![0.0; samples.len()];
    for g in groups {
        let train: Vec<&CalSample> = samples
            .iter()
            .filter(|s| s.group.as_deref() != Some(g))
            .collect();
        let beta = fit(&train, mode).ok()?;
        for (i, s) in samples.iter().enumerate() {
            if s.group.as_deref() == Some(g) {
                scores[i] = score(&beta, s);
            }
        }
    }
    Some(scores)
}

/// Fit the fusion on all `samples`, choose the threshold for `target_apcer`, and measure.
/// `before` are the set's current fused scores of the same samples.
pub fn calibrate(
    samples: &[CalSample],
    before: &[f64],
    members: usize,
    target_apcer: f64,
    mode: MemberWeights,
) -> Result<Calibration, CalibrateError> {
    if let Some(s) = samples.iter().find(|s| s.p_real.len() != members) {
        return Err(CalibrateError::Members {
            got: s.p_real.len(),
            want: members,
        });
    }
    let all: Vec<&CalSample> = samples.iter().collect();
    let beta = fit(&all, mode)?;
    let in_sample: Vec<f64> = samples.iter().map(|s| score(&beta, s)).collect();
    let oof = out_of_fold_scores(samples, mode);
    let (chosen, threshold_from) = match &oof {
        Some(o) => (o.as_slice(), "out_of_fold"),
        None => (in_sample.as_slice(), "in_sample"),
    };
    let sw = sweep(samples, chosen);
    let op = sw.threshold_for_target_apcer(target_apcer);
    let threshold = op.as_ref().map_or(0.5, |o| o.threshold.clamp(0.0, 1.0));
    let live = samples.iter().filter(|s| s.label == Label::Live).count();
    Ok(Calibration {
        fusion: Fusion::Logistic {
            intercept: beta[0],
            coefficients: beta[1..].to_vec(),
        },
        member_weights: mode,
        threshold,
        target_apcer,
        threshold_from,
        apcer_at_threshold: sw.apcer_at(threshold),
        bpcer_at_threshold: sw.bpcer_at(threshold),
        in_sample: summary(samples, &in_sample),
        out_of_fold: oof.as_ref().map(|o| summary(samples, o)),
        before: summary(samples, before),
        live,
        attacks: samples.len() - live,
        groups: samples
            .iter()
            .filter_map(|s| s.group.as_deref())
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::classify::fuse;

    fn sample(label: Label, attack: &str, group: &str, p: &[f32]) -> CalSample {
        CalSample {
            label,
            attack_type: attack.into(),
            group: Some(group.into()),
            p_real: p.to_vec(),
        }
    }

    /// Member 0 separates perfectly up to noise, member 1 is noise: the fit must lean on 0.
    fn synthetic() -> Vec<CalSample> {
        let mut out = Vec::new();
        let mut r = 12345u64;
        let mut next = || {
            r = r
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((r >> 33) as f64 / (1u64 << 31) as f64) as f32
        };
        for i in 0..300 {
            let g = format!("g{}", i % 5);
            let live = i % 2 == 0;
            let signal = if live {
                0.6 + 0.4 * next()
            } else {
                0.45 * next()
            };
            let (label, attack) = if live {
                (Label::Live, "none")
            } else if i % 3 == 0 {
                (Label::Spoof, "print")
            } else {
                (Label::Spoof, "replay")
            };
            out.push(sample(label, attack, &g, &[signal, next()]));
        }
        out
    }

    #[test]
    fn the_fit_finds_the_informative_member_and_separates() {
        let s = synthetic();
        let before: Vec<f64> = s
            .iter()
            .map(|x| f64::from((x.p_real[0] + x.p_real[1]) / 2.0))
            .collect();
        let c = calibrate(&s, &before, 2, 0.05, MemberWeights::Fitted).unwrap();
        let Fusion::Logistic { coefficients, .. } = &c.fusion else {
            panic!("logistic expected");
        };
        assert!(
            coefficients[0] > 5.0 * coefficients[1].abs(),
            "{coefficients:?}"
        );
        assert!(c.in_sample.auc.unwrap() > 0.99);
        assert!(c.out_of_fold.as_ref().unwrap().auc.unwrap() > 0.98);
        assert!(c.before.auc.unwrap() < c.in_sample.auc.unwrap());
        assert_eq!(c.threshold_from, "out_of_fold");
        assert_eq!(c.member_weights, MemberWeights::Fitted);
        assert!(c.apcer_at_threshold.unwrap() <= 0.05);
        assert_eq!((c.live, c.attacks, c.groups), (150, 150, 5));
        // The fitted rule, run by the pipeline's own fusion, gives the same scores.
        let beta = match &c.fusion {
            Fusion::Logistic {
                intercept,
                coefficients,
            } => [vec![*intercept], coefficients.clone()].concat(),
            Fusion::Mean { .. } => unreachable!(),
        };
        for x in s.iter().take(20) {
            let ours = fuse(&c.fusion, &x.p_real);
            assert!((f64::from(ours) - score(&beta, x)).abs() < 1e-6);
        }
    }

    #[test]
    fn member_weights_parse_and_show_their_command_line_names() {
        for mode in [MemberWeights::Equal, MemberWeights::Fitted] {
            assert_eq!(mode.to_string().parse::<MemberWeights>(), Ok(mode));
            assert_eq!(
                serde_json::to_value(mode).unwrap(),
                serde_json::json!(mode.as_str())
            );
        }
        assert_eq!("equal".parse(), Ok(MemberWeights::Equal));
        for bad in ["", "Equal", "fit", "equal "] {
            let err = bad.parse::<MemberWeights>().unwrap_err();
            assert!(err.contains("`equal` or `fitted`"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn equal_weights_fit_one_slope_and_rank_like_the_mean_logit() {
        let s = synthetic();
        let c = calibrate(&s, &vec![0.5; s.len()], 2, 0.05, MemberWeights::Equal).unwrap();
        assert_eq!(c.member_weights, MemberWeights::Equal);
        let Fusion::Logistic {
            intercept,
            coefficients,
        } = &c.fusion
        else {
            panic!("logistic expected");
        };
        assert_eq!(coefficients.len(), 2);
        assert_eq!(coefficients[0], coefficients[1]);
        assert!(coefficients[0] > 0.0 && intercept.is_finite());
        // The fused score is a monotone function of the mean of the members' logits.
        let mean =
            |x: &CalSample| (logit(f64::from(x.p_real[0])) + logit(f64::from(x.p_real[1]))) / 2.0;
        let mut by_mean: Vec<&CalSample> = s.iter().collect();
        by_mean.sort_by(|a, b| mean(a).total_cmp(&mean(b)));
        let fused: Vec<f32> = by_mean.iter().map(|x| fuse(&c.fusion, &x.p_real)).collect();
        assert!(fused.windows(2).all(|w| w[0] <= w[1]));
        // The slope is that of a one-feature fit on the mean logit: the same as fitting that
        // feature alone (a one-member set whose "member" is the mean).
        let single: Vec<CalSample> = s
            .iter()
            .map(|x| {
                let m = mean(x);
                sample(
                    x.label,
                    &x.attack_type,
                    x.group.as_deref().unwrap(),
                    &[(1.0 / (1.0 + (-m).exp())) as f32],
                )
            })
            .collect();
        let one = calibrate(&single, &vec![0.5; s.len()], 1, 0.05, MemberWeights::Fitted).unwrap();
        let Fusion::Logistic {
            intercept: i1,
            coefficients: c1,
        } = &one.fusion
        else {
            panic!("logistic expected");
        };
        assert!((i1 - intercept).abs() < 5e-3, "{i1} vs {intercept}");
        assert!(
            (c1[0] - 2.0 * coefficients[0]).abs() < 1e-3,
            "{c1:?} vs {coefficients:?}"
        );
        // A noise member pulls an equal-weight fit down, where a fitted one ignores it.
        let fitted = calibrate(&s, &vec![0.5; s.len()], 2, 0.05, MemberWeights::Fitted).unwrap();
        assert!(c.in_sample.auc.unwrap() < fitted.in_sample.auc.unwrap());
    }

    #[test]
    fn weights_balance_classes_and_attack_types() {
        let s = [
            sample(Label::Live, "none", "a", &[0.9]),
            sample(Label::Spoof, "replay", "a", &[0.1]),
            sample(Label::Spoof, "replay", "a", &[0.1]),
            sample(Label::Spoof, "replay", "a", &[0.1]),
            sample(Label::Spoof, "print", "b", &[0.1]),
        ];
        let refs: Vec<&CalSample> = s.iter().collect();
        let w = weights(&refs);
        assert!((w[0] - 0.5).abs() < 1e-12);
        // replay 3, print 1: shares sqrt(3) : 1 of the attack half.
        let replay = 0.5 * 3f64.sqrt() / (3f64.sqrt() + 1.0);
        assert!((w[1] + w[2] + w[3] - replay).abs() < 1e-12);
        assert!((w[4] - (0.5 - replay)).abs() < 1e-12);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn one_class_and_member_mismatch_are_errors() {
        let live = [sample(Label::Live, "none", "a", &[0.9, 0.8])];
        assert_eq!(
            calibrate(&live, &[0.9], 2, 0.05, MemberWeights::Equal).unwrap_err(),
            CalibrateError::OneClass {
                live: 1,
                attacks: 0
            }
        );
        assert!(matches!(
            calibrate(&live, &[0.9], 3, 0.05, MemberWeights::Fitted),
            Err(CalibrateError::Members { got: 2, want: 3 })
        ));
    }

    #[test]
    fn separable_data_stays_finite_and_without_groups_uses_in_sample() {
        let mut s: Vec<CalSample> = (0..40)
            .map(|i| {
                let live = i % 2 == 0;
                let p = if live { 0.99 } else { 0.01 };
                let label = if live { Label::Live } else { Label::Spoof };
                sample(label, "replay", "a", &[p])
            })
            .collect();
        for x in &mut s {
            x.group = None;
        }
        let c = calibrate(&s, &vec![0.5; 40], 1, 0.05, MemberWeights::Equal).unwrap();
        assert_eq!(c.threshold_from, "in_sample");
        assert!(c.out_of_fold.is_none());
        let Fusion::Logistic {
            intercept,
            coefficients,
        } = &c.fusion
        else {
            panic!()
        };
        assert!(intercept.is_finite() && coefficients[0].is_finite() && coefficients[0] > 0.0);
        assert_eq!(c.in_sample.auc, Some(1.0));
    }

    #[test]
    fn solver_solves_and_reports_singular() {
        let x = solve(vec![vec![2.0, 1.0], vec![1.0, 3.0]], vec![3.0, 5.0]).unwrap();
        assert!((x[0] - 0.8).abs() < 1e-12 && (x[1] - 1.4).abs() < 1e-12);
        assert!(solve(vec![vec![1.0, 2.0], vec![2.0, 4.0]], vec![1.0, 2.0]).is_none());
    }
}
