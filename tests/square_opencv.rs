//! Bit-exactness of `pipeline::square` against OpenCV: `cv2.resize` with `INTER_AREA` and
//! `INTER_LANCZOS4`, and face-antispoof-onnx's square crop + letterbox (`cv2.copyMakeBorder`
//! `BORDER_REFLECT_101`). Needs OpenCV-generated vectors, so it is ignored in a plain
//! `cargo test`; `scripts/opencv-parity.sh` writes them with OpenCV and runs it (CI does). The
//! fixed cases in `square.rs`'s unit tests always run.

use std::path::Path;

use livecheck::pipeline::resize::ImageView;
use livecheck::pipeline::square::{
    letterbox_resize, resize_area, resize_lanczos4, square_reflect_crop,
};

fn load_u8(p: &Path) -> (Vec<u64>, Vec<u8>) {
    let f = npyz::NpyFile::new(std::io::BufReader::new(
        std::fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    ))
    .unwrap();
    (f.shape().to_vec(), f.into_vec().unwrap())
}

fn load_f64(p: &Path) -> Vec<f64> {
    let f = npyz::NpyFile::new(std::io::BufReader::new(std::fs::File::open(p).unwrap())).unwrap();
    f.into_vec().unwrap()
}

fn view<'a>(shape: &[u64], data: &'a [u8]) -> ImageView<'a> {
    ImageView {
        data,
        width: shape[1] as usize,
        height: shape[0] as usize,
        stride: shape[1] as usize * 3,
    }
}

/// Largest absolute difference and number of differing values.
fn diff(a: &[u8], b: &[u8]) -> (u8, usize) {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold((0, 0), |(m, n), (x, y)| {
        (m.max(x.abs_diff(*y)), n + usize::from(x != y))
    })
}

#[test]
#[ignore = "needs LIVECHECK_SQUARE_VECTORS from scripts/opencv-square-vectors.py"]
fn square_matches_opencv() {
    let dir = std::path::PathBuf::from(
        std::env::var("LIVECHECK_SQUARE_VECTORS").expect("set LIVECHECK_SQUARE_VECTORS"),
    );
    let mut failures = Vec::new();
    let mut counts = [0usize; 4];
    let mut max = [0u8; 4];
    for i in 0.. {
        if !dir.join(format!("area{i}_src.npy")).exists() {
            break;
        }
        for (k, kind) in ["area", "lanczos"].into_iter().enumerate() {
            let (ss, s) = load_u8(&dir.join(format!("{kind}{i}_src.npy")));
            let (ds, d) = load_u8(&dir.join(format!("{kind}{i}_dst.npy")));
            let (dw, dh) = (ds[1] as usize, ds[0] as usize);
            let mut out = vec![0u8; d.len()];
            let ok = if k == 0 {
                resize_area(&view(&ss, &s), dw, dh, &mut out)
            } else {
                resize_lanczos4(&view(&ss, &s), dw, dh, &mut out)
            };
            assert!(ok, "{kind}{i}");
            let (m, n) = diff(&out, &d);
            max[k] = max[k].max(m);
            counts[k] += 1;
            if n > 0 {
                failures.push(format!(
                    "{kind}{i}: {:?} -> {:?}: {n} values differ, max {m}",
                    &ss[..2],
                    &ds[..2]
                ));
            }
        }

        let (is, img) = load_u8(&dir.join(format!("crop{i}_img.npy")));
        let p = load_f64(&dir.join(format!("crop{i}_par.npy")));
        let bbox = [p[0] as i32, p[1] as i32, p[2] as i32, p[3] as i32];
        let (factor, size, valid) = (p[4], p[5] as usize, p[6] != 0.0);
        let mut sq = Vec::new();
        let side = square_reflect_crop(&view(&is, &img), bbox, factor, &mut sq);
        if !valid {
            assert_eq!(
                side,
                None,
                "crop{i}: {bbox:?} x{factor} on {:?} should be refused",
                &is[..2]
            );
            continue;
        }
        let (qs, want_sq) = load_u8(&dir.join(format!("crop{i}_sq.npy")));
        let side = side.unwrap_or_else(|| panic!("crop{i}: {bbox:?} x{factor}: no crop"));
        assert_eq!(side as u64, qs[0], "crop{i}: side");
        let (m, n) = diff(&sq, &want_sq);
        max[2] = max[2].max(m);
        counts[2] += 1;
        if n > 0 {
            failures.push(format!("crop{i}: {bbox:?} x{factor}: {n} values differ"));
        }
        let (_, want) = load_u8(&dir.join(format!("crop{i}_out.npy")));
        let mut out = Vec::new();
        // Letterbox OpenCV's own crop so that a crop mismatch is not counted twice.
        assert!(
            letterbox_resize(&view(&qs, &want_sq), size, &mut out),
            "crop{i}"
        );
        let (m, n) = diff(&out, &want);
        max[3] = max[3].max(m);
        counts[3] += 1;
        if n > 0 {
            failures.push(format!(
                "letterbox{i}: side {side} -> {size}: {n} values differ, max {m}"
            ));
        }
    }
    println!("cases area/lanczos4/crop/letterbox: {counts:?}, max abs difference: {max:?}");
    assert!(counts[0] > 0, "no vectors in {}", dir.display());
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
