//! Labelled datasets: a folder layout or a CSV manifest.
//!
//! # Folder layout
//!
//! ```text
//! DATASET/
//!   live/...                    bona fide images (any depth)
//!   spoof/<attack_type>/...     attacks of that type (any depth below it)
//!   spoof/*.jpg                 attacks directly in spoof/ get attack type "unknown"
//! ```
//!
//! Files are found recursively; only the extensions jpg, jpeg, png, webp and bmp (any case) are
//! images, everything else is ignored. Live samples get attack type `none`.
//!
//! # CSV manifest
//!
//! A CSV file with a header row holding at least `file` and `label` (`live` or `spoof`).
//! `attack_type` is optional (empty or missing for a spoof → `unknown`; live samples always get
//! `none`). Every other column is kept and can be used with `--group-by`. `file` paths are
//! relative to the manifest's folder.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::metrics::Label;

/// Attack type of spoofs without one.
pub const UNKNOWN_ATTACK: &str = "unknown";
/// Attack type of live samples.
pub const NO_ATTACK: &str = "none";

/// Errors while loading a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("dataset {0} does not exist")]
    NotFound(PathBuf),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot walk {path}: {message}")]
    Walk { path: PathBuf, message: String },
    #[error("folder {0} has neither a live/ nor a spoof/ subfolder (expected live/ and spoof/<attack_type>/)")]
    NoLayout(PathBuf),
    #[error("manifest {path}: {message}")]
    Csv { path: PathBuf, message: String },
    #[error("manifest {path} has no `{column}` column (columns: {found})")]
    MissingColumn {
        path: PathBuf,
        column: String,
        found: String,
    },
    #[error("manifest {path}, line {line}: label {label:?} is not `live` or `spoof`")]
    BadLabel {
        path: PathBuf,
        line: u64,
        label: String,
    },
    #[error("manifest {path}, line {line}: empty `file`")]
    EmptyFile { path: PathBuf, line: u64 },
    #[error("{count} file(s) listed in {path} do not exist, first: {first}")]
    MissingFiles {
        path: PathBuf,
        count: usize,
        first: String,
    },
    #[error("dataset {0} holds no images")]
    Empty(PathBuf),
    #[error("no column `{column}` to group by (columns: {available})")]
    UnknownGroupColumn { column: String, available: String },
}

/// One labelled image.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetItem {
    /// The name reported everywhere: the manifest's `file` as written, or the path relative to
    /// the dataset folder with `/` separators.
    pub file: String,
    /// Where to read it.
    pub path: PathBuf,
    pub label: Label,
    pub attack_type: String,
    /// Every column of the row except `file` (for a folder layout: `label` and `attack_type`).
    pub fields: BTreeMap<String, String>,
}

/// A loaded dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// The folder or manifest it was loaded from.
    pub source: PathBuf,
    pub items: Vec<DatasetItem>,
    /// Columns available for grouping, in file order.
    pub columns: Vec<String>,
}

impl Dataset {
    /// Loads a folder layout (when `path` is a directory) or a CSV manifest (otherwise).
    pub fn load(path: &Path) -> Result<Dataset, DatasetError> {
        let meta = std::fs::metadata(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                DatasetError::NotFound(path.to_path_buf())
            } else {
                DatasetError::Io {
                    path: path.to_path_buf(),
                    source: e,
                }
            }
        })?;
        let ds = if meta.is_dir() {
            load_folder(path)?
        } else {
            load_manifest(path)?
        };
        if ds.items.is_empty() {
            return Err(DatasetError::Empty(path.to_path_buf()));
        }
        Ok(ds)
    }

    /// Checks that `column` can be used with `--group-by`.
    pub fn check_group_column(&self, column: &str) -> Result<(), DatasetError> {
        if self.columns.iter().any(|c| c == column) {
            Ok(())
        } else {
            Err(DatasetError::UnknownGroupColumn {
                column: column.to_string(),
                available: self.columns.join(", "),
            })
        }
    }

    /// Reads every file and returns [`dataset_hash`] over them.
    pub fn hash(&self) -> Result<String, DatasetError> {
        let mut entries = Vec::with_capacity(self.items.len());
        for it in &self.items {
            let sha = file_sha256(&it.path)?;
            entries.push((it.file.clone(), it.label, it.attack_type.clone(), sha));
        }
        Ok(dataset_hash(entries))
    }
}

