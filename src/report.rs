//! `livecheck report`: what the audit trail says about a period, against the period before it.
//!
//! For the whole service, each API key and each day: volumes, live rate, the reason mix and
//! quantiles of the fused score. Each key (and the whole service) is then compared with the
//! preceding period of the same length, with two tests:
//!
//! - **Live rate**: the two-proportion z-test (pooled variance); two-sided p-value
//!   `erfc(|z| / sqrt 2)`.
//! - **Score distribution**: the two-sample Kolmogorov-Smirnov test on p_real of the verdicts
//!   the classifiers made (`live` and `spoof`), with the asymptotic p-value
//!   `Q_KS((sqrt(n_e) + 0.12 + 0.11 / sqrt(n_e)) D)`, `n_e = n1 n2 / (n1 + n2)` (Stephens' form,
//!   as in Numerical Recipes' `kstwo`).
//!
//! A test runs only when both periods have at least [`MIN_COUNT`] observations, and flags a
//! shift when its p-value is below [`ALPHA`] (0.001: strict, because a report runs one test of
//! each kind per key, and an operator should not chase noise).
//!
//! Pure: the rows come from the store (`Store::report_rows`), the output goes to the CLI.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::pipeline::Reason;

/// Significance level of both tests.
pub const ALPHA: f64 = 0.001;
/// Fewest observations in each period for a test to run.
pub const MIN_COUNT: u64 = 30;

/// One audited verdict, as the report reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRow {
    pub key_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub live: bool,
    pub p_real: f64,
    pub reason: Reason,
    /// The shadow model set's `(p_real, live)` on the same picture, when it scored it.
    pub shadow: Option<(f64, bool)>,
}

/// The live set against the shadow set (`--shadow-model-set`) over the checks both scored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShadowAgreement {
    /// Checks with a shadow score.
    pub compared: u64,
    /// Of those, how many got the same live / not-live decision from both sets.
    pub agree: u64,
    pub agreement: f64,
    /// Mean of |p_real - shadow p_real|.
    pub mean_abs_diff: f64,
    /// Live rate of the live set and of the shadow set over the compared checks.
    pub live_rate: f64,
    pub shadow_live_rate: f64,
}

/// Figures of one group of verdicts (a key, a day, or everything) over one period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    pub checks: u64,
    pub live: u64,
    /// `live / checks` (`null` without checks).
    pub live_rate: Option<f64>,
    /// Verdicts by reason code.
    pub reasons: BTreeMap<String, u64>,
    /// Verdicts the classifiers made (`live` or `spoof`): those the score figures are over.
    pub scored: u64,
    /// 10th, 50th and 90th percentiles of p_real over the scored verdicts (`null` without any).
    pub p_real_p10: Option<f64>,
    pub p_real_p50: Option<f64>,
    pub p_real_p90: Option<f64>,
}

/// One test's result.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TestResult {
    /// z for the live-rate test, D for the score test.
    pub statistic: f64,
    pub p_value: f64,
    /// `p_value < ALPHA`.
    pub shifted: bool,
}

/// A key (or the whole service) in the period against the preceding one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// The key id, `"none"` for checks without a key, or `"all"` for the whole service.
    pub key: String,
    pub current: Stats,
    pub previous: Stats,
    /// `null` when a period has fewer than `MIN_COUNT` checks.
    pub live_rate_test: Option<TestResult>,
    /// `null` when a period has fewer than `MIN_COUNT` scored verdicts.
    pub score_test: Option<TestResult>,
    /// What moved significantly: `live_rate`, `score`.
    pub flags: Vec<String>,
    /// The shadow set against the live set in the current period (`null` without shadow
    /// scores).
    pub shadow: Option<ShadowAgreement>,
}

/// One day (UTC) of one key, in the current period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Day {
    /// `YYYY-MM-DD`.
    pub day: String,
    pub key: String,
    pub stats: Stats,
}

