//! End-to-end tests of `livecheck eval` with the real binary, the real models and the devset.
//!
//! The metrics in metrics.json are recomputed here independently from scores.csv (which holds
//! every image's score and reason), so a bug in `livecheck::eval::metrics` or in the way the
//! binary feeds it shows up as a mismatch.

mod common;
use common::{assert_ok, livecheck};

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use serde_json::Value;

#[derive(Debug)]
struct Row {
    file: String,
    label: String,
    attack_type: String,
    p_real: Option<f64>,
    verdict: String,
    reason: String,
}

fn read_scores(path: &Path) -> Vec<Row> {
    let mut rdr = csv::Reader::from_path(path).unwrap();
    let h = rdr.headers().unwrap().clone();
    let col = |name: &str| {
        h.iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("no column {name}"))
    };
    let (f, l, a, p, v, r) = (
        col("file"),
        col("label"),
        col("attack_type"),
        col("p_real"),
        col("verdict"),
        col("reason"),
    );
    rdr.records()
        .map(|rec| {
            let rec = rec.unwrap();
            let ps = &rec[p];
            Row {
                file: rec[f].to_string(),
                label: rec[l].to_string(),
                attack_type: rec[a].to_string(),
                // Written as the pipeline's f32 in shortest round-trip form.
                p_real: if ps.is_empty() {
                    None
                } else {
                    Some(f64::from(ps.parse::<f32>().unwrap()))
                },
                verdict: rec[v].to_string(),
                reason: rec[r].to_string(),
            }
        })
        .collect()
}

fn close(json: &Value, want: Option<f64>, what: &str) {
    match want {
        None => assert!(json.is_null(), "{what}: expected null, got {json}"),
        Some(w) => {
            let got = json
                .as_f64()
                .unwrap_or_else(|| panic!("{what}: expected a number, got {json}"));
            assert!(
                (got - w).abs() < 1e-9,
                "{what}: metrics.json {got}, recomputed {w}"
            );
        }
    }
}

