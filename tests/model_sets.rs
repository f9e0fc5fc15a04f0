//! Model sets beyond Silent-Face: the face-antispoof-onnx member against its own reference
//! implementation (`training/reference/faceantispoof_reference.py`: OpenCV + onnxruntime, fixtures
//! in `tests/fixtures/faceantispoof`), a three-member set end to end, and the `crops`,
//! `models list` and `--model-set` command-line paths.

mod common;
use common::livecheck;

use std::path::{Path, PathBuf};

use livecheck::engine::{tract::TractEngine, Engine};
use livecheck::models::{LoadedSet, ModelSet};
use livecheck::pipeline::{self, classify, BgrImage, PipelineConfig};

const IMAGES: [&str; 3] = ["image_F1", "image_F2", "image_T1"];
const SET: &str = "silentface-minifas128";
const MEMBER: usize = 2;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/faceantispoof")
}

fn model_dir() -> PathBuf {
    common::models()
}

fn npy_u8(path: &Path) -> (Vec<u64>, Vec<u8>) {
    let f =
        npyz::NpyFile::new(std::io::BufReader::new(std::fs::File::open(path).unwrap())).unwrap();
    let shape = f.shape().to_vec();
    (shape, f.into_vec::<u8>().unwrap())
}

fn reference() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixtures().join("reference.json")).unwrap()).unwrap()
}

fn decoded(img: &str) -> BgrImage {
    let p = common::silentface().join(format!("reference/{img}.decoded_bgr_u8.npy"));
    let (shape, data) = npy_u8(&p);
    BgrImage::from_raw(shape[1] as u32, shape[0] as u32, data).unwrap()
}

fn set() -> LoadedSet {
    LoadedSet::resolve(Some(SET), Some(&model_dir())).unwrap()
}

/// Crop + letterbox from the reference's decoded image and box, compared with OpenCV's, and the
/// model's logits compared with onnxruntime's on the reference's own 8-bit input.
#[test]
fn faceantispoof_member_matches_its_reference() {
    let r = reference();
    let set = set();
    let member = &set.set.classifiers[MEMBER];
    assert_eq!(member.name, "faceantispoof_minifas");
    let engine = TractEngine::load(&set).unwrap();
    for img in IMAGES {
        let entry = &r["images"][img];
        let bbox: Vec<i32> = entry["bbox_xywh"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap() as i32)
            .collect();
        let bbox = [bbox[0], bbox[1], bbox[2], bbox[3]];
        let dec = decoded(img);
        let (mut patch, mut crop, mut input) = (Vec::new(), Vec::new(), Vec::new());
        pipeline::member_crop(&dec.view(), bbox, member, &mut patch, &mut crop).unwrap();
        // Ours is BGR; the reference is RGB.
        let (shape, want_rgb) = npy_u8(&fixtures().join(format!("{img}.crop_rgb_u8.npy")));
        assert_eq!(shape, vec![128, 128, 3]);
        let ours_rgb: Vec<u8> = crop
            .chunks_exact(3)
            .flat_map(|p| [p[2], p[1], p[0]])
            .collect();
        let max = ours_rgb
            .iter()
            .zip(&want_rgb)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        println!("{img}: crop max diff {max}");
        assert!(max <= 1, "{img}: crop differs by {max}");

        // The model on the reference's own pixels: logits within 1e-4 of onnxruntime.
        let want_bgr: Vec<u8> = want_rgb
            .chunks_exact(3)
            .flat_map(|p| [p[2], p[1], p[0]])
            .collect();
        classify::to_tensor(member, &want_bgr, 128 * 128, &mut input);
        let logits = engine.classify(MEMBER, &input).unwrap();
        let want: Vec<f32> = entry["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        for (a, b) in logits.iter().zip(&want) {
            assert!((a - b).abs() < 1e-4, "{img}: logits {logits:?} vs {want:?}");
        }
        let probs = classify::probabilities(member, &logits).unwrap();
        let want_p = entry["p_real"].as_f64().unwrap() as f32;
        assert!((probs[member.real_index] - want_p).abs() < 1e-4);
    }
}

