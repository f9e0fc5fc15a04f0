//! `livecheck models verify|fetch|list`: check a model directory against the built-in manifest, or
//! fill one with verified copies.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};

use livecheck::models::{self, LoadedSet, ModelSet, BUILTIN_SETS, DEFAULT_MODEL_SET};

#[derive(clap::Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    pub command: ModelsCommand,
}

#[derive(clap::Subcommand)]
pub enum ModelsCommand {
    /// List the built-in model sets and their members (or one set, with --model-set).
    List {
        /// Show only this set (a built-in name or a set file).
        #[arg(long, env = "LIVECHECK_MODEL_SET", value_name = "NAME|FILE")]
        model_set: Option<String>,
    },
    /// Verify the files of a model set (default: the default set) where `serve`/`check` would
    /// find them.
    Verify {
        /// Directory searched first.
        #[arg(value_name = "DIR", env = "LIVECHECK_MODEL_DIR")]
        dir: Option<PathBuf>,
        /// The set to verify (a built-in name or a set file).
        #[arg(long, env = "LIVECHECK_MODEL_SET", value_name = "NAME|FILE")]
        model_set: Option<String>,
    },
    /// Copy or download a set's verified model files into --to (default ./models).
    Fetch {
        /// A directory holding the files, or an http(s) URL base (files fetched as URL_BASE/<file>;
        /// files with an upstream URL in the set are fetched from there when --from is a URL
        /// base that lacks them).
        #[arg(long, value_name = "URL_BASE|DIR")]
        from: String,
        /// Destination directory.
        #[arg(long, default_value = "models")]
        to: PathBuf,
        /// The set whose files to fetch (a built-in name or a set file).
        #[arg(long, env = "LIVECHECK_MODEL_SET", value_name = "NAME|FILE")]
        model_set: Option<String>,
    },
}

fn crop_text(m: &models::Member) -> String {
    match m.crop {
        models::CropSpec::Clamp { scale } => format!("clamp x{scale}"),
        models::CropSpec::SquareReflect { scale } => format!("square reflect x{scale}"),
    }
}

fn fusion_text(set: &ModelSet) -> String {
    match &set.fusion {
        models::Fusion::Mean { weights } => format!("weighted mean of p_real, weights {weights:?}"),
        models::Fusion::Logistic {
            intercept,
            coefficients,
        } => format!("logistic: intercept {intercept}, coefficients {coefficients:?}"),
    }
}

fn print_set(set: &ModelSet) {
    let default = if set.name == DEFAULT_MODEL_SET {
        " (default)"
    } else {
        ""
    };
    println!("{}{default}  hash {}", set.name, set.hash());
    println!("  {}", set.description);
    println!("  licence: {}", set.license);
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_header(["member", "file", "crop", "input", "output", "sha256"]);
    t.add_row([
        "detector".to_string(),
        set.detector.file.clone(),
        String::new(),
        String::new(),
        String::new(),
        set.detector.sha256[..16].to_string(),
    ]);
    if let Some(f) = &set.face_finder {
        t.add_row([
            "face finder (multi-face scan)".to_string(),
            f.model.file.clone(),
            String::new(),
            format!("{0}x{0} bgr area-shrink", f.size),
            format!("score >= {}, nms {}", f.score, f.nms),
            f.model.sha256[..16].to_string(),
        ]);
    }
    for m in &set.classifiers {
        t.add_row([
            m.name.clone(),
            m.model.file.clone(),
            crop_text(m),
            format!("{0}x{0} {1:?} {2:?}", m.size, m.channels, m.resize).to_lowercase(),
            format!("{:?} [{}] = real", m.output, m.real_index).to_lowercase(),
            m.model.sha256[..16].to_string(),
        ]);
    }
    println!("{t}");
    println!(
        "  fusion: {}; threshold {}\n",
        fusion_text(set),
        set.threshold
    );
}

pub fn run(args: ModelsArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ModelsCommand::List { model_set } => {
            match model_set {
                Some(name) => print_set(&LoadedSet::resolve(Some(&name), None)?.set),
                None => {
                    for (name, _) in BUILTIN_SETS {
                        print_set(&ModelSet::builtin(name)?);
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::Verify { dir, model_set } => {
            let set = LoadedSet::resolve(model_set.as_deref(), dir.as_deref())?;
            let mut bad = 0;
            for (f, r) in set.verify() {
                match r {
                    Ok(source) => println!("ok       {} ({source})", f.file),
                    Err(e) => {
                        bad += 1;
                        println!("FAILED   {} ({e})", f.file);
                    }
                }
            }
            if bad > 0 {
                eprintln!(
                    "{bad} model file(s) of set {} failed verification",
                    set.set.name
                );
                return Ok(ExitCode::from(1));
            }
            println!(
                "all {} model files of set {} verified (hash {})",
                set.set.files().count(),
                set.set.name,
                set.set.hash()
            );
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::Fetch {
            from,
            to,
            model_set,
        } => {
            let set = LoadedSet::resolve(model_set.as_deref(), None)?.set;
            let is_url = from.starts_with("http://") || from.starts_with("https://");
            for f in set.files() {
                let bytes = if is_url {
                    let url = format!("{}/{}", from.trim_end_matches('/'), f.file);
                    download(&url).with_context(|| format!("fetching {}", f.file))?
                } else {
                    let p = Path::new(&from).join(&f.file);
                    std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?
                };
                let path = models::install_verified(&to, f, &bytes)?;
                println!(
                    "ok       {} ({} bytes, sha256 verified)",
                    path.display(),
                    bytes.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Download one file (an operator command: the SSRF guard of the API does not apply here).
fn download(url: &str) -> anyhow::Result<Vec<u8>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(120))
            .build()?;
        let resp = client.get(url).send().await?.error_for_status()?;
        // Model files are ~2 MB; refuse anything absurd.
        const MAX: usize = 64 << 20;
        if resp.content_length().is_some_and(|l| l as usize > MAX) {
            anyhow::bail!("{url} is larger than {MAX} bytes");
        }
        let bytes = resp.bytes().await?;
        anyhow::ensure!(bytes.len() <= MAX, "{url} is larger than {MAX} bytes");
        Ok(bytes.to_vec())
    })
}
