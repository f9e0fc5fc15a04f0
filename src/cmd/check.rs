//! `livecheck check PATH...`: one JSON line per image (or a table with `--pretty`).

use std::path::PathBuf;
use std::process::ExitCode;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use rayon::prelude::*;
use serde::Serialize;

use livecheck::fetch::Fetcher;
use livecheck::pipeline::{Scores, Timings, Verdict};
use livecheck::service::{CheckError, CheckService, Signals};
use url::Url;

use super::common::{FetchArgs, PipelineArgs};

#[derive(clap::Args)]
pub struct CheckArgs {
    /// Image files, directories (walked recursively for .jpg .jpeg .png .webp .bmp .gif .tif
    /// .tiff) or http(s) URLs. URLs are fetched under the service's address policy: only public
    /// addresses unless --allow-fetch-from opens a range.
    #[arg(required = true, value_name = "PATH|URL")]
    pub paths: Vec<String>,

    /// Images checked in parallel (default: all cores).
    #[arg(long, env = "LIVECHECK_THREADS")]
    pub threads: Option<usize>,

    /// Print a human-readable table instead of JSON lines.
    #[arg(long)]
    pub pretty: bool,

    #[command(flatten)]
    pub fetch: FetchArgs,

    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

/// One thing to check: a file on disk or an image URL.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    File(PathBuf),
    Url(Url),
}

impl Input {
    fn name(&self) -> String {
        match self {
            Input::File(p) => p.display().to_string(),
            Input::Url(u) => u.to_string(),
        }
    }
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
    /// The model set's hash (`Pipeline::model_hash`).
    pub model_set: String,
    pub timings_ms: Timings,
    /// The image signals (`data.signals` of the API but `resubmission`, which needs the audit
    /// store of `serve`).
    pub signals: Signals,
}

#[derive(Serialize)]
struct ErrorLine {
    file: String,
    error: String,
    /// The failure's code when the bytes were read: `not_an_image`, `unsupported_format`,
    /// `image_corrupt`, `too_many_pixels` or `engine_error` (absent for read and fetch failures).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

enum Outcome {
    Line(Box<CheckLine>),
    Error(ErrorLine),
}

/// Whether a command-line argument names a URL rather than a path (`http://` or `https://`,
/// any case). Other schemes are paths: a file may well be called `ftp:x.jpg`.
fn looks_like_url(s: &str) -> bool {
    let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// Expand arguments into inputs: URLs as they are, directories into their image files (sorted),
/// explicit files as given. A malformed URL is an error.
pub fn collect_inputs(args: &[String]) -> anyhow::Result<Vec<Input>> {
    let mut out = Vec::new();
    for a in args {
        if looks_like_url(a) {
            let url =
                Url::parse(a).map_err(|e| anyhow::anyhow!("{a:?} is not a valid URL: {e}"))?;
            out.push(Input::Url(url));
            continue;
        }
        let p = PathBuf::from(a);
        if p.is_dir() {
            let mut found: Vec<PathBuf> = walkdir::WalkDir::new(p)
                .follow_links(false)
                .into_iter()
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_file())
                .map(|e| e.into_path())
                .filter(|f| livecheck::pipeline::decode::has_image_extension(f))
                .collect();
            found.sort();
            out.extend(found.into_iter().map(Input::File));
        } else {
            out.push(Input::File(p));
        }
    }
    Ok(out)
}

/// Reads files and fetches URLs. The fetcher (and its runtime) exist only when a URL was given.
struct Loader {
    fetch: Option<(tokio::runtime::Runtime, Fetcher)>,
}

impl Loader {
    fn new(args: &CheckArgs, inputs: &[Input], max_bytes: usize) -> anyhow::Result<Loader> {
        if !inputs.iter().any(|i| matches!(i, Input::Url(_))) {
            return Ok(Loader { fetch: None });
        }
        let cfg = args.fetch.fetch_config(max_bytes);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        // reqwest's client must be built inside a runtime context.
        let fetcher = {
            let _guard = runtime.enter();
            Fetcher::new(cfg)?
        };
        Ok(Loader {
            fetch: Some((runtime, fetcher)),
        })
    }

    fn load(&self, input: &Input) -> Result<Vec<u8>, String> {
        match input {
            Input::File(p) => std::fs::read(p).map_err(|e| format!("cannot read file: {e}")),
            Input::Url(u) => {
                let Some((runtime, fetcher)) = &self.fetch else {
                    return Err("no fetcher configured".into());
                };
                runtime
                    .handle()
                    .block_on(fetcher.fetch(u))
                    .map(|f| f.bytes.to_vec())
                    .map_err(|e| format!("cannot fetch image: {}", e.client_message()))
            }
        }
    }
}

fn line(file: String, v: Verdict, model_set: &str, signals: Signals) -> CheckLine {
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
        model_set: model_set.to_string(),
        timings_ms: v.timings,
        signals,
    }
}

fn check_one(service: &CheckService, loader: &Loader, input: &Input) -> Outcome {
    let file = input.name();
    let bytes = match loader.load(input) {
        Ok(b) => b,
        Err(error) => {
            return Outcome::Error(ErrorLine {
                file,
                error,
                reason: None,
            })
        }
    };
    match service.check(&bytes) {
        Ok(c) => Outcome::Line(Box::new(line(
            file,
            c.verdict,
            service.model_hash(),
            c.signals,
        ))),
        // A decode failure is an input error, never a verdict (`service` module docs).
        Err(e) => Outcome::Error(ErrorLine {
            file,
            reason: Some(e.code()),
            error: match &e {
                CheckError::Input(d) => d.client_message(),
                CheckError::Engine(_) => e.to_string(),
            },
        }),
    }
}

pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let inputs = collect_inputs(&args.paths)?;
    anyhow::ensure!(
        !inputs.is_empty(),
        "no image files found in the given paths"
    );
    let service = CheckService::new(std::sync::Arc::new(args.pipeline.build()?));
    let pipeline = service.pipeline();
    let loader = Loader::new(&args, &inputs, pipeline.config().limits.max_bytes)?;
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
        "signals",
        "ms",
    ]);
    // Chunks keep the output in input order while streaming large directories.
    for chunk in inputs.chunks(256) {
        let outcomes: Vec<Outcome> = pool.install(|| {
            // One image per task (see eval::run_dataset: whole runs of images per task unbalance
            // the threads).
            chunk
                .par_iter()
                .with_max_len(1)
                .map(|i| check_one(&service, &loader, i))
                .collect()
        });
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
                        l.signals.flagged().join(","),
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