/// The three-member set from the JPEG files: every member's p_real as its own run gives, the
/// fused p_real by the set's weights, and the samples' verdicts.
#[test]
fn three_member_set_end_to_end() {
    let p =
        livecheck::load_pipeline(Some(SET), Some(&model_dir()), PipelineConfig::default()).unwrap();
    let r = reference();
    let silentface = ModelSet::builtin("silentface").unwrap();
    assert_ne!(p.model_hash(), silentface.hash());
    for (img, live) in IMAGES.iter().zip([false, false, true]) {
        let bytes = std::fs::read(common::silentface().join(format!("{img}.jpg"))).unwrap();
        let v = p.check(&bytes).unwrap();
        let scores = v.scores.as_ref().unwrap();
        let names: Vec<&str> = scores.0.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            ["MiniFASNetV2", "MiniFASNetV1SE", "faceantispoof_minifas"]
        );
        let m: Vec<f64> = scores.0.iter().map(|m| f64::from(m.p_real)).collect();
        let want = (m[0] + m[1] + 2.0 * m[2]) / 4.0;
        assert!((f64::from(v.p_real) - want).abs() < 1e-6, "{img}");
        // End to end (our decode, our box): the member within 1e-2 of its reference.
        let ref_p = r["images"][img]["p_real"].as_f64().unwrap();
        assert!((m[2] - ref_p).abs() < 1e-2, "{img}: {} vs {ref_p}", m[2]);
        assert_eq!(v.live, live, "{img}: p_real {}", v.p_real);
        let json = serde_json::to_value(scores).unwrap();
        assert_eq!(json["faceantispoof_minifas"].as_array().unwrap().len(), 2);
    }
}

/// A [`pipeline::Spare`] that always has a thread: `beside` on a scoped thread of its own.
struct ScopedSpare {
    lent: std::sync::atomic::AtomicUsize,
}

