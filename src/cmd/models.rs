//! `livecheck models verify|fetch|list`: check a model directory against the built-in manifest, or
//! fill one with verified copies.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};

use livecheck::models::{self, Manifest};

#[derive(clap::Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    pub command: ModelsCommand,
}

#[derive(clap::Subcommand)]
pub enum ModelsCommand {
    /// List the files of the built-in manifest.
    List,
    /// Verify the model files in DIR (default: the directory `serve`/`check` would use).
    Verify {
        /// Directory to check.
        #[arg(value_name = "DIR", env = "LIVECHECK_MODEL_DIR")]
        dir: Option<PathBuf>,
    },
    /// Copy or download verified model files into --to (default ./models).
    Fetch {
        /// A directory holding the files, or an http(s) URL base (files fetched as URL_BASE/<file>;
        /// files with an upstream URL in the manifest are fetched from there when --from is a URL
        /// base that lacks them).
        #[arg(long, value_name = "URL_BASE|DIR")]
        from: String,
        /// Destination directory.
        #[arg(long, default_value = "models")]
        to: PathBuf,
    },
}

pub fn run(args: ModelsArgs) -> anyhow::Result<ExitCode> {
    let manifest = Manifest::builtin()?;
    match args.command {
        ModelsCommand::List => {
            let mut t = Table::new();
            t.load_preset(UTF8_FULL_CONDENSED)
                .set_header(["file", "role", "bytes", "sha256", "source"]);
            for f in &manifest.files {
                t.add_row([
                    f.file.clone(),
                    format!("{:?}", f.role),
                    f.bytes.to_string(),
                    f.sha256.clone(),
                    f.url.clone().unwrap_or_else(|| "(no public URL)".into()),
                ]);
            }
            println!("{t}\nmodel set hash: {}", manifest.hash());
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::Verify { dir } => {
            let dir = models::resolve_dir(dir.as_deref(), &manifest)?;
            let mut bad = 0;
            for (f, r) in models::verify_dir(&dir, &manifest) {
                match r {
                    Ok(()) => println!("ok       {}", dir.join(&f.file).display()),
                    Err(e) => {
                        bad += 1;
                        println!("FAILED   {e}");
                    }
                }
            }
            if bad > 0 {
                eprintln!(
                    "{bad} model file(s) failed verification in {}",
                    dir.display()
                );
                return Ok(ExitCode::from(1));
            }
            println!(
                "all {} model files verified (model set {})",
                manifest.files.len(),
                manifest.hash()
            );
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::Fetch { from, to } => {
            let is_url = from.starts_with("http://") || from.starts_with("https://");
            for f in &manifest.files {
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
