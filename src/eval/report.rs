//! Evaluation outputs: `metrics.json`, `scores.csv`, `report.html` (one self-contained page, no
//! script, no external resource) and the terminal summary tables.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use serde::Serialize;

use super::metrics::{compute_grouped, Label, Metrics, OperatingPoint, Sample, ScoreSweep};
use super::plot::{self, HistSeries};
use super::{Outcome, ScoredSample};

/// Errors while writing the report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write scores.csv: {0}")]
    Csv(#[from] csv::Error),
    #[error("cannot serialize metrics: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Plot(#[from] plot::PlotError),
}

/// The short statement of conventions written into `metrics.json`.
pub const CONVENTIONS: &str = "accepted as bona fide iff p_real >= threshold. bpcer/apcer/apcer_max/acer fold \
non-responses as the deployed system behaves (a non-response never accepts: live non-response = bona fide \
rejection, attack non-response = rejected attack); processed_only excludes them. eer, eer_threshold, \
bpcer_at_apcer, auc and target_apcer pool all attack types and score non-responses as -inf (never accepted). \
auc = Mann-Whitney with ties 1/2. Empty classes give null.";

/// The operating point chosen for `--target-apcer`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetApcer {
    pub target: f64,
    /// Lowest threshold whose pooled APCER is <= target (`null` when it cannot be computed).
    pub threshold: Option<f64>,
    pub apcer: Option<f64>,
    pub bpcer: Option<f64>,
}

/// Metrics per value of the `--group-by` column.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Groups {
    pub column: String,
    pub values: BTreeMap<String, Metrics>,
}

/// A sample that produced no verdict at all.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    pub file: String,
    pub reason: String,
    pub message: String,
}

/// Everything in `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricsReport {
    pub app_version: &'static str,
    pub dataset: String,
    /// `null` when a file could not be read during the run.
    pub dataset_hash: Option<String>,
    pub model_hash: String,
    #[serde(flatten)]
    pub metrics: Metrics,
    /// Pooled APCER at the configured threshold (the point marked on ROC and DET).
    pub pooled_apcer: Option<f64>,
    pub target_apcer: TargetApcer,
    /// Reason code counts per class: `{"live": {"live": n, "no_face": n, ...}, "spoof": {...}}`.
    pub reasons: BTreeMap<String, BTreeMap<String, usize>>,
    pub failures: Vec<Failure>,
    pub conventions: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<Groups>,
}

/// What [`MetricsReport::build`] needs besides the samples.
#[derive(Debug, Clone)]
pub struct ReportParams<'a> {
    pub dataset: String,
    pub dataset_hash: Option<String>,
    pub model_hash: String,
    pub threshold: f64,
    pub target_apcer: f64,
    pub group_by: Option<&'a str>,
}

