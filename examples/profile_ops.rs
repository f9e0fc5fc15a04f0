//! Per-operator profile of the four models in tract, on the live sample's real inputs:
//! where inference time goes. `cargo run --release --example profile_ops` profiles the plans as
//! the engine builds them (PReLU as mul + max, depthwise convolutions replaced by
//! `Depthwise3x3`; the detector whole, at its exact size, without canvas masks);
//! `-- --stock` profiles tract's own import of the ONNX files; `-- --nodes` also lists the
//! slowest nodes with their input shapes, and for the engine's own convolutions their
//! multiply-adds and rate (GMAC/s: how near the CPU's peak each kernel runs); `-- --kernels
//! avx2|bf16|auto|tract` builds the plans with those kernels instead of `fused`.
//!
//! Uses tract's `run_plan_with_eval` hook to time every node, then sums by operator kind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use livecheck::engine::tract::{fused_op_macs, optimized_plan, Kernels};
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

    let args: Vec<String> = std::env::args().collect();
    let stock = args.iter().any(|a| a == "--stock");
    let nodes = args.iter().any(|a| a == "--nodes");
    let kernels: Kernels = match args.iter().position(|a| a == "--kernels") {
        Some(i) => args
            .get(i + 1)
            .map_or("", String::as_str)
            .parse()
            .map_err(|e: String| anyhow::anyhow!("--kernels: {e}"))?,
        None => Kernels::Fused,
    };
    let rounds = 50;
    let mut plans = Vec::new();
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
            optimized_plan(&std::fs::read(dir.join(file))?, file, shape, kernels)?
        };
        plans.push((file, shape, input, plan));
    }
    if args.iter().any(|a| a == "--in-turn") {
        return in_turn(&plans, rounds);
    }
    for (file, shape, input, plan) in &plans {
        let (file, shape) = (*file, *shape);
        let tensor: TValue = Tensor::from_shape(&shape, input)?.into();
        let mut state = tract_onnx::tract_core::plan::SimpleState::new(plan)?;
        let mut per_op: BTreeMap<String, (Duration, usize)> = BTreeMap::new();
        // Per node: time, description, multiply-adds per run (the engine's convolutions).
        let mut per_node: BTreeMap<usize, (Duration, String, Option<u64>)> = BTreeMap::new();
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
                    let out = r.as_ref().ok().and_then(|o| o.first()).map(|o| o.shape());
                    n.1 = format!(
                        "{} {} <- {} -> {:?}",
                        node.op().name(),
                        node.name,
                        shapes.join(" "),
                        out.unwrap_or(&[])
                    );
                    n.2 = out.and_then(|o| fused_op_macs(node.op(), o));
                }
                r
            })?;
        }
        let total = t0.elapsed() / rounds as u32;
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
                n / rounds
            );
        }
        if nodes {
            let mut rows: Vec<_> = per_node.into_values().collect();
            rows.sort_by_key(|r| std::cmp::Reverse(r.0));
            let macs: u64 = rows.iter().filter_map(|r| r.2).sum();
            let fused: Duration = rows.iter().filter(|r| r.2.is_some()).map(|r| r.0).sum();
            println!(
                "  the engine's convolutions: {:.1} M multiply-adds in {:.3} ms ({:.1} GMAC/s)",
                macs as f64 / 1e6,
                fused.as_secs_f64() * 1e3 / rounds as f64,
                macs as f64 * rounds as f64 / fused.as_secs_f64() / 1e9
            );
            println!("  slowest nodes:");
            for (d, what, macs) in rows.iter().take(usize::MAX) {
                let ms = d.as_secs_f64() * 1e3 / rounds as f64;
                let rate = macs
                    .map(|m| {
                        format!(
                            "{:>5.1} M, {:>5.1} GMAC/s",
                            m as f64 / 1e6,
                            m as f64 / ms / 1e6
                        )
                    })
                    .unwrap_or_default();
                println!("    {ms:>7.3} ms  {rate:<24} {what}");
            }
        }
    }
    Ok(())
}

/// `--in-turn`: each round runs the four networks once each, in a check's order, so that every
/// run starts with the other networks' weights and activations in the caches, as in the
/// service. Prints each network's median time per run.
fn in_turn(
    plans: &[(&str, [usize; 4], &Vec<f32>, livecheck::engine::tract::Plan)],
    rounds: usize,
) -> anyhow::Result<()> {
    let mut states = Vec::new();
    for (_, shape, input, plan) in plans {
        let tensor: TValue = Tensor::from_shape(shape, input)?.into();
        states.push((
            tract_onnx::tract_core::plan::SimpleState::new(plan)?,
            tensor,
        ));
    }
    let mut times = vec![Vec::new(); plans.len()];
    for _ in 0..rounds {
        for ((state, tensor), t) in states.iter_mut().zip(&mut times) {
            let t0 = Instant::now();
            state.run(tvec!(tensor.clone()))?;
            t.push(t0.elapsed());
        }
    }
    println!("in turn, median ms per run over {rounds} rounds:");
    for ((file, shape, ..), mut t) in plans.iter().zip(times) {
        t.sort();
        println!(
            "  {file:<36} {shape:?} {:>7.3}",
            t[t.len() / 2].as_secs_f64() * 1e3
        );
    }
    Ok(())
}
