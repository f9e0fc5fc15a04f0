//! Stage-by-stage parity with the upstream reference run (`../shared/testdata/silentface/reference`).
//!
//! Tolerances (from the issue): detector input within 1 grey level (we reach 0: bit-exact OpenCV
//! arithmetic), bbox within 1 px, crops within 1 grey level, logits within 1e-4, p_real within 1e-4
//! from reference inputs; end to end from the JPEG files bbox ±1 px and |Δp_real| ≤ 1e-3 (we decode
//! with libjpeg-turbo's algorithms, as OpenCV does).

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use livecheck::engine::{tract::TractEngine, Engine};
use livecheck::models::{LoadedSet, Member, ModelSet};
use livecheck::pipeline::{
    self, classify, crop, decode, detect, BgrImage, Pipeline, PipelineConfig,
};

const IMAGES: [&str; 3] = ["image_F1", "image_F2", "image_T1"];
/// Upstream's model names, their crop scales and their index in the `silentface` set.
const MODELS: [(&str, f64, usize); 2] = [
    ("2.7_80x80_MiniFASNetV2", crop::SCALE_V2, 0),
    ("4_0_0_80x80_MiniFASNetV1SE", crop::SCALE_V1SE, 1),
];

fn silentface() -> ModelSet {
    ModelSet::builtin("silentface").unwrap()
}

fn member(index: usize) -> Member {
    silentface().classifiers[index].clone()
}

fn model_dir() -> PathBuf {
    common::models()
}

fn engine() -> &'static TractEngine {
    static E: OnceLock<TractEngine> = OnceLock::new();
    E.get_or_init(|| {
        TractEngine::load(&LoadedSet::resolve(Some("silentface"), Some(&model_dir())).unwrap())
            .unwrap()
    })
}

fn pipeline() -> &'static Pipeline {
    static P: OnceLock<Pipeline> = OnceLock::new();
    P.get_or_init(|| {
        livecheck::load_pipeline(
            Some("silentface"),
            Some(&model_dir()),
            PipelineConfig::default(),
        )
        .unwrap()
    })
}

fn reference() -> serde_json::Value {
    let p = common::silentface().join("reference/upstream_reference.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn npy<T: npyz::Deserialize>(name: &str) -> (Vec<u64>, Vec<T>) {
    let p = common::silentface()
        .join("reference")
        .join(format!("{name}.npy"));
    let f = npyz::NpyFile::new(std::io::BufReader::new(std::fs::File::open(&p).unwrap())).unwrap();
    let shape = f.shape().to_vec();
    (shape, f.into_vec::<T>().unwrap())
}

fn ref_decoded(img: &str) -> BgrImage {
    let (shape, data) = npy::<u8>(&format!("{img}.decoded_bgr_u8"));
    BgrImage::from_raw(shape[1] as u32, shape[0] as u32, data).unwrap()
}

fn max_diff_u8(a: &[u8], b: &[u8]) -> (u8, usize) {
    assert_eq!(a.len(), b.len());
    let d = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y));
    let v: Vec<u8> = d.collect();
    (
        v.iter().copied().max().unwrap_or(0),
        v.iter().filter(|&&x| x != 0).count(),
    )
}

fn ref_bbox(r: &serde_json::Value, img: &str) -> [i32; 4] {
    let b = r[format!("{img}.jpg")]["bbox_xywh"]
        .as_array()
        .unwrap()
        .clone();
    [0, 1, 2, 3].map(|i| b[i].as_i64().unwrap() as i32)
}

#[test]
fn decode_matches_libjpeg_turbo() {
    for img in IMAGES {
        let bytes = std::fs::read(common::silentface().join(format!("{img}.jpg"))).unwrap();
        let ours = decode::decode(&bytes, &decode::DecodeLimits::default()).unwrap();
        let theirs = ref_decoded(img);
        assert_eq!(
            (ours.width, ours.height),
            (theirs.width, theirs.height),
            "{img}: EXIF rotation"
        );
        let (max, n) = max_diff_u8(&ours.data, &theirs.data);
        println!("{img}: decode max diff {max}, {n} values differ");
        assert_eq!(max, 0, "{img}: decoded pixels differ by up to {max}");
    }
}

