//! What a new detector input size costs, three ways, on the live sample resized to each size:
//!
//! 1. an optimized plan from the ONNX graph with a concrete input shape (the old engine);
//! 2. the engine's way: the detector cut before its head, typed and decluttered once with
//!    symbolic H/W, then per size only symbol substitution + codegen;
//! 3. one optimized plan with symbolic H/W, run as is (no per-size build at all).
//!
//! Also the cut model built straight from ONNX with a concrete shape, to show that plans made by
//! symbol substitution run as fast as plans typed concretely from the start.
//!
//! `cargo run --release --example detector_plans`

use std::path::{Path, PathBuf};
use std::time::Instant;

use livecheck::engine::tract::{TractEngine, DETECTOR_HEADS as HEADS};
use livecheck::engine::Engine;
use livecheck::models::LoadedSet;
use livecheck::pipeline::{decode, detect};
use tract_onnx::prelude::*;

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn run_ms(plan: &Arc<TypedRunnableModel>, input: &TValue, rounds: usize) -> anyhow::Result<f64> {
    plan.run(tvec!(input.clone()))?;
    let t = Instant::now();
    for _ in 0..rounds {
        plan.run(tvec!(input.clone()))?;
    }
    Ok(ms(t) / rounds as f64)
}

fn main() -> anyhow::Result<()> {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    let dir = std::env::var_os("LIVECHECK_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| shared.join("models"));
    let path = dir.join("retinaface_silentface.onnx");
    let full = tract_onnx::onnx().model_for_path(&path)?;
    let mut cut = tract_onnx::onnx().model_for_path(&path)?;
    let (h, w) = (cut.symbols.sym("h"), cut.symbols.sym("w"));
    cut = cut
        .with_input_fact(
            0,
            f32::fact([1.to_dim(), 3.to_dim(), h.to_dim(), w.to_dim()]).into(),
        )?
        .with_outputs_by_name(HEADS)?
        .into_compact()?;
    let t = Instant::now();
    let decluttered = cut.clone().into_typed()?.into_decluttered()?;
    println!("cut detector typed + decluttered once: {:.0} ms", ms(t));
    let t = Instant::now();
    let symbolic = cut.into_optimized()?.into_runnable()?;
    println!("symbolic optimized plan built once: {:.0} ms", ms(t));

    let engine = TractEngine::load(&LoadedSet::resolve(Some("silentface"), Some(&dir))?)?;
    let bytes = std::fs::read(shared.join("testdata/silentface/image_T1.jpg"))?;
    let img = decode::decode(&bytes, &Default::default())?;
    println!(
        "\n| size | build: full ONNX / cut, concrete / cut, from symbols (engine) | run: full / cut, concrete / cut, from symbols | run: symbolic plan | engine.detect, cached |"
    );
    println!("|---|---|---|---:|---:|");
    for (dw, dh) in [(166usize, 221usize), (150, 200), (97, 131), (301, 122)] {
        let (mut s, mut input) = (Vec::new(), Vec::new());
        detect::detector_input(&img.view(), dw, dh, &mut s, &mut input);
        let tensor: TValue = Tensor::from_shape(&[1, 3, dh, dw], &input)?.into();

        let t = Instant::now();
        let plan = full
            .clone()
            .with_input_fact(0, f32::fact([1, 3, dh, dw]).into())?
            .into_optimized()?
            .into_runnable()?;
        let onnx_build = ms(t);

        let t = Instant::now();
        let subs = [
            (h.clone(), TDim::Val(dh as i64)),
            (w.clone(), TDim::Val(dw as i64)),
        ]
        .into_iter()
        .collect();
        let mut m = decluttered.set_symbols(&subs)?;
        m.declutter()?;
        m.optimize()?;
        let conc = m.into_runnable()?;
        let cut_build = ms(t);

        let t = Instant::now();
        let cut_onnx = tract_onnx::onnx()
            .model_for_path(&path)?
            .with_input_fact(0, f32::fact([1, 3, dh, dw]).into())?
            .with_outputs_by_name(HEADS)?
            .into_compact()?
            .into_optimized()?
            .into_runnable()?;
        let cut_onnx_build = ms(t);
        let run_cut_onnx = run_ms(&cut_onnx, &tensor, 20)?;
        let run_full = run_ms(&plan, &tensor, 20)?;
        let run_cut = run_ms(&conc, &tensor, 20)?;
        let run_sym = run_ms(&symbolic, &tensor, 5)?;
        engine.detect(&input, dw, dh)?;
        let t = Instant::now();
        for _ in 0..20 {
            engine.detect(&input, dw, dh)?;
        }
        let eng = ms(t) / 20.0;
        println!(
            "| {dw}x{dh} | {onnx_build:.0} / {cut_onnx_build:.0} / {cut_build:.0} ms | {run_full:.2} / {run_cut_onnx:.2} / {run_cut:.2} ms | {run_sym:.2} ms | {eng:.2} ms |"
        );
    }
    Ok(())
}