impl MetricsReport {
    pub fn build(params: &ReportParams<'_>, samples: &[ScoredSample]) -> MetricsReport {
        let pure: Vec<Sample> = samples
            .iter()
            .map(|s| s.to_sample(params.group_by))
            .collect();
        let metrics = Metrics::compute(&pure, params.threshold);
        let sweep = ScoreSweep::new(&pure);
        let op: Option<OperatingPoint> = sweep.threshold_for_target_apcer(params.target_apcer);
        let mut reasons: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
        for s in samples {
            *reasons
                .entry(s.label.as_str().to_string())
                .or_default()
                .entry(s.reason().to_string())
                .or_default() += 1;
        }
        let failures = samples
            .iter()
            .filter_map(|s| match &s.outcome {
                Outcome::Failed { reason, message } => Some(Failure {
                    file: s.file.clone(),
                    reason: reason.to_string(),
                    message: message.clone(),
                }),
                Outcome::Verdict(_) => None,
            })
            .collect();
        let groups = params.group_by.map(|col| Groups {
            column: col.to_string(),
            values: compute_grouped(&pure, params.threshold, col),
        });
        MetricsReport {
            app_version: env!("CARGO_PKG_VERSION"),
            dataset: params.dataset.clone(),
            dataset_hash: params.dataset_hash.clone(),
            model_hash: params.model_hash.clone(),
            pooled_apcer: sweep.apcer_at(params.threshold),
            metrics,
            target_apcer: TargetApcer {
                target: params.target_apcer,
                threshold: op.map(|o| o.threshold),
                apcer: op.map(|o| o.apcer),
                bpcer: op.map(|o| o.bpcer),
            },
            reasons,
            failures,
            conventions: CONVENTIONS,
            groups,
        }
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> ReportError + '_ {
    move |source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `metrics.json`, `scores.csv` and `report.html` into `out` (created if needed) and
/// returns their paths.
pub fn write_all(
    out: &Path,
    report: &MetricsReport,
    samples: &[ScoredSample],
    group_by: Option<&str>,
) -> Result<[PathBuf; 3], ReportError> {
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    let json_path = out.join("metrics.json");
    let mut json = serde_json::to_string_pretty(report)?;
    json.push('\n');
    std::fs::write(&json_path, json).map_err(io_err(&json_path))?;

    let csv_path = out.join("scores.csv");
    let f = std::fs::File::create(&csv_path).map_err(io_err(&csv_path))?;
    write_scores_csv(f, samples, group_by)?;

    let html_path = out.join("report.html");
    let html = render_html(report, samples, group_by)?;
    std::fs::write(&html_path, html).map_err(io_err(&html_path))?;
    Ok([json_path, csv_path, html_path])
}

/// `p_real` as written to `scores.csv`: the pipeline's f32 in its shortest round-trip form (parse
/// it back as f32 to get the exact value); empty for a non-response.
pub fn score_text(s: &ScoredSample) -> String {
    match &s.outcome {
        Outcome::Verdict(v) if s.p_real().is_some() => format!("{}", v.p_real),
        _ => String::new(),
    }
}

/// Columns: `file,label,attack_type[,<group column>],p_real,verdict,reason`.
pub fn write_scores_csv<W: std::io::Write>(
    w: W,
    samples: &[ScoredSample],
    group_by: Option<&str>,
) -> Result<(), ReportError> {
    let extra = group_by.filter(|c| {
        !matches!(
            *c,
            "file" | "label" | "attack_type" | "p_real" | "verdict" | "reason"
        )
    });
    let mut wtr = csv::Writer::from_writer(w);
    let mut header = vec!["file", "label", "attack_type"];
    if let Some(c) = extra {
        header.push(c);
    }
    header.extend(["p_real", "verdict", "reason"]);
    wtr.write_record(&header)?;
    for s in samples {
        let mut row: Vec<String> = vec![
            s.file.clone(),
            s.label.as_str().into(),
            s.attack_type.clone(),
        ];
        if let Some(c) = extra {
            row.push(s.fields.get(c).cloned().unwrap_or_default());
        }
        row.push(score_text(s));
        row.push(s.verdict().into());
        row.push(s.reason().into());
        wtr.write_record(&row)?;
    }
    wtr.flush().map_err(|e| ReportError::Io {
        path: PathBuf::from("scores.csv"),
        source: e,
    })?;
    Ok(())
}

/// A threshold for display: a value that is exactly a 32-bit float (every score is) is shown in
/// its shortest f32 form (`0.18128543`, which `--threshold` parses back to the same value).
pub fn fmt_threshold(t: f64) -> String {
    let f = t as f32;
    if f64::from(f) == t {
        format!("{f}")
    } else {
        format!("{t}")
    }
}

/// A rate as a percentage with two decimals, `-` when undefined.
pub fn pct(v: Option<f64>) -> String {
    match v {
        Some(v) => format!("{:.2}%", v * 100.0),
        None => "-".to_string(),
    }
}

fn pct_n(v: Option<f64>, num: usize, den: usize) -> String {
    match v {
        Some(_) => format!("{} ({num}/{den})", pct(v)),
        None => "- (0 samples)".to_string(),
    }
}

fn num(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(v) => format!("{v:.digits$}"),
        None => "-".to_string(),
    }
}

/// Rows `(figure, value)` of the summary, shared by the terminal and HTML tables.
pub fn summary_rows(r: &MetricsReport) -> Vec<(String, String)> {
    let m = &r.metrics;
    let c = &m.counts;
    let mut rows = vec![
        (
            "Images".to_string(),
            format!("{} ({} live, {} spoof)", c.total, c.live, c.spoof),
        ),
        ("Threshold".to_string(), fmt_threshold(m.threshold)),
        ("BPCER".to_string(), pct_n(m.bpcer, c.live_rejected, c.live)),
    ];
    for (t, a) in &c.per_attack {
        rows.push((
            format!("APCER {t}"),
            pct_n(m.apcer.get(t).copied().flatten(), a.accepted, a.total),
        ));
    }
    rows.push((
        "APCER_max".to_string(),
        match (&m.apcer_max, &m.apcer_max_attack_type) {
            (Some(v), Some(t)) if *v > 0.0 => format!("{} ({t})", pct(m.apcer_max)),
            _ => pct(m.apcer_max),
        },
    ));
    rows.push(("ACER".to_string(), pct(m.acer)));
    let nr = &m.non_response;
    rows.push((
        "Non-response".to_string(),
        format!(
            "live {} ({}), spoof {} ({})",
            pct(nr.live),
            nr.live_count,
            pct(nr.spoof),
            nr.spoof_count
        ),
    ));
    rows.push((
        "BPCER / APCER_max, processed only".to_string(),
        format!(
            "{} / {}",
            pct(m.processed_only.bpcer),
            pct(m.processed_only.apcer_max)
        ),
    ));
    rows.push((
        "EER".to_string(),
        match m.eer_threshold {
            Some(t) => format!("{} at threshold {}", pct(m.eer), fmt_threshold(t)),
            None => "-".to_string(),
        },
    ));
    for (k, v) in &m.bpcer_at_apcer {
        let target = k
            .parse::<f64>()
            .map(|x| format!("{}", x * 100.0))
            .unwrap_or_else(|_| k.clone());
        rows.push((format!("BPCER @ APCER <= {target}%"), pct(*v)));
    }
    rows.push(("AUC".to_string(), num(m.auc, 4)));
    let ta = &r.target_apcer;
    rows.push((
        format!("Threshold for APCER <= {}%", ta.target * 100.0),
        match ta.threshold {
            Some(t) => format!(
                "{} (APCER {}, BPCER {})",
                fmt_threshold(t),
                pct(ta.apcer),
                pct(ta.bpcer)
            ),
            None => "-".to_string(),
        },
    ));
    rows
}

/// The terminal summary table.
pub fn summary_table(r: &MetricsReport) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec!["Figure", "Value"]);
    for (k, v) in summary_rows(r) {
        t.add_row(vec![k, v]);
    }
    t.to_string()
}

