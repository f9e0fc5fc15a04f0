//! Per-operator profile of the four models in tract, on the live sample's real inputs:
//! where inference time goes. `cargo run --release --example profile_ops` profiles the plans as
//! the engine builds them (PReLU as mul + max, depthwise convolutions replaced by
//! `Depthwise3x3`; the detector whole, at its exact size, without canvas masks);
//! `-- --stock` profiles tract's own import of the ONNX files; `-- --nodes` also lists the
//! slowest nodes with their input shapes.
//!
//! Uses tract's `run_plan_with_eval` hook to time every node, then sums by operator kind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use livecheck::engine::tract::optimized_plan;
use livecheck::pipeline::{self, decode, detect};
use tract_onnx::prelude::*;

fn main() -> anyhow::Result<()> {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    let dir = std::env::var_os("LIVECHECK_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models"));
    let bytes = std::fs::read(shared.join("testdata/silentface/image_T1.jpg"))?;
    let img = decode::decode(&bytes, &Default::default())?;
    let (dw, dh) = detect::detector_input_size(img.width as usize, img.height as usize);
    let (mut scratch, mut det_in) = (Vec::new(), Vec::new());
    detect::detector_input(&img.view(), dw, dh, &mut scratch, &mut det_in);
    // Each classifier's input for the live sample's face box: the Silent-Face pair's (80 px)
    // and the default set's third member's (128 px).
    let input = |member: &livecheck::models::Member| -> anyhow::Result<Vec<f32>> {
        let (mut patch, mut crop, mut input) = (Vec::new(), Vec::new(), Vec::new());
        let bbox = [106, 147, 207, 213];
        pipeline::member_input(&img.view(), bbox, member, &mut patch, &mut crop, &mut input)
            .ok_or_else(|| anyhow::anyhow!("crop"))?;
        Ok(input)
    };
    let cls_in = input(&livecheck::models::ModelSet::builtin("silentface")?.classifiers[0])?;
    let default_set = livecheck::models::ModelSet::builtin(livecheck::models::DEFAULT_MODEL_SET)?;
    let cls_in128 = input(&default_set.classifiers[2])?;

    let stock = std::env::args().any(|a| a == "--stock");
    let nodes = std::env::args().any(|a| a == "--nodes");
    let rounds = 50;
    for (file, shape, input) in [
        ("retinaface_silentface.onnx", [1, 3, dh, dw], &det_in),
        ("MiniFASNetV2.onnx", [1, 3, 80, 80], &cls_in),
        ("MiniFASNetV1SE.onnx", [1, 3, 80, 80], &cls_in),
        (
            "faceantispoof_minifas_97.80.onnx",
            [1, 3, 128, 128],
            &cls_in128,
        ),
    ] {
        let plan = if stock {
            tract_onnx::onnx()
                .model_for_path(dir.join(file))?
                .with_input_fact(0, f32::fact(shape).into())?
                .into_optimized()?
                .into_runnable()?
        } else {
            optimized_plan(&std::fs::read(dir.join(file))?, file, shape)?
        };
        let tensor: TValue = Tensor::from_shape(&shape, input)?.into();
        let mut state = tract_onnx::tract_core::plan::SimpleState::new(&plan)?;
        let mut per_op: BTreeMap<String, (Duration, usize)> = BTreeMap::new();
        let mut per_node: BTreeMap<usize, (Duration, String)> = BTreeMap::new();
        let t0 = Instant::now();
        for _ in 0..rounds {
            state.run_plan_with_eval(tvec!(tensor.clone()), |ctx, op_state, node, inputs| {
                let shapes: Vec<String> =
                    inputs.iter().map(|i| format!("{:?}", i.shape())).collect();
                let t = Instant::now();
                let r = tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
                let e = per_op.entry(node.op().name().to_string()).or_default();
                e.0 += t.elapsed();
                e.1 += 1;
                let n = per_node.entry(node.id).or_default();
                n.0 += t.elapsed();
                if n.1.is_empty() {
                    n.1 = format!("{} {} <- {}", node.op().name(), node.name, shapes.join(" "));
                }
                r
            })?;
        }
        let total = t0.elapsed() / rounds;
        let mut rows: Vec<_> = per_op.into_iter().collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.1 .0));
        println!(
            "\n{file} {shape:?}: {:.2} ms per run",
            total.as_secs_f64() * 1e3
        );
        for (op, (d, n)) in rows.iter().take(8) {
            let ms = d.as_secs_f64() * 1e3 / rounds as f64;
            println!(
                "  {op:<28} {ms:>7.3} ms  ({:>4.1}%, {} nodes)",
                100.0 * ms / (total.as_secs_f64() * 1e3),
                n / rounds as usize
            );
        }
        if nodes {
            let mut rows: Vec<_> = per_node.into_values().collect();
            rows.sort_by_key(|r| std::cmp::Reverse(r.0));
            println!("  slowest nodes:");
            for (d, what) in rows.iter().take(15) {
                println!(
                    "    {:>7.3} ms  {what}",
                    d.as_secs_f64() * 1e3 / rounds as f64
                );
            }
        }
    }
    Ok(())
}