/// Hex SHA-256 of a file's content.
pub fn file_sha256(path: &Path) -> Result<String, DatasetError> {
    let io = |source| DatasetError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Hex SHA-256 of byte content.
pub fn bytes_sha256(bytes: &[u8]) -> String {
    crate::sha256_hex(bytes)
}

/// The dataset hash: SHA-256 over the entries `(file, label, attack_type, content sha256 hex)`
/// sorted, each field written as its byte length (u64 little-endian) followed by its UTF-8 bytes,
/// so that no choice of names can make two different datasets collide by concatenation.
pub fn dataset_hash(mut entries: Vec<(String, Label, String, String)>) -> String {
    entries.sort();
    let mut h = Sha256::new();
    for (file, label, attack, sha) in &entries {
        for field in [file.as_str(), label.as_str(), attack.as_str(), sha.as_str()] {
            h.update((field.len() as u64).to_le_bytes());
            h.update(field.as_bytes());
        }
    }
    hex::encode(h.finalize())
}

fn is_image(path: &Path) -> bool {
    crate::pipeline::decode::has_image_extension(path)
}

fn rel_name(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

fn walk_images(root: &Path, dir: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(dir)
        .follow_links(true)
        .sort_by_file_name()
    {
        let entry = entry.map_err(|e| DatasetError::Walk {
            path: e.path().unwrap_or(root).to_path_buf(),
            message: e.to_string(),
        })?;
        if entry.file_type().is_file() && is_image(entry.path()) {
            out.push(entry.into_path());
        }
    }
    Ok(out)
}

fn load_folder(root: &Path) -> Result<Dataset, DatasetError> {
    let live_dir = root.join("live");
    let spoof_dir = root.join("spoof");
    if !live_dir.is_dir() && !spoof_dir.is_dir() {
        return Err(DatasetError::NoLayout(root.to_path_buf()));
    }
    let mut items = Vec::new();
    let mut push = |path: PathBuf, label: Label, attack: String| {
        let mut fields = BTreeMap::new();
        fields.insert("label".to_string(), label.as_str().to_string());
        fields.insert("attack_type".to_string(), attack.clone());
        items.push(DatasetItem {
            file: rel_name(root, &path),
            path,
            label,
            attack_type: attack,
            fields,
        });
    };
    if live_dir.is_dir() {
        for p in walk_images(root, &live_dir)? {
            push(p, Label::Live, NO_ATTACK.to_string());
        }
    }
    if spoof_dir.is_dir() {
        for p in walk_images(root, &spoof_dir)? {
            let rel = p.strip_prefix(&spoof_dir).unwrap_or(&p);
            let mut comps = rel.components();
            let first = comps.next();
            let attack = match (first, comps.next()) {
                // spoof/<type>/.../file
                (Some(t), Some(_)) => t.as_os_str().to_string_lossy().into_owned(),
                // spoof/file
                _ => UNKNOWN_ATTACK.to_string(),
            };
            push(p, Label::Spoof, attack);
        }
    }
    Ok(Dataset {
        source: root.to_path_buf(),
        items,
        columns: vec!["label".to_string(), "attack_type".to_string()],
    })
}

fn load_manifest(path: &Path) -> Result<Dataset, DatasetError> {
    let csv_err = |e: csv::Error| DatasetError::Csv {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let base = path.parent().unwrap_or(Path::new("")).to_path_buf();
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .trim(csv::Trim::Headers)
        .from_path(path)
        .map_err(|e| match e.kind() {
            csv::ErrorKind::Io(_) => DatasetError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other(e.to_string()),
            },
            _ => csv_err(e),
        })?;
    let headers: Vec<String> = rdr
        .headers()
        .map_err(csv_err)?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_string())
        .collect();
    let col = |name: &str| -> Result<usize, DatasetError> {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| DatasetError::MissingColumn {
                path: path.to_path_buf(),
                column: name.to_string(),
                found: headers.join(", "),
            })
    };
    let file_col = col("file")?;
    let label_col = col("label")?;
    let attack_col = headers.iter().position(|h| h == "attack_type");

    let mut items = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(csv_err)?;
        let line = rec.position().map_or(0, |p| p.line());
        let file = rec.get(file_col).unwrap_or("").trim().to_string();
        if file.is_empty() {
            return Err(DatasetError::EmptyFile {
                path: path.to_path_buf(),
                line,
            });
        }
        let raw_label = rec.get(label_col).unwrap_or("");
        let label = Label::parse(raw_label).ok_or_else(|| DatasetError::BadLabel {
            path: path.to_path_buf(),
            line,
            label: raw_label.to_string(),
        })?;
        let attack_type = match label {
            Label::Live => NO_ATTACK.to_string(),
            Label::Spoof => {
                let a = attack_col.and_then(|c| rec.get(c)).unwrap_or("").trim();
                if a.is_empty() {
                    UNKNOWN_ATTACK.to_string()
                } else {
                    a.to_string()
                }
            }
        };
        let full = base.join(&file);
        if !full.is_file() {
            missing.push(format!("{file} (line {line})"));
            continue;
        }
        let fields = headers
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != file_col)
            .map(|(i, h)| (h.clone(), rec.get(i).unwrap_or("").to_string()))
            .collect();
        items.push(DatasetItem {
            file,
            path: full,
            label,
            attack_type,
            fields,
        });
    }
    if let Some(first) = missing.first() {
        return Err(DatasetError::MissingFiles {
            path: path.to_path_buf(),
            count: missing.len(),
            first: first.clone(),
        });
    }
    let columns = headers.iter().filter(|h| *h != "file").cloned().collect();
    Ok(Dataset {
        source: path.to_path_buf(),
        items,
        columns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn touch(p: &Path, content: &[u8]) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    #[test]
    fn folder_layout() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        touch(&r.join("live/a.jpg"), b"a");
        touch(&r.join("live/sub/b.PNG"), b"b");
        touch(&r.join("live/notes.txt"), b"x");
        touch(&r.join("spoof/print/c.jpeg"), b"c");
        touch(&r.join("spoof/replay/deep/d.webp"), b"d");
        touch(&r.join("spoof/e.bmp"), b"e");
        touch(&r.join("other/f.jpg"), b"f");
        let ds = Dataset::load(r).unwrap();
        let got: Vec<(&str, Label, &str)> = ds
            .items
            .iter()
            .map(|i| (i.file.as_str(), i.label, i.attack_type.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("live/a.jpg", Label::Live, "none"),
                ("live/sub/b.PNG", Label::Live, "none"),
                ("spoof/e.bmp", Label::Spoof, "unknown"),
                ("spoof/print/c.jpeg", Label::Spoof, "print"),
                ("spoof/replay/deep/d.webp", Label::Spoof, "replay"),
            ]
        );
        assert!(ds.check_group_column("attack_type").is_ok());
        assert!(matches!(
            ds.check_group_column("source"),
            Err(DatasetError::UnknownGroupColumn { .. })
        ));
    }

    #[test]
    fn folder_without_layout_or_images() {
        let d = tempfile::tempdir().unwrap();
        touch(&d.path().join("x/a.jpg"), b"a");
        assert!(matches!(
            Dataset::load(d.path()),
            Err(DatasetError::NoLayout(_))
        ));
        touch(&d.path().join("live/readme.md"), b"a");
        assert!(matches!(
            Dataset::load(d.path()),
            Err(DatasetError::Empty(_))
        ));
        assert!(matches!(
            Dataset::load(&d.path().join("nope")),
            Err(DatasetError::NotFound(_))
        ));
    }

    #[test]
    fn manifest_relative_paths_and_columns() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        touch(&r.join("imgs/a.jpg"), b"a");
        touch(&r.join("imgs/b.jpg"), b"b");
        touch(&r.join("imgs/c.jpg"), b"c");
        let m = r.join("m.csv");
        fs::write(
            &m,
            "file,label,attack_type,source\n\
             imgs/a.jpg,live,none,s1\n\
             imgs/b.jpg,SPOOF,,\"s2, quoted\"\n\
             imgs/c.jpg,spoof,print,s1\n",
        )
        .unwrap();
        // Load from another working directory: paths are relative to the manifest.
        let ds = Dataset::load(&m).unwrap();
        assert_eq!(ds.items.len(), 3);
        assert_eq!(ds.items[0].path, r.join("imgs/a.jpg"));
        assert_eq!(ds.items[1].label, Label::Spoof);
        assert_eq!(ds.items[1].attack_type, "unknown");
        assert_eq!(ds.items[1].fields["source"], "s2, quoted");
        assert_eq!(ds.items[2].attack_type, "print");
        assert_eq!(ds.columns, vec!["label", "attack_type", "source"]);
        assert!(ds.check_group_column("source").is_ok());
        assert!(ds.check_group_column("file").is_err());
    }

    #[test]
    fn manifest_errors() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        touch(&r.join("a.jpg"), b"a");
        let m = r.join("m.csv");

        fs::write(&m, "file,label\na.jpg,real\n").unwrap();
        let e = Dataset::load(&m).unwrap_err();
        assert!(matches!(e, DatasetError::BadLabel { line: 2, .. }), "{e}");
        assert!(e.to_string().contains("\"real\""));

        fs::write(
            &m,
            "file,label\na.jpg,live\nmissing.jpg,spoof\ngone.jpg,live\n",
        )
        .unwrap();
        let e = Dataset::load(&m).unwrap_err();
        assert!(
            matches!(e, DatasetError::MissingFiles { count: 2, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("missing.jpg (line 3)"), "{e}");

        fs::write(&m, "path,label\na.jpg,live\n").unwrap();
        let e = Dataset::load(&m).unwrap_err();
        assert!(
            matches!(&e, DatasetError::MissingColumn { column, .. } if column == "file"),
            "{e}"
        );

        fs::write(&m, "file,kind\na.jpg,live\n").unwrap();
        let e = Dataset::load(&m).unwrap_err();
        assert!(
            matches!(&e, DatasetError::MissingColumn { column, .. } if column == "label"),
            "{e}"
        );

        fs::write(&m, "file,label\na.jpg,live,extra\n").unwrap();
        assert!(matches!(Dataset::load(&m), Err(DatasetError::Csv { .. })));

        fs::write(&m, "file,label\n").unwrap();
        assert!(matches!(Dataset::load(&m), Err(DatasetError::Empty(_))));
    }

    #[test]
    fn hash_depends_on_content_labels_and_names_not_order() {
        let e = |f: &str, l, a: &str, s: &str| (f.to_string(), l, a.to_string(), s.to_string());
        let h1 = dataset_hash(vec![
            e("a", Label::Live, "none", "00"),
            e("b", Label::Spoof, "print", "11"),
        ]);
        let h2 = dataset_hash(vec![
            e("b", Label::Spoof, "print", "11"),
            e("a", Label::Live, "none", "00"),
        ]);
        assert_eq!(h1, h2);
        let h3 = dataset_hash(vec![
            e("a", Label::Live, "none", "00"),
            e("b", Label::Spoof, "replay", "11"),
        ]);
        assert_ne!(h1, h3);
        let h4 = dataset_hash(vec![
            e("a", Label::Live, "none", "00"),
            e("b", Label::Spoof, "print", "12"),
        ]);
        assert_ne!(h1, h4);
        // Length prefixes: shifting a character between fields changes the hash.
        let h5 = dataset_hash(vec![e("ab", Label::Live, "c", "d")]);
        let h6 = dataset_hash(vec![e("a", Label::Live, "bc", "d")]);
        assert_ne!(h5, h6);

        let d = tempfile::tempdir().unwrap();
        touch(&d.path().join("live/a.jpg"), b"hello");
        let ds = Dataset::load(d.path()).unwrap();
        let want = dataset_hash(vec![(
            "live/a.jpg".into(),
            Label::Live,
            "none".into(),
            bytes_sha256(b"hello"),
        )]);
        assert_eq!(ds.hash().unwrap(), want);
        assert_eq!(
            bytes_sha256(b"hello"),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(
            file_sha256(&d.path().join("live/a.jpg")).unwrap(),
            bytes_sha256(b"hello")
        );
    }

    #[test]
    fn devset_manifest_loads() {
        // The devset is not in the repository: LIVECHECK_DEVSET names it (CI sets it).
        let Some(dir) = std::env::var_os("LIVECHECK_DEVSET") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "LIVECHECK_DEVSET is not set, and CI must run this test"
            );
            eprintln!("note: devset_manifest_loads skipped: LIVECHECK_DEVSET is not set");
            return;
        };
        let m = Path::new(&dir).join("manifest.csv");
        let ds = Dataset::load(&m).unwrap();
        assert_eq!(ds.items.len(), 312);
        assert!(ds
            .items
            .iter()
            .filter(|i| i.label == Label::Live)
            .all(|i| i.attack_type == "none"));
        assert!(ds.items.iter().any(|i| i.attack_type == "replay"));
        assert!(ds.check_group_column("source_repo").is_ok());
    }
}