const GROUP_HEADER: [&str; 10] = [
    "live",
    "spoof",
    "BPCER",
    "APCER_max",
    "ACER",
    "NR live",
    "NR spoof",
    "EER",
    "AUC",
    "BPCER@APCER<=5%",
];

fn group_row(m: &Metrics) -> Vec<String> {
    vec![
        m.counts.live.to_string(),
        m.counts.spoof.to_string(),
        pct(m.bpcer),
        match (&m.apcer_max, &m.apcer_max_attack_type) {
            (Some(v), Some(t)) if *v > 0.0 => format!("{} ({t})", pct(m.apcer_max)),
            _ => pct(m.apcer_max),
        },
        pct(m.acer),
        pct(m.non_response.live),
        pct(m.non_response.spoof),
        pct(m.eer),
        num(m.auc, 4),
        pct(m.bpcer_at_apcer.get("0.05").copied().flatten()),
    ]
}

fn group_name(v: &str) -> &str {
    if v.is_empty() {
        "(empty)"
    } else {
        v
    }
}

/// The per-group terminal table (when grouping).
pub fn group_table(r: &MetricsReport) -> Option<String> {
    let g = r.groups.as_ref()?;
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    let mut header = vec![g.column.clone()];
    header.extend(GROUP_HEADER.iter().map(|s| s.to_string()));
    t.set_header(header);
    for (k, m) in &g.values {
        let mut row = vec![group_name(k).to_string()];
        row.extend(group_row(m));
        t.add_row(row);
    }
    Some(t.to_string())
}

