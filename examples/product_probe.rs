//! The f32 product kernel alone (`engine::tract::Product`, the 1x1 convolutions' kernel), on the
//! classifiers' 1x1 shapes: the best of many runs over the same 64-byte-aligned buffers, so
//! inputs, weights and outputs are as warm as the caches allow. It shows what the kernel's code
//! costs apart from where its data sits, against `profile_ops --nodes`, which times the same
//! layers inside the networks (data as a check leaves it).
//!
//! `cargo run --release --example product_probe` prints one line per shape (input channels `k`,
//! output channels `co`, pixels `p`): milliseconds and GMAC/s, on the widest vector path this CPU
//! has; `-- --avx2` takes the AVX2 + FMA path even where the CPU has AVX-512 (as the engine's
//! `--kernels avx2`). `-- --evict MB` writes a buffer of that many megabytes before every run, so
//! the kernel finds its inputs and outputs out of the caches, as inside a check, where the other
//! layers' data has pushed them out (the best run is still reported).
use livecheck::engine::tract::{Isa, Product};
use std::time::Instant;

/// `(k, co, pixels)`: the 128 px member's and the 80 px pair's 1x1 layers, small and large.
const SHAPES: &[(usize, usize, usize)] = &[
    (32, 103, 4096),
    (64, 231, 1024),
    (128, 308, 256),
    (64, 13, 1024),
    (13, 64, 1024),
    (128, 26, 256),
    (231, 128, 256),
];

/// `n` values starting at a 64-byte boundary of `buf`.
fn aligned(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    buf.resize(n + 16, 0.0);
    let start = buf.as_ptr().align_offset(64);
    &mut buf[start..start + n]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let isa = if args.iter().any(|a| a == "--avx2") {
        Isa::Avx2Fma
    } else {
        Isa::Avx512
    };
    let evict_mb: usize = match args.iter().position(|a| a == "--evict") {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("--evict takes a size in megabytes"))?,
        None => 0,
    };
    let mut evict = vec![0u8; evict_mb << 20];
    let (mut src_buf, mut out_buf) = (Vec::new(), Vec::new());
    for &(k, co, p) in SHAPES {
        let w: Vec<f32> = (0..co * k).map(|i| 1e-3 * (i % 13) as f32).collect();
        let product = Product::new(co, k, &w, vec![0.01; co])
            .and_then(|p| p.with_activation(false, Some(vec![0.25; co])))
            .ok_or_else(|| anyhow::anyhow!("product {k} -> {co}"))?
            .with_isa(isa);
        let src = aligned(&mut src_buf, k * p);
        for (i, v) in src.iter_mut().enumerate() {
            *v = 1e-3 * (i % 97) as f32;
        }
        let out = aligned(&mut out_buf, co * p);
        let offsets: Vec<usize> = (0..k).map(|i| i * p).collect();
        let mut best = f64::MAX;
        let runs = (2e8 / (k * co * p) as f64).max(20.0) as usize;
        for run in 0..runs {
            // One byte per cache line is enough to take the line.
            for b in evict.iter_mut().step_by(64) {
                *b = b.wrapping_add(run as u8 | 1);
            }
            std::hint::black_box(&mut evict);
            let t = Instant::now();
            product
                .run(src, &offsets, p, out, p)
                .map_err(|e| anyhow::anyhow!(e))?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "k={k:<4} co={co:<4} p={p:<5} {:.3} ms {:5.1} GMAC/s",
            best * 1e3,
            (k * co * p) as f64 / best * 1e-9
        );
    }
    Ok(())
}
