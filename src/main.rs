//! The `livecheck` binary: command-line parsing and dispatch. Each subcommand lives in `cmd/`.

mod cmd;

use clap::{Parser, Subcommand};

/// glibc's allocator fragments under livecheck's pattern of large transient buffers (decoded
/// images) between small long-lived allocations: RSS grew by ~370 KB per image in `eval`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Self-hosted face liveness: an Adhere-compatible API, a CLI and an evaluation tool.
#[derive(Parser)]
#[command(name = "livecheck", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API.
    Serve(Box<cmd::serve::ServeArgs>),
    /// Check image files or directories and print one JSON line per image.
    Check(cmd::check::CheckArgs),
    /// Evaluate on a labelled dataset (ISO/IEC 30107-3 error rates, HTML report).
    Eval(cmd::eval::EvalArgs),
    /// Write a model set's classifier crops for a labelled dataset (training data).
    Crops(cmd::crops::CropsArgs),
    /// Manage API keys.
    Keys(cmd::keys::KeysArgs),
    /// Apply the database migrations (or check that none is pending).
    Migrate(cmd::migrate::MigrateArgs),
    /// List model sets; verify or fetch their files.
    Models(cmd::models::ModelsArgs),
    /// Signed decision receipts: make signing keys, verify receipts offline.
    Receipts(cmd::receipts::ReceiptsArgs),
    /// Audit report: volumes, live rate, reasons and scores per key and day, against the period
    /// before, with significant shifts flagged.
    Report(cmd::report::ReportArgs),
    /// Re-submission detection: make the secret that keys its stored hashes.
    Resubmission(cmd::resubmission::ResubmissionArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => cmd::serve::run(*args),
        Command::Check(args) => cmd::check::run(args),
        Command::Eval(args) => cmd::eval::run(args),
        Command::Crops(args) => cmd::crops::run(args),
        Command::Keys(args) => cmd::keys::run(args),
        Command::Migrate(args) => cmd::migrate::run(args),
        Command::Models(args) => cmd::models::run(args),
        Command::Receipts(args) => cmd::receipts::run(args),
        Command::Report(args) => cmd::report::run(args),
        Command::Resubmission(args) => cmd::resubmission::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::from(2)
        }
    }
}