#[test]
fn detector_input_matches_reference() {
    let r = reference();
    for img in IMAGES {
        let dec = ref_decoded(img);
        let (dw, dh) = detect::detector_input_size(dec.width as usize, dec.height as usize);
        let wh = &r[format!("{img}.jpg")]["det_small_wh"];
        assert_eq!(
            [dw as u64, dh as u64],
            [wh[0].as_u64().unwrap(), wh[1].as_u64().unwrap()]
        );
        let (shape, want) = npy::<f32>(&format!("{img}.det_input_f32_nchw"));
        assert_eq!(shape, vec![1, 3, dh as u64, dw as u64]);
        let (mut scratch, mut got) = (Vec::new(), Vec::new());
        detect::detector_input(&dec.view(), dw, dh, &mut scratch, &mut got);
        let max = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        let n = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        println!(
            "{img}: detector input max diff {max}, {n} of {} differ",
            want.len()
        );
        // Bit-exact: our resize reproduces OpenCV's fixed-point arithmetic.
        assert_eq!(max, 0.0, "{img}: detector input differs by {max}");
    }
}

#[test]
fn detection_from_reference_input() {
    let r = reference();
    for img in IMAGES {
        let entry = &r[format!("{img}.jpg")];
        let (shape, input) = npy::<f32>(&format!("{img}.det_input_f32_nchw"));
        let (dh, dw) = (shape[2] as usize, shape[3] as usize);
        let out = engine().detect(&input, dw, dh).unwrap();
        let faces = detect::select_faces(&out, &detect::priors(dw, dh), 0.6).unwrap();
        let best = faces.best.unwrap();
        let conf = entry["det_conf"].as_f64().unwrap() as f32;
        assert!(
            (best.confidence - conf).abs() < 1e-4,
            "{img}: conf {} vs {conf}",
            best.confidence
        );
        let norm = entry["det_box_norm"].as_array().unwrap();
        for (got, want) in [best.x1, best.y1, best.x2, best.y2].iter().zip(norm) {
            assert!(
                (got - want.as_f64().unwrap() as f32).abs() < 1e-4,
                "{img}: box {best:?}"
            );
        }
        let wh = entry["size_wh"].as_array().unwrap();
        let bbox = best.bbox(
            wh[0].as_u64().unwrap() as usize,
            wh[1].as_u64().unwrap() as usize,
        );
        let want = ref_bbox(&r, img);
        for i in 0..4 {
            assert!(
                (bbox[i] - want[i]).abs() <= 1,
                "{img}: bbox {bbox:?} vs {want:?}"
            );
        }
        println!("{img}: bbox {bbox:?} (reference {want:?})");
    }
}

#[test]
fn crops_match_reference() {
    let r = reference();
    for img in IMAGES {
        let dec = ref_decoded(img);
        let bbox = ref_bbox(&r, img);
        for (model, scale, index) in MODELS {
            let (mut patch, mut crop_px, mut input) = (Vec::new(), Vec::new(), Vec::new());
            let view = dec.view();
            let m = member(index);
            assert_eq!(m.crop, livecheck::models::CropSpec::Clamp { scale });
            pipeline::member_crop(&view, bbox, &m, &mut patch, &mut crop_px).unwrap();
            classify::to_tensor(&m, &crop_px, m.size * m.size, &mut input);
            let cb = crop::crop_box(bbox, view.width, view.height, scale).unwrap();
            let want_box =
                &r[format!("{img}.jpg")]["per_model"][format!("{model}.pth")]["crop_box_xyxy"];
            let want_box: Vec<usize> = want_box
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(
                vec![cb.left, cb.top, cb.right, cb.bottom],
                want_box,
                "{img} {model}"
            );
            let (_, want) = npy::<u8>(&format!("{img}.crop_{model}_bgr_u8"));
            let (max, n) = max_diff_u8(&crop_px, &want);
            println!("{img} {model}: crop max diff {max}, {n} values differ");
            assert_eq!(max, 0, "{img} {model}: crop differs by {max}");
            let (_, want_in) = npy::<f32>(&format!("{img}.input_{model}_f32_nchw"));
            let max_in = input
                .iter()
                .zip(&want_in)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                max_in <= 1.0,
                "{img} {model}: classifier input differs by {max_in}"
            );
        }
    }
}

