//! Re-submission detection on real pictures: near-copies are caught and different pictures are
//! not matched. The figures printed here are those of docs/accuracy.md ("Re-submission"):
//!
//!     LIVECHECK_DEVSET=../shared/testdata/devset cargo test --release --test resubmission -- --nocapture
//!
//! A copy counts as caught when it would be found in a store (its print shares a keyed band tag
//! with the original's) and judged the same picture (distance within `MATCH_DISTANCE`), exactly
//! as the service decides (`resubmission::judge`).

mod common;

use std::collections::BTreeMap;

use livecheck::pipeline::decode::{decode, DecodeLimits};
use livecheck::pipeline::print::{ImagePrint, MATCH_DISTANCE};
use livecheck::pipeline::resize::resize_bilinear;
use livecheck::pipeline::BgrImage;
use livecheck::resubmission::PrintKey;

/// The ways a picture is copied, each a function of the decoded original.
type Variant = (&'static str, fn(&BgrImage) -> BgrImage);

const VARIANTS: [Variant; 9] = [
    ("jpeg q90", |i| reencode(i, 90)),
    ("jpeg q70", |i| reencode(i, 70)),
    ("jpeg q50", |i| reencode(i, 50)),
    ("resize 0.5", |i| scaled(i, 0.5)),
    ("resize 0.75", |i| scaled(i, 0.75)),
    ("resize 1.5", |i| scaled(i, 1.5)),
    ("brightness +25", |i| map_pixels(i, |v| v + 25.0)),
    ("contrast x1.2", |i| map_pixels(i, |v| v * 1.2 - 10.0)),
    ("crop 2% each side", |i| cropped(i, 0.02)),
];

fn map_pixels(img: &BgrImage, f: fn(f64) -> f64) -> BgrImage {
    let data = img
        .data
        .iter()
        .map(|&v| f(f64::from(v)).round().clamp(0.0, 255.0) as u8)
        .collect();
    BgrImage::from_raw(img.width, img.height, data).unwrap()
}

fn scaled(img: &BgrImage, s: f64) -> BgrImage {
    let w = ((f64::from(img.width) * s) as usize).max(1);
    let h = ((f64::from(img.height) * s) as usize).max(1);
    let mut data = vec![0u8; w * h * 3];
    resize_bilinear(&img.view(), w, h, &mut data);
    BgrImage::from_raw(w as u32, h as u32, data).unwrap()
}

fn cropped(img: &BgrImage, f: f64) -> BgrImage {
    let (w, h) = (img.width as usize, img.height as usize);
    let (dx, dy) = ((w as f64 * f) as usize, (h as f64 * f) as usize);
    let (cw, ch) = (w - 2 * dx, h - 2 * dy);
    let mut data = Vec::with_capacity(cw * ch * 3);
    for y in dy..dy + ch {
        data.extend_from_slice(&img.data[(y * w + dx) * 3..(y * w + dx + cw) * 3]);
    }
    BgrImage::from_raw(cw as u32, ch as u32, data).unwrap()
}

/// JPEG at `quality` (the `image` crate's encoder), decoded again as the service decodes.
fn reencode(img: &BgrImage, quality: u8) -> BgrImage {
    decode(&common::encode_jpeg(img, quality), &DecodeLimits::default()).unwrap()
}

/// Whether `copy` would be found and judged the same picture as `original`.
fn caught(key: &PrintKey, original: &ImagePrint, copy: &ImagePrint) -> bool {
    let (a, b) = (key.band_tags(original), key.band_tags(copy));
    a.iter().zip(&b).any(|(x, y)| x == y) && original.matches(copy)
}

/// The Silent-Face samples: every copy of each but the crop (caught on most pictures, not all:
/// the devset test measures it) is caught, and the three are not matched.
#[test]
fn sample_copies_are_caught_and_samples_differ() {
    let key = PrintKey::from_secret([5; 32]);
    let mut prints = Vec::new();
    for name in ["image_F1", "image_F2", "image_T1"] {
        let img = decode(
            &common::sample(&format!("{name}.jpg")),
            &DecodeLimits::default(),
        )
        .unwrap();
        let p = ImagePrint::of_image(&img).expect("a print");
        for (what, f) in VARIANTS.into_iter().filter(|(w, _)| !w.starts_with("crop")) {
            let q = ImagePrint::of_image(&f(&img)).expect("a print");
            assert!(
                caught(&key, &p, &q),
                "{name} {what}: distance {}",
                p.distance(&q)
            );
        }
        prints.push(p);
    }
    for i in 0..prints.len() {
        for j in i + 1..prints.len() {
            assert!(!prints[i].matches(&prints[j]), "samples {i} and {j}");
        }
    }
}

/// The devset: the share of each kind of copy caught, and every pair of different images.
/// No two images from different sources may match. Images of one source that match are
/// reported: in this devset they are frames of one video (the same face, pose and background a
/// fraction of a second apart), which no print robust to re-encoding can tell from a copy.
#[test]
fn devset_copies_are_caught_and_different_sources_never_match() {
    let Some(dir) = common::devset("re-submission robustness") else {
        return;
    };
    let manifest = common::devset_manifest(&dir);
    let key = PrintKey::from_secret([6; 32]);
    let mut images = Vec::new();
    let mut caught_by: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut worst: BTreeMap<&str, f32> = BTreeMap::new();
    for row in &manifest {
        let bytes = std::fs::read(dir.join(&row["file"])).unwrap();
        let Ok(img) = decode(&bytes, &DecodeLimits::default()) else {
            continue;
        };
        let Some(p) = ImagePrint::of_image(&img) else {
            continue;
        };
        for (what, f) in VARIANTS {
            let Some(q) = ImagePrint::of_image(&f(&img)) else {
                continue;
            };
            let e = caught_by.entry(what).or_default();
            e.1 += 1;
            if caught(&key, &p, &q) {
                e.0 += 1;
            }
            let w = worst.entry(what).or_default();
            *w = w.max(p.distance(&q));
        }
        let source = format!("{} {}", row["source_repo"], row["label"]);
        images.push((row["file"].clone(), source, p));
    }
    let sources: std::collections::BTreeSet<&str> = images.iter().map(|i| i.1.as_str()).collect();
    println!(
        "{} devset images with a print, {} sources (repository and label)",
        images.len(),
        sources.len()
    );
    println!("{:<20} {:>8} {:>14}", "copy", "caught", "max distance");
    for (what, (hit, n)) in &caught_by {
        println!(
            "{what:<20} {:>7.1}% {:>14.3}",
            100.0 * *hit as f64 / *n as f64,
            worst[what]
        );
    }
    let rate = |what: &str| {
        let (hit, n) = caught_by[what];
        hit as f64 / n as f64
    };
    // Re-encoding, resizing and brightness never defeat it; contrast and a 2 % crop can.
    for what in [
        "jpeg q90",
        "jpeg q70",
        "jpeg q50",
        "resize 0.5",
        "resize 0.75",
        "resize 1.5",
        "brightness +25",
    ] {
        assert!(rate(what) >= 0.99, "{what}: {}", rate(what));
    }
    assert!(rate("contrast x1.2") >= 0.95, "{}", rate("contrast x1.2"));
    assert!(
        rate("crop 2% each side") >= 0.5,
        "{}",
        rate("crop 2% each side")
    );

    let (mut pairs, mut same_source_pairs, mut nearest_cross) = (0usize, 0usize, f32::MAX);
    // How many unrelated pairs a store would offer as candidates: sharing one of the four 16-bit
    // bands (what is stored), against sharing one of eight 8-bit bands (the alternative).
    let (mut share16, mut share8) = (0usize, 0usize);
    let shares = |a: u64, b: u64, width: u32| {
        let mask = (1u64 << width) - 1;
        (0..64 / width).any(|i| (a >> (i * width)) & mask == (b >> (i * width)) & mask)
    };
    let mut matched_same_source = Vec::new();
    for i in 0..images.len() {
        for j in i + 1..images.len() {
            let ((fa, sa, pa), (fb, sb, pb)) = (&images[i], &images[j]);
            pairs += 1;
            let d = pa.distance(pb);
            if sa == sb {
                same_source_pairs += 1;
                if caught(&key, pa, pb) {
                    matched_same_source.push((d, fa.clone(), fb.clone()));
                }
            } else {
                nearest_cross = nearest_cross.min(d);
                share16 += usize::from(shares(pa.bits(), pb.bits(), 16));
                share8 += usize::from(shares(pa.bits(), pb.bits(), 8));
                assert!(
                    !caught(&key, pa, pb),
                    "{fa} and {fb} (different sources) match at {d}"
                );
            }
        }
    }
    println!(
        "{pairs} pairs: 0 of {} cross-source pairs match (nearest {nearest_cross:.3}, threshold \
         {MATCH_DISTANCE}); {} of {same_source_pairs} same-source pairs match",
        pairs - same_source_pairs,
        matched_same_source.len()
    );
    let mut by_source: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, a, _) in &matched_same_source {
        let source = &images.iter().find(|i| &i.0 == a).unwrap().1;
        *by_source.entry(source.as_str()).or_default() += 1;
    }
    println!("same-source matches by source: {by_source:?}");
    let cross = (pairs - same_source_pairs) as f64;
    println!(
        "cross-source pairs sharing a band: {:.2}% of 16-bit bands (stored), {:.2}% of 8-bit bands",
        100.0 * share16 as f64 / cross,
        100.0 * share8 as f64 / cross
    );
    matched_same_source.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (d, a, b) in matched_same_source.iter().take(5) {
        println!("  {d:.3} {a} ~ {b}");
    }
    assert!(nearest_cross > MATCH_DISTANCE);
}
