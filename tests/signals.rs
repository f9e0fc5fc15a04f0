//! Image signals on real pictures (`src/signals.rs`). The figures printed here are those of
//! docs/accuracy.md ("Image signals"):
//!
//!     LIVECHECK_DEVSET=../shared/testdata/devset cargo test --test signals -- --nocapture

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use livecheck::pipeline::decode::{
    decode, decode_with_luma, jpeg_luma_coefficients, DecodeLimits, LumaRead,
};
use livecheck::pipeline::print::ImagePrint;
use livecheck::pipeline::{BgrImage, PipelineConfig};
use livecheck::service::CheckService;
use livecheck::signals::{self, Signals};

fn service() -> &'static CheckService {
    static S: OnceLock<CheckService> = OnceLock::new();
    S.get_or_init(|| {
        let dir = common::models();
        CheckService::new(Arc::new(
            livecheck::load_pipeline(None, Some(&dir), PipelineConfig::default()).unwrap(),
        ))
    })
}

/// JPEG bytes of `img` at `quality`.
fn jpeg(img: &BgrImage, quality: u8) -> Vec<u8> {
    common::encode_jpeg(img, quality)
}

/// `img` compressed at `first`, decoded, and compressed again at `second`.
fn twice(img: &BgrImage, first: u8, second: u8) -> Vec<u8> {
    let once = decode(&jpeg(img, first), &DecodeLimits::default()).unwrap();
    jpeg(&once, second)
}

