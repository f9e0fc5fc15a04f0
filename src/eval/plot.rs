//! SVG plots for the HTML report (plotters' `SVGBackend` into a `String`), and the inverse normal
//! CDF used for DET axes.
//!
//! The SVGs are meant to be inlined in HTML, so [`finish`] drops the `xmlns` attribute (an HTML
//! parser does not need it) and the report holds no URL at all.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor;

use super::metrics::CurvePoint;

/// A plot could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw {what}: {message}")]
pub struct PlotError {
    pub what: &'static str,
    pub message: String,
}

fn err<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> PlotError {
    move |e| PlotError {
        what,
        message: e.to_string(),
    }
}

/// Inverse of the standard normal CDF (the probit function), for DET axes.
///
/// DET curves plot error rates on normal-deviate scales so that two Gaussian score distributions
/// give a straight line, and the low-error region that matters in operation is spread out. The
/// standard library has no `erfinv`, and pulling a statistics crate in for one function is not
/// worth it, so this is Peter J. Acklam's rational approximation (relative error below 1.15e-9
/// over the open interval (0,1), far below anything visible on a plot). `p <= 0` gives `-inf`,
/// `p >= 1` gives `+inf`, `NaN` gives `NaN`.
pub fn probit(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const P_LOW: f64 = 0.02425;
    if p.is_nan() {
        return f64::NAN;
    }
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    if p < P_LOW {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - P_LOW {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        let q = (-2.0 * (1.0 - p).ln()).sqrt();
        -(((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    }
}

/// DET axis range: rates are clamped into it (0 and 1 cannot be drawn on probit axes).
pub const DET_MIN: f64 = 0.0005;
pub const DET_MAX: f64 = 0.9995;
/// DET tick positions (rates).
pub const DET_TICKS: [f64; 17] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995,
    0.999,
];

/// Label priority: a tick is labelled unless it would overlap a label placed before it.
const DET_LABEL_PRIORITY: [f64; 17] = [
    0.001, 0.999, 0.01, 0.99, 0.1, 0.9, 0.4, 0.6, 0.05, 0.95, 0.2, 0.8, 0.02, 0.98, 0.005, 0.995,
    0.002,
];

/// The DET ticks to label, given each tick's pixel position along the axis. `horizontal`:
/// labels sit side by side (their width matters); otherwise stacked (their height matters).
fn det_labels(px: impl Fn(f64) -> i32, horizontal: bool) -> Vec<f64> {
    // About 6.5 px per character and 12 px per line at the 12-pt tick font, plus a gap.
    let extent = |t: f64| {
        if horizontal {
            pct_label(t).len() as f64 * 6.5 + 8.0
        } else {
            16.0
        }
    };
    let mut placed: Vec<(f64, f64)> = Vec::new(); // (centre px, extent)
    let mut out = Vec::new();
    for &t in &DET_LABEL_PRIORITY {
        let c = f64::from(px(t));
        let e = extent(t);
        if placed
            .iter()
            .all(|&(pc, pe)| (pc - c).abs() >= (pe + e) / 2.0)
        {
            placed.push((c, e));
            out.push(t);
        }
    }
    out.sort_by(f64::total_cmp);
    out
}

/// `0.05` → `"5%"`, `0.005` → `"0.5%"`.
pub fn pct_label(p: f64) -> String {
    let v = p * 100.0;
    if (v - v.round()).abs() < 1e-9 {
        format!("{}%", v.round())
    } else {
        format!("{v:.1}%")
    }
}

fn det_coord(p: f64) -> f64 {
    probit(p.clamp(DET_MIN, DET_MAX))
}

const W: u32 = 600;
const H: u32 = 480;
const LIVE_COLOR: RGBColor = RGBColor(33, 113, 181);
const ATTACK_COLOR: RGBColor = RGBColor(203, 24, 29);
const CURVE_COLOR: RGBColor = RGBColor(49, 54, 149);
const GRID: RGBColor = RGBColor(225, 225, 225);
const LIGHT_GRID: RGBColor = RGBColor(246, 246, 246);

/// Removes the namespace attribute (the only URL plotters writes) for inline use in HTML.
fn finish(svg: String) -> String {
    svg.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1)
}

fn with_svg(
    what: &'static str,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), PlotError>,
) -> Result<String, PlotError> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, size).into_drawing_area();
        root.fill(&WHITE).map_err(err(what))?;
        draw(&root)?;
        root.present().map_err(err(what))?;
    }
    Ok(finish(buf))
}