#[test]
fn logits_and_p_real_from_reference_inputs() {
    let r = reference();
    for img in IMAGES {
        let entry = &r[format!("{img}.jpg")];
        let mut soft = Vec::new();
        for (model, _, which) in MODELS {
            let (_, input) = npy::<f32>(&format!("{img}.input_{model}_f32_nchw"));
            let logits = engine().classify(which, &input).unwrap();
            assert_eq!(logits.len(), 3);
            let want = &entry["per_model"][format!("{model}.pth")]["logits"];
            for (i, l) in logits.iter().enumerate() {
                let w = want[i].as_f64().unwrap() as f32;
                assert!((l - w).abs() < 1e-4, "{img} {model}: logit {i} {l} vs {w}");
            }
            soft.push(classify::softmax(&logits).unwrap()[1]);
        }
        let p = classify::fuse(&silentface().fusion, &soft);
        let want = entry["real_prob_avg"].as_f64().unwrap() as f32;
        assert!((p - want).abs() < 1e-4, "{img}: p_real {p} vs {want}");
    }
}

#[test]
fn end_to_end_from_jpeg() {
    assert_end_to_end(pipeline());
}

/// The fallback without the engine's fused kernels (`--kernels tract`) meets the same tolerances,
/// and agrees with the fused engine to float rounding.
#[test]
fn end_to_end_with_tract_kernels_only() {
    let set = LoadedSet::resolve(Some("silentface"), Some(&model_dir())).unwrap();
    let plain = livecheck::pipeline_with_kernels(
        set,
        PipelineConfig::default(),
        livecheck::engine::tract::Kernels::Tract,
    )
    .unwrap();
    assert_end_to_end(&plain);
    for img in IMAGES {
        let bytes = std::fs::read(common::silentface().join(format!("{img}.jpg"))).unwrap();
        let (a, b) = (
            plain.check(&bytes).unwrap(),
            pipeline().check(&bytes).unwrap(),
        );
        assert_eq!(a.face.unwrap().bbox, b.face.unwrap().bbox, "{img}");
        assert!(
            (a.p_real - b.p_real).abs() <= 1e-5,
            "{img}: {} vs {}",
            a.p_real,
            b.p_real
        );
    }
}