/// A JPEG with an EXIF block holding `tags` (ASCII values) inserted after SOI.
fn with_exif(jpeg: &[u8], tags: &[(u16, &str)]) -> Vec<u8> {
    // TIFF, little-endian: header, one IFD of `tags` (sorted), the strings after it.
    let mut tags = tags.to_vec();
    tags.sort_by_key(|t| t.0);
    let ifd_len = 2 + 12 * tags.len() + 4;
    let mut tiff = b"II*\0".to_vec();
    tiff.extend_from_slice(&8u32.to_le_bytes());
    tiff.extend_from_slice(&(tags.len() as u16).to_le_bytes());
    let mut data = Vec::new();
    for (tag, value) in &tags {
        let mut v = value.as_bytes().to_vec();
        v.push(0);
        tiff.extend_from_slice(&tag.to_le_bytes());
        tiff.extend_from_slice(&2u16.to_le_bytes());
        tiff.extend_from_slice(&(v.len() as u32).to_le_bytes());
        if v.len() <= 4 {
            v.resize(4, 0);
            tiff.extend_from_slice(&v);
        } else {
            let offset = 8 + ifd_len + data.len();
            tiff.extend_from_slice(&(offset as u32).to_le_bytes());
            data.extend_from_slice(&v);
        }
    }
    tiff.extend_from_slice(&0u32.to_le_bytes());
    tiff.extend_from_slice(&data);
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

const SOFTWARE: u16 = 0x0131;
const MAKE: u16 = 0x010F;
const MODEL: u16 = 0x0110;

fn signals_of(bytes: &[u8]) -> Signals {
    service().check(bytes).unwrap().signals
}

#[test]
fn exif_software_and_camera_are_read() {
    let sample = common::sample("image_T1.jpg");
    let edited = signals_of(&with_exif(
        &sample,
        &[(SOFTWARE, "Adobe Photoshop 25.0 (Windows)")],
    ));
    let editor = edited.editor.unwrap();
    assert!(editor.flagged);
    assert_eq!(
        editor.software.as_deref(),
        Some("Adobe Photoshop 25.0 (Windows)")
    );
    assert!(!edited.screenshot.unwrap().camera_exif);

    let camera = signals_of(&with_exif(
        &sample,
        &[(MAKE, "Apple"), (MODEL, "iPhone 15"), (SOFTWARE, "17.1")],
    ));
    let editor = camera.editor.unwrap();
    assert!(!editor.flagged, "firmware version is not an editor");
    assert_eq!(editor.software.as_deref(), Some("17.1"));
    assert!(camera.screenshot.unwrap().camera_exif);

    // Control characters and overlong values are cleaned, never echoed raw.
    let hostile = "GIMP\u{1b}[31m".to_owned() + &"x".repeat(500);
    let s = signals_of(&with_exif(&sample, &[(SOFTWARE, &hostile)]))
        .editor
        .unwrap();
    assert!(s.flagged);
    let software = s.software.unwrap();
    assert!(
        software.len() <= 64 && software.starts_with("GIMP[31m"),
        "{software}"
    );

    // The sample's own EXIF names a photo manager, not an editor.
    let own = signals_of(&sample).editor.unwrap();
    assert_eq!(own.software.as_deref(), Some("Shotwell 0.22.0"));
    assert!(!own.flagged);
    // No EXIF at all.
    let img = decode(&sample, &DecodeLimits::default()).unwrap();
    let plain = signals_of(&jpeg(&img, 90));
    assert_eq!(plain.editor.unwrap().software, None);
    assert!(!plain.screenshot.unwrap().camera_exif);
}

#[test]
fn a_screen_sized_picture_without_camera_exif_is_flagged() {
    let img = decode(&common::sample("image_T1.jpg"), &DecodeLimits::default()).unwrap();
    // A phone screenshot's shape: 1080x2340 holding the sample in its middle.
    let (w, h) = (1080u32, 2340u32);
    let mut data = vec![40u8; (w * h * 3) as usize];
    let y0 = (h - img.height) / 2;
    let x0 = (w - img.width.min(w)) / 2;
    for y in 0..img.height {
        let row = &img.data[(y * img.width * 3) as usize..((y + 1) * img.width * 3) as usize];
        let start = (((y0 + y) * w + x0) * 3) as usize;
        let n = row.len().min(((w - x0) * 3) as usize);
        data[start..start + n].copy_from_slice(&row[..n]);
    }
    let screen = BgrImage::from_raw(w, h, data).unwrap();
    let shot = jpeg(&screen, 90);
    let s = signals_of(&shot).screenshot.unwrap();
    assert!(s.flagged && s.screen_sized && !s.camera_exif, "{s:?}");
    // The same picture with camera EXIF is a tall photo, not a screenshot.
    let s = signals_of(&with_exif(&shot, &[(MAKE, "samsung")]))
        .screenshot
        .unwrap();
    assert!(!s.flagged && s.screen_sized && s.camera_exif, "{s:?}");
    // The sample itself (a camera picture's shape) is not screen-sized.
    let s = signals_of(&common::sample("image_T1.jpg"))
        .screenshot
        .unwrap();
    assert!(!s.screen_sized && !s.flagged, "{s:?}");
}

#[test]
fn face_share_is_the_face_width_over_the_image_width() {
    let bytes = common::sample("image_T1.jpg");
    let checked = service().check(&bytes).unwrap();
    let face = checked.verdict.face.unwrap();
    let [w, _] = checked.verdict.image_size.unwrap();
    let share = checked.signals.face_share.unwrap();
    let expected = f64::from(face.bbox[2]) / f64::from(w);
    assert!((share.share.unwrap() - expected).abs() < 1e-4);
    assert_eq!(share.flagged, !(0.10..=0.60).contains(&expected));

    // The same face in a canvas four times as wide: too small a share.
    let img = decode(&bytes, &DecodeLimits::default()).unwrap();
    let (cw, ch) = (img.width * 4, img.height);
    let mut data = vec![128u8; (cw * ch * 3) as usize];
    for y in 0..img.height {
        let row = &img.data[(y * img.width * 3) as usize..((y + 1) * img.width * 3) as usize];
        let start = ((y * cw + img.width * 3 / 2) * 3) as usize;
        data[start..start + row.len()].copy_from_slice(row);
    }
    let wide = jpeg(&BgrImage::from_raw(cw, ch, data).unwrap(), 95);
    let checked = service().check(&wide).unwrap();
    if let Some(face) = checked.verdict.face {
        let s = checked.signals.face_share.unwrap();
        let share = s.share.unwrap();
        assert!((share - f64::from(face.bbox[2]) / f64::from(cw)).abs() < 1e-4);
        assert_eq!(s.flagged, share < 0.10, "{share}");
    }
    // No face: no share, not flagged.
    let blank = jpeg(
        &BgrImage::from_raw(320, 240, vec![90u8; 320 * 240 * 3]).unwrap(),
        90,
    );
    let s = signals_of(&blank).face_share.unwrap();
    assert_eq!((s.flagged, s.share), (false, None));
}

#[test]
fn double_jpeg_on_the_samples_and_png_is_not_analysed() {
    for name in ["image_F1", "image_F2", "image_T1"] {
        let bytes = common::sample(&format!("{name}.jpg"));
        let img = decode(&bytes, &DecodeLimits::default()).unwrap();
        let s = signals::double_jpeg(&twice(&img, 50, 90));
        assert!(s.analysed && s.flagged, "{name} q50 then q90: {s:?}");
        assert_eq!(s.quality, Some(90));
    }
    // A file over the read cap is analysed from its first 128 KiB: the sample at three times its
    // size with grain (so that it compresses poorly).
    let img = decode(&common::sample("image_T1.jpg"), &DecodeLimits::default()).unwrap();
    let (w, h) = (img.width as usize * 3, img.height as usize * 3);
    let mut big = vec![0u8; w * h * 3];
    livecheck::pipeline::resize::resize_bilinear(&img.view(), w, h, &mut big);
    let mut seed = 0x2545_f491_u32;
    for v in big.iter_mut() {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        *v = v.saturating_add((seed % 9) as u8).saturating_sub(4);
    }
    let big = BgrImage::from_raw(w as u32, h as u32, big).unwrap();
    let once = jpeg(&big, 95);
    assert!(once.len() > livecheck::pipeline::decode::MAX_COEFFICIENT_BYTES);
    let s = signals::double_jpeg(&once);
    assert!(s.analysed && !s.flagged, "{s:?}");
    let twice = twice(&big, 60, 95);
    let s = signals::double_jpeg(&twice);
    assert!(s.analysed && s.flagged, "{s:?}");

    let mut png = Vec::new();
    image::RgbImage::from_raw(img.width, img.height, img.data.clone())
        .unwrap()
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let s = signals_of(&png);
    let d = s.double_jpeg.unwrap();
    assert!(!d.analysed && !d.flagged && d.quality.is_none());
    assert!(!s.screenshot.unwrap().camera_exif);
}

/// Devset pictures that were never JPEG-compressed (the PNGs) compressed once and twice: how
/// often each is flagged. A single compression must (almost) never be flagged; a second one
/// with a finer table after a coarser one must be found on most pictures.
#[test]
fn devset_double_compression_rates() {
    let Some(dir) = common::devset("double-JPEG rates") else {
        return;
    };
    let mut pngs: Vec<_> = std::fs::read_dir(dir.join("live"))
        .unwrap()
        .chain(std::fs::read_dir(dir.join("spoof")).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    pngs.sort();
    let cases: [(&str, Option<u8>, u8); 7] = [
        ("once q75", None, 75),
        ("once q90", None, 90),
        ("once q95", None, 95),
        ("q50 then q90", Some(50), 90),
        ("q70 then q90", Some(70), 90),
        ("q60 then q80", Some(60), 80),
        ("q90 then q70", Some(90), 70),
    ];
    let mut flagged: BTreeMap<&str, usize> = BTreeMap::new();
    let mut n = 0usize;
    for path in &pngs {
        let img = decode(&std::fs::read(path).unwrap(), &DecodeLimits::default()).unwrap();
        if img.width < 64 || img.height < 64 {
            continue;
        }
        n += 1;
        for (name, first, second) in cases {
            let bytes = match first {
                Some(q) => twice(&img, q, second),
                None => jpeg(&img, second),
            };
            let s = signals::double_jpeg(&bytes);
            assert!(s.analysed);
            if s.flagged {
                *flagged.entry(name).or_default() += 1;
            }
        }
    }
    println!("{n} devset PNGs (never JPEG-compressed), compressed with the image crate's encoder");
    println!("{:<16} {:>8}", "compression", "flagged");
    let rate = |name: &str| *flagged.get(name).unwrap_or(&0) as f64 / n as f64;
    for (name, _, _) in cases {
        println!("{name:<16} {:>7.1}%", 100.0 * rate(name));
    }
    assert!(n >= 100, "{n} PNGs");
    for name in ["once q75", "once q90", "once q95"] {
        assert!(rate(name) <= 0.02, "{name}: {}", rate(name));
    }
    for name in ["q50 then q90", "q70 then q90", "q60 then q80"] {
        assert!(rate(name) >= 0.8, "{name}: {}", rate(name));
    }
}

/// A picture's print with its keyed band tags.
type KeyedPrint = (ImagePrint, [String; 4]);

/// Each signal's rate on the devset's live and attack pictures (docs/accuracy.md).
#[test]
fn devset_signal_rates() {
    let Some(dir) = common::devset("image signal rates") else {
        return;
    };
    let manifest = common::devset_manifest(&dir);
    let names = [
        "editor",
        "screenshot",
        "double_jpeg",
        "face_share",
        "resubmission",
    ];
    // label -> (pictures, jpegs, flagged per signal, too small, too large)
    let mut counts: BTreeMap<String, (usize, usize, [usize; 5], usize, usize)> = BTreeMap::new();
    // Re-submission as the service judges it, the devset sent once in manifest order: the same
    // bytes, or a print sharing a keyed band and within the match distance of an earlier one.
    let key = livecheck::resubmission::PrintKey::from_secret([7; 32]);
    let mut earlier: Vec<(String, Option<KeyedPrint>)> = Vec::new();
    // (source, label, flagged file signals) -> pictures
    let mut by_source: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for row in &manifest {
        let bytes = std::fs::read(dir.join(&row["file"])).unwrap();
        let Ok(checked) = service().check(&bytes) else {
            continue;
        };
        let mut s = checked.signals;
        let print = checked
            .verdict
            .print
            .as_deref()
            .map(|p| (*p, key.band_tags(p)));
        let seen = earlier.iter().any(|(sha, other)| {
            *sha == checked.image_sha256
                || match (&print, other) {
                    (Some((p, tags)), Some((q, other_tags))) => {
                        tags.iter().zip(other_tags).any(|(a, b)| a == b) && p.matches(q)
                    }
                    _ => false,
                }
        });
        earlier.push((checked.image_sha256.clone(), print));
        s.resubmission = Some(livecheck::resubmission::Resubmission {
            seen_before: seen,
            first_seen: None,
            count: u64::from(seen),
            same_key: seen,
        });
        let flagged = s.flagged();
        if flagged
            .iter()
            .any(|f| *f == "editor" || *f == "double_jpeg" || *f == "screenshot")
        {
            let software = s.editor.as_ref().and_then(|e| e.software.clone());
            let what = match software {
                Some(sw) if flagged.contains(&"editor") => format!("{} ({sw})", flagged.join(",")),
                _ => flagged.join(","),
            };
            *by_source
                .entry((row["source_repo"].clone(), row["label"].clone(), what))
                .or_default() += 1;
        }
        let c = counts.entry(row["label"].clone()).or_default();
        c.0 += 1;
        if s.double_jpeg.unwrap().analysed {
            c.1 += 1;
        }
        let flags = s.flagged();
        for (i, name) in names.iter().enumerate() {
            if flags.contains(name) {
                c.2[i] += 1;
            }
        }
        if let Some(share) = s.face_share.unwrap().share {
            if share < signals::FACE_SHARE_TOO_SMALL {
                c.3 += 1;
            } else if share > signals::FACE_SHARE_TOO_LARGE {
                c.4 += 1;
            }
        }
    }
    println!(
        "{:<12} {:>8} {:>8} {:>8}",
        "signal", "label", "flagged", "of"
    );
    for (label, (n, jpegs, flags, small, large)) in &counts {
        for (i, name) in names.iter().enumerate() {
            let of = if *name == "double_jpeg" { *jpegs } else { *n };
            println!(
                "{name:<12} {label:>8} {:>7.1}% {of:>8}",
                100.0 * flags[i] as f64 / of.max(1) as f64
            );
        }
        println!("  face_share {label}: {small} too small, {large} too large");
    }
    println!("file signals flagged, by source:");
    for ((source, label, flags), n) in &by_source {
        println!("  {source:<45} {label:>6} {n:>3}  {flags}");
    }
    let total: usize = counts.values().map(|c| c.0).sum();
    assert!(total > 300, "{total} pictures checked");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
    /// Damaged JPEGs (cut anywhere, bytes overwritten) never panic the coefficient reader or the
    /// EXIF parser: they are not analysed, or analysed as what remains.
    #[test]
    fn damaged_jpegs_never_panic(cut in 0usize..70_000, flips in proptest::collection::vec((0usize..70_000, proptest::prelude::any::<u8>()), 0..8)) {
        static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
        let sample = BYTES.get_or_init(|| {
            with_exif(&common::sample("image_F1.jpg"), &[(SOFTWARE, "GIMP 2.10"), (MAKE, "Canon")])
        });
        let mut bytes = sample[..cut.min(sample.len())].to_vec();
        for (at, value) in flips {
            if let Some(b) = bytes.get_mut(at) {
                *b = value;
            }
        }
        let s = signals::double_jpeg(&bytes);
        proptest::prop_assert!(s.evidence <= 9);
        let exif = exif::Reader::new().read_from_container(&mut std::io::Cursor::new(&bytes));
        let _ = exif.map(|e| e.fields().count());
    }
}

/// What `decode_with_luma` (the service's decode, which also feeds the double-compression
/// signal) gives for `bytes` is what `decode` and `jpeg_luma_coefficients` give apart: the same
/// pixels, and the same luma blocks and table (or the same reason for none). Returns how the
/// blocks were read.
fn decode_together_matches_apart(name: &str, bytes: &[u8]) -> Option<LumaRead> {
    let limits = DecodeLimits::default();
    let mut together: Vec<[i16; 64]> = Vec::new();
    let joint = decode_with_luma(bytes, &limits, &mut |b| together.push(*b));
    match (joint, decode(bytes, &limits)) {
        (Ok((img, luma)), Ok(plain)) => {
            assert!(img == plain, "{name}: the pixels differ from decode's");
            let mut apart: Vec<[i16; 64]> = Vec::new();
            let separate = jpeg_luma_coefficients(bytes, |b| apart.push(*b));
            match luma {
                LumaRead::Read(quant) => {
                    assert_eq!(separate.ok(), Some(Some(quant)), "{name}: luma table");
                    assert!(!apart.is_empty(), "{name}: no luma blocks");
                    assert!(together == apart, "{name}: the luma blocks differ");
                }
                LumaRead::Unreadable => {
                    assert!(matches!(separate, Ok(None)), "{name}: {separate:?}");
                    assert!(together.is_empty(), "{name}");
                }
                LumaRead::Separately => assert!(together.is_empty(), "{name}"),
            }
            Some(luma)
        }
        (Err(a), Err(b)) => {
            assert_eq!(a.code(), b.code(), "{name}: {a} / {b}");
            assert!(together.is_empty() || a.code() == "image_corrupt", "{name}");
            None
        }
        (a, b) => panic!(
            "{name}: decode_with_luma {:?}, decode {:?}",
            a.map(|(_, l)| l),
            b.map(|_| ())
        ),
    }
}

#[test]
fn the_service_decode_reads_the_luma_blocks_of_the_separate_read() {
    let img = decode(&common::sample("image_T1.jpg"), &DecodeLimits::default()).unwrap();
    let (w, h) = (img.width as usize, img.height as usize);
    let rgb: Vec<u8> = img
        .data
        .chunks_exact(3)
        .flat_map(|p| [p[2], p[1], p[0]])
        .collect();
    // Progressive (mozjpeg's encoder), greyscale, and a file cut in half.
    let progressive = {
        let mut c = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
        c.set_size(w, h);
        c.set_quality(85.0);
        c.set_progressive_mode();
        let mut started = c.start_compress(Vec::new()).unwrap();
        started.write_scanlines(&rgb).unwrap();
        started.finish().unwrap()
    };
    assert!(
        progressive.windows(2).any(|m| m == [0xFF, 0xC2]),
        "not progressive"
    );
    let grey: Vec<u8> = img.data.chunks_exact(3).map(|p| p[1]).collect();
    let mut grey_jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut grey_jpeg, 85)
        .encode(&grey, w as u32, h as u32, image::ExtendedColorType::L8)
        .unwrap();
    let t1 = common::sample("image_T1.jpg");
    let mut files = vec![
        ("progressive".to_string(), progressive),
        ("greyscale".to_string(), grey_jpeg),
        ("double".to_string(), twice(&img, 50, 90)),
        ("cut".to_string(), t1[..t1.len() / 2].to_vec()),
    ];
    for name in ["image_F1", "image_F2", "image_T1"] {
        files.push((name.to_string(), common::sample(&format!("{name}.jpg"))));
    }
    let mut read = 0;
    for (name, bytes) in &files {
        let luma = decode_together_matches_apart(name, bytes);
        read += usize::from(matches!(luma, Some(LumaRead::Read(_))));
        // The service's signal is the one the separate read gives.
        if let Ok(checked) = service().check(bytes) {
            assert_eq!(
                checked.signals.double_jpeg,
                Some(signals::double_jpeg(bytes)),
                "{name}"
            );
        }
    }
    assert_eq!(read, files.len() - 1, "all but the cut file read together");

    // Every devset JPEG: sequential and progressive, under and over the 128 KiB read cap.
    let Some(dir) = common::devset("decode with luma on the devset") else {
        return;
    };
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let files = walkdir::WalkDir::new(&dir).sort_by_file_name().into_iter();
    for entry in files.map(|e| e.unwrap().into_path()) {
        let ext = entry.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !["jpg", "jpeg"].contains(&ext.to_ascii_lowercase().as_str()) {
            continue;
        }
        let bytes = std::fs::read(&entry).unwrap();
        let name = entry.display().to_string();
        let luma = decode_together_matches_apart(&name, &bytes);
        let kind = match luma {
            Some(LumaRead::Read(_)) => "read with the pixels",
            Some(LumaRead::Unreadable) => "no luma to read",
            Some(LumaRead::Separately) => "read separately",
            None => "not decoded",
        };
        *counts.entry(kind.to_string()).or_default() += 1;
    }
    println!("devset JPEGs: {counts:?}");
    assert!(counts.get("read with the pixels").copied().unwrap_or(0) >= 10);
}
