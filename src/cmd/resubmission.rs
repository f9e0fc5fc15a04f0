//! `livecheck resubmission`: the secret behind re-submission detection's stored hashes
//! (docs/resubmission.md).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use livecheck::resubmission::PrintKey;

#[derive(Debug, Args)]
pub struct ResubmissionArgs {
    #[command(subcommand)]
    command: ResubmissionCommand,
}

#[derive(Debug, Subcommand)]
enum ResubmissionCommand {
    /// Write a new secret file (mode 0600; never overwrites) for `serve --print-key`. Every
    /// replica of one deployment needs the same file; a new secret forgets every earlier
    /// picture (their stored hashes no longer match).
    Keygen {
        /// The secret file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

pub fn run(args: ResubmissionArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ResubmissionCommand::Keygen { out } => {
            PrintKey::generate().save(&out)?;
            eprintln!("wrote {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}