/// `--kernels bf16` (what the CLI's default `auto` takes where bf16 pays on the CPU) is a
/// precision choice, not the recipe: on the reference samples it must find the same boxes as
/// the f32 engine (its detector is f32), keep upstream's
/// verdicts and stay within 0.01 of the f32 p_real. On the devset (when here) with the default
/// model set, issue 11's bar: at least 99.5 % of the verdicts (live or not, and the reason)
/// agree with `--kernels fused`. Where the CPU lacks AVX512-BF16 the two are the same engine;
/// the test says so.
#[test]
fn end_to_end_with_bf16_kernels() {
    use livecheck::engine::tract::{bf16_available, Kernels};
    if !bf16_available() {
        eprintln!("note: this CPU has no AVX512-BF16: `bf16` ran the f32 kernels here");
    }
    let load = |set: Option<&str>, kernels| {
        let set = LoadedSet::resolve(set, Some(&model_dir())).unwrap();
        livecheck::pipeline_with_kernels(set, PipelineConfig::default(), kernels).unwrap()
    };
    let bf16 = load(Some("silentface"), Kernels::Bf16);
    for img in IMAGES {
        let bytes = std::fs::read(common::silentface().join(format!("{img}.jpg"))).unwrap();
        let (a, b) = (
            bf16.check(&bytes).unwrap(),
            pipeline().check(&bytes).unwrap(),
        );
        assert_eq!(a.face.unwrap().bbox, b.face.unwrap().bbox, "{img}");
        assert_eq!(a.live, b.live, "{img}");
        assert!(
            (a.p_real - b.p_real).abs() <= 0.01,
            "{img}: {} vs {}",
            a.p_real,
            b.p_real
        );
    }
    let Some(dir) = common::devset("the devset agreement of the bf16 kernels") else {
        return;
    };
    let (bf16, f32) = (load(None, Kernels::Bf16), load(None, Kernels::Fused));
    let rows = common::devset_manifest(&dir);
    let (mut agree, mut worst) = (0usize, 0f32);
    for row in &rows {
        let bytes = std::fs::read(dir.join(&row["file"])).unwrap();
        let (a, b) = (bf16.check(&bytes).unwrap(), f32.check(&bytes).unwrap());
        agree += usize::from(a.live == b.live && a.reason == b.reason);
        worst = worst.max((a.p_real - b.p_real).abs());
    }
    let share = agree as f64 / rows.len() as f64;
    println!(
        "bf16 vs f32 on the devset: {agree} of {} verdicts agree, largest p_real gap {worst}",
        rows.len()
    );
    assert!(share >= 0.995, "{agree} of {} verdicts agree", rows.len());
}

/// `--kernels avx2` runs the fused kernels' AVX2 + FMA paths even on an AVX-512 CPU, and every
/// path sums in the same order: with the default model set, the same verdicts, boxes and p_real
/// bits as `--kernels fused`, on the reference samples and (when here) the whole devset. On a CPU
/// without AVX-512 both are the same engine; the test says so.
#[test]
fn avx2_kernels_give_the_fused_bits() {
    use livecheck::engine::tract::{Isa, Kernels};
    if Isa::detected() != Isa::Avx512 {
        eprintln!(
            "note: this CPU's widest tier is {}: `avx2` and `fused` ran the same paths here",
            Isa::detected().describe()
        );
    }
    let load = |kernels| {
        let set = LoadedSet::resolve(None, Some(&model_dir())).unwrap();
        livecheck::pipeline_with_kernels(set, PipelineConfig::default(), kernels).unwrap()
    };
    let (avx2, fused) = (load(Kernels::Avx2), load(Kernels::Fused));
    let mut files: Vec<std::path::PathBuf> = IMAGES
        .iter()
        .map(|img| common::silentface().join(format!("{img}.jpg")))
        .collect();
    if let Some(dir) = common::devset("the devset agreement of the AVX2 kernels") {
        files.extend(
            common::devset_manifest(&dir)
                .iter()
                .map(|row| dir.join(&row["file"])),
        );
    }
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        let (a, b) = (avx2.check(&bytes).unwrap(), fused.check(&bytes).unwrap());
        let what = file.display();
        assert_eq!(a.p_real.to_bits(), b.p_real.to_bits(), "{what}");
        assert_eq!((a.live, &a.reason), (b.live, &b.reason), "{what}");
        assert_eq!(a.face.map(|f| f.bbox), b.face.map(|f| f.bbox), "{what}");
    }
    println!("avx2 vs fused: {} images, identical", files.len());
}

fn assert_end_to_end(pipeline: &Pipeline) {
    let r = reference();
    for img in IMAGES {
        let entry = &r[format!("{img}.jpg")];
        let bytes = std::fs::read(common::silentface().join(format!("{img}.jpg"))).unwrap();
        let v = pipeline.check(&bytes).unwrap();
        let face = v.face.unwrap();
        let want = ref_bbox(&r, img);
        for i in 0..4 {
            assert!(
                (face.bbox[i] - want[i]).abs() <= 1,
                "{img}: bbox {:?} vs {want:?}",
                face.bbox
            );
        }
        let want_p = entry["real_prob_avg"].as_f64().unwrap() as f32;
        println!(
            "{img}: p_real {} (reference {want_p}, diff {:e})",
            v.p_real,
            (v.p_real - want_p).abs()
        );
        assert!(
            (v.p_real - want_p).abs() <= 1e-3,
            "{img}: p_real {} vs {want_p}",
            v.p_real
        );
        let upstream_live = entry["label"].as_u64().unwrap() == 1;
        assert_eq!(v.live, upstream_live, "{img}: verdict");
    }
}

