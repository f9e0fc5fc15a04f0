//! Detector plan cost per input size: a fully optimized plan against a decluttered-only one
//! (build time, run time, outputs). A symbolic-shape plan fails to analyse (Flatten node), so
//! plans are per size. `cargo run --release --example symbolic_detector`

use std::path::{Path, PathBuf};
use std::time::Instant;

use livecheck::pipeline::{decode, detect};
use tract_onnx::prelude::*;

fn main() -> anyhow::Result<()> {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    let dir = std::env::var_os("LIVECHECK_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| shared.join("models"));
    let model = tract_onnx::onnx().model_for_path(dir.join("retinaface_silentface.onnx"))?;
    let bytes = std::fs::read(shared.join("testdata/silentface/image_T1.jpg"))?;
    let img = decode::decode(&bytes, &Default::default())?;
    for (dw, dh) in [(166usize, 221usize), (150, 200), (97, 131)] {
        let (mut s, mut input) = (Vec::new(), Vec::new());
        detect::detector_input(&img.view(), dw, dh, &mut s, &mut input);
        let tensor: TValue = Tensor::from_shape(&[1, 3, dh, dw], &input)?.into();
        let t = Instant::now();
        let plan = model
            .clone()
            .with_input_fact(0, f32::fact([1, 3, dh, dw]).into())?
            .into_optimized()?
            .into_runnable()?;
        let build = t.elapsed().as_secs_f64() * 1e3;
        let time = |p: &Arc<TypedRunnableModel>| -> anyhow::Result<(f64, Vec<f32>)> {
            p.run(tvec!(tensor.clone()))?;
            let t = Instant::now();
            let mut out = None;
            for _ in 0..20 {
                out = Some(p.run(tvec!(tensor.clone()))?);
            }
            let out = out.ok_or_else(|| anyhow::anyhow!("no run"))?;
            let conf: Vec<f32> = out[1]
                .to_plain_array_view::<f32>()?
                .iter()
                .copied()
                .collect();
            Ok((t.elapsed().as_secs_f64() * 1e3 / 20.0, conf))
        };
        let (c_ms, c_out) = time(&plan)?;
        let t = Instant::now();
        let typed = model
            .clone()
            .with_input_fact(0, f32::fact([1, 3, dh, dw]).into())?
            .into_typed()?
            .into_decluttered()?
            .into_runnable()?;
        let tbuild = t.elapsed().as_secs_f64() * 1e3;
        let (s_ms, s_out) = time(&typed)?;
        let diff = c_out
            .iter()
            .zip(&s_out)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        println!(
            "{dw}x{dh}: concrete build {build:.0} ms, run {c_ms:.2} ms; decluttered-only build {tbuild:.0} ms, run {s_ms:.2} ms; max |diff| {diff:e}"
        );
    }
    Ok(())
}