/// The whole report (`livecheck report --json` prints it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The current period `[since, until)` and the preceding one `[previous_since, since)`.
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub previous_since: DateTime<Utc>,
    pub alpha: f64,
    pub min_count: u64,
    pub overall: Comparison,
    /// Every key with checks in either period, flagged keys first, then by volume.
    pub keys: Vec<Comparison>,
    /// Per day and key, current period, by day then key.
    pub days: Vec<Day>,
}

fn key_label(k: Option<Uuid>) -> String {
    k.map_or_else(|| "none".to_owned(), |k| k.to_string())
}

fn is_scored(r: &ReportRow) -> bool {
    matches!(r.reason, Reason::Live | Reason::Spoof)
}

/// The `q` quantile of sorted values (linear interpolation between closest ranks).
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64))
}

fn sorted_scores(rows: &[&ReportRow]) -> Vec<f64> {
    let mut s: Vec<f64> = rows
        .iter()
        .filter(|r| is_scored(r))
        .map(|r| r.p_real)
        .collect();
    s.sort_by(f64::total_cmp);
    s
}

fn stats(rows: &[&ReportRow]) -> Stats {
    let checks = rows.len() as u64;
    let live = rows.iter().filter(|r| r.live).count() as u64;
    let mut reasons = BTreeMap::new();
    for r in rows {
        *reasons.entry(r.reason.code().to_owned()).or_insert(0) += 1;
    }
    let scores = sorted_scores(rows);
    Stats {
        checks,
        live,
        live_rate: (checks > 0).then(|| live as f64 / checks as f64),
        reasons,
        scored: scores.len() as u64,
        p_real_p10: quantile(&scores, 0.1),
        p_real_p50: quantile(&scores, 0.5),
        p_real_p90: quantile(&scores, 0.9),
    }
}

/// Two-proportion z-test: `x1` of `n1` against `x2` of `n2`. `None` when a count is below
/// [`MIN_COUNT`]; p = 1 when both proportions are 0 or 1 (no variance, no evidence of a shift).
pub fn two_proportion_test(x1: u64, n1: u64, x2: u64, n2: u64) -> Option<TestResult> {
    if n1 < MIN_COUNT || n2 < MIN_COUNT {
        return None;
    }
    let (p1, p2) = (x1 as f64 / n1 as f64, x2 as f64 / n2 as f64);
    let pooled = (x1 + x2) as f64 / (n1 + n2) as f64;
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 as f64 + 1.0 / n2 as f64)).sqrt();
    let (z, p) = if se > 0.0 {
        let z = (p1 - p2) / se;
        (z, libm::erfc(z.abs() / std::f64::consts::SQRT_2))
    } else {
        (0.0, 1.0)
    };
    Some(TestResult {
        statistic: z,
        p_value: p,
        shifted: p < ALPHA,
    })
}

/// Kolmogorov's limiting distribution `Q_KS(lambda) = 2 sum_{j>=1} (-1)^(j-1) exp(-2 j^2
/// lambda^2)`.
fn q_ks(lambda: f64) -> f64 {
    if lambda < 1e-3 {
        return 1.0;
    }
    let mut sum = 0.0;
    let mut sign = 1.0;
    for j in 1..=100 {
        let term = (-2.0 * (j * j) as f64 * lambda * lambda).exp();
        sum += sign * term;
        if term < 1e-12 {
            break;
        }
        sign = -sign;
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

/// Two-sample Kolmogorov-Smirnov test on sorted samples. `None` when a sample is smaller than
/// [`MIN_COUNT`].
pub fn ks_test(a: &[f64], b: &[f64]) -> Option<TestResult> {
    let (n1, n2) = (a.len(), b.len());
    if (n1 as u64) < MIN_COUNT || (n2 as u64) < MIN_COUNT {
        return None;
    }
    let (mut i, mut j, mut d) = (0usize, 0usize, 0f64);
    while i < n1 && j < n2 {
        let x = a[i].min(b[j]);
        while i < n1 && a[i] <= x {
            i += 1;
        }
        while j < n2 && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n1 as f64 - j as f64 / n2 as f64).abs());
    }
    let ne = (n1 * n2) as f64 / (n1 + n2) as f64;
    let p = q_ks((ne.sqrt() + 0.12 + 0.11 / ne.sqrt()) * d);
    Some(TestResult {
        statistic: d,
        p_value: p,
        shifted: p < ALPHA,
    })
}

