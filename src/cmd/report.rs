//! `livecheck report`: volumes, live rate, reasons and scores from the audit store, per key and
//! per day, against the preceding period, with the keys that moved significantly flagged
//! (`livecheck::report` has the tests).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use comfy_table::{presets::UTF8_FULL_CONDENSED, ContentArrangement, Table};
use livecheck::report::{self, Comparison, Report, Stats, TestResult};
use livecheck::store::Store;
use uuid::Uuid;

#[derive(clap::Args)]
pub struct ReportArgs {
    #[command(flatten)]
    database: super::common::DatabaseArg,

    /// Length of the period reported (ending at --until), compared with the period of the same
    /// length before it: a number with a unit, s, m, h or d.
    #[arg(long, default_value = "7d", value_parser = super::common::parse_window)]
    since: Duration,

    /// End of the period (RFC 3339; default: now).
    #[arg(long, value_name = "TIME")]
    until: Option<DateTime<Utc>>,

    /// Only this API key's checks.
    #[arg(long, value_name = "ID")]
    key: Option<Uuid>,

    /// Print the report as one JSON document (`livecheck::report::Report`) instead of tables.
    #[arg(long)]
    json: bool,
}

pub fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(!args.since.is_zero(), "--since must be longer than 0");
    let until = args.until.unwrap_or_else(Utc::now);
    let length = chrono::Duration::from_std(args.since).context("--since is too long")?;
    let since = until - length;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let rows = runtime.block_on(async {
        let store = Store::connect(&args.database.url).await?;
        let rows = store.report_rows(since - length, until, args.key).await;
        store.close().await;
        rows.map_err(anyhow::Error::from)
    })?;
    let report = report::build(&rows, since, until);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_tables(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_owned(), |v| format!("{:.1}%", 100.0 * v))
}

fn score(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"))
}

fn test(t: Option<TestResult>) -> String {
    t.map_or_else(
        || "too few".to_owned(),
        |t| {
            format!(
                "{:.3} (p={:.1e}){}",
                t.statistic,
                t.p_value,
                if t.shifted { " SHIFT" } else { "" }
            )
        },
    )
}

fn reasons(s: &Stats) -> String {
    let mut v: Vec<(&String, &u64)> = s.reasons.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.to_vec());
    t
}

fn comparison_row(c: &Comparison) -> Vec<String> {
    vec![
        c.key.clone(),
        format!("{} ({})", c.current.checks, c.previous.checks),
        format!(
            "{} ({})",
            pct(c.current.live_rate),
            pct(c.previous.live_rate)
        ),
        format!(
            "{} ({})",
            score(c.current.p_real_p50),
            score(c.previous.p_real_p50)
        ),
        test(c.live_rate_test),
        test(c.score_test),
        if c.flags.is_empty() {
            "-".to_owned()
        } else {
            c.flags.join(", ")
        },
    ]
}

fn print_tables(r: &Report) {
    println!(
        "Period {} .. {} against {} .. {} (tests: two-proportion z on the live rate, \
         Kolmogorov-Smirnov on p_real of live/spoof verdicts; shift when p < {}, at least {} \
         in each period)",
        r.since.format("%Y-%m-%d %H:%M"),
        r.until.format("%Y-%m-%d %H:%M"),
        r.previous_since.format("%Y-%m-%d %H:%M"),
        r.since.format("%Y-%m-%d %H:%M"),
        r.alpha,
        r.min_count
    );
    let header = [
        "key",
        "checks (before)",
        "live rate (before)",
        "p_real median (before)",
        "live-rate test z",
        "score test D",
        "shifted",
    ];
    let mut t = table(&header);
    t.add_row(comparison_row(&r.overall));
    for k in &r.keys {
        t.add_row(comparison_row(k));
    }
    println!("{t}");
    if r.overall.shadow.is_some() {
        let mut t = table(&[
            "key",
            "compared",
            "same decision",
            "mean |p_real - shadow|",
            "live rate",
            "shadow live rate",
        ]);
        for c in std::iter::once(&r.overall).chain(&r.keys) {
            if let Some(s) = &c.shadow {
                t.add_row(vec![
                    c.key.clone(),
                    s.compared.to_string(),
                    format!("{} ({})", pct(Some(s.agreement)), s.agree),
                    format!("{:.3}", s.mean_abs_diff),
                    pct(Some(s.live_rate)),
                    pct(Some(s.shadow_live_rate)),
                ]);
            }
        }
        println!("Shadow model set against the live one, this period:\n{t}");
    }
    println!(
        "Reasons: {} (before: {})",
        reasons(&r.overall.current),
        reasons(&r.overall.previous)
    );
    let mut t = table(&[
        "day",
        "key",
        "checks",
        "live rate",
        "p10",
        "p50",
        "p90",
        "reasons",
    ]);
    for d in &r.days {
        t.add_row(vec![
            d.day.clone(),
            d.key.clone(),
            d.stats.checks.to_string(),
            pct(d.stats.live_rate),
            score(d.stats.p_real_p10),
            score(d.stats.p_real_p50),
            score(d.stats.p_real_p90),
            reasons(&d.stats),
        ]);
    }
    println!("{t}");
}
