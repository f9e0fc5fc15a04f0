//! ISO/IEC 30107-3 presentation-attack-detection error rates, computed from scored samples.
//!
//! This module is pure: it sees labels, attack types, scores and group values, never images or
//! the pipeline.
//!
//! # Decision rule
//!
//! A sample is **accepted as bona fide iff `p_real >= threshold`**. Everything else is rejected.
//!
//! # Rates at the operating threshold
//!
//! - **BPCER** (bona fide presentation classification error rate): share of live samples that are
//!   rejected.
//! - **APCER** (attack presentation classification error rate), per attack type: share of the
//!   attacks of that type that are accepted. **APCER_max** is the largest of them (ISO/IEC
//!   30107-3 reports the worst attack type), and **ACER = (APCER_max + BPCER) / 2**.
//!
//! # Non-responses
//!
//! A *non-response* is a sample for which no liveness decision was made: the pipeline returned a
//! quality outcome (no face, several faces, face too small or too close, image too small,
//! corrupt, unsupported or too large) or failed. It carries `p_real = None`.
//!
//! - The headline `bpcer` / `apcer` / `apcer_max` / `acer` **fold non-responses in the way the
//!   deployed system behaves**: a non-response never accepts. A live non-response therefore counts
//!   as a bona fide rejection (it raises BPCER) and an attack non-response counts as a correctly
//!   rejected attack (it does not raise APCER).
//! - [`ProcessedOnly`] gives the same rates over processed samples only (non-responses excluded
//!   from numerator and denominator), which isolates the classifier from the quality gates.
//! - [`NonResponse`] gives the non-response rate overall, per class and per attack type.
//!
//! # Threshold-free figures
//!
//! EER, ROC, DET, AUC, BPCER@APCER and [`ScoreSweep::threshold_for_target_apcer`] pool **all
//! attack types** into one attack class and score every non-response as `p_real = -inf`, so a
//! non-response is never accepted at any threshold the sweep reports. Consequently BPCER can never
//! fall below the live non-response rate. A `NaN` score is treated like a non-response (it never
//! satisfies `p_real >= threshold`).
//!
//! The thresholds swept are the distinct finite scores (the threshold equal to a score accepts
//! that score) plus "reject everything". A reported threshold is the score of the boundary
//! sample: on this dataset any threshold in `(next lower score, reported]` gives the same rates.
//!
//! - **EER**: at the swept threshold where `|APCER - BPCER|` is smallest (ties: the smaller mean,
//!   then the lower threshold), `EER = (APCER + BPCER) / 2`; `eer_threshold` is that threshold.
//! - **BPCER@APCER=x**: the lowest BPCER over swept thresholds whose pooled APCER is `<= x`.
//! - **AUC**: the Mann-Whitney statistic `P(live score > attack score)` with ties counted 1/2
//!   (two non-responses tie at `-inf`).
//!
//! Empty classes give `None` (`null` in JSON), never `NaN` and never a panic.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The ground truth of a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    /// Bona fide presentation.
    Live,
    /// Presentation attack.
    Spoof,
}

impl Label {
    /// `"live"` or `"spoof"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Live => "live",
            Label::Spoof => "spoof",
        }
    }

    /// Parses `live` / `spoof` (case-insensitive, surrounding whitespace ignored).
    pub fn parse(s: &str) -> Option<Label> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("live") {
            Some(Label::Live)
        } else if s.eq_ignore_ascii_case("spoof") {
            Some(Label::Spoof)
        } else {
            None
        }
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One scored sample, as the metrics see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub label: Label,
    /// Attack type for spoofs (`"unknown"` when not given); ignored for live samples.
    pub attack_type: String,
    /// Liveness score; `None` for a non-response.
    pub p_real: Option<f64>,
    /// Group column → value, used by [`compute_grouped`].
    pub groups: BTreeMap<String, String>,
}

impl Sample {
    /// Whether the deployed system accepts this sample as bona fide at `threshold`.
    pub fn accepted(&self, threshold: f64) -> bool {
        matches!(self.p_real, Some(p) if p >= threshold)
    }

    /// Whether a liveness decision was made (the sample has a score; `NaN` counts as a
    /// non-response).
    pub fn processed(&self) -> bool {
        self.p_real.is_some_and(|p| !p.is_nan())
    }

    /// The score the sweep uses: `p_real`, or `-inf` for a non-response or `NaN`.
    pub fn sweep_score(&self) -> f64 {
        sanitize(self.p_real)
    }
}

fn sanitize(p: Option<f64>) -> f64 {
    match p {
        Some(p) if !p.is_nan() => p,
        _ => f64::NEG_INFINITY,
    }
}

