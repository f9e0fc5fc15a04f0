//! `livecheck eval DATASET`: run the pipeline over a labelled dataset, print ISO/IEC 30107-3 error
//! rates and write `metrics.json`, `scores.csv` and `report.html`.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use livecheck::eval::dataset::Dataset;
use livecheck::eval::report::{self, MetricsReport, ReportParams};
use livecheck::eval::{dataset_hash_of, run_dataset, Outcome};

use super::common::PipelineArgs;

#[derive(clap::Args)]
pub struct EvalArgs {
    /// Labelled dataset: a folder with `live/` and `spoof/<attack_type>/` (files directly in
    /// `spoof/` get attack type `unknown`), or a CSV manifest with at least `file,label`
    /// (label live|spoof; optional `attack_type`; paths relative to the manifest's folder).
    #[arg(value_name = "DATASET")]
    pub dataset: PathBuf,

    /// Output folder for metrics.json, scores.csv and report.html.
    #[arg(long, value_name = "DIR", default_value = "eval-out")]
    pub out: PathBuf,

    /// Also report every figure per value of this manifest column.
    #[arg(long, value_name = "COLUMN")]
    pub group_by: Option<String>,

    /// Images checked in parallel (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// APCER target for the suggested threshold (lowest threshold with pooled APCER <= target).
    #[arg(long, value_name = "RATE", default_value_t = 0.05)]
    pub target_apcer: f64,

    /// Print metrics.json to stdout instead of the tables.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

pub fn run(args: EvalArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.target_apcer > 0.0 && args.target_apcer <= 1.0,
        "--target-apcer must be in (0, 1] (got {})",
        args.target_apcer
    );
    let threads = match args.threads {
        Some(0) => anyhow::bail!("--threads must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };

    let ds = Dataset::load(&args.dataset)?;
    if let Some(col) = &args.group_by {
        ds.check_group_column(col)?;
    }
    let pipeline = args.pipeline.build().context("cannot build the pipeline")?;
    // The identity of the model set (the pipeline refuses files whose SHA-256 differ from it).
    let model_hash = livecheck::models::Manifest::builtin()?.hash();

    let pb =
        ProgressBar::with_draw_target(Some(ds.items.len() as u64), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} images  {per_sec}  ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.enable_steady_tick(Duration::from_millis(200));
    let samples = run_dataset(&pipeline, &ds, threads, |done| pb.set_position(done as u64));
    pb.finish_and_clear();

    for s in samples.iter().take(5) {
        if let Outcome::Failed { message, .. } = &s.outcome {
            eprintln!("warning: {}: {message}", s.file);
        }
    }

    let group_by = args.group_by.as_deref();
    let params = ReportParams {
        dataset: args.dataset.display().to_string(),
        dataset_hash: dataset_hash_of(&samples),
        model_hash,
        threshold: f64::from(args.pipeline.threshold),
        target_apcer: args.target_apcer,
        group_by,
    };
    let rep = MetricsReport::build(&params, &samples);
    let paths = report::write_all(&args.out, &rep, &samples, group_by)?;

    if args.json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
    } else {
        println!("{}", report::summary_table(&rep));
        if let Some(t) = report::group_table(&rep) {
            println!("{t}");
        }
        let failures = rep.failures.len();
        if failures > 0 {
            println!("{failures} image(s) could not be checked (see report.html).");
        }
    }
    eprintln!(
        "wrote {}, {}, {}",
        paths[0].display(),
        paths[1].display(),
        paths[2].display()
    );
    Ok(ExitCode::SUCCESS)
}
