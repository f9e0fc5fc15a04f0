//! Per-stage criterion benchmarks on the live sample (480x640 upright) plus end to end on each
//! sample. Models are loaded outside the timed loops.

use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion};
use livecheck::engine::{
    tract::{Kernels, TractEngine},
    Engine,
};
use livecheck::models::LoadedSet;
use livecheck::pipeline::{self, decode, detect, PipelineConfig};

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

fn stages(c: &mut Criterion) {
    let dir = std::env::var_os("LIVECHECK_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| shared().join("models"));
    let set = LoadedSet::resolve(Some("silentface"), Some(&dir)).unwrap();
    let engine = TractEngine::load(&set).unwrap();
    // The same models with bf16 products (`--kernels bf16`; f32 where the CPU lacks AVX512-BF16).
    // Its detector is f32 either way, so only the classifiers have a bf16 bench.
    let bf16 = TractEngine::load_with(&set, Kernels::Bf16).unwrap();
    let pipe = livecheck::load_pipeline(Some("silentface"), Some(&dir), PipelineConfig::default())
        .unwrap();
    let bytes = std::fs::read(shared().join("testdata/silentface/image_T1.jpg")).unwrap();
    let img = decode::decode(&bytes, &Default::default()).unwrap();
    let (w, h) = (img.width as usize, img.height as usize);
    let (dw, dh) = detect::detector_input_size(w, h);
    let (mut scratch, mut det_in) = (Vec::new(), Vec::new());
    detect::detector_input(&img.view(), dw, dh, &mut scratch, &mut det_in);
    let bbox = [106, 147, 207, 213];
    let (mut patch, mut crop_px, mut cls_in) = (Vec::new(), Vec::new(), Vec::new());
    let v2 = &set.set.classifiers[0];
    // The classifiers' inputs are made here as well as in their crop benches, so that a filter
    // that skips the crop benches (`-- stage/classifier`) still gives them real inputs.
    pipeline::member_input(&img.view(), bbox, v2, &mut patch, &mut crop_px, &mut cls_in).unwrap();

    let mut g = c.benchmark_group("stage");
    g.bench_function("decode_jpeg_640x480", |b| {
        b.iter(|| decode::decode(&bytes, &Default::default()).unwrap())
    });
    // The service's decode: the same pixels, with the luma blocks counted for the
    // double-compression signal from the same entropy decode (compare with decode_jpeg_640x480
    // plus per_request/double_jpeg_separate_read).
    g.bench_function("decode_jpeg_640x480_with_luma", |b| {
        b.iter(|| {
            let mut scan = livecheck::signals::DoubleJpegScan::default();
            let (img, luma) =
                decode::decode_with_luma(&bytes, &Default::default(), &mut |blk| scan.visit(blk))
                    .unwrap();
            let decode::LumaRead::Read(quant) = luma else {
                panic!("{luma:?}")
            };
            (img, scan.finish(Some(quant)))
        })
    });
    g.bench_function("detector_input", |b| {
        b.iter(|| detect::detector_input(&img.view(), dw, dh, &mut scratch, &mut det_in))
    });
    g.bench_function("detector_tract", |b| {
        b.iter(|| engine.detect(&det_in, dw, dh).unwrap())
    });
    let out = engine.detect(&det_in, dw, dh).unwrap();
    g.bench_function("priors_and_select", |b| {
        b.iter(|| detect::select_faces(&out, &detect::priors(dw, dh), 0.6).unwrap())
    });
    g.bench_function("crop_resize_80", |b| {
        b.iter(|| {
            pipeline::member_input(&img.view(), bbox, v2, &mut patch, &mut crop_px, &mut cls_in)
        })
    });
    g.bench_function("classifier_v2_tract", |b| {
        b.iter(|| engine.classify(0, &cls_in).unwrap())
    });
    g.bench_function("classifier_v1se_tract", |b| {
        b.iter(|| engine.classify(1, &cls_in).unwrap())
    });
    g.bench_function("classifier_v2_bf16", |b| {
        b.iter(|| bf16.classify(0, &cls_in).unwrap())
    });
    g.bench_function("classifier_v1se_bf16", |b| {
        b.iter(|| bf16.classify(1, &cls_in).unwrap())
    });
    // The default set's third member (face-antispoof-onnx, 128x128): its square reflect crop and
    // letterbox resize, and the network.
    let set3 = LoadedSet::resolve(Some(livecheck::models::DEFAULT_MODEL_SET), Some(&dir)).unwrap();
    let engine3 = TractEngine::load(&set3).unwrap();
    let m128 = &set3.set.classifiers[2];
    let mut cls_in128 = Vec::new();
    let input128 = pipeline::member_input(
        &img.view(),
        bbox,
        m128,
        &mut patch,
        &mut crop_px,
        &mut cls_in128,
    );
    input128.unwrap();
    g.bench_function("crop_letterbox_128", |b| {
        b.iter(|| {
            pipeline::member_input(
                &img.view(),
                bbox,
                m128,
                &mut patch,
                &mut crop_px,
                &mut cls_in128,
            )
        })
    });
    g.bench_function("classifier_minifas128_tract", |b| {
        b.iter(|| engine3.classify(2, &cls_in128).unwrap())
    });
    let engine3_bf16 = TractEngine::load_with(&set3, Kernels::Bf16).unwrap();
    g.bench_function("classifier_minifas128_bf16", |b| {
        b.iter(|| engine3_bf16.classify(2, &cls_in128).unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("end_to_end");
    for name in ["image_F1", "image_F2", "image_T1"] {
        let bytes =
            std::fs::read(shared().join(format!("testdata/silentface/{name}.jpg"))).unwrap();
        g.bench_function(name, |b| b.iter(|| pipe.check(&bytes).unwrap()));
    }
    // The default set (what the service runs) on the live sample.
    let pipe3 = livecheck::load_pipeline(None, Some(&dir), PipelineConfig::default()).unwrap();
    g.bench_function("default_set_image_T1", |b| {
        b.iter(|| pipe3.check(&bytes).unwrap())
    });
    let set3 = LoadedSet::resolve(None, Some(&dir)).unwrap();
    let config = PipelineConfig::default();
    let pipe3_bf16 = livecheck::pipeline_with_kernels(set3, config, Kernels::Bf16).unwrap();
    g.bench_function("default_set_image_T1_bf16", |b| {
        b.iter(|| pipe3_bf16.check(&bytes).unwrap())
    });
    g.finish();

    // What a signed receipt adds to a check (issue 14 asks < 0.5 ms): building the payload and
    // the compact JWS with one Ed25519 signature; compare with end_to_end above, same run.
    let mut g = c.benchmark_group("per_request");
    let key = livecheck::receipts::ReceiptKey::generate();
    let payload = livecheck::receipts::ReceiptPayload {
        reference: uuid::Uuid::new_v4(),
        key_id: Some(uuid::Uuid::new_v4()),
        iat: 1_764_580_000,
        image_sha256: "ab".repeat(32),
        p_real: 0.997_049_15,
        threshold: 0.723_851_86,
        live: true,
        reason: "live".into(),
        model: "954c6072f75181f8".into(),
        app_version: "0.1.0".into(),
        session: None,
    };
    g.bench_function("receipt_sign", |b| b.iter(|| key.sign(&payload)));
    // The request's `image` string to bytes (`parse_image_input`, the base64 fast path) on the
    // sample's base64, against the `base64` crate's decoder that path used before (baseline, in
    // the same run).
    use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
    let text = BASE64.encode(&bytes);
    g.bench_function("image_input_base64", |b| {
        b.iter(|| livecheck::fetch::parse_image_input(&text, 15 << 20).unwrap())
    });
    g.bench_function("image_input_base64_crate_baseline", |b| {
        b.iter(|| BASE64.decode(&text).unwrap())
    });
    // Re-submission detection's CPU per check: the print from the detector input the pipeline
    // has already made (32x32 INTER_AREA, grey, 8x8 DCT), then the keyed fingerprint (image tag,
    // four band tags, the sealed print), and judging stored candidates (each opened and
    // compared). The store lookup itself is I/O, measured by loadbench.
    let print_key = livecheck::resubmission::PrintKey::generate();
    g.bench_function("image_print", |b| {
        b.iter(|| livecheck::pipeline::print::ImagePrint::of_bgr(&scratch, dw, dh).unwrap())
    });
    let print = livecheck::pipeline::print::ImagePrint::of_bgr(&scratch, dw, dh).unwrap();
    g.bench_function("resubmission_fingerprint", |b| {
        b.iter(|| print_key.fingerprint(&payload.image_sha256, Some(&print), payload.reference))
    });
    // Ten candidates, and the most a lookup can return (`MAX_BAND_CANDIDATES` for each of the
    // four bands, all of other bytes, so every one is opened): judging's worst case.
    let stored = |n: usize| livecheck::resubmission::Sightings {
        same_bytes: Default::default(),
        near: (0..n)
            .map(|_| {
                let r = uuid::Uuid::new_v4();
                let f = print_key.fingerprint(&"cd".repeat(32), Some(&print), r);
                livecheck::resubmission::Candidate {
                    reference: r,
                    key_id: None,
                    created_at: chrono::Utc::now(),
                    image_tag: f.image_tag,
                    sealed: f.sealed,
                }
            })
            .collect(),
    };
    let query = print_key.fingerprint(&payload.image_sha256, Some(&print), payload.reference);
    let most = 4 * livecheck::resubmission::MAX_BAND_CANDIDATES as usize;
    for (name, sightings) in [
        ("resubmission_judge_10", stored(10)),
        ("resubmission_judge_400", stored(most)),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                livecheck::resubmission::judge(&print_key, &query, Some(&print), None, &sightings)
            })
        });
    }
    // The image signals of one check (EXIF, the luma coefficients entropy-decoded again and
    // histogrammed, dimensions, face share): CheckService::check's cost beyond the pipeline.
    let bytes = std::fs::read(shared().join("testdata/silentface/image_T1.jpg")).unwrap();
    let verdict = pipe.check(&bytes).unwrap();
    g.bench_function("image_signals", |b| {
        b.iter(|| livecheck::signals::examine(&bytes, &verdict))
    });
    // Its double-compression part alone, read from the file a second time (what the service
    // no longer does for a JPEG of at most 128 KiB: stage/decode_jpeg_640x480_with_luma).
    g.bench_function("double_jpeg_separate_read", |b| {
        b.iter(|| livecheck::signals::double_jpeg(&bytes))
    });
    // A phone-sized file (4032x3024, grain so that it compresses like a photo): the coefficient
    // read stops at 128 KiB, so the cost is bounded whatever the file.
    let img = livecheck::pipeline::decode::decode(&bytes, &Default::default()).unwrap();
    let (w, h) = (4032usize, 3024usize);
    let mut big = vec![0u8; w * h * 3];
    livecheck::pipeline::resize::resize_bilinear(&img.view(), w, h, &mut big);
    let mut seed = 0x2545_f491_u32;
    for v in big.iter_mut() {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        *v = v.saturating_add((seed % 9) as u8).saturating_sub(4);
    }
    let rgb: Vec<u8> = big
        .chunks_exact(3)
        .flat_map(|p| [p[2], p[1], p[0]])
        .collect();
    let mut big_jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut big_jpeg, 90)
        .encode(&rgb, w as u32, h as u32, image::ExtendedColorType::Rgb8)
        .unwrap();
    let big_verdict = pipe.check(&big_jpeg).unwrap();
    g.bench_function("image_signals_12mp", |b| {
        b.iter(|| livecheck::signals::examine(&big_jpeg, &big_verdict))
    });
    g.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