/// ROC curve: x = APCER (pooled), y = 1 - BPCER. `operating` marks `(apcer, bpcer)` at the
/// configured threshold.
pub fn roc_svg(
    curve: &[CurvePoint],
    operating: Option<(f64, f64)>,
    auc: Option<f64>,
) -> Result<String, PlotError> {
    const WHAT: &str = "ROC";
    with_svg(WHAT, (W, H), |root| {
        let caption = match auc {
            Some(a) => format!("ROC (AUC {a:.4})"),
            None => "ROC".to_string(),
        };
        let mut chart = ChartBuilder::on(root)
            .caption(caption, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)
            .map_err(err(WHAT))?;
        chart
            .configure_mesh()
            .light_line_style(LIGHT_GRID)
            .x_desc("APCER (all attack types pooled)")
            .y_desc("1 - BPCER")
            .x_label_formatter(&|v| pct_label(*v))
            .y_label_formatter(&|v| pct_label(*v))
            .draw()
            .map_err(err(WHAT))?;
        chart
            .draw_series(LineSeries::new(
                [(0.0, 0.0), (1.0, 1.0)],
                ShapeStyle::from(&RGBColor(170, 170, 170)).stroke_width(1),
            ))
            .map_err(err(WHAT))?;
        // Points by descending threshold: from (0,0) (reject all) to (1,1).
        let pts: Vec<(f64, f64)> = curve
            .iter()
            .rev()
            .map(|p| (p.apcer, 1.0 - p.bpcer))
            .collect();
        chart
            .draw_series(LineSeries::new(
                pts,
                ShapeStyle::from(&CURVE_COLOR).stroke_width(2),
            ))
            .map_err(err(WHAT))?
            .label("ROC")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], CURVE_COLOR.stroke_width(2)));
        if let Some((a, b)) = operating {
            chart
                .draw_series(std::iter::once(Circle::new(
                    (a, 1.0 - b),
                    5,
                    ATTACK_COLOR.filled(),
                )))
                .map_err(err(WHAT))?
                .label("configured threshold")
                .legend(|(x, y)| Circle::new((x + 9, y), 4, ATTACK_COLOR.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err(WHAT))?;
        Ok(())
    })
}

/// DET curve on normal-deviate axes: x = APCER (pooled), y = BPCER, ticks labelled in percent.
/// Rates of 0 or 1 are drawn at the edge of the axis range ([`DET_MIN`], [`DET_MAX`]).
pub fn det_svg(
    curve: &[CurvePoint],
    operating: Option<(f64, f64)>,
    eer: Option<f64>,
) -> Result<String, PlotError> {
    const WHAT: &str = "DET";
    with_svg(WHAT, (W, H), |root| {
        let caption = match eer {
            Some(e) => format!("DET (EER {})", pct2(e)),
            None => "DET".to_string(),
        };
        let lo = probit(DET_MIN);
        let hi = probit(DET_MAX);
        let mut chart = ChartBuilder::on(root)
            .caption(caption, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(lo..hi, lo..hi)
            .map_err(err(WHAT))?;
        // Custom mesh: grid lines and labels at round percentages.
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(0)
            .y_labels(0)
            .x_desc("APCER (all attack types pooled)")
            .y_desc("BPCER")
            .draw()
            .map_err(err(WHAT))?;
        let grid = ShapeStyle::from(&GRID).stroke_width(1);
        for &t in &DET_TICKS {
            let v = probit(t);
            chart
                .draw_series(LineSeries::new([(v, lo), (v, hi)], grid))
                .map_err(err(WHAT))?;
            chart
                .draw_series(LineSeries::new([(lo, v), (hi, v)], grid))
                .map_err(err(WHAT))?;
        }
        let font = ("sans-serif", 12).into_font().color(&BLACK);
        // Grid lines at every tick; labels only where they do not collide (the probit scale
        // crowds the ends), placed in priority order so the extremes and round values win.
        let x_px = |t: f64| chart.backend_coord(&(probit(t), lo)).0;
        let y_px = |t: f64| chart.backend_coord(&(lo, probit(t))).1;
        for &t in &det_labels(x_px, true) {
            let (px, py) = chart.backend_coord(&(probit(t), lo));
            root.draw(&Text::new(
                pct_label(t),
                (px, py + 6),
                font.clone().pos(text_anchor::Pos::new(
                    text_anchor::HPos::Center,
                    text_anchor::VPos::Top,
                )),
            ))
            .map_err(err(WHAT))?;
        }
        for &t in &det_labels(y_px, false) {
            let (px, py) = chart.backend_coord(&(lo, probit(t)));
            root.draw(&Text::new(
                pct_label(t),
                (px - 6, py),
                font.clone().pos(text_anchor::Pos::new(
                    text_anchor::HPos::Right,
                    text_anchor::VPos::Center,
                )),
            ))
            .map_err(err(WHAT))?;
        }
        // EER diagonal.
        chart
            .draw_series(LineSeries::new(
                [(lo, lo), (hi, hi)],
                ShapeStyle::from(&RGBColor(170, 170, 170)).stroke_width(1),
            ))
            .map_err(err(WHAT))?;
        let pts: Vec<(f64, f64)> = curve
            .iter()
            .filter(|p| p.threshold.is_finite() || p.threshold == f64::INFINITY)
            .map(|p| (det_coord(p.apcer), det_coord(p.bpcer)))
            .collect();
        chart
            .draw_series(LineSeries::new(
                pts,
                ShapeStyle::from(&CURVE_COLOR).stroke_width(2),
            ))
            .map_err(err(WHAT))?
            .label("DET")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], CURVE_COLOR.stroke_width(2)));
        if let Some((a, b)) = operating {
            chart
                .draw_series(std::iter::once(Circle::new(
                    (det_coord(a), det_coord(b)),
                    5,
                    ATTACK_COLOR.filled(),
                )))
                .map_err(err(WHAT))?
                .label("configured threshold")
                .legend(|(x, y)| Circle::new((x + 9, y), 4, ATTACK_COLOR.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err(WHAT))?;
        Ok(())
    })
}

