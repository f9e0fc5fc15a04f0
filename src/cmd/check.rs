//! `livecheck check PATH...`: one JSON line per image (or a table with `--pretty`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use rayon::prelude::*;
use serde::Serialize;

use livecheck::pipeline::{Pipeline, PipelineError, Scores, Timings, Verdict};

use super::common::PipelineArgs;

#[derive(clap::Args)]
pub struct CheckArgs {
    /// Image files or directories (walked recursively for .jpg .jpeg .png .webp .bmp .gif .tif .tiff).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// Images checked in parallel (default: all cores).
    #[arg(long, env = "LIVECHECK_THREADS")]
    pub threads: Option<usize>,

    /// Print a human-readable table instead of JSON lines.
    #[arg(long)]
    pub pretty: bool,

    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

/// One output line. Field names are stable: see README "check output".
#[derive(Serialize)]
pub struct CheckLine {
    pub file: String,
    pub live: bool,
    pub p_real: f32,
    pub confidence: f32,
    pub bbox: Option<[i32; 4]>,
    pub detector_confidence: Option<f32>,
    /// Upright image size `[w, h]`.
    pub image_size: Option<[u32; 2]>,
    pub reason: &'static str,
    pub detail: &'static str,
    pub scores: Option<Scores>,
    pub timings_ms: Timings,
}

#[derive(Serialize)]
struct ErrorLine {
    file: String,
    error: String,
}

enum Outcome {
    Line(CheckLine),
    Error(ErrorLine),
}

const EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"];

/// Expand directories into their image files (sorted); explicit files are kept as given.
pub fn collect_inputs(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = walkdir::WalkDir::new(p)
                .follow_links(false)
                .into_iter()
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_file())
                .map(|e| e.into_path())
                .filter(|f| {
                    f.extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
                })
                .collect();
            found.sort();
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    out
}

fn line(file: String, v: Verdict) -> CheckLine {
    CheckLine {
        file,
        live: v.live,
        p_real: v.p_real,
        confidence: v.p_real,
        bbox: v.face.map(|f| f.bbox),
        detector_confidence: v.face.map(|f| f.confidence),
        image_size: v.image_size,
        reason: v.reason.code(),
        detail: v.reason.sentence(),
        scores: v.scores,
        timings_ms: v.timings,
    }
}

fn check_one(pipeline: &Pipeline, path: &Path) -> Outcome {
    let file = path.display().to_string();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            return Outcome::Error(ErrorLine {
                file,
                error: format!("cannot read file: {e}"),
            })
        }
    };
    match pipeline.check(&bytes) {
        Ok(v) => Outcome::Line(line(file, v)),
        // An image that does not decode (corrupt, unsupported, too large) is a quality outcome.
        Err(PipelineError::Decode(e)) => match e.reason() {
            Some(r) => Outcome::Line(line(file, Verdict::quality(r, pipeline.config().threshold))),
            None => Outcome::Error(ErrorLine {
                file,
                error: e.to_string(),
            }),
        },
        Err(e) => Outcome::Error(ErrorLine {
            file,
            error: e.to_string(),
        }),
    }
}

pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let inputs = collect_inputs(&args.paths);
    anyhow::ensure!(
        !inputs.is_empty(),
        "no image files found in the given paths"
    );
    let pipeline = args.pipeline.build()?;
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()?;

    let mut failures = 0usize;
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "file",
        "verdict",
        "p_real",
        "reason",
        "bbox (x,y,w,h)",
        "face conf",
        "ms",
    ]);
    // Chunks keep the output in input order while streaming large directories.
    for chunk in inputs.chunks(256) {
        let outcomes: Vec<Outcome> =
            pool.install(|| chunk.par_iter().map(|p| check_one(&pipeline, p)).collect());
        for o in outcomes {
            match o {
                Outcome::Line(l) if args.pretty => {
                    table.add_row([
                        l.file.clone(),
                        if l.live {
                            "LIVE".into()
                        } else {
                            "not live".into()
                        },
                        format!("{:.4}", l.p_real),
                        l.reason.to_string(),
                        l.bbox
                            .map(|b| format!("{},{},{},{}", b[0], b[1], b[2], b[3]))
                            .unwrap_or_default(),
                        l.detector_confidence
                            .map(|c| format!("{c:.3}"))
                            .unwrap_or_default(),
                        format!("{:.1}", l.timings_ms.total),
                    ]);
                }
                Outcome::Line(l) => println!("{}", serde_json::to_string(&l)?),
                Outcome::Error(e) => {
                    failures += 1;
                    if args.pretty {
                        table.add_row([e.file, "ERROR".into(), String::new(), e.error]);
                    } else {
                        println!("{}", serde_json::to_string(&e)?);
                    }
                }
            }
        }
    }
    if args.pretty {
        println!("{table}");
    }
    if failures > 0 {
        eprintln!("{failures} of {} inputs failed", inputs.len());
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
