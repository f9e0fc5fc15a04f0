//! The model set: a checked-in manifest (`models/manifest.json`, compiled in), model directory
//! resolution, SHA-256 verification at load, and copying verified files into a directory.
//!
//! Fetching over HTTP lives in the binary (`livecheck models fetch`); this module only reads
//! local files.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest text shipped with this build.
pub const MANIFEST_JSON: &str = include_str!("../models/manifest.json");

/// What a model file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Detector,
    ClassifierV2,
    ClassifierV1se,
}

/// One file of the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelFile {
    pub file: String,
    pub role: Role,
    pub bytes: u64,
    pub sha256: String,
    pub url: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
}

/// The manifest: the files of one pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub description: String,
    pub license: String,
    pub files: Vec<ModelFile>,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("the built-in model manifest is invalid: {0}")]
    Manifest(String),
    #[error(
        "no model directory found (tried {tried}); pass --models DIR or set LIVECHECK_MODEL_DIR, \
         or fill ./models with `livecheck models fetch --from DIR|URL`"
    )]
    NoDirectory { tried: String },
    #[error(
        "model file {path} is missing; run `livecheck models fetch --from DIR|URL` or point --models at \
         a directory holding it"
    )]
    Missing { path: PathBuf },
    #[error(
        "model file {path} has SHA-256 {actual}, expected {expected} (altered or wrong file); replace it \
         with a verified copy (`livecheck models fetch`)"
    )]
    HashMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("cannot read model file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Manifest {
    /// The manifest compiled into this binary.
    pub fn builtin() -> Result<Manifest, ModelError> {
        serde_json::from_str(MANIFEST_JSON).map_err(|e| ModelError::Manifest(e.to_string()))
    }

    /// The file with `role`.
    pub fn file(&self, role: Role) -> Result<&ModelFile, ModelError> {
        self.files
            .iter()
            .find(|f| f.role == role)
            .ok_or_else(|| ModelError::Manifest(format!("no file with role {role:?}")))
    }

    /// A short identity of the model set: the first 16 hex digits of SHA-256 over the files'
    /// hashes in manifest order. Stored with every audit record and report.
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        for f in &self.files {
            h.update(f.sha256.as_bytes());
            h.update(b"\n");
        }
        hex::encode(h.finalize())[..16].to_string()
    }
}

/// Resolve the model directory: `flag` (which clap also fills from `LIVECHECK_MODEL_DIR`), else
/// `./models` if it holds the detector, else `../shared/models`.
pub fn resolve_dir(flag: Option<&Path>, manifest: &Manifest) -> Result<PathBuf, ModelError> {
    if let Some(dir) = flag {
        return Ok(dir.to_path_buf());
    }
    if let Some(dir) = std::env::var_os("LIVECHECK_MODEL_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let detector = &manifest.file(Role::Detector)?.file;
    let candidates = [PathBuf::from("models"), PathBuf::from("../shared/models")];
    for c in &candidates {
        if c.join(detector).is_file() {
            return Ok(c.clone());
        }
    }
    Err(ModelError::NoDirectory {
        tried: candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// SHA-256 of bytes, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Read `dir/file` and check its hash; returns the bytes.
pub fn read_verified(dir: &Path, f: &ModelFile) -> Result<Vec<u8>, ModelError> {
    let path = dir.join(&f.file);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ModelError::Missing { path })
        }
        Err(source) => return Err(ModelError::Io { path, source }),
    };
    let actual = sha256_hex(&bytes);
    if actual != f.sha256 {
        return Err(ModelError::HashMismatch {
            path,
            expected: f.sha256.clone(),
            actual,
        });
    }
    Ok(bytes)
}

/// Verify every file of `manifest` in `dir`: one result per file.
pub fn verify_dir(dir: &Path, manifest: &Manifest) -> Vec<(ModelFile, Result<(), ModelError>)> {
    manifest
        .files
        .iter()
        .map(|f| (f.clone(), read_verified(dir, f).map(|_| ())))
        .collect()
}

/// Check `bytes` against `f` and write them to `dir/f.file` atomically (temp file + rename).
pub fn install_verified(dir: &Path, f: &ModelFile, bytes: &[u8]) -> Result<PathBuf, ModelError> {
    let path = dir.join(&f.file);
    let actual = sha256_hex(bytes);
    if actual != f.sha256 {
        return Err(ModelError::HashMismatch {
            path,
            expected: f.sha256.clone(),
            actual,
        });
    }
    let io = |source| ModelError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join(format!(".{}.partial", f.file));
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_manifest_parses_and_has_all_roles() {
        let m = Manifest::builtin().unwrap();
        for r in [Role::Detector, Role::ClassifierV2, Role::ClassifierV1se] {
            assert_eq!(m.file(r).unwrap().sha256.len(), 64);
        }
        assert_eq!(m.hash().len(), 16);
    }

    #[test]
    fn missing_and_altered_files_are_named() {
        let m = Manifest::builtin().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let f = m.file(Role::ClassifierV2).unwrap();
        let err = read_verified(dir.path(), f).unwrap_err();
        assert!(matches!(err, ModelError::Missing { .. }));
        assert!(err.to_string().contains("MiniFASNetV2.onnx"));
        std::fs::write(dir.path().join(&f.file), b"not the model").unwrap();
        let err = read_verified(dir.path(), f).unwrap_err();
        assert!(matches!(err, ModelError::HashMismatch { .. }));
        assert!(
            err.to_string().contains("MiniFASNetV2.onnx") && err.to_string().contains(&f.sha256)
        );
        assert!(install_verified(dir.path(), f, b"nope").is_err());
    }
}
