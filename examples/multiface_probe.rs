//! Every detection at several detector input scales, for the multi-face scan's measurements
//! (docs/accuracy.md, "Multi-face scan").
//!
//!   LIVECHECK_MODEL_DIR=../shared/models cargo run --release --example multiface_probe -- IMAGES
//!
//! `SCALES=1,2,3` (default) picks the scales, relative to the detector's working size; with
//! `SUMMARY=1` it prints one line per image with the best separate second face at each scale.
//! The last column is the set's face finder (YuNet): its best face (score >= 0.3) separate from
//! the detector's best face at 1x, at least 32 px, and the finder's time.
use livecheck::engine::tract::TractEngine;
use livecheck::engine::Engine;
use livecheck::models::LoadedSet;
use livecheck::pipeline::decode::decode;
use livecheck::pipeline::{detect, finder};

fn main() {
    let dir = std::path::PathBuf::from(std::env::var("LIVECHECK_MODEL_DIR").unwrap());
    let set = LoadedSet::resolve(None, Some(&dir)).unwrap();
    let engine = TractEngine::load(&set).unwrap();
    let scales: Vec<f64> = std::env::var("SCALES")
        .unwrap_or("1,2,3".into())
        .split(',')
        .map(|s| s.parse().unwrap())
        .collect();
    for path in std::env::args().skip(1) {
        let img = decode(&std::fs::read(&path).unwrap(), &Default::default()).unwrap();
        let (w, h) = (img.width as usize, img.height as usize);
        if std::env::var_os("SUMMARY").is_some() {
            print!("{path}");
        } else {
            println!("{path} {w}x{h}");
        }
        for &s in &scales {
            let (dw0, dh0) = detect::detector_input_size(w, h);
            let (dw, dh) = (((dw0 as f64) * s) as usize, ((dh0 as f64) * s) as usize);
            let (dw, dh) = (dw.min(w), dh.min(h));
            let mut scratch = Vec::new();
            let mut input = Vec::new();
            let t = std::time::Instant::now();
            detect::detector_input(&img.view(), dw, dh, &mut scratch, &mut input);
            let out = engine.detect(&input, dw, dh).unwrap();
            let priors = detect::priors(dw, dh);
            let faces = detect::select_faces(&out, &priors, 0.3).unwrap();
            let ms = t.elapsed().as_secs_f64() * 1e3;
            let list: Vec<String> = faces
                .kept
                .iter()
                .take(6)
                .map(|d| format!("{:.2}@{:?}", d.confidence, d.bbox(w, h)))
                .collect();
            if std::env::var_os("SUMMARY").is_some() {
                let best = faces.kept.first();
                let second = faces
                    .kept
                    .iter()
                    .skip(1)
                    .filter(|d| {
                        let b = d.bbox(w, h);
                        best.is_some_and(|f| detect::is_separate_face(f, d)) && b[2].min(b[3]) >= 32
                    })
                    .map(|d| d.confidence)
                    .fold(0.0f32, f32::max);
                print!(" x{s}:{second:.2}");
            } else {
                println!("  x{s} {dw}x{dh} {ms:.0}ms: {}", list.join(" "));
            }
        }
        let ff = set.set.face_finder.as_ref().unwrap();
        let (dw, dh) = detect::detector_input_size(w, h);
        let (mut scratch, mut input) = (Vec::new(), Vec::new());
        detect::detector_input(&img.view(), dw, dh, &mut scratch, &mut input);
        let out = engine.detect(&input, dw, dh).unwrap();
        let best = detect::select_faces(&out, &detect::priors(dw, dh), 0.3)
            .unwrap()
            .best;
        let t = std::time::Instant::now();
        let scale = finder::finder_input(&img.view(), ff.size, &mut scratch, &mut input).unwrap();
        let out = engine.find_faces(&input).unwrap();
        let found = finder::decode(&out, ff.size, 0.3, ff.nms).unwrap();
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let second = found
            .iter()
            .map(|f| f.detection(scale, w, h))
            .filter(|d| {
                let b = d.bbox(w, h);
                best.is_some_and(|f| detect::is_separate_face(&f, d)) && b[2].min(b[3]) >= 32
            })
            .map(|d| d.confidence)
            .fold(0.0f32, f32::max);
        if std::env::var_os("SUMMARY").is_some() {
            println!(" finder:{second:.3} {ms:.1}ms");
        } else {
            println!("  finder {ms:.1}ms: best separate face {second:.3}");
        }
    }
}
