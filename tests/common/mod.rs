//! Helpers shared by the test binaries: fixture paths, the model directory, the optional devset,
//! the binary runner, store fixtures ([`with_each_database`], [`PgSchema`]) and a local HTTP
//! server ([`TestServer`]).
//! Each test binary uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

include!("skip.rs");

mod db;
mod records;
mod server;
#[allow(unused_imports)] // each test binary uses a part of it
pub use db::{with_each_database, PgSchema, PG_ENV};
#[allow(unused_imports)]
pub use records::plain_record;
#[allow(unused_imports)]
pub use server::TestServer;

/// The repository root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `tests/fixtures`.
pub fn fixtures() -> PathBuf {
    root().join("tests/fixtures")
}

/// The Silent-Face samples and upstream reference (`tests/fixtures/silentface`, Apache-2.0).
pub fn silentface() -> PathBuf {
    fixtures().join("silentface")
}

/// One Silent-Face sample's bytes (`image_F1.jpg`, `image_F2.jpg`, `image_T1.jpg`).
pub fn sample(name: &str) -> Vec<u8> {
    std::fs::read(silentface().join(name)).unwrap()
}

/// The model files: `$LIVECHECK_MODEL_DIR`, else the repository's `models/` (the files the
/// binary embeds).
pub fn models() -> PathBuf {
    std::env::var_os("LIVECHECK_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("models"))
}

/// The labelled devset (`$LIVECHECK_DEVSET`: a folder with `manifest.csv`, `live/`, `spoof/`
/// and `multi/`). `None` (with a note) when it is not set; under CI, where `.ci/run` sets it, a
/// missing devset fails the test instead.
pub fn devset(what: &str) -> Option<PathBuf> {
    match std::env::var_os("LIVECHECK_DEVSET") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            assert!(
                dir.join("manifest.csv").is_file(),
                "LIVECHECK_DEVSET={} has no manifest.csv",
                dir.display()
            );
            Some(dir)
        }
        None => {
            skip_unless_ci(what, "LIVECHECK_DEVSET is not set");
            None
        }
    }
}

/// JPEG bytes of `img` at `quality`, by the `image` crate's encoder (libjpeg's scaled tables).
#[allow(dead_code)] // not every test binary encodes
pub fn encode_jpeg(img: &livecheck::pipeline::BgrImage, quality: u8) -> Vec<u8> {
    let rgb: Vec<u8> = img
        .data
        .chunks_exact(3)
        .flat_map(|p| [p[2], p[1], p[0]])
        .collect();
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode(&rgb, img.width, img.height, image::ExtendedColorType::Rgb8)
        .unwrap();
    out
}

/// The devset's manifest rows (`file`, `label`, `source_repo`, ...), in file order.
#[allow(dead_code)] // not every test binary reads the manifest
pub fn devset_manifest(dir: &Path) -> Vec<std::collections::BTreeMap<String, String>> {
    csv::Reader::from_path(dir.join("manifest.csv"))
        .unwrap()
        .into_deserialize::<std::collections::BTreeMap<String, String>>()
        .map(|r| r.unwrap())
        .collect()
}

/// The `livecheck` binary under test, with models from [`models`] and none of the outer
/// environment's settings that would change what a command does (threshold, model set,
/// database).
pub fn livecheck_command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_livecheck"));
    c.env("LIVECHECK_MODEL_DIR", models());
    for var in [
        "LIVECHECK_THRESHOLD",
        "LIVECHECK_MODEL_SET",
        "LIVECHECK_DATABASE_URL",
    ] {
        c.env_remove(var);
    }
    c
}

/// Run `livecheck ARGS` ([`livecheck_command`]) to completion.
pub fn livecheck(args: &[&str]) -> Output {
    livecheck_command()
        .args(args)
        .output()
        .expect("run livecheck")
}

/// Fail with the command's status and output unless it succeeded.
pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "livecheck failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