/// `num / den`, or `None` when `den == 0`.
pub fn rate(num: usize, den: usize) -> Option<f64> {
    if den == 0 {
        None
    } else {
        Some(num as f64 / den as f64)
    }
}

fn max_rate<'a>(
    rates: impl IntoIterator<Item = (&'a String, &'a Option<f64>)>,
) -> Option<(String, f64)> {
    let mut best: Option<(String, f64)> = None;
    for (k, v) in rates {
        if let Some(v) = *v {
            match &best {
                Some((_, b)) if *b >= v => {}
                _ => best = Some((k.clone(), v)),
            }
        }
    }
    best
}

/// Counts for one attack type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AttackCounts {
    /// Attack samples of this type.
    pub total: usize,
    /// Of them, samples with a score (not non-responses).
    pub processed: usize,
    /// Of them, attacks accepted as bona fide at the threshold.
    pub accepted: usize,
}

/// Sample counts behind the rates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    pub total: usize,
    pub live: usize,
    pub live_processed: usize,
    /// Live samples rejected at the threshold, non-responses included.
    pub live_rejected: usize,
    pub spoof: usize,
    pub spoof_processed: usize,
    /// Attacks accepted at the threshold (all types).
    pub spoof_accepted: usize,
    pub per_attack: BTreeMap<String, AttackCounts>,
}

/// Rates over processed samples only (non-responses excluded).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessedOnly {
    pub bpcer: Option<f64>,
    pub apcer: BTreeMap<String, Option<f64>>,
    pub apcer_max: Option<f64>,
    pub acer: Option<f64>,
}

/// Non-response rates (share of samples without a liveness decision).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NonResponse {
    pub overall: Option<f64>,
    pub live: Option<f64>,
    pub spoof: Option<f64>,
    pub per_attack: BTreeMap<String, Option<f64>>,
    /// Non-response counts: overall, live, spoof.
    pub count: usize,
    pub live_count: usize,
    pub spoof_count: usize,
}

/// A threshold with the pooled rates it gives.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OperatingPoint {
    pub threshold: f64,
    /// Pooled APCER (all attack types), non-responses never accepted.
    pub apcer: f64,
    /// BPCER, live non-responses counted as rejections.
    pub bpcer: f64,
}

/// One point of the ROC / DET curves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurvePoint {
    /// `+inf` for "reject everything", `-inf` for the theoretical "accept everything, even
    /// non-responses" end point (only present when there are non-responses).
    pub threshold: f64,
    pub apcer: f64,
    pub bpcer: f64,
}

/// Target APCERs for `bpcer_at_apcer`, with their JSON keys.
pub const BPCER_AT_APCER_TARGETS: [(&str, f64); 3] =
    [("0.01", 0.01), ("0.05", 0.05), ("0.10", 0.10)];

/// Every figure for one set of samples at one threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub threshold: f64,
    pub counts: Counts,
    /// Folded: live non-responses count as rejections.
    pub bpcer: Option<f64>,
    /// Folded, per attack type: attack non-responses count as correct rejections.
    pub apcer: BTreeMap<String, Option<f64>>,
    pub apcer_max: Option<f64>,
    /// The attack type that gives `apcer_max`.
    pub apcer_max_attack_type: Option<String>,
    pub acer: Option<f64>,
    pub processed_only: ProcessedOnly,
    pub non_response: NonResponse,
    pub eer: Option<f64>,
    pub eer_threshold: Option<f64>,
    /// Keys `"0.01"`, `"0.05"`, `"0.10"`.
    pub bpcer_at_apcer: BTreeMap<String, Option<f64>>,
    pub auc: Option<f64>,
}