fn pct2(v: f64) -> String {
    format!("{:.2}%", v * 100.0)
}

/// Histogram bin count over [0, 1].
pub const BINS: usize = 20;

/// Share of `scores` in each of [`BINS`] equal bins over [0,1] (1.0 falls in the last bin,
/// values outside are clamped). All zeros when `scores` is empty.
pub fn bin_fractions(scores: &[f64]) -> [f64; BINS] {
    let mut out = [0.0; BINS];
    let finite: Vec<f64> = scores.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return out;
    }
    for v in &finite {
        let i = ((v.clamp(0.0, 1.0) * BINS as f64) as usize).min(BINS - 1);
        out[i] += 1.0;
    }
    for o in &mut out {
        *o /= finite.len() as f64;
    }
    out
}

/// One class (or attack type) in a histogram.
pub struct HistSeries<'a> {
    pub name: String,
    pub scores: &'a [f64],
    /// `true` for the live class (blue), `false` for attacks (red).
    pub live: bool,
}

/// Overlaid score histograms (share of each series per bin, so classes of different sizes
/// compare), with the threshold as a vertical line.
pub fn histogram_svg(
    title: &str,
    series: &[HistSeries<'_>],
    threshold: f64,
    size: (u32, u32),
) -> Result<String, PlotError> {
    const WHAT: &str = "histogram";
    with_svg(WHAT, size, |root| {
        let binned: Vec<[f64; BINS]> = series.iter().map(|s| bin_fractions(s.scores)).collect();
        let ymax = binned
            .iter()
            .flat_map(|b| b.iter().copied())
            .fold(0.0f64, f64::max)
            .max(0.05)
            * 1.1;
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..1f64, 0f64..ymax)
            .map_err(err(WHAT))?;
        chart
            .configure_mesh()
            .light_line_style(LIGHT_GRID)
            .x_desc("p_real")
            .y_desc("share of class")
            .y_label_formatter(&|v| pct_label((*v * 1000.0).round() / 1000.0))
            .draw()
            .map_err(err(WHAT))?;
        let w = 1.0 / BINS as f64;
        for (s, b) in series.iter().zip(&binned) {
            let color = if s.live { LIVE_COLOR } else { ATTACK_COLOR };
            let n = s.scores.iter().filter(|v| v.is_finite()).count();
            chart
                .draw_series(
                    b.iter()
                        .enumerate()
                        .filter(|(_, f)| **f > 0.0)
                        .map(|(i, f)| {
                            Rectangle::new(
                                [(i as f64 * w, 0.0), ((i + 1) as f64 * w, *f)],
                                color.mix(0.35).filled(),
                            )
                        }),
                )
                .map_err(err(WHAT))?
                .label(format!("{} (n={n})", s.name))
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.mix(0.5).filled())
                });
            // Outline, so overlapping bars stay readable.
            let mut outline = vec![(0.0, 0.0)];
            for (i, f) in b.iter().enumerate() {
                outline.push((i as f64 * w, *f));
                outline.push(((i + 1) as f64 * w, *f));
            }
            outline.push((1.0, 0.0));
            chart
                .draw_series(LineSeries::new(
                    outline,
                    ShapeStyle::from(&color).stroke_width(1),
                ))
                .map_err(err(WHAT))?;
        }
        if threshold.is_finite() && (0.0..=1.0).contains(&threshold) {
            chart
                .draw_series(LineSeries::new(
                    [(threshold, 0.0), (threshold, ymax)],
                    ShapeStyle::from(&BLACK).stroke_width(2),
                ))
                .map_err(err(WHAT))?
                .label(format!(
                    "threshold {}",
                    super::report::fmt_threshold(threshold)
                ))
                .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLACK.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperMiddle)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err(WHAT))?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Standard normal CDF by numerical integration (Simpson), independent of `probit`.
    fn phi(x: f64) -> f64 {
        let n = 20_000;
        let (a, b) = (-12.0f64, x);
        let h = (b - a) / n as f64;
        let f = |t: f64| (-t * t / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let mut s = f(a) + f(b);
        for i in 1..n {
            let t = a + i as f64 * h;
            s += if i % 2 == 1 { 4.0 } else { 2.0 } * f(t);
        }
        s * h / 3.0
    }

    #[test]
    fn probit_known_values() {
        assert!(probit(0.5).abs() < 1e-9);
        assert!((probit(0.975) - 1.959_963_984_540_054).abs() < 1e-8);
        assert!((probit(0.8413447460685429) - 1.0).abs() < 1e-8);
        assert!((probit(0.001) + 3.090_232_306_167_813).abs() < 1e-8);
        assert!((probit(1e-6) + 4.753_424_308_822_899).abs() < 1e-7);
        assert_eq!(probit(0.0), f64::NEG_INFINITY);
        assert_eq!(probit(1.0), f64::INFINITY);
        assert!(probit(f64::NAN).is_nan());
    }

    #[test]
    fn probit_inverts_cdf_symmetric_and_monotone() {
        let mut prev = f64::NEG_INFINITY;
        for i in 1..200 {
            let p = i as f64 / 200.0;
            let x = probit(p);
            assert!(x > prev);
            prev = x;
            assert!((probit(1.0 - p) + x).abs() < 1e-8, "symmetry at {p}");
            assert!((phi(x) - p).abs() < 1e-8, "phi(probit({p})) = {}", phi(x));
        }
        // Region boundaries of the approximation.
        for p in [0.02425, 0.024_250_1, 0.975_75, 0.975_749_9] {
            assert!((phi(probit(p)) - p).abs() < 1e-8);
        }
    }

    #[test]
    fn labels_and_bins() {
        assert_eq!(pct_label(0.05), "5%");
        assert_eq!(pct_label(0.001), "0.1%");
        assert_eq!(pct_label(0.995), "99.5%");
        let b = bin_fractions(&[0.0, 0.04, 0.05, 1.0, f64::NEG_INFINITY]);
        assert_eq!(b[0], 0.5);
        assert_eq!(b[1], 0.25);
        assert_eq!(b[BINS - 1], 0.25);
        assert_eq!(bin_fractions(&[]).iter().sum::<f64>(), 0.0);
    }

    #[test]
    fn svgs_render_without_urls() {
        let curve = vec![
            CurvePoint {
                threshold: 0.1,
                apcer: 1.0,
                bpcer: 0.0,
            },
            CurvePoint {
                threshold: 0.5,
                apcer: 0.2,
                bpcer: 0.1,
            },
            CurvePoint {
                threshold: f64::INFINITY,
                apcer: 0.0,
                bpcer: 1.0,
            },
        ];
        for svg in [
            roc_svg(&curve, Some((0.2, 0.1)), Some(0.9)).unwrap(),
            det_svg(&curve, Some((0.2, 0.1)), Some(0.15)).unwrap(),
            det_svg(&[], None, None).unwrap(),
            histogram_svg(
                "scores",
                &[
                    HistSeries {
                        name: "live".into(),
                        scores: &[0.9, 0.8],
                        live: true,
                    },
                    HistSeries {
                        name: "print".into(),
                        scores: &[],
                        live: false,
                    },
                ],
                0.5,
                (500, 300),
            )
            .unwrap(),
        ] {
            assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
            assert!(svg.trim_end().ends_with("</svg>"));
            assert!(!svg.contains("http"));
        }
        let det = det_svg(&curve, None, None).unwrap();
        for tick in ["0.1%", "1%", "10%", "99.9%"] {
            assert!(
                det.contains(&format!("\n{tick}\n")),
                "DET lacks tick {tick}"
            );
        }
    }

    #[test]
    fn det_labels_do_not_overlap() {
        // A 400 px axis over the DET range.
        let (lo, hi) = (probit(DET_MIN), probit(DET_MAX));
        let px = |t: f64| ((probit(t) - lo) / (hi - lo) * 400.0).round() as i32;
        let labels = det_labels(px, true);
        assert!(labels.contains(&0.001) && labels.contains(&0.999) && labels.contains(&0.1));
        assert!(
            labels.len() < DET_TICKS.len(),
            "some crowded ticks must be dropped"
        );
        for w in labels.windows(2) {
            let gap = f64::from(px(w[1]) - px(w[0]));
            let need = (pct_label(w[0]).len() + pct_label(w[1]).len()) as f64 * 6.5 / 2.0 + 8.0;
            assert!(gap >= need, "{} and {} overlap", w[0], w[1]);
        }
        // Every labelled value is a tick.
        assert!(labels.iter().all(|t| DET_TICKS.contains(t)));
    }
}