fn shadow_agreement(rows: &[&ReportRow]) -> Option<ShadowAgreement> {
    let pairs: Vec<(&ReportRow, f64, bool)> = rows
        .iter()
        .filter_map(|r| r.shadow.map(|(p, l)| (*r, p, l)))
        .collect();
    if pairs.is_empty() {
        return None;
    }
    let n = pairs.len() as f64;
    let agree = pairs.iter().filter(|(r, _, l)| r.live == *l).count() as u64;
    Some(ShadowAgreement {
        compared: pairs.len() as u64,
        agree,
        agreement: agree as f64 / n,
        mean_abs_diff: pairs
            .iter()
            .map(|(r, p, _)| (r.p_real - p).abs())
            .sum::<f64>()
            / n,
        live_rate: pairs.iter().filter(|(r, _, _)| r.live).count() as f64 / n,
        shadow_live_rate: pairs.iter().filter(|(_, _, l)| *l).count() as f64 / n,
    })
}

fn compare(key: String, current: &[&ReportRow], previous: &[&ReportRow]) -> Comparison {
    let (c, p) = (stats(current), stats(previous));
    let live_rate_test = two_proportion_test(c.live, c.checks, p.live, p.checks);
    let score_test = ks_test(&sorted_scores(current), &sorted_scores(previous));
    let mut flags = Vec::new();
    if live_rate_test.is_some_and(|t| t.shifted) {
        flags.push("live_rate".to_owned());
    }
    if score_test.is_some_and(|t| t.shifted) {
        flags.push("score".to_owned());
    }
    Comparison {
        key,
        current: c,
        previous: p,
        live_rate_test,
        score_test,
        flags,
        shadow: shadow_agreement(current),
    }
}