/// Recomputes the headline figures from scores.csv and compares them with metrics.json.
fn check_against_scores(m: &Value, rows: &[Row]) {
    let t = m["threshold"].as_f64().unwrap();
    let decided = ["live", "spoof"];
    for r in rows {
        // A score exactly when a decision was made; the verdict follows the decision rule.
        assert_eq!(
            r.p_real.is_some(),
            decided.contains(&r.reason.as_str()),
            "{r:?}"
        );
        let accepted = r.p_real.is_some_and(|p| p >= t);
        assert_eq!(r.verdict == "live", accepted, "{r:?}");
        assert_eq!(r.reason == "live", accepted, "{r:?}");
        assert!(["live", "not_live", "error"].contains(&r.verdict.as_str()));
        if r.verdict == "error" {
            assert!(r.reason.ends_with("_error"), "{r:?}");
        }
    }

    let lives: Vec<&Row> = rows.iter().filter(|r| r.label == "live").collect();
    let attacks: Vec<&Row> = rows.iter().filter(|r| r.label == "spoof").collect();
    assert_eq!(lives.len() + attacks.len(), rows.len());
    assert_eq!(m["counts"]["live"].as_u64().unwrap() as usize, lives.len());
    assert_eq!(
        m["counts"]["spoof"].as_u64().unwrap() as usize,
        attacks.len()
    );

    // BPCER: a live image is rejected unless it scored >= threshold (non-responses reject).
    let rejected = lives
        .iter()
        .filter(|r| !r.p_real.is_some_and(|p| p >= t))
        .count();
    let bpcer = (!lives.is_empty()).then(|| rejected as f64 / lives.len() as f64);
    close(&m["bpcer"], bpcer, "bpcer");

    // APCER per attack type.
    let mut per: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for r in &attacks {
        let e = per.entry(r.attack_type.as_str()).or_default();
        e.0 += 1;
        e.1 += usize::from(r.p_real.is_some_and(|p| p >= t));
    }
    let apcer = m["apcer"].as_object().unwrap();
    assert_eq!(apcer.len(), per.len(), "attack types: {apcer:?} vs {per:?}");
    let mut apcer_max: Option<f64> = None;
    for (k, (n, acc)) in &per {
        let v = *acc as f64 / *n as f64;
        close(&apcer[*k], Some(v), &format!("apcer[{k}]"));
        apcer_max = Some(apcer_max.map_or(v, |x: f64| x.max(v)));
    }
    close(&m["apcer_max"], apcer_max, "apcer_max");
    let acer = match (apcer_max, bpcer) {
        (Some(a), Some(b)) => Some((a + b) / 2.0),
        _ => None,
    };
    close(&m["acer"], acer, "acer");

    // Non-responses.
    let nr_live = lives.iter().filter(|r| r.p_real.is_none()).count();
    let nr_spoof = attacks.iter().filter(|r| r.p_real.is_none()).count();
    assert_eq!(
        m["non_response"]["live_count"].as_u64().unwrap() as usize,
        nr_live
    );
    assert_eq!(
        m["non_response"]["spoof_count"].as_u64().unwrap() as usize,
        nr_spoof
    );
    assert_eq!(
        m["non_response"]["count"].as_u64().unwrap() as usize,
        nr_live + nr_spoof
    );

    // Processed-only BPCER.
    let processed: Vec<f64> = lives.iter().filter_map(|r| r.p_real).collect();
    let p_bpcer = (!processed.is_empty())
        .then(|| processed.iter().filter(|p| **p < t).count() as f64 / processed.len() as f64);
    close(
        &m["processed_only"]["bpcer"],
        p_bpcer,
        "processed_only.bpcer",
    );

    // AUC by brute force over all pairs, non-responses = -inf, ties 1/2.
    let score = |r: &&Row| r.p_real.unwrap_or(f64::NEG_INFINITY);
    let auc = if lives.is_empty() || attacks.is_empty() {
        None
    } else {
        let mut u = 0.0;
        for l in &lives {
            for a in &attacks {
                let (x, y) = (score(l), score(a));
                u += if x > y {
                    1.0
                } else if x == y {
                    0.5
                } else {
                    0.0
                };
            }
        }
        Some(u / (lives.len() * attacks.len()) as f64)
    };
    close(&m["auc"], auc, "auc");

    // EER lies between the two pooled rates at its threshold.
    if let Some(et) = m["eer_threshold"].as_f64() {
        let a = attacks
            .iter()
            .filter(|r| r.p_real.is_some_and(|p| p >= et))
            .count() as f64
            / attacks.len() as f64;
        let b = lives
            .iter()
            .filter(|r| !r.p_real.is_some_and(|p| p >= et))
            .count() as f64
            / lives.len() as f64;
        let eer = m["eer"].as_f64().unwrap();
        assert!(
            a.min(b) - 1e-12 <= eer && eer <= a.max(b) + 1e-12,
            "eer {eer} not between {a} and {b}"
        );
    }
    // The suggested threshold meets its APCER target.
    let ta = &m["target_apcer"];
    if let Some(th) = ta["threshold"].as_f64() {
        let a = attacks
            .iter()
            .filter(|r| r.p_real.is_some_and(|p| p >= th))
            .count() as f64
            / attacks.len() as f64;
        assert!(a <= ta["target"].as_f64().unwrap() + 1e-12);
        close(&ta["apcer"], Some(a), "target_apcer.apcer");
    }
    for k in ["0.01", "0.05", "0.10"] {
        assert!(m["bpcer_at_apcer"].get(k).is_some(), "bpcer_at_apcer.{k}");
    }
}

fn check_html(path: &Path) {
    let html = std::fs::read_to_string(path).unwrap();
    assert!(html.contains("<svg"), "report.html has no inline SVG");
    assert!(!html.contains("http://"), "report.html references http://");
    assert!(
        !html.contains("https://"),
        "report.html references https://"
    );
    assert!(!html.contains("<script"), "report.html has a script");
}

