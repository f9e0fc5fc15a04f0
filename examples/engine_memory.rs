//! The engine's memory, for a heap profiler: loads the default model set with the CLI's default
//! kernels (`auto`) and checks the live sample N times (default 3). Examples use the
//! system allocator, not the binary's mimalloc, so `heaptrack` sees every allocation:
//!
//! ```sh
//! cargo build --release --example engine_memory
//! LIVECHECK_MODEL_DIR=../shared/models heaptrack target/release/examples/engine_memory 3
//! heaptrack_print -p 1 -a 0 -l 0 -t 0 -n 12 heaptrack.engine_memory.*.zst
//! ```
//!
//! What it found is in docs/benchmarks.md (session 38).

use anyhow::Context as _;
use livecheck::engine::tract::Kernels;
use livecheck::models::LoadedSet;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = match args.get(1) {
        Some(n) => n.parse().context("the number of checks")?,
        None => 3,
    };
    let dir = std::env::var_os("LIVECHECK_MODEL_DIR").map(std::path::PathBuf::from);
    let set = LoadedSet::resolve(None, dir.as_deref())?;
    let config = livecheck::pipeline::PipelineConfig::default();
    let pipeline = livecheck::pipeline_with_kernels(set, config, Kernels::Auto)?;
    eprintln!("loaded");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let image = std::fs::read(root.join("../shared/testdata/silentface/image_T1.jpg"))
        .context("the live sample (../shared/testdata/silentface/image_T1.jpg)")?;
    for _ in 0..runs {
        std::hint::black_box(pipeline.check(&image)?);
    }
    eprintln!("checked {runs} times");
    Ok(())
}