impl pipeline::Spare for ScopedSpare {
    fn join(&self, here: &mut dyn FnMut(), beside: &mut (dyn FnMut() + Send)) {
        let caller = std::thread::current().id();
        std::thread::scope(|s| {
            let other = s.spawn(move || {
                assert_ne!(std::thread::current().id(), caller);
                beside()
            });
            here();
            other.join().unwrap();
        });
        self.lent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The server splits a check's classifiers over two slots when one is idle: the verdict, every
/// member's logits and the fused score are the same bits as on one thread.
#[test]
fn classifiers_split_over_a_spare_thread_give_the_same_bits() {
    let p =
        livecheck::load_pipeline(Some(SET), Some(&model_dir()), PipelineConfig::default()).unwrap();
    let spare = ScopedSpare {
        lent: Default::default(),
    };
    for img in IMAGES {
        let bytes = std::fs::read(common::silentface().join(format!("{img}.jpg"))).unwrap();
        let (one, _) = p.check_with_luma(&bytes, &mut |_| {}, None).unwrap();
        let (two, _) = p
            .check_with_luma(&bytes, &mut |_| {}, Some(&spare))
            .unwrap();
        assert_eq!(one.p_real.to_bits(), two.p_real.to_bits(), "{img}");
        assert_eq!((one.live, one.reason), (two.live, two.reason), "{img}");
        let bits = |v: &livecheck::pipeline::Verdict| {
            let s = v.scores.as_ref().unwrap();
            s.0.iter()
                .map(|m| {
                    (
                        m.name.clone(),
                        m.logits.iter().map(|l| l.to_bits()).collect(),
                    )
                })
                .collect::<Vec<(String, Vec<u32>)>>()
        };
        assert_eq!(bits(&one), bits(&two), "{img}");
        assert_eq!(bits(&two).len(), 3);
    }
    assert_eq!(
        spare.lent.load(std::sync::atomic::Ordering::SeqCst),
        IMAGES.len()
    );
}

#[test]
fn check_names_the_model_set_and_refuses_unknown_ones() {
    let img = common::silentface().join("image_T1.jpg");
    let img = img.to_str().unwrap();
    let default = livecheck(&["check", img]);
    assert!(default.status.success());
    let line: serde_json::Value = serde_json::from_slice(&default.stdout).unwrap();
    assert_eq!(line["model_set"], ModelSet::default_set().unwrap().hash());

    let three = livecheck(&["check", "--model-set", SET, img]);
    assert!(
        three.status.success(),
        "{}",
        String::from_utf8_lossy(&three.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&three.stdout).unwrap();
    assert_eq!(line["model_set"], ModelSet::builtin(SET).unwrap().hash());
    assert_eq!(line["scores"].as_object().unwrap().len(), 3);

    let bad = livecheck(&["check", "--model-set", "no-such-set", img]);
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("unknown model set") && err.contains("silentface"),
        "{err}"
    );

    // A set file whose member hash does not match its file.
    let dir = tempfile::tempdir().unwrap();
    let mut v: serde_json::Value =
        serde_json::from_str(livecheck::models::BUILTIN_SETS[0].1).unwrap();
    v["classifiers"][0]["sha256"] = "0".repeat(64).into();
    let path = dir.path().join("wrong.json");
    std::fs::write(&path, v.to_string()).unwrap();
    let bad = livecheck(&["check", "--model-set", path.to_str().unwrap(), img]);
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("MiniFASNetV2.onnx") && err.contains("SHA-256"),
        "{err}"
    );
}

#[test]
fn models_list_shows_every_set_and_member() {
    let out = livecheck(&["models", "list"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for (name, _) in livecheck::models::BUILTIN_SETS {
        let set = ModelSet::builtin(name).unwrap();
        assert!(text.contains(&set.hash()), "{name} hash missing:\n{text}");
        for m in &set.classifiers {
            assert!(text.contains(&m.name), "{} missing:\n{text}", m.name);
        }
    }
    assert!(text.contains("silentface-minifas128-calibrated (default)"));
    assert!(text.contains("face finder"), "{text}");
    let verify = livecheck(&["models", "verify", "--model-set", SET]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

/// `crops` writes the served crop of every member plus jittered views, and the logits it
/// records are the pipeline's.
#[test]
fn crops_writes_member_inputs_and_logits() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("live")).unwrap();
    std::fs::create_dir_all(data.join("spoof/replay")).unwrap();
    let samples = common::silentface();
    std::fs::copy(samples.join("image_T1.jpg"), data.join("live/t1.jpg")).unwrap();
    std::fs::copy(
        samples.join("image_F2.jpg"),
        data.join("spoof/replay/f2.jpg"),
    )
    .unwrap();
    std::fs::write(data.join("live/broken.jpg"), b"\xff\xd8not a jpeg").unwrap();
    let manifest = data.join("manifest.csv");
    std::fs::write(
        &manifest,
        "file,label,attack_type,source_repo\nlive/t1.jpg,live,none,a/b\n\
         spoof/replay/f2.jpg,spoof,replay,c/d\nlive/broken.jpg,live,none,a/b\n",
    )
    .unwrap();
    let out_dir = dir.path().join("crops");
    let out = livecheck(&[
        "crops",
        manifest.to_str().unwrap(),
        out_dir.to_str().unwrap(),
        "--model-set",
        SET,
        "--jitter",
        "2",
        "--threads",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("decode_error 1"));
    let mut rdr = csv::Reader::from_path(out_dir.join("crops.csv")).unwrap();
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2 * 3 * 3, "2 images x 3 views x 3 members");
    // The CLI's default kernels (`auto`: bf16 or f32 by the CPU), which `crops` ran with: its
    // logits are a check's.
    let set = livecheck::models::LoadedSet::resolve(Some(SET), Some(&model_dir())).unwrap();
    let p = livecheck::pipeline_with_kernels(
        set,
        PipelineConfig::default(),
        livecheck::engine::tract::Kernels::Auto,
    )
    .unwrap();
    let t1 = p
        .check(&std::fs::read(samples.join("image_T1.jpg")).unwrap())
        .unwrap();
    for r in &rows {
        let png = image::open(out_dir.join(&r[7])).unwrap();
        let side = if &r[6] == "faceantispoof_minifas" {
            128
        } else {
            80
        };
        assert_eq!((png.width(), png.height()), (side, side));
        if &r[1] == "live/t1.jpg" && &r[5] == "0" {
            assert_eq!(&r[4], "a/b");
            assert_eq!(&r[2], "live");
            let logits: Vec<f32> = r[9].split(' ').map(|x| x.parse().unwrap()).collect();
            let want = t1
                .scores
                .as_ref()
                .unwrap()
                .0
                .iter()
                .find(|m| m.name == r[6])
                .unwrap();
            assert_eq!(logits, want.logits, "{}", &r[6]);
        }
    }
    // Jittered views differ from the served crop.
    let crop_of = |view: &str| {
        let r = rows
            .iter()
            .find(|r| &r[1] == "live/t1.jpg" && &r[5] == view && &r[6] == "MiniFASNetV2")
            .unwrap();
        std::fs::read(out_dir.join(&r[7])).unwrap()
    };
    assert_ne!(crop_of("0"), crop_of("1"));
}

/// The fuzz target's property on its seeds and every crash it found: a set that parses
/// serialises to a set that parses to the same hash. `crash-float-roundtrip.json` (a fusion weight
/// with a 53-digit mantissa) changed hash on the round trip until serde_json parsed floats exactly
/// (`float_roundtrip`).
#[test]
fn model_set_files_round_trip_to_the_same_hash() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz/model_set");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let Ok(set) = ModelSet::parse(&text, "fixture") else {
            continue;
        };
        let again = serde_json::to_string(&set).unwrap();
        let reparsed = ModelSet::parse(&again, "fixture").unwrap();
        assert_eq!(reparsed.hash(), set.hash(), "{}", path.display());
        seen += 1;
    }
    assert!(seen >= 4, "only {seen} sets parsed in {}", dir.display());
}