/// `livecheck eval MANIFEST --out TMP EXTRA...`, checked to succeed: the output folder and the
/// process output.
fn eval_devset(manifest: &Path, extra: &[&str]) -> (tempfile::TempDir, Output) {
    let out = tempfile::tempdir().unwrap();
    let mut args = vec![
        "eval",
        manifest.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = livecheck(&args);
    assert_ok(&o);
    (out, o)
}

#[test]
fn devset_end_to_end() {
    let Some(devset) = common::devset("devset_end_to_end") else {
        return;
    };
    let manifest = devset.join("manifest.csv");
    let (out, o) = eval_devset(&manifest, &[]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("BPCER") && stdout.contains("APCER_max"),
        "{stdout}"
    );

    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("metrics.json")).unwrap())
            .unwrap();
    for k in [
        "threshold",
        "bpcer",
        "apcer",
        "apcer_max",
        "acer",
        "eer",
        "eer_threshold",
        "bpcer_at_apcer",
        "auc",
        "non_response",
        "dataset_hash",
        "model_hash",
        "app_version",
    ] {
        assert!(m.get(k).is_some(), "metrics.json lacks {k}");
    }
    // The default set's own threshold.
    assert_eq!(
        m["threshold"].as_f64(),
        Some(f64::from(
            livecheck::models::ModelSet::default_set()
                .unwrap()
                .threshold
        ))
    );
    assert_eq!(m["app_version"], env!("CARGO_PKG_VERSION"));
    assert!(!m["model_hash"].as_str().unwrap().is_empty());

    let rows = read_scores(&out.path().join("scores.csv"));
    // Every manifest row, in manifest order.
    let ds = livecheck::eval::dataset::Dataset::load(&manifest).unwrap();
    assert_eq!(rows.len(), ds.items.len());
    for (r, it) in rows.iter().zip(&ds.items) {
        assert_eq!(r.file, it.file);
        assert_eq!(r.label, it.label.as_str());
        assert_eq!(r.attack_type, it.attack_type);
    }
    check_against_scores(&m, &rows);
    // The hash computed during the run matches one computed from the files.
    assert_eq!(
        m["dataset_hash"].as_str(),
        Some(ds.hash().unwrap().as_str())
    );
    // The devset has replay, print and mask attacks; the models must beat chance on it.
    for t in ["replay", "print", "mask"] {
        assert!(m["apcer"].get(t).is_some(), "no APCER for {t}");
    }
    assert!(m["auc"].as_f64().unwrap() > 0.5, "AUC {}", m["auc"]);
    check_html(&out.path().join("report.html"));
}

/// The corpus-calibrated three-model set on the devset (sources it was never fitted on): its
/// stored threshold is used, and the figures docs/accuracy.md reports are what it produces.
#[test]
fn the_calibrated_set_reproduces_its_documented_devset_figures() {
    let Some(devset) =
        common::devset("the_calibrated_set_reproduces_its_documented_devset_figures")
    else {
        return;
    };
    let manifest = devset.join("manifest.csv");
    let (out, _) = eval_devset(
        &manifest,
        &["--model-set", "silentface-minifas128-calibrated"],
    );
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("metrics.json")).unwrap())
            .unwrap();
    let threshold = m["threshold"].as_f64().unwrap();
    assert!((threshold - 0.698_020_5).abs() < 1e-6, "{threshold}");
    // docs/accuracy.md: AUC 0.914, EER 0.115, BPCER 0.265 at the set's threshold.
    for (key, want) in [("auc", 0.9135), ("eer", 0.1154), ("bpcer", 0.2651)] {
        let got = m[key].as_f64().unwrap();
        assert!((got - want).abs() < 0.002, "{key} {got}, documented {want}");
    }
    check_against_scores(&m, &read_scores(&out.path().join("scores.csv")));
}