impl Metrics {
    /// Computes every figure for `samples` at `threshold`.
    pub fn compute(samples: &[Sample], threshold: f64) -> Metrics {
        let mut c = Counts {
            total: samples.len(),
            ..Counts::default()
        };
        for s in samples {
            let processed = s.processed();
            let accepted = s.accepted(threshold);
            match s.label {
                Label::Live => {
                    c.live += 1;
                    c.live_processed += usize::from(processed);
                    c.live_rejected += usize::from(!accepted);
                }
                Label::Spoof => {
                    c.spoof += 1;
                    c.spoof_processed += usize::from(processed);
                    c.spoof_accepted += usize::from(accepted);
                    let a = c.per_attack.entry(s.attack_type.clone()).or_default();
                    a.total += 1;
                    a.processed += usize::from(processed);
                    a.accepted += usize::from(accepted);
                }
            }
        }

        let bpcer = rate(c.live_rejected, c.live);
        let apcer: BTreeMap<String, Option<f64>> = c
            .per_attack
            .iter()
            .map(|(k, a)| (k.clone(), rate(a.accepted, a.total)))
            .collect();
        let max = max_rate(&apcer);
        let apcer_max = max.as_ref().map(|m| m.1);
        let acer = match (apcer_max, bpcer) {
            (Some(a), Some(b)) => Some((a + b) / 2.0),
            _ => None,
        };

        // Processed only: every accepted sample is processed, and a processed live sample is
        // rejected iff it is not accepted.
        let live_processed_rejected = c.live_processed - (c.live - c.live_rejected);
        let p_bpcer = rate(live_processed_rejected, c.live_processed);
        let p_apcer: BTreeMap<String, Option<f64>> = c
            .per_attack
            .iter()
            .map(|(k, a)| (k.clone(), rate(a.accepted, a.processed)))
            .collect();
        let p_apcer_max = max_rate(&p_apcer).map(|m| m.1);
        let p_acer = match (p_apcer_max, p_bpcer) {
            (Some(a), Some(b)) => Some((a + b) / 2.0),
            _ => None,
        };

        let live_nr = c.live - c.live_processed;
        let spoof_nr = c.spoof - c.spoof_processed;
        let non_response = NonResponse {
            overall: rate(live_nr + spoof_nr, c.total),
            live: rate(live_nr, c.live),
            spoof: rate(spoof_nr, c.spoof),
            per_attack: c
                .per_attack
                .iter()
                .map(|(k, a)| (k.clone(), rate(a.total - a.processed, a.total)))
                .collect(),
            count: live_nr + spoof_nr,
            live_count: live_nr,
            spoof_count: spoof_nr,
        };

        let sweep = ScoreSweep::new(samples);
        let eer = sweep.eer();
        let bpcer_at_apcer = BPCER_AT_APCER_TARGETS
            .iter()
            .map(|(k, t)| (k.to_string(), sweep.bpcer_at_apcer(*t)))
            .collect();

        Metrics {
            threshold,
            counts: c,
            bpcer,
            apcer,
            apcer_max,
            apcer_max_attack_type: max.map(|m| m.0),
            acer,
            processed_only: ProcessedOnly {
                bpcer: p_bpcer,
                apcer: p_apcer,
                apcer_max: p_apcer_max,
                acer: p_acer,
            },
            non_response,
            eer: eer.map(|e| e.0),
            eer_threshold: eer.map(|e| e.1.threshold),
            bpcer_at_apcer,
            auc: sweep.auc(),
        }
    }
}

/// [`Metrics`] per value of the group column `column` (samples without the column fall in group
/// `""`).
pub fn compute_grouped(
    samples: &[Sample],
    threshold: f64,
    column: &str,
) -> BTreeMap<String, Metrics> {
    let mut by: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    for s in samples {
        let key = s.groups.get(column).cloned().unwrap_or_default();
        by.entry(key).or_default().push(s.clone());
    }
    by.into_iter()
        .map(|(k, v)| (k, Metrics::compute(&v, threshold)))
        .collect()
}

/// Pooled scores of both classes, for threshold sweeps (EER, ROC, DET, AUC, BPCER@APCER).
///
/// Non-responses and `NaN` are scored `-inf`; all attack types are pooled.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScoreSweep {
    /// Live scores, ascending.
    live: Vec<f64>,
    /// Attack scores, ascending.
    attack: Vec<f64>,
}

impl ScoreSweep {
    pub fn new(samples: &[Sample]) -> ScoreSweep {
        let mut live = Vec::new();
        let mut attack = Vec::new();
        for s in samples {
            match s.label {
                Label::Live => live.push(s.sweep_score()),
                Label::Spoof => attack.push(s.sweep_score()),
            }
        }
        ScoreSweep::from_scores(live, attack)
    }

    /// From raw scores (`NaN` becomes `-inf`).
    pub fn from_scores(mut live: Vec<f64>, mut attack: Vec<f64>) -> ScoreSweep {
        for v in live.iter_mut().chain(attack.iter_mut()) {
            if v.is_nan() {
                *v = f64::NEG_INFINITY;
            }
        }
        live.sort_by(f64::total_cmp);
        attack.sort_by(f64::total_cmp);
        ScoreSweep { live, attack }
    }

    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    pub fn attack_count(&self) -> usize {
        self.attack.len()
    }

