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

/// Transparent huge pages off for this process. mimalloc asks for them on its arenas
/// (`madvise(MADV_HUGEPAGE)`, honoured where the system's THP mode is `madvise` or `always`), so
/// every 2 MiB region a check's scratch buffers touched became resident in full: the service's
/// RSS stood at 159-181 MB under load, against 112-131 MB without huge pages at the same CPU per
/// check (`scripts/loadbench.sh`; docs/benchmarks.md, "Memory under load"). The same switch as `MIMALLOC_ALLOW_THP=0`, set here so that no
/// deployment has to know about it; it covers the C libraries' allocations (libjpeg, SQLite) too.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes nothing but the
    // process's huge-page policy; a failure (a kernel without it) leaves the default in place.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// Returns the memory that this process has freed, and mimalloc still holds, to the system. For
/// `serve`, once its models are loaded: parsing the ONNX files and optimising their graphs
/// allocates tens of MB that are freed at once (13.7 MB at the peak in tract's graph ordering
/// alone: `heaptrack` on `examples/engine_memory.rs`), and mimalloc keeps a thread's freed pages
/// for that thread's own reuse, so the loading's stayed resident for the life of the service.
/// Measured with `serve` loading the default set: 47-50 MB of anonymous memory when idle without
/// this call, 36-39 MB with it (docs/benchmarks.md, session 38). Once, at start-up: it walks
/// every heap, which is not for the hot path.
pub(crate) fn release_freed_memory() {
    // SAFETY: `mi_collect` takes a flag and touches only mimalloc's own free lists and pages;
    // the global allocator above is mimalloc, so these are the pages this process freed.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

fn main() -> std::process::ExitCode {
    no_transparent_huge_pages();
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