/// HTML-escapes text for element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px auto;max-width:1200px;color:#222;padding:0 16px}\
h1{font-size:24px}h2{font-size:19px;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}\
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left;font-size:14px}td:first-child,.meta td{overflow-wrap:anywhere}\
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.plots{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}\
.plots svg{border:1px solid #eee;max-width:100%;height:auto;flex:0 1 auto}\
.meta td:first-child{font-weight:600}.note{color:#555;font-size:13px;max-width:900px}\
code{background:#f5f5f5;padding:1px 4px}";

fn table_html(out: &mut String, header: &[String], rows: &[Vec<String>]) {
    out.push_str("<table><thead><tr>");
    for h in header {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for (i, cell) in row.iter().enumerate() {
            let class = if i == 0 { "" } else { " class=\"n\"" };
            let _ = write!(out, "<td{class}>{}</td>", esc(cell));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>\n");
}

fn s(v: &str) -> String {
    v.to_string()
}

/// Renders `report.html`.
/// The self-contained HTML report: provenance, the figures, per-attack and per-reason tables,
/// groups, ROC/DET curves, score histograms, the worst-scored images and the non-responses.
pub fn render_html(
    r: &MetricsReport,
    samples: &[ScoredSample],
    group_by: Option<&str>,
) -> Result<String, ReportError> {
    let m = &r.metrics;
    let pure: Vec<Sample> = samples.iter().map(|x| x.to_sample(group_by)).collect();

    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    h.push_str("<title>livecheck evaluation report</title><style>");
    h.push_str(CSS);
    h.push_str("</style></head><body>\n<h1>livecheck evaluation report</h1>\n");
    html_provenance(&mut h, r);
    html_tables(&mut h, r);
    html_curves(&mut h, m, &pure)?;
    html_histograms(&mut h, m, &pure)?;
    html_worst_scored(&mut h, samples);
    html_non_responses(&mut h, samples);
    h.push_str("<h2>Conventions</h2>\n<p class=\"note\">");
    h.push_str(&esc(CONVENTIONS));
    h.push_str("</p>\n</body></html>\n");
    Ok(h)
}

/// Who computed what on which data.
fn html_provenance(h: &mut String, r: &MetricsReport) {
    let m = &r.metrics;
    let meta = vec![
        vec![s("livecheck version"), s(r.app_version)],
        vec![s("dataset"), r.dataset.clone()],
        vec![
            s("dataset hash"),
            r.dataset_hash
                .clone()
                .unwrap_or_else(|| s("(unavailable: a file could not be read)")),
        ],
        vec![s("model hash"), r.model_hash.clone()],
        vec![s("threshold"), fmt_threshold(m.threshold)],
    ];
    h.push_str("<table class=\"meta\"><tbody>");
    for row in &meta {
        let _ = write!(
            h,
            "<tr><td>{}</td><td><code>{}</code></td></tr>",
            esc(&row[0]),
            esc(&row[1])
        );
    }
    h.push_str("</tbody></table>\n");
}

/// The figures, per attack type, outcomes by reason, and the groups.
fn html_tables(h: &mut String, r: &MetricsReport) {
    let m = &r.metrics;
    h.push_str("<h2>Metrics</h2>\n");
    let rows: Vec<Vec<String>> = summary_rows(r)
        .into_iter()
        .map(|(k, v)| vec![k, v])
        .collect();
    table_html(h, &[s("Figure"), s("Value")], &rows);

    // Per attack type.
    h.push_str("<h2>Per attack type</h2>\n");
    let mut rows = Vec::new();
    for (t, a) in &m.counts.per_attack {
        rows.push(vec![
            t.clone(),
            a.total.to_string(),
            a.processed.to_string(),
            a.accepted.to_string(),
            pct(m.apcer.get(t).copied().flatten()),
            pct(m.processed_only.apcer.get(t).copied().flatten()),
            pct(m.non_response.per_attack.get(t).copied().flatten()),
        ]);
    }
    table_html(
        h,
        &[
            s("attack type"),
            s("images"),
            s("processed"),
            s("accepted"),
            s("APCER"),
            s("APCER (processed only)"),
            s("non-response"),
        ],
        &rows,
    );

    // Reasons.
    h.push_str("<h2>Outcomes by reason</h2>\n");
    let mut rows = Vec::new();
    for (label, counts) in &r.reasons {
        for (reason, n) in counts {
            rows.push(vec![label.clone(), reason.clone(), n.to_string()]);
        }
    }
    table_html(h, &[s("label"), s("reason"), s("images")], &rows);

    // Groups.
    if let Some(g) = &r.groups {
        let _ = writeln!(h, "<h2>Per {}</h2>", esc(&g.column));
        let mut header = vec![g.column.clone()];
        header.extend(GROUP_HEADER.iter().map(|x| x.to_string()));
        let rows: Vec<Vec<String>> = g
            .values
            .iter()
            .map(|(k, gm)| {
                let mut row = vec![group_name(k).to_string()];
                row.extend(group_row(gm));
                row
            })
            .collect();
        table_html(h, &header, &rows);
    }
}

/// ROC and DET curves, all attack types pooled, with the configured threshold marked.
fn html_curves(h: &mut String, m: &Metrics, pure: &[Sample]) -> Result<(), ReportError> {
    let sweep = ScoreSweep::new(pure);
    let curve = sweep.curve();
    let operating = match (sweep.apcer_at(m.threshold), sweep.bpcer_at(m.threshold)) {
        (Some(a), Some(b)) => Some((a, b)),
        _ => None,
    };
    h.push_str("<h2>ROC and DET</h2>\n<div class=\"plots\">");
    h.push_str(&plot::roc_svg(&curve, operating, m.auc)?);
    h.push_str(&plot::det_svg(&curve, operating, m.eer)?);
    h.push_str("</div>\n<p class=\"note\">All attack types pooled; non-responses score -inf (never accepted), so BPCER \
never falls below the live non-response rate. The red dot is the configured threshold. DET axes are normal deviates \
(probit); rates of 0 are drawn at the lower edge.</p>\n");

    Ok(())
}

/// Score histograms: live against all attacks, then against each attack type.
fn html_histograms(h: &mut String, m: &Metrics, pure: &[Sample]) -> Result<(), ReportError> {
    let live_scores: Vec<f64> = pure
        .iter()
        .filter(|x| x.label == Label::Live)
        .filter_map(|x| x.p_real)
        .collect();
    let attack_scores: Vec<f64> = pure
        .iter()
        .filter(|x| x.label == Label::Spoof)
        .filter_map(|x| x.p_real)
        .collect();
    h.push_str("<h2>Score histograms</h2>\n<div class=\"plots\">");
    h.push_str(&plot::histogram_svg(
        "live vs all attacks",
        &[
            HistSeries {
                name: "live".into(),
                scores: &live_scores,
                live: true,
            },
            HistSeries {
                name: "attacks".into(),
                scores: &attack_scores,
                live: false,
            },
        ],
        m.threshold,
        plot::HIST_SIZE,
    )?);
    for t in m.counts.per_attack.keys() {
        let scores: Vec<f64> = pure
            .iter()
            .filter(|x| x.label == Label::Spoof && &x.attack_type == t)
            .filter_map(|x| x.p_real)
            .collect();
        h.push_str(&plot::histogram_svg(
            &format!("attack type: {t}"),
            &[
                HistSeries {
                    name: "live".into(),
                    scores: &live_scores,
                    live: true,
                },
                HistSeries {
                    name: t.clone(),
                    scores: &scores,
                    live: false,
                },
            ],
            m.threshold,
            plot::HIST_SIZE,
        )?);
    }
    let _ = writeln!(
        h,
        "</div>\n<p class=\"note\">Processed samples only ({} live and {} attack non-responses have no score). \
Bars show the share of each class per bin of width 0.05.</p>",
        m.non_response.live_count, m.non_response.spoof_count
    );

    Ok(())
}

/// The ten lowest-scored live images and the ten highest-scored attacks.
fn html_worst_scored(h: &mut String, samples: &[ScoredSample]) {
    let mut lives: Vec<&ScoredSample> = samples
        .iter()
        .filter(|x| x.label == Label::Live && x.p_real().is_some())
        .collect();
    lives.sort_by(|a, b| {
        a.p_real()
            .unwrap_or(0.0)
            .total_cmp(&b.p_real().unwrap_or(0.0))
            .then(a.file.cmp(&b.file))
    });
    let mut attacks: Vec<&ScoredSample> = samples
        .iter()
        .filter(|x| x.label == Label::Spoof && x.p_real().is_some())
        .collect();
    attacks.sort_by(|a, b| {
        b.p_real()
            .unwrap_or(0.0)
            .total_cmp(&a.p_real().unwrap_or(0.0))
            .then(a.file.cmp(&b.file))
    });
    let worst = |list: &[&ScoredSample]| -> Vec<Vec<String>> {
        list.iter()
            .take(10)
            .map(|x| {
                vec![
                    x.file.clone(),
                    x.attack_type.clone(),
                    score_text(x),
                    x.verdict().to_string(),
                    x.reason().to_string(),
                ]
            })
            .collect()
    };
    let header = [
        s("file"),
        s("attack type"),
        s("p_real"),
        s("verdict"),
        s("reason"),
    ];
    h.push_str("<h2>Worst-scored live images (lowest p_real)</h2>\n");
    table_html(h, &header, &worst(&lives));
    h.push_str("<h2>Worst-scored attacks (highest p_real)</h2>\n");
    table_html(h, &header, &worst(&attacks));
}

/// The images without a liveness decision (the first [`NR_LIMIT`]).
fn html_non_responses(h: &mut String, samples: &[ScoredSample]) {
    let nrs: Vec<&ScoredSample> = samples.iter().filter(|x| x.p_real().is_none()).collect();
    let _ = writeln!(h, "<h2>Non-responses ({})</h2>", nrs.len());
    let rows: Vec<Vec<String>> = nrs
        .iter()
        .take(NR_LIMIT)
        .map(|x| {
            let detail = match &x.outcome {
                Outcome::Failed { message, .. } => message.clone(),
                Outcome::Verdict(_) => String::new(),
            };
            vec![
                x.file.clone(),
                x.label.as_str().to_string(),
                x.reason().to_string(),
                detail,
            ]
        })
        .collect();
    table_html(h, &[s("file"), s("label"), s("reason"), s("detail")], &rows);
    if nrs.len() > NR_LIMIT {
        let _ = writeln!(
            h,
            "<p class=\"note\">First {NR_LIMIT} shown; scores.csv lists all.</p>"
        );
    }
}

/// Non-responses listed in the HTML report (`scores.csv` has them all).
const NR_LIMIT: usize = 100;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::dataset::DatasetItem;
    use crate::pipeline::{Reason, Timings, Verdict};

    fn sample(
        file: &str,
        label: Label,
        attack: &str,
        p: f32,
        reason: Reason,
        src: &str,
    ) -> ScoredSample {
        let mut fields = BTreeMap::new();
        fields.insert("source".to_string(), src.to_string());
        let item = DatasetItem {
            file: file.into(),
            path: file.into(),
            label,
            attack_type: attack.into(),
            fields,
        };
        let v = Verdict {
            live: reason == Reason::Live,
            p_real: p,
            threshold: 0.5,
            reason,
            face: None,
            scores: None,
            image_size: None,
            print: None,
            timings: Timings::default(),
        };
        ScoredSample::from_result(&item, Some("00".into()), Ok(v))
    }

    fn fixture() -> Vec<ScoredSample> {
        vec![
            sample("l1<&>.jpg", Label::Live, "none", 0.9, Reason::Live, "a"),
            sample("l2.jpg", Label::Live, "none", 0.3, Reason::Spoof, "b"),
            sample("l3.jpg", Label::Live, "none", 0.0, Reason::NoFace, "a"),
            sample("s1.jpg", Label::Spoof, "print", 0.7, Reason::Live, "a"),
            sample("s2.jpg", Label::Spoof, "print", 0.1, Reason::Spoof, "b"),
            sample("s3.jpg", Label::Spoof, "replay", 0.2, Reason::Spoof, "b"),
        ]
    }

    fn params(group_by: Option<&str>) -> ReportParams<'_> {
        ReportParams {
            dataset: "ds".into(),
            dataset_hash: Some("abc".into()),
            model_hash: "m".into(),
            threshold: 0.5,
            target_apcer: 0.05,
            group_by,
        }
    }

    #[test]
    fn metrics_json_keys() {
        let samples = fixture();
        let r = MetricsReport::build(&params(Some("source")), &samples);
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        for k in [
            "threshold",
            "bpcer",
            "apcer",
            "apcer_max",
            "acer",
            "eer",
            "eer_threshold",
            "bpcer_at_apcer",
            "auc",
            "non_response",
            "dataset_hash",
            "model_hash",
            "app_version",
            "counts",
            "processed_only",
            "groups",
            "target_apcer",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        assert_eq!(v["threshold"], 0.5);
        // 2 of 3 lives rejected (0.3 and the no-face non-response).
        assert!((v["bpcer"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(v["apcer"]["print"], 0.5);
        assert_eq!(v["apcer"]["replay"], 0.0);
        assert_eq!(v["non_response"]["live_count"], 1);
        for k in ["0.01", "0.05", "0.10"] {
            assert!(v["bpcer_at_apcer"].get(k).is_some());
        }
        assert_eq!(v["groups"]["column"], "source");
        assert_eq!(v["groups"]["values"]["a"]["counts"]["total"], 3);
        assert_eq!(v["reasons"]["live"]["no_face"], 1);
        assert_eq!(v["app_version"], env!("CARGO_PKG_VERSION"));
        let no_group = serde_json::to_value(MetricsReport::build(&params(None), &samples)).unwrap();
        assert!(no_group.get("groups").is_none());
    }

    #[test]
    fn scores_csv_columns() {
        let samples = fixture();
        let mut buf = Vec::new();
        write_scores_csv(&mut buf, &samples, Some("source")).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "file,label,attack_type,source,p_real,verdict,reason"
        );
        assert_eq!(lines.next().unwrap(), "l1<&>.jpg,live,none,a,0.9,live,live");
        assert_eq!(
            lines.next().unwrap(),
            "l2.jpg,live,none,b,0.3,not_live,spoof"
        );
        assert_eq!(
            lines.next().unwrap(),
            "l3.jpg,live,none,a,,not_live,no_face"
        );
        // Grouping by a built-in column does not duplicate it.
        let mut buf = Vec::new();
        write_scores_csv(&mut buf, &samples, Some("attack_type")).unwrap();
        assert!(String::from_utf8(buf)
            .unwrap()
            .starts_with("file,label,attack_type,p_real,verdict,reason\n"));
    }

    #[test]
    fn html_is_self_contained_and_escaped() {
        let samples = fixture();
        let r = MetricsReport::build(&params(Some("source")), &samples);
        let html = render_html(&r, &samples, Some("source")).unwrap();
        assert!(html.contains("<svg"));
        assert!(!html.contains("http://") && !html.contains("https://"));
        assert!(!html.contains("<script"));
        assert!(html.contains("l1&lt;&amp;&gt;.jpg"));
        assert!(!html.contains("l1<&>"));
        // ROC, DET, live-vs-attacks and one histogram per attack type.
        assert_eq!(html.matches("<svg").count(), 5);
        assert!(html.contains("Per source"));
        // Worst attack listed first is the accepted one.
        let worst = html.find("Worst-scored attacks").unwrap();
        assert!(html[worst..].find("s1.jpg").unwrap() < html[worst..].find("s2.jpg").unwrap());
    }

    #[test]
    fn roc_and_det_fit_side_by_side() {
        // The body is max-width 1200px with 16px padding each side; ROC and DET (each with a
        // 1px border) and the 12px gap must fit in one row, and so must two histograms.
        let samples = fixture();
        let r = MetricsReport::build(&params(None), &samples);
        let html = render_html(&r, &samples, None).unwrap();
        let widths: Vec<u32> = html
            .split("<svg width=\"")
            .skip(1)
            .map(|w| w.split('"').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(widths.len(), 5);
        let content = 1200 - 2 * 16;
        for pair in widths.chunks(2) {
            let row: u32 = pair.iter().map(|w| w + 2).sum::<u32>() + 12;
            assert!(row <= content, "plots {pair:?} need {row}px > {content}px");
        }
        assert!(html.contains("max-width:1200px") && html.contains("padding:0 16px"));
        // Plots shrink with narrower windows instead of overflowing.
        assert!(html.contains(".plots svg{") && html.contains("max-width:100%;height:auto"));
    }

    #[test]
    fn thresholds_display_as_f32_when_exact() {
        assert_eq!(fmt_threshold(f64::from(0.181_285_43_f32)), "0.18128543");
        assert_eq!(fmt_threshold(0.5), "0.5");
        assert_eq!(fmt_threshold(0.1), "0.1");
        let t = f64::from(0.9_f32) + 1e-6;
        assert_eq!(fmt_threshold(t), format!("{t}"));
        assert_eq!(
            fmt_threshold(f64::from(0.181_285_43_f32))
                .parse::<f32>()
                .unwrap(),
            0.181_285_43_f32
        );
    }

    #[test]
    fn terminal_tables() {
        let samples = fixture();
        let r = MetricsReport::build(&params(Some("source")), &samples);
        let t = summary_table(&r);
        assert!(t.contains("BPCER"));
        assert!(t.contains("66.67% (2/3)"), "{t}");
        assert!(t.contains("APCER print"));
        let g = group_table(&r).unwrap();
        assert!(
            g.contains("source") && g.contains(" a ") && g.contains(" b "),
            "{g}"
        );
        assert!(group_table(&MetricsReport::build(&params(None), &samples)).is_none());
    }

    #[test]
    fn write_all_creates_files() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("nested/out");
        let samples = fixture();
        let r = MetricsReport::build(&params(None), &samples);
        let paths = write_all(&out, &r, &samples, None).unwrap();
        for p in &paths {
            assert!(p.is_file());
        }
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&paths[0]).unwrap()).unwrap();
        assert_eq!(v["dataset_hash"], "abc");
    }
}
