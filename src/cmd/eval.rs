//! `livecheck eval DATASET`: run the pipeline over a labelled dataset, print ISO/IEC 30107-3 error
//! rates and write `metrics.json`, `scores.csv` and `report.html`.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use livecheck::eval::calibrate::{self, CalSample, MemberWeights};
use livecheck::eval::dataset::Dataset;
use livecheck::eval::report::{self, MetricsReport, ReportParams};
use livecheck::eval::{dataset_hash_of, run_dataset, CheckService, Outcome};

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

    /// Fit the model set's fusion (logistic regression over the members' logits; live and attacks
    /// weighted equally, attack types by the square root of their counts) and the threshold for
    /// --target-apcer on this dataset, and write the calibrated set to FILE (use it with
    /// --model-set FILE). With --group-by, the threshold is chosen on leave-one-group-out scores
    /// and those figures are reported.
    #[arg(long, value_name = "FILE")]
    pub calibrate: Option<PathBuf>,

    /// How --calibrate weighs the members: `equal` (one common coefficient: the set ranks by the
    /// mean of its members' logits, and the fit sets the scale and the intercept) or `fitted`
    /// (one coefficient per member). Equal weights transferred better to unseen sources
    /// (docs/accuracy.md); `fitted` suits data from many sources like the ones you will serve.
    #[arg(long, value_name = "equal|fitted", default_value = "equal")]
    pub calibrate_weights: MemberWeights,

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
    let service = CheckService::new(std::sync::Arc::new(
        args.pipeline.build().context("cannot build the pipeline")?,
    ));
    let pipeline = service.pipeline();
    // The identity of the model set (the pipeline refuses files whose SHA-256 differ from it).
    let model_hash = pipeline.model_hash().to_string();

    let pb = super::common::image_progress(ds.items.len());
    let samples = run_dataset(&service, &ds, threads, |done| pb.set_position(done as u64));
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
        threshold: f64::from(pipeline.config().threshold),
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
    if let Some(path) = &args.calibrate {
        calibrate(pipeline, &samples, &args, &rep, path)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `--calibrate FILE`: fit, report, and write the calibrated model set.
fn calibrate(
    pipeline: &livecheck::pipeline::Pipeline,
    samples: &[livecheck::eval::ScoredSample],
    args: &EvalArgs,
    rep: &MetricsReport,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let set = pipeline.model_set();
    let mut cal = Vec::new();
    let mut before = Vec::new();
    for s in samples {
        let Outcome::Verdict(v) = &s.outcome else {
            continue;
        };
        let (Some(p), Some(scores)) = (s.p_real(), &v.scores) else {
            continue;
        };
        cal.push(CalSample {
            label: s.label,
            attack_type: s.attack_type.clone(),
            group: args
                .group_by
                .as_ref()
                .and_then(|g| s.fields.get(g).cloned()),
            p_real: scores.0.iter().map(|m| m.p_real).collect(),
        });
        before.push(p);
    }
    let c = calibrate::calibrate(
        &cal,
        &before,
        set.classifiers.len(),
        args.target_apcer,
        args.calibrate_weights,
    )?;
    let mut out = set.clone();
    out.name = format!("{}-calibrated", set.name);
    out.description = format!(
        "{} — fusion and threshold calibrated by `livecheck eval --calibrate` on {}",
        set.description,
        args.dataset.display()
    );
    out.fusion = c.fusion.clone();
    out.threshold = c.threshold as f32;
    let mut training = serde_json::Map::new();
    if let Some(t) = &set.training {
        training.insert("base".into(), t.clone());
    }
    training.insert(
        "calibration".into(),
        serde_json::json!({
            "dataset": args.dataset.display().to_string(),
            "dataset_hash": rep.dataset_hash,
            "base_set": set.name,
            "base_hash": pipeline.model_hash(),
            "group_by": args.group_by,
            "result": c,
        }),
    );
    out.training = Some(serde_json::Value::Object(training));
    let json = serde_json::to_string_pretty(&out)? + "\n";
    // Parse back through the loader's own validation before writing.
    livecheck::models::ModelSet::parse(&json, "calibrated set")?;
    std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;

    let f = |v: Option<f64>| v.map_or("–".into(), |x| format!("{x:.4}"));
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED)
        .set_header(["scores", "AUC", "EER", "BPCER@APCER 5%", "BPCER@APCER 10%"]);
    let mut row = |name: &str, s: &calibrate::Summary| {
        t.add_row([
            name.to_string(),
            f(s.auc),
            f(s.eer),
            f(s.bpcer_at_apcer_5),
            f(s.bpcer_at_apcer_10),
        ]);
    };
    row(&format!("{} fusion (before)", set.name), &c.before);
    row("calibrated, in sample", &c.in_sample);
    if let Some(o) = &c.out_of_fold {
        row(&format!("calibrated, leave-one-{}-out", c.groups), o);
    }
    println!("{t}");
    println!(
        "calibrated on {} live and {} attack images that reached the classifiers: {:?} ({} member \
         weights)\n\
         threshold {:.6} for APCER <= {} ({} scores): APCER {}, BPCER {}\nwrote {}",
        c.live,
        c.attacks,
        c.fusion,
        c.member_weights,
        c.threshold,
        c.target_apcer,
        c.threshold_from,
        f(c.apcer_at_threshold),
        f(c.bpcer_at_threshold),
        path.display()
    );
    Ok(())
}