    /// Pooled APCER at `t`: share of attacks with score `>= t`.
    pub fn apcer_at(&self, t: f64) -> Option<f64> {
        let below = self.attack.partition_point(|&x| x < t);
        rate(self.attack.len() - below, self.attack.len())
    }

    /// BPCER at `t`: share of live samples with score `< t`.
    pub fn bpcer_at(&self, t: f64) -> Option<f64> {
        rate(self.live.partition_point(|&x| x < t), self.live.len())
    }

    /// The distinct finite scores, ascending.
    pub fn finite_thresholds(&self) -> Vec<f64> {
        let mut t: Vec<f64> = self
            .live
            .iter()
            .chain(self.attack.iter())
            .copied()
            .filter(|v| v.is_finite())
            .collect();
        t.sort_by(f64::total_cmp);
        t.dedup();
        t
    }

    /// ROC / DET points, by ascending threshold: the `-inf` end point (only when some score is
    /// `-inf`), one point per distinct finite score, then `+inf` (reject everything).
    /// Empty when either class is empty.
    pub fn curve(&self) -> Vec<CurvePoint> {
        if self.live.is_empty() || self.attack.is_empty() {
            return Vec::new();
        }
        let mut pts = Vec::new();
        let has_neg_inf = self.live.first().is_some_and(|v| *v == f64::NEG_INFINITY)
            || self.attack.first().is_some_and(|v| *v == f64::NEG_INFINITY);
        if has_neg_inf {
            pts.push(CurvePoint {
                threshold: f64::NEG_INFINITY,
                apcer: 1.0,
                bpcer: 0.0,
            });
        }
        for t in self.finite_thresholds().into_iter().chain([f64::INFINITY]) {
            if let (Some(apcer), Some(bpcer)) = (self.apcer_at(t), self.bpcer_at(t)) {
                pts.push(CurvePoint {
                    threshold: t,
                    apcer,
                    bpcer,
                });
            }
        }
        pts
    }

    fn operating_point(&self, t: f64) -> Option<OperatingPoint> {
        Some(OperatingPoint {
            threshold: t,
            apcer: self.apcer_at(t)?,
            bpcer: self.bpcer_at(t)?,
        })
    }

    /// Equal error rate and the operating point where it is read. `None` when a class is empty or
    /// no sample has a finite score.
    pub fn eer(&self) -> Option<(f64, OperatingPoint)> {
        let mut best: Option<(f64, f64, OperatingPoint)> = None; // (gap, mean, point)
        for t in self.finite_thresholds() {
            let p = self.operating_point(t)?;
            let gap = (p.apcer - p.bpcer).abs();
            let mean = (p.apcer + p.bpcer) / 2.0;
            let better = match &best {
                None => true,
                Some((g, m, _)) => gap < *g || (gap == *g && mean < *m),
            };
            if better {
                best = Some((gap, mean, p));
            }
        }
        best.map(|(_, mean, p)| (mean, p))
    }

    /// The lowest threshold whose pooled APCER is `<= target`, with its rates (the lowest such
    /// threshold has the lowest BPCER). When only rejecting everything reaches the target, the
    /// threshold is `1e-6` above the highest score. `None` when a class is empty or no sample has
    /// a finite score.
    pub fn threshold_for_target_apcer(&self, target: f64) -> Option<OperatingPoint> {
        let ts = self.finite_thresholds();
        let max = *ts.last()?;
        // APCER is non-increasing in t: binary search the first candidate meeting the target.
        let idx = ts.partition_point(|&t| self.apcer_at(t).is_some_and(|a| a > target));
        match ts.get(idx) {
            Some(&t) => self.operating_point(t),
            None => {
                let mut p = self.operating_point(f64::INFINITY)?;
                p.threshold = max + 1e-6;
                Some(p)
            }
        }
    }

    /// The lowest BPCER over thresholds whose pooled APCER is `<= target`.
    pub fn bpcer_at_apcer(&self, target: f64) -> Option<f64> {
        self.threshold_for_target_apcer(target).map(|p| p.bpcer)
    }

    /// ROC AUC (Mann-Whitney, ties 1/2).
    pub fn auc(&self) -> Option<f64> {
        auc_sorted(&self.live, &self.attack)
    }
}

/// ROC AUC: `P(live > attack) + P(live == attack) / 2` over all (live, attack) pairs. `NaN`
/// counts as `-inf`. `None` when a class is empty.
pub fn auc(live: &[f64], attack: &[f64]) -> Option<f64> {
    let s = ScoreSweep::from_scores(live.to_vec(), attack.to_vec());
    s.auc()
}