/// The face finder (YuNet) against OpenCV's own `FaceDetectorYN` (OpenCV 4.10,
/// `training/reference/yunet_reference.py`, `tests/fixtures/yunet/reference.json`): inputs built
/// from the reference's decoded samples — each alone, side by side, and a 4x4 tiling (16 small
/// faces) — must be the same bytes (INTER_AREA shrink, top-left of zeros), and every face OpenCV
/// reports at score 0.3 must come out with its box within 0.01 px and its score within 1e-4,
/// and no other.
#[test]
fn face_finder_matches_opencv_face_detector_yn() {
    use livecheck::pipeline::finder;
    use sha2::{Digest, Sha256};

    let r: serde_json::Value = serde_json::from_slice(
        &std::fs::read(common::fixtures().join("yunet/reference.json")).unwrap(),
    )
    .unwrap();
    let set = silentface();
    let ff = set
        .face_finder
        .clone()
        .expect("silentface has a face finder");
    assert_eq!(r["model"], ff.model.file.as_str());
    let size = r["size"].as_u64().unwrap() as usize;
    assert_eq!(size, ff.size);
    let (score, nms) = (
        r["score"].as_f64().unwrap() as f32,
        r["nms"].as_f64().unwrap() as f32,
    );
    let samples: Vec<BgrImage> = IMAGES.iter().map(|i| ref_decoded(i)).collect();
    let hstack = |imgs: &[&BgrImage]| -> BgrImage {
        let h = imgs[0].height as usize;
        let w: usize = imgs.iter().map(|i| i.width as usize).sum();
        let mut data = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for i in imgs {
                let rw = i.width as usize * 3;
                data.extend_from_slice(&i.data[y * rw..(y + 1) * rw]);
            }
        }
        BgrImage::from_raw(w as u32, h as u32, data).unwrap()
    };
    let row = hstack(&[&samples[0], &samples[1], &samples[2]]);
    let wide = hstack(&[&samples[0], &samples[1], &samples[2], &samples[0]]);
    let tile = {
        let mut data = Vec::new();
        for _ in 0..4 {
            data.extend_from_slice(&wide.data);
        }
        BgrImage::from_raw(wide.width, wide.height * 4, data).unwrap()
    };
    let cases: Vec<(&str, &BgrImage)> = vec![
        ("image_F1", &samples[0]),
        ("image_F2", &samples[1]),
        ("image_T1", &samples[2]),
        ("row3", &row),
        ("tile4x4", &tile),
    ];
    let engine = engine();
    for (name, img) in cases {
        let want = &r["images"][name];
        let view = img.view();
        let (mut resized, mut input) = (Vec::new(), Vec::new());
        let scale = finder::finder_input(&view, size, &mut resized, &mut input).unwrap();
        assert!(
            (scale - want["scale"].as_f64().unwrap()).abs() < 1e-12,
            "{name}"
        );
        let plane = size * size;
        let hwc: Vec<u8> = (0..plane)
            .flat_map(|i| [input[i], input[plane + i], input[2 * plane + i]].map(|v| v as u8))
            .collect();
        assert_eq!(
            hex::encode(Sha256::digest(&hwc)),
            want["input_sha256"].as_str().unwrap(),
            "{name}: finder input differs from OpenCV's"
        );
        let out = engine.find_faces(&input).unwrap();
        let got = finder::decode(&out, size, score, nms).unwrap();
        let want_faces = want["faces"].as_array().unwrap();
        assert_eq!(got.len(), want_faces.len(), "{name}: {got:?}");
        // Faces of equal score (the tiling repeats the samples) may come in either order.
        for w in want_faces {
            let w: Vec<f32> = w
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            let close = |g: &&finder::FoundFace| {
                [g.x, g.y, g.w, g.h]
                    .iter()
                    .zip(&w[..4])
                    .all(|(a, b)| (a - b).abs() < 0.01)
            };
            let g = got
                .iter()
                .find(close)
                .unwrap_or_else(|| panic!("{name}: OpenCV's face {w:?} not in {got:?}"));
            assert!(
                (g.score - w[4]).abs() < 1e-4,
                "{name}: score {g:?} vs {w:?}"
            );
        }
        println!("{name}: {} faces match", got.len());
    }
}

