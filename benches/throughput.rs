//! End-to-end throughput: the three samples on one core, and the devset on one core and on all
//! cores, with the per-stage split. Run by `scripts/bench.sh` next to the Python baseline, whose
//! time it is reported against; `cargo bench --bench throughput` alone prints JSON.
//! `LIVECHECK_MODEL_SET` (a built-in name or a set file) picks the model set; the default set
//! otherwise.

use std::path::{Path, PathBuf};
use std::time::Instant;

use livecheck::pipeline::{Pipeline, PipelineConfig, Timings};
use rayon::prelude::*;

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

/// The image files directly in `dir` (not its subfolders: `testdata/silentface/reference` holds
/// 19 `.npy`/`.json` files that are not images). Every one must decode: a file the pipeline
/// refuses would count in the denominator with no time in the numerator.
fn images(dir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    ["jpg", "jpeg", "png", "webp", "bmp"].contains(&e.to_ascii_lowercase().as_str())
                })
        })
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// Mean per-image milliseconds of each stage over `imgs`, single-threaded, `rounds` times.
fn single(p: &Pipeline, imgs: &[Vec<u8>], rounds: usize) -> (f64, Timings) {
    let mut sum = Timings::default();
    let t0 = Instant::now();
    for _ in 0..rounds {
        for b in imgs {
            let v = p.check(b).expect("benchmark images must all decode");
            sum.decode += v.timings.decode;
            sum.detect += v.timings.detect;
            sum.classify += v.timings.classify;
            sum.total += v.timings.total;
        }
    }
    let n = (rounds * imgs.len()) as f64;
    let wall = t0.elapsed().as_secs_f64() * 1e3 / n;
    let mean = Timings {
        decode: sum.decode / n,
        detect: sum.detect / n,
        classify: sum.classify / n,
        total: sum.total / n,
    };
    (wall, mean)
}

fn parallel(p: &Pipeline, imgs: &[Vec<u8>], threads: usize, rounds: usize) -> f64 {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    // Untimed first pass: warms this pool's threads (their thread-local buffers), as the
    // single-threaded figures are warmed.
    pool.install(|| imgs.par_iter().for_each(|b| drop(p.check(b))));
    let t0 = Instant::now();
    for _ in 0..rounds {
        // One image per task, as `check` and `eval` do (default splitting: 1.57x on 2 cores).
        pool.install(|| {
            imgs.par_iter()
                .with_max_len(1)
                .for_each(|b| drop(p.check(b)))
        });
    }
    (rounds * imgs.len()) as f64 / t0.elapsed().as_secs_f64()
}

fn main() {
    // `cargo test --benches` runs bench targets with `--bench` absent: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = std::env::var_os("LIVECHECK_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| shared().join("models"));
    let set = std::env::var("LIVECHECK_MODEL_SET").ok();
    let p =
        livecheck::load_pipeline(set.as_deref(), Some(&dir), PipelineConfig::default()).unwrap();
    let samples = images(&shared().join("testdata/silentface"));
    let devset: Vec<Vec<u8>> = ["live", "spoof"]
        .iter()
        .flat_map(|d| images(&shared().join("testdata/devset").join(d)))
        .collect();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    single(&p, &samples, 3); // warm-up: plans, thread-local buffers
    single(&p, &devset, 1); // warm-up: detector plans for every devset size
    let (samples_ms, samples_split) = single(&p, &samples, 30);
    let (devset_ms, devset_split) = single(&p, &devset, 2);
    let ips1 = parallel(&p, &devset, 1, 2);
    let ipsn = parallel(&p, &devset, cores, 2);
    let out = serde_json::json!({
        "model_set": p.model_set().name,
        "samples_per_image_ms": samples_ms,
        "samples_split_ms": samples_split,
        "devset_images": devset.len(),
        "devset_per_image_ms": devset_ms,
        "devset_split_ms": devset_split,
        "devset_images_per_s_1_thread": ips1,
        "devset_images_per_s_all_cores": ipsn,
        "cores": cores,
    });
    println!("{out}");
}