fn auc_sorted(live: &[f64], attack: &[f64]) -> Option<f64> {
    if live.is_empty() || attack.is_empty() {
        return None;
    }
    // Twice the Mann-Whitney U, in integers: 2 per win, 1 per tie.
    let mut twice_u: u128 = 0;
    for &a in attack {
        let lt_or_eq = live.partition_point(|&x| x <= a);
        let lt = live.partition_point(|&x| x < a);
        let greater = live.len() - lt_or_eq;
        let equal = lt_or_eq - lt;
        twice_u += 2 * greater as u128 + equal as u128;
    }
    let pairs = live.len() as u128 * attack.len() as u128;
    Some(twice_u as f64 / (2.0 * pairs as f64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn live(p: Option<f64>) -> Sample {
        Sample {
            label: Label::Live,
            attack_type: "none".into(),
            p_real: p,
            groups: BTreeMap::new(),
        }
    }

    fn spoof(kind: &str, p: Option<f64>) -> Sample {
        Sample {
            label: Label::Spoof,
            attack_type: kind.into(),
            p_real: p,
            groups: BTreeMap::new(),
        }
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-12)
    }

    #[test]
    fn label_parse() {
        assert_eq!(Label::parse(" LIVE "), Some(Label::Live));
        assert_eq!(Label::parse("spoof"), Some(Label::Spoof));
        assert_eq!(Label::parse("real"), None);
        assert_eq!(Label::parse(""), None);
    }

    #[test]
    fn tie_at_threshold_is_accepted() {
        // p_real == threshold accepts, for both classes.
        let s = vec![
            live(Some(0.5)),
            live(Some(0.4)),
            spoof("print", Some(0.5)),
            spoof("print", Some(0.49)),
        ];
        let m = Metrics::compute(&s, 0.5);
        assert!(close(m.bpcer, 0.5)); // 0.4 rejected
        assert!(close(m.apcer["print"], 0.5)); // 0.5 accepted
        assert!(close(m.acer, 0.5));
        // One step above: the tied samples are rejected.
        let m = Metrics::compute(&s, 0.5 + 1e-9);
        assert!(close(m.bpcer, 1.0));
        assert!(close(m.apcer["print"], 0.0));
    }

    #[test]
    fn empty_classes_give_none() {
        let m = Metrics::compute(&[], 0.5);
        assert_eq!(m.bpcer, None);
        assert!(m.apcer.is_empty());
        assert_eq!(m.apcer_max, None);
        assert_eq!(m.acer, None);
        assert_eq!(m.eer, None);
        assert_eq!(m.eer_threshold, None);
        assert_eq!(m.auc, None);
        assert!(m.bpcer_at_apcer.values().all(Option::is_none));
        assert_eq!(m.non_response.overall, None);
        // Only live samples: BPCER defined, the rest not.
        let m = Metrics::compute(&[live(Some(0.9)), live(Some(0.1))], 0.5);
        assert!(close(m.bpcer, 0.5));
        assert_eq!(m.apcer_max, None);
        assert_eq!(m.acer, None);
        assert_eq!(m.auc, None);
        assert_eq!(m.eer, None);
        assert_eq!(m.non_response.spoof, None);
        assert!(close(m.non_response.live, 0.0));
        // Only attacks.
        let m = Metrics::compute(&[spoof("mask", Some(0.9))], 0.5);
        assert_eq!(m.bpcer, None);
        assert!(close(m.apcer_max, 1.0));
        assert_eq!(m.acer, None);
        let json = serde_json::to_string(&m).unwrap();
        assert!(!json.contains("NaN"));
    }

    #[test]
    fn all_correct() {
        let s = vec![
            live(Some(0.9)),
            live(Some(0.8)),
            spoof("print", Some(0.1)),
            spoof("replay", Some(0.2)),
        ];
        let m = Metrics::compute(&s, 0.5);
        assert!(close(m.bpcer, 0.0));
        assert!(close(m.apcer_max, 0.0));
        assert!(close(m.acer, 0.0));
        assert!(close(m.auc, 1.0));
        assert!(close(m.eer, 0.0));
        // The EER threshold is the lowest live score: accepts both lives, rejects both attacks.
        assert_eq!(m.eer_threshold, Some(0.8));
        for v in m.bpcer_at_apcer.values() {
            assert!(close(*v, 0.0));
        }
    }

    #[test]
    fn all_wrong() {
        let s = vec![
            live(Some(0.1)),
            live(Some(0.2)),
            spoof("print", Some(0.9)),
            spoof("replay", Some(0.8)),
        ];
        let m = Metrics::compute(&s, 0.5);
        assert!(close(m.bpcer, 1.0));
        assert!(close(m.apcer["print"], 1.0));
        assert!(close(m.apcer["replay"], 1.0));
        assert!(close(m.acer, 1.0));
        assert!(close(m.auc, 0.0));
        // Thresholds 0.1, 0.2, 0.8, 0.9 give (APCER, BPCER) = (1,0), (1,.5), (1,1), (.5,1).
        // Smallest gap 0 at 0.8: EER = 1.
        assert!(close(m.eer, 1.0));
        assert_eq!(m.eer_threshold, Some(0.8));
        // APCER <= 1% only when rejecting everything: BPCER 1.
        assert!(close(m.bpcer_at_apcer["0.01"], 1.0));
        let sweep = ScoreSweep::new(&s);
        let p = sweep.threshold_for_target_apcer(0.01).unwrap();
        assert!(p.threshold > 0.9);
        assert_eq!(p.apcer, 0.0);
        assert!(!s.iter().any(|x| x.accepted(p.threshold)));
    }

    #[test]
    fn one_image_per_class() {
        let s = vec![live(Some(0.7)), spoof("print", Some(0.3))];
        let m = Metrics::compute(&s, 0.5);
        assert!(close(m.bpcer, 0.0));
        assert!(close(m.apcer_max, 0.0));
        assert!(close(m.auc, 1.0));
        let m = Metrics::compute(&s, 0.8);
        assert!(close(m.bpcer, 1.0));
        assert!(close(m.apcer_max, 0.0));
        assert!(close(m.acer, 0.5));
        // Equal scores: AUC 1/2.
        let s = vec![live(Some(0.5)), spoof("print", Some(0.5))];
        assert!(close(Metrics::compute(&s, 0.1).auc, 0.5));
    }

    #[test]
    fn non_responses_are_folded_and_reported() {
        let s = vec![
            live(Some(0.9)),
            live(Some(0.3)),
            live(None),
            live(None),
            spoof("print", Some(0.7)),
            spoof("print", None),
            spoof("print", Some(0.1)),
            spoof("print", Some(0.2)),
            spoof("replay", None),
            spoof("replay", None),
        ];
        let m = Metrics::compute(&s, 0.5);
        // Folded: 3 of 4 lives rejected (0.3 and both non-responses).
        assert!(close(m.bpcer, 0.75));
        // print: 1 of 4 accepted; replay: 0 of 2 accepted (non-responses never accept).
        assert!(close(m.apcer["print"], 0.25));
        assert!(close(m.apcer["replay"], 0.0));
        assert!(close(m.apcer_max, 0.25));
        assert_eq!(m.apcer_max_attack_type.as_deref(), Some("print"));
        assert!(close(m.acer, 0.5));
        // Processed only: 1 of 2 lives rejected; print 1 of 3; replay has no processed sample.
        assert!(close(m.processed_only.bpcer, 0.5));
        assert!(close(m.processed_only.apcer["print"], 1.0 / 3.0));
        assert_eq!(m.processed_only.apcer["replay"], None);
        assert!(close(m.processed_only.apcer_max, 1.0 / 3.0));
        assert!(close(m.processed_only.acer, (0.5 + 1.0 / 3.0) / 2.0));
        // Non-response rates.
        assert_eq!(m.non_response.count, 5);
        assert!(close(m.non_response.overall, 0.5));
        assert!(close(m.non_response.live, 0.5));
        assert!(close(m.non_response.spoof, 3.0 / 6.0));
        assert!(close(m.non_response.per_attack["print"], 0.25));
        assert!(close(m.non_response.per_attack["replay"], 1.0));
        // Counts.
        assert_eq!(m.counts.live, 4);
        assert_eq!(m.counts.live_processed, 2);
        assert_eq!(m.counts.spoof, 6);
        assert_eq!(m.counts.spoof_processed, 3);
        assert_eq!(m.counts.spoof_accepted, 1);
        // AUC, by hand over 4 x 6 = 24 pairs with NR = -inf:
        // live 0.9 beats all 6 → 6; live 0.3 beats 0.1, 0.2, 3 NR → 5;
        // each live NR ties the 3 attack NRs → 1.5, twice → 3. Total 14 / 24.
        assert!(close(m.auc, 14.0 / 24.0));
        // The pooled sweep never accepts a non-response: BPCER >= live NR rate everywhere.
        let sweep = ScoreSweep::new(&s);
        for t in sweep.finite_thresholds() {
            assert!(sweep.bpcer_at(t).unwrap() >= 0.5);
            assert!(sweep.apcer_at(t).unwrap() <= 0.5);
        }
        // BPCER@APCER<=5%: need APCER 0 → threshold above 0.7, i.e. 0.9 → BPCER 3/4.
        assert!(close(m.bpcer_at_apcer["0.05"], 0.75));
        let p = sweep.threshold_for_target_apcer(0.05).unwrap();
        assert_eq!(p.threshold, 0.9);
        // EER candidates: t=0.1 (3/6, 2/4) gap 0 → EER 0.5 at 0.1.
        assert!(close(m.eer, 0.5));
        assert_eq!(m.eer_threshold, Some(0.1));
    }

    #[test]
    fn nan_score_is_never_accepted() {
        let s = vec![live(Some(f64::NAN)), spoof("print", Some(f64::NAN))];
        let m = Metrics::compute(&s, 0.0);
        assert!(close(m.bpcer, 1.0));
        assert!(close(m.apcer_max, 0.0));
        assert_eq!(m.counts.live_processed, 0);
        assert!(close(m.auc, 0.5));
        assert_eq!(m.eer, None);
    }

    #[test]
    fn eer_hand_computed() {
        // live 0.2 0.6 0.8 0.9; attacks 0.1 0.3 0.7.
        // t:     0.1   0.2   0.3   0.6   0.7   0.8   0.9
        // APCER  3/3   2/3   2/3   1/3   1/3   0     0
        // BPCER  0     0     1/4   1/4   2/4   2/4   3/4
        // gap at 0.6: 1/3-1/4 = 1/12 (smallest) → EER (1/3+1/4)/2 = 7/24.
        let s = vec![
            live(Some(0.2)),
            live(Some(0.6)),
            live(Some(0.8)),
            live(Some(0.9)),
            spoof("a", Some(0.1)),
            spoof("a", Some(0.3)),
            spoof("a", Some(0.7)),
        ];
        let sweep = ScoreSweep::new(&s);
        let (eer, p) = sweep.eer().unwrap();
        assert!((eer - 7.0 / 24.0).abs() < 1e-12);
        assert_eq!(p.threshold, 0.6);
        // AUC: pairs live>attack: 0.2>{0.1}=1, 0.6>{0.1,0.3}=2, 0.8>3, 0.9>3 → 9/12.
        assert!(close(sweep.auc(), 0.75));
        // APCER <= 10%: first t with APCER 0 is 0.8 → BPCER 2/4.
        let op = sweep.threshold_for_target_apcer(0.10).unwrap();
        assert_eq!(op.threshold, 0.8);
        assert_eq!(op.bpcer, 0.5);
        // APCER <= 1/3 reached at 0.6.
        let op = sweep.threshold_for_target_apcer(1.0 / 3.0).unwrap();
        assert_eq!(op.threshold, 0.6);
        // Curve: 7 finite thresholds + reject-all; no -inf point.
        let c = sweep.curve();
        assert_eq!(c.len(), 8);
        assert_eq!(c.last().unwrap().threshold, f64::INFINITY);
        assert_eq!((c[0].apcer, c[0].bpcer), (1.0, 0.0));
    }

    #[test]
    fn curve_has_accept_all_endpoint_with_non_responses() {
        let s = vec![live(None), live(Some(0.5)), spoof("x", Some(0.4))];
        let c = ScoreSweep::new(&s).curve();
        assert_eq!(c[0].threshold, f64::NEG_INFINITY);
        assert_eq!((c[0].apcer, c[0].bpcer), (1.0, 0.0));
        // t=0.4: APCER 1, BPCER 1/2 (the non-response).
        assert_eq!((c[1].apcer, c[1].bpcer), (1.0, 0.5));
    }

    #[test]
    fn grouped() {
        let mut a = live(Some(0.9));
        a.groups.insert("src".into(), "A".into());
        let mut b = spoof("print", Some(0.9));
        b.groups.insert("src".into(), "B".into());
        let c = live(Some(0.1));
        let g = compute_grouped(&[a, b, c], 0.5, "src");
        assert_eq!(g.len(), 3);
        assert!(close(g["A"].bpcer, 0.0));
        assert_eq!(g["A"].apcer_max, None);
        assert!(close(g["B"].apcer_max, 1.0));
        assert!(close(g[""].bpcer, 1.0));
    }

    fn score() -> impl Strategy<Value = Option<f64>> {
        prop_oneof![
            1 => Just(None),
            // A coarse grid makes ties common.
            4 => (0u32..=20).prop_map(|v| Some(v as f64 / 20.0)),
            4 => (0.0f64..=1.0).prop_map(Some),
        ]
    }

    fn samples() -> impl Strategy<Value = Vec<Sample>> {
        proptest::collection::vec(
            (any::<bool>(), 0usize..3, score()).prop_map(|(is_live, kind, p)| {
                if is_live {
                    live(p)
                } else {
                    spoof(["print", "replay", "mask"][kind], p)
                }
            }),
            0..60,
        )
    }

    proptest! {
        #[test]
        fn rates_are_monotone_in_threshold(s in samples(), t1 in 0.0f64..=1.0, t2 in 0.0f64..=1.0) {
            let (lo, hi) = if t1 <= t2 { (t1, t2) } else { (t2, t1) };
            let a = Metrics::compute(&s, lo);
            let b = Metrics::compute(&s, hi);
            if let (Some(x), Some(y)) = (a.bpcer, b.bpcer) { prop_assert!(x <= y); }
            if let (Some(x), Some(y)) = (a.apcer_max, b.apcer_max) { prop_assert!(x >= y); }
            for (k, v) in &a.apcer {
                prop_assert!(v.unwrap() >= b.apcer[k].unwrap());
            }
            if let (Some(x), Some(y)) = (a.processed_only.bpcer, b.processed_only.bpcer) { prop_assert!(x <= y); }
            let sweep = ScoreSweep::new(&s);
            if let (Some(x), Some(y)) = (sweep.apcer_at(lo), sweep.apcer_at(hi)) { prop_assert!(x >= y); }
            if let (Some(x), Some(y)) = (sweep.bpcer_at(lo), sweep.bpcer_at(hi)) { prop_assert!(x <= y); }
            // The curve is monotone too.
            let c = sweep.curve();
            for w in c.windows(2) {
                prop_assert!(w[0].apcer >= w[1].apcer && w[0].bpcer <= w[1].bpcer);
            }
        }

        #[test]
        fn eer_between_curves_at_its_threshold(s in samples()) {
            let sweep = ScoreSweep::new(&s);
            if let Some((eer, p)) = sweep.eer() {
                let a = sweep.apcer_at(p.threshold).unwrap();
                let b = sweep.bpcer_at(p.threshold).unwrap();
                prop_assert!(a.min(b) <= eer && eer <= a.max(b));
                prop_assert!((0.0..=1.0).contains(&eer));
                // No swept threshold has a smaller gap.
                for t in sweep.finite_thresholds() {
                    let g = (sweep.apcer_at(t).unwrap() - sweep.bpcer_at(t).unwrap()).abs();
                    prop_assert!(g >= (a - b).abs());
                }
                let m = Metrics::compute(&s, 0.5);
                prop_assert_eq!(m.eer, Some(eer));
            }
        }

        #[test]
        fn auc_in_unit_interval_and_antisymmetric(
            l in proptest::collection::vec(score(), 0..40),
            a in proptest::collection::vec(score(), 0..40),
        ) {
            let lv: Vec<f64> = l.iter().map(|p| sanitize(*p)).collect();
            let av: Vec<f64> = a.iter().map(|p| sanitize(*p)).collect();
            match auc(&lv, &av) {
                None => prop_assert!(lv.is_empty() || av.is_empty()),
                Some(x) => {
                    prop_assert!((0.0..=1.0).contains(&x));
                    let nl: Vec<f64> = lv.iter().map(|v| -v).collect();
                    let na: Vec<f64> = av.iter().map(|v| -v).collect();
                    let y = auc(&nl, &na).unwrap();
                    prop_assert!((x - (1.0 - y)).abs() < 1e-12);
                    // Brute force agrees.
                    let mut u = 0.0;
                    for p in &lv { for q in &av {
                        u += if p > q { 1.0 } else if p == q { 0.5 } else { 0.0 };
                    }}
                    prop_assert!((x - u / (lv.len() * av.len()) as f64).abs() < 1e-12);
                }
            }
        }

        #[test]
        fn bpcer_at_apcer_is_optimal(s in samples(), target in 0.0f64..=1.0) {
            let sweep = ScoreSweep::new(&s);
            if let Some(op) = sweep.threshold_for_target_apcer(target) {
                prop_assert!(op.apcer <= target);
                prop_assert_eq!(Some(op.apcer), sweep.apcer_at(op.threshold));
                prop_assert_eq!(Some(op.bpcer), sweep.bpcer_at(op.threshold));
                for t in sweep.finite_thresholds() {
                    if sweep.apcer_at(t).unwrap() <= target {
                        prop_assert!(sweep.bpcer_at(t).unwrap() >= op.bpcer);
                    }
                }
            }
        }
    }
}