/// The image print (re-submission detection) against OpenCV itself
/// (`training/reference/print_reference.py`): from the reference's decoded samples, each alone,
/// side by side and a small top-left quarter (left at its own size by the detector input), the
/// detector input, INTER_AREA to 32x32, BGR2GRAY and `cv2.dct` must give the same 63 unit
/// coefficients within 1e-6 and the same 64 bits.
#[test]
fn image_print_matches_opencv_reference() {
    use livecheck::pipeline::print::ImagePrint;

    let r: serde_json::Value = serde_json::from_slice(
        &std::fs::read(common::fixtures().join("print/reference.json")).unwrap(),
    )
    .unwrap();
    let samples: Vec<BgrImage> = IMAGES.iter().map(|i| ref_decoded(i)).collect();
    let mut cases: Vec<(String, BgrImage)> = IMAGES
        .iter()
        .zip(&samples)
        .map(|(n, i)| (n.to_string(), i.clone()))
        .collect();
    let (h, w) = (samples[0].height as usize, samples[0].width as usize);
    let mut row = Vec::with_capacity(3 * w * h * 3);
    for y in 0..h {
        for s in &samples {
            row.extend_from_slice(&s.data[y * w * 3..(y + 1) * w * 3]);
        }
    }
    cases.push((
        "row3".into(),
        BgrImage::from_raw(3 * w as u32, h as u32, row).unwrap(),
    ));
    for (n, s) in IMAGES.iter().zip(&samples) {
        let (qw, qh) = (w / 4, h / 4);
        let mut q = Vec::with_capacity(qw * qh * 3);
        for y in 0..qh {
            q.extend_from_slice(&s.data[y * w * 3..y * w * 3 + qw * 3]);
        }
        cases.push((
            format!("{n}_quarter"),
            BgrImage::from_raw(qw as u32, qh as u32, q).unwrap(),
        ));
    }
    assert_eq!(cases.len(), r["images"].as_object().unwrap().len());
    for (name, img) in &cases {
        let want = &r["images"][name.as_str()];
        let (iw, ih) = (img.width as usize, img.height as usize);
        let (dw, dh) = detect::detector_input_size(iw, ih);
        assert_eq!(
            [dw, dh],
            [
                want["detector_input"][0].as_u64().unwrap() as usize,
                want["detector_input"][1].as_u64().unwrap() as usize
            ],
            "{name}"
        );
        let (mut resized, mut tensor) = (Vec::new(), Vec::new());
        detect::detector_input(&img.view(), dw, dh, &mut resized, &mut tensor);
        let p = ImagePrint::of_bgr(&resized, dw, dh).unwrap();
        let coeffs: Vec<f64> = want["coeffs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_f64().unwrap())
            .collect();
        assert_eq!(coeffs.len(), p.coeffs.len());
        let worst = coeffs
            .iter()
            .zip(&p.coeffs)
            .map(|(a, b)| (a - f64::from(*b)).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-6, "{name}: coefficient off by {worst}");
        assert_eq!(
            format!("{:016x}", p.bits()),
            want["bits"].as_str().unwrap(),
            "{name}"
        );
    }
}