/// The report over `rows` (any order) for the period `[since, until)` against
/// `[since - (until - since), since)`. Rows outside both periods are ignored.
pub fn build(rows: &[ReportRow], since: DateTime<Utc>, until: DateTime<Utc>) -> Report {
    let previous_since = since - (until - since);
    let current: Vec<&ReportRow> = rows
        .iter()
        .filter(|r| r.created_at >= since && r.created_at < until)
        .collect();
    let previous: Vec<&ReportRow> = rows
        .iter()
        .filter(|r| r.created_at >= previous_since && r.created_at < since)
        .collect();
    let overall = compare("all".to_owned(), &current, &previous);
    let mut by_key: BTreeMap<String, (Vec<&ReportRow>, Vec<&ReportRow>)> = BTreeMap::new();
    for r in &current {
        by_key.entry(key_label(r.key_id)).or_default().0.push(r);
    }
    for r in &previous {
        by_key.entry(key_label(r.key_id)).or_default().1.push(r);
    }
    let mut keys: Vec<Comparison> = by_key
        .into_iter()
        .map(|(k, (c, p))| compare(k, &c, &p))
        .collect();
    keys.sort_by(|a, b| {
        a.flags
            .is_empty()
            .cmp(&b.flags.is_empty())
            .then(b.current.checks.cmp(&a.current.checks))
            .then(a.key.cmp(&b.key))
    });
    let mut by_day: BTreeMap<(String, String), Vec<&ReportRow>> = BTreeMap::new();
    for r in &current {
        let day = r.created_at.format("%Y-%m-%d").to_string();
        by_day
            .entry((day, key_label(r.key_id)))
            .or_default()
            .push(r);
    }
    let days = by_day
        .into_iter()
        .map(|((day, key), rows)| Day {
            day,
            key,
            stats: stats(&rows),
        })
        .collect();
    Report {
        since,
        until,
        previous_since,
        alpha: ALPHA,
        min_count: MIN_COUNT,
        overall,
        keys,
        days,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_proportion_test_matches_known_values() {
        // 60/100 against 40/100: pooled 0.5, se = sqrt(0.25 * 0.02) = 0.0707, z = 2.828,
        // p = 0.00468 (two-sided).
        let t = two_proportion_test(60, 100, 40, 100).unwrap();
        assert!((t.statistic - 2.828_427).abs() < 1e-5, "{t:?}");
        assert!((t.p_value - 0.004_677_7).abs() < 1e-6, "{t:?}");
        assert!(!t.shifted);
        let t = two_proportion_test(800, 1000, 400, 1000).unwrap();
        assert!(t.shifted && t.p_value < 1e-50);
        assert!(two_proportion_test(10, 20, 5, 100).is_none());
        assert_eq!(two_proportion_test(50, 50, 40, 40).unwrap().p_value, 1.0);
    }

    #[test]
    fn ks_test_matches_known_values() {
        // Identical samples: D = 0, p = 1.
        let a: Vec<f64> = (0..100).map(|i| i as f64 / 100.0).collect();
        let t = ks_test(&a, &a).unwrap();
        assert_eq!(t.statistic, 0.0);
        assert_eq!(t.p_value, 1.0);
        // A shift by 0.205 of a 0.01 grid (no ties): D = 0.21 (at x = 0.2); n_e = 50,
        // lambda = (7.0711 + 0.12 + 0.01556) * 0.21 = 1.5134, Q_KS = 2 exp(-2 lambda^2) = 0.02049.
        let b: Vec<f64> = a.iter().map(|x| x + 0.205).collect();
        let t = ks_test(&a, &b).unwrap();
        assert!((t.statistic - 0.21).abs() < 1e-9, "{t:?}");
        assert!((t.p_value - 0.02049).abs() < 1e-4, "{t:?}");
        assert!(!t.shifted);
        let c: Vec<f64> = a.iter().map(|x| x + 0.6).collect();
        assert!(ks_test(&a, &c).unwrap().shifted);
        assert!(ks_test(&a[..10], &a).is_none());
        // Ties across samples are handled (D over distinct values).
        let ties = vec![0.5; 40];
        let t = ks_test(&ties, &ties).unwrap();
        assert_eq!(t.statistic, 0.0);
    }

    #[test]
    fn shadow_agreement_counts_decisions_and_score_gaps() {
        let at = Utc::now();
        let row = |live: bool, p: f64, shadow: Option<(f64, bool)>| ReportRow {
            key_id: None,
            created_at: at,
            live,
            p_real: p,
            reason: if live { Reason::Live } else { Reason::Spoof },
            shadow,
        };
        let rows = [
            row(true, 0.9, Some((0.8, true))),
            row(false, 0.2, Some((0.6, true))),
            row(false, 0.1, Some((0.1, false))),
            row(true, 0.7, None),
        ];
        let refs: Vec<&ReportRow> = rows.iter().collect();
        let a = shadow_agreement(&refs).unwrap();
        assert_eq!((a.compared, a.agree), (3, 2));
        assert!((a.mean_abs_diff - 0.5 / 3.0).abs() < 1e-12);
        assert!((a.live_rate - 1.0 / 3.0).abs() < 1e-12);
        assert!((a.shadow_live_rate - 2.0 / 3.0).abs() < 1e-12);
        assert!(shadow_agreement(&refs[3..]).is_none());
    }

    #[test]
    fn quantiles_interpolate() {
        let s = [0.0, 1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&s, 0.5), Some(2.0));
        assert_eq!(quantile(&s, 0.1), Some(0.4));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
