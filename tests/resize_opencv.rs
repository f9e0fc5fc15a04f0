//! Bit-exactness of `resize_bilinear` against `cv2.resize` on random sizes (up- and downscaling).
//! Needs OpenCV-generated vectors, so it is ignored in a plain `cargo test`;
//! `scripts/opencv-parity.sh` writes them with OpenCV and runs it (CI does). The reference tensors
//! in `tests/parity.rs` cover the pipeline's own sizes on every run.

use livecheck::pipeline::resize::{resize_bilinear, ImageView};

fn load(p: &std::path::Path) -> (Vec<u64>, Vec<u8>) {
    let f = npyz::NpyFile::new(std::io::BufReader::new(std::fs::File::open(p).unwrap())).unwrap();
    (f.shape().to_vec(), f.into_vec().unwrap())
}

#[test]
#[ignore = "needs LIVECHECK_RESIZE_VECTORS from scripts/opencv-resize-vectors.py"]
fn resize_matches_opencv() {
    let dir = std::path::PathBuf::from(
        std::env::var("LIVECHECK_RESIZE_VECTORS").expect("set LIVECHECK_RESIZE_VECTORS"),
    );
    let mut cases = 0;
    for i in 0.. {
        let src = dir.join(format!("src{i}.npy"));
        if !src.exists() {
            break;
        }
        let (ss, s) = load(&src);
        let (ds, d) = load(&dir.join(format!("dst{i}.npy")));
        let v = ImageView {
            data: &s,
            width: ss[1] as usize,
            height: ss[0] as usize,
            stride: ss[1] as usize * 3,
        };
        let mut out = vec![0u8; d.len()];
        resize_bilinear(&v, ds[1] as usize, ds[0] as usize, &mut out);
        let n = out.iter().zip(&d).filter(|(a, b)| a != b).count();
        assert_eq!(
            n,
            0,
            "case {i}: {:?} -> {:?}: {n} values differ",
            &ss[..2],
            &ds[..2]
        );
        cases += 1;
    }
    assert!(cases > 0, "no vectors in {}", dir.display());
}