/// `eval --calibrate` on a few devset sources: by default one common coefficient for every
/// member (`equal`), one per member with `--calibrate-weights fitted`; both files load as model
/// sets, and the pipeline's fused p_real is the written rule applied to the members' scores.
#[test]
fn calibrate_writes_a_loadable_set_with_equal_or_fitted_member_weights() {
    let Some(devset) =
        common::devset("calibrate_writes_a_loadable_set_with_equal_or_fitted_member_weights")
    else {
        return;
    };
    let ds = livecheck::eval::dataset::Dataset::load(&devset.join("manifest.csv")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // Up to 8 live and 8 attack images from each of three sources that have both.
    let sources = [
        "Apfol/liveness-detection-opencv",
        "alexcamargoweb/liveness-detection",
        "minivision-ai/Silent-Face-Anti-Spoofing",
    ];
    let mut taken = BTreeMap::<(String, String), usize>::new();
    let mut csv = String::from("file,label,attack_type,source_repo\n");
    for (i, it) in ds.items.iter().enumerate() {
        let source = it.fields["source_repo"].clone();
        let label = it.label.as_str().to_string();
        if !sources.contains(&source.as_str()) {
            continue;
        }
        let n = taken.entry((source.clone(), label.clone())).or_default();
        if *n == 8 {
            continue;
        }
        *n += 1;
        let name = format!("{i}_{}", it.path.file_name().unwrap().to_str().unwrap());
        std::fs::copy(&it.path, data.join(&name)).unwrap();
        csv += &format!("{name},{label},{},{source}\n", it.attack_type);
    }
    std::fs::write(data.join("manifest.csv"), csv).unwrap();
    let manifest = data.join("manifest.csv");

    let calibrate = |file: &str, extra: &[&str]| -> Value {
        let path = dir.path().join(file);
        let mut args = vec![
            "--model-set",
            "silentface-minifas128",
            "--group-by",
            "source_repo",
            "--calibrate",
            path.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let (_out, o) = eval_devset(&manifest, &args);
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(stdout.contains("leave-one-3-out"), "{stdout}");
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    };
    let coefficients = |set: &Value| -> Vec<f64> {
        assert_eq!(set["fusion"]["rule"], "logistic");
        set["fusion"]["coefficients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_f64().unwrap())
            .collect()
    };

    let equal = calibrate("equal.json", &[]);
    assert_eq!(
        equal["training"]["calibration"]["result"]["member_weights"],
        "equal"
    );
    let c = coefficients(&equal);
    assert_eq!(c.len(), 3);
    assert!(c[0] > 0.0 && c.iter().all(|x| *x == c[0]), "{c:?}");
    let threshold = equal["threshold"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&threshold));

    let fitted = calibrate("fitted.json", &["--calibrate-weights", "fitted"]);
    assert_eq!(
        fitted["training"]["calibration"]["result"]["member_weights"],
        "fitted"
    );
    let f = coefficients(&fitted);
    assert_eq!(f.len(), 3);
    assert!(f.iter().any(|x| *x != f[0]), "{f:?}");

    // The written set scores an image as its rule says: sigmoid(intercept + sum c_i logit(p_i)).
    let sample = &ds.items[0].path;
    for (file, set, c) in [("equal.json", &equal, &c), ("fitted.json", &fitted, &f)] {
        let o = livecheck(&[
            "check",
            "--model-set",
            dir.path().join(file).to_str().unwrap(),
            sample.to_str().unwrap(),
        ]);
        assert_ok(&o);
        let line: Value = serde_json::from_slice(&o.stdout).unwrap();
        let members = [
            ("MiniFASNetV2", 1),
            ("MiniFASNetV1SE", 1),
            ("faceantispoof_minifas", 0),
        ];
        let z = set["fusion"]["intercept"].as_f64().unwrap()
            + members
                .iter()
                .zip(c.iter())
                .map(|((m, real), ci)| {
                    let p = line["scores"][*m][*real]
                        .as_f64()
                        .unwrap()
                        .clamp(1e-6, 1.0 - 1e-6);
                    ci * (p / (1.0 - p)).ln()
                })
                .sum::<f64>();
        let want = 1.0 / (1.0 + (-z).exp());
        let got = line["p_real"].as_f64().unwrap();
        assert!(
            (got - want).abs() < 1e-5,
            "{file}: p_real {got}, rule {want}"
        );
    }

    // An unknown weighting is refused before anything runs.
    let o = livecheck(&[
        "eval",
        manifest.to_str().unwrap(),
        "--calibrate",
        dir.path().join("x.json").to_str().unwrap(),
        "--calibrate-weights",
        "median",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("expected `equal` or `fitted`"));
}

/// A folder-layout dataset built from a few devset images, grouped by attack type, with --json.
#[test]
fn folder_layout_grouped_json() {
    let Some(devset) = common::devset("folder_layout_grouped_json") else {
        return;
    };
    let ds = livecheck::eval::dataset::Dataset::load(&devset.join("manifest.csv")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let mut n_live = 0;
    let mut n_replay = 0;
    for it in &ds.items {
        let dest = match (it.label.as_str(), it.attack_type.as_str()) {
            ("live", _) if n_live < 4 => {
                n_live += 1;
                root.join("live/sub")
                    .join(n_live.to_string() + "_" + it.path.file_name().unwrap().to_str().unwrap())
            }
            ("spoof", "replay") if n_replay < 3 => {
                n_replay += 1;
                root.join("spoof/replay").join(it.path.file_name().unwrap())
            }
            _ => continue,
        };
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&it.path, &dest).unwrap();
    }
    // A flat spoof (attack type "unknown"), a non-image file (ignored) and a corrupt "image".
    std::fs::copy(
        &ds.items
            .iter()
            .find(|i| i.attack_type == "print")
            .unwrap()
            .path,
        root.join("spoof/flat.png"),
    )
    .unwrap();
    std::fs::write(root.join("live/README.txt"), "not an image").unwrap();
    std::fs::write(root.join("spoof/broken.jpg"), b"\xff\xd8\xff\xe0 truncated").unwrap();

    let out = dir.path().join("out");
    let o = livecheck(&[
        "eval",
        root.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--group-by",
        "attack_type",
        "--threads",
        "2",
        "--json",
    ]);
    assert_ok(&o);
    let m: Value = serde_json::from_slice(&o.stdout).expect("--json prints metrics.json");
    let on_disk: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(m, on_disk);
    assert_eq!(m["counts"]["live"], 4);
    assert_eq!(m["counts"]["spoof"], 5);
    assert_eq!(m["counts"]["per_attack"]["replay"]["total"], 3);
    assert_eq!(m["counts"]["per_attack"]["unknown"]["total"], 2);
    // The corrupt file is a non-response (`decode_error`), never a score.
    let rows = read_scores(&out.join("scores.csv"));
    assert_eq!(rows.len(), 9);
    let broken = rows.iter().find(|r| r.file == "spoof/broken.jpg").unwrap();
    assert_eq!(broken.p_real, None);
    assert_eq!(
        (broken.verdict.as_str(), broken.reason.as_str()),
        ("error", "decode_error")
    );
    assert!(rows.iter().any(|r| r.file.starts_with("live/sub/")));
    check_against_scores(&m, &rows);
    // Groups: one per attack type value (live rows are "none").
    let groups = m["groups"]["values"].as_object().unwrap();
    assert_eq!(m["groups"]["column"], "attack_type");
    let keys: Vec<&str> = groups.keys().map(String::as_str).collect();
    assert_eq!(keys, ["none", "replay", "unknown"]);
    assert_eq!(groups["none"]["counts"]["live"], 4);
    assert!(groups["none"]["apcer_max"].is_null());
    check_html(&out.join("report.html"));
}

#[test]
fn bad_inputs_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.csv");
    std::fs::write(dir.path().join("a.jpg"), b"x").unwrap();

    std::fs::write(&m, "file,label\na.jpg,genuine\n").unwrap();
    let o = livecheck(&[
        "eval",
        m.to_str().unwrap(),
        "--out",
        dir.path().join("o").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("line 2") && err.contains("genuine"), "{err}");

    std::fs::write(&m, "file,label\na.jpg,live\nb.jpg,spoof\n").unwrap();
    let o = livecheck(&[
        "eval",
        m.to_str().unwrap(),
        "--out",
        dir.path().join("o").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("b.jpg"));

    std::fs::write(&m, "file,label\na.jpg,live\n").unwrap();
    let o = livecheck(&[
        "eval",
        m.to_str().unwrap(),
        "--out",
        dir.path().join("o").to_str().unwrap(),
        "--group-by",
        "site",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("site"));
    // Nothing was written for a failed run.
    assert!(!dir.path().join("o").exists());
}
