#!/usr/bin/env python3
"""Fine-tune livecheck's anti-spoofing classifiers end to end and write a model set.

    python training/train.py --config training/configs/full.json

Steps (each logged with its time):
 1. cap the training manifest per (source, label) with a fixed seed;
 2. `livecheck crops` on it (jittered views) and on the devset (served crop only), so that
    training sees exactly livecheck's preprocessing; check that the frozen models reproduce
    livecheck's logits from the PNG crops;
 3. plan the samples (photometric augmentation, synthetic print/replay/mask attacks made from
    live crops) and cache each member's backbone features;
 4. per member: leave-source-out K-fold training of the head (the fold's validation picks the
    epoch count), then a final head on all sources; export to ONNX and check it;
 5. per model set: logistic fusion on out-of-fold member logits, set JSON;
 6. training/out/report.md with figures.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from livetrain import data, features, fit, metrics, models, report  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
T0 = time.time()


def log(msg: str) -> None:
    print(f"[{time.time() - T0:6.0f}s] {msg}", flush=True)


def repo_path(p: str) -> Path:
    """Config paths are relative to the repository root (../shared, ../corpus are its siblings)."""
    return (REPO / os.path.expandvars(p)).resolve()


def find_livecheck(cfg: dict) -> Path:
    for cand in [os.environ.get("LIVECHECK_BIN"), cfg.get("livecheck")]:
        if cand:
            return repo_path(cand)
    for cand in ("target/release/livecheck", "target/debug/livecheck"):
        if (REPO / cand).exists():
            return REPO / cand
    sys.exit("no livecheck binary: build it (cargo build --release) or set LIVECHECK_BIN")


def run_crops(cfg: dict, manifest: Path, out: Path, jitter: int) -> data.Crops:
    """`livecheck crops` into `out`, skipped when `out` holds the result of the same command on
    the same manifest (delete training/out/work after changing livecheck's crop code; the logits
    check below catches model changes)."""
    exe = find_livecheck(cfg)
    cmd = [str(exe), "crops", str(manifest), str(out), "--model-set", str(repo_path(cfg["base_set"])),
           "--jitter", str(jitter), "--seed", str(cfg["seed"]), "--group-by", cfg["group_by"]]
    # f32 kernels: check_reproduction holds livecheck's logits to the torch/onnxruntime f32 path
    # within 1e-3, which the CLI's default bf16 products do not (they move logits by ~5e-2).
    cmd += ["--kernels", "fused"]
    cmd += cfg.get("livecheck_args", [])
    stamp = hashlib.sha256((" ".join(cmd) + manifest.read_text()).encode()).hexdigest()
    if (out / "crops.csv").exists() and (out / "stamp").exists() and (out / "stamp").read_text() == stamp:
        log(f"crops: reusing {out}")
    else:
        shutil.rmtree(out, ignore_errors=True)
        log("crops: " + " ".join(cmd))
        subprocess.run(cmd, check=True)
        (out / "stamp").write_text(stamp)
    return data.load_crops(out)


def check_reproduction(c: data.Crops, bases: dict, specs: dict, n: int = 32, tol: float = 1e-3) -> dict:
    """The frozen torch/onnxruntime path must give livecheck's logits from livecheck's PNGs."""
    diffs = {}
    for m, base in bases.items():
        crops = np.stack([features.read_rgb(p) for p in c.crop[m][:n].reshape(-1)])
        head = base.new_head().eval()
        with torch.no_grad():
            z = head(torch.from_numpy(base.features(models.tensor_from_crops(crops, specs[m])))).numpy()
        d = float(np.abs(z - c.logits[m][:n].reshape(len(crops), -1)).max())
        if not d <= tol:
            raise SystemExit(f"{m}: logits from the crops differ from livecheck's by {d:.2e}")
        diffs[m] = d
    return diffs


def model_file(models_dir: Path, name: str) -> Path:
    for cand in (models_dir / name, models_dir / "candidates" / name):
        if cand.exists():
            return cand
    raise SystemExit(f"model file {name} not found under {models_dir}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(REPO / "training/configs/full.json"))
    ap.add_argument("--train-manifest", help="override the config's training manifest")
    args = ap.parse_args()
    cfg = json.loads(Path(args.config).read_text())
    if args.train_manifest:
        cfg["train_manifest"] = os.path.abspath(args.train_manifest)
    seed = cfg["seed"]
    np.random.seed(seed)
    torch.manual_seed(seed)
    # head training: one torch thread (small ops; a second thread mostly waits, and on a busy
    # machine OpenMP's spinning made it 5-10x slower); onnxruntime feature extraction uses `threads`
    torch.set_num_threads(cfg.get("torch_threads", 1))
    out = repo_path(cfg["out_dir"])
    work = out / "work"
    (out / "models").mkdir(parents=True, exist_ok=True)
    timings = {}

    def step(name):
        timings[name] = time.time() - T0 - sum(timings.values())

    # 1-2. data and crops ------------------------------------------------------------------
    base_set = json.loads(repo_path(cfg["base_set"]).read_text())
    specs = {m["name"]: m for m in base_set["classifiers"]}
    members = list(cfg["members"])
    train_manifest = repo_path(cfg["train_manifest"])
    capped = work / "train_manifest.csv"
    kept = data.cap_manifest(train_manifest, capped, cfg["cap_per_source_class"], seed,
                             cfg["group_by"], cfg.get("max_sources"), set(cfg.get("exclude_sources", [])))
    log(f"training manifest: {len(kept)} images after capping ({train_manifest})")
    corpus = run_crops(cfg, capped, work / "crops-train", cfg["jitter"])
    # the devset: validation only; the smoke run (which trains on devset sources, the only
    # images CI has) leaves its training sources out of it
    held_out = {r[cfg["group_by"]] for r in kept} if cfg.get("devset_exclude_train_sources") else set()
    dev_manifest = work / "dev_manifest.csv"
    data.cap_manifest(repo_path(cfg["devset_manifest"]), dev_manifest,
                      cfg.get("devset_cap_per_source_class"), seed, cfg["group_by"], exclude=held_out)
    dev = run_crops(cfg, dev_manifest, work / "crops-dev", 0)
    log(f"crops: {len(corpus)} training images x {corpus.views} views, {len(dev)} devset images")
    step("crops")
    models_dir = repo_path(cfg["models_dir"])
    bases = {m: models.Base(model_file(models_dir, specs[m]["file"]), cfg["members"][m]["start"],
                            cfg.get("threads", 2)) for m in members}
    repro = check_reproduction(corpus, bases, specs)
    log("livecheck logits reproduced: " + ", ".join(f"{m} {d:.1e}" for m, d in repro.items()))

    # 3. samples and features ---------------------------------------------------------------
    plan = features.make_plan(corpus, cfg["augment"], seed)
    dev_plan = features.make_plan(dev, {"photometric_per_view": 0, "synthetic_per_live": 0}, seed)
    log(f"plan: {len(plan)} training samples (" + ", ".join(
        f"{k} {v}" for k, v in zip(*np.unique(plan.op.astype(str), return_counts=True))) + ")")
    step("plan")
    strength = cfg["augment"].get("photometric_strength", 1.0)
    img_fold = data.source_folds(corpus.source, corpus.is_live, cfg["folds"], seed)
    sample_fold = img_fold[plan.image]
    val_mask = (plan.op == "clean") & (plan.view == 0)
    val_rows = np.flatnonzero(val_mask)  # one per corpus image, in image order
    y_all = plan.is_live.astype(np.float32)
    w_all = data.balanced_weights(plan.is_live, plan.attack_type)
    results = {"members": {}, "sets": {}}

    # 4. per member (one member's features in memory at a time): leave-source-out CV, final
    #    head on all sources, export ------------------------------------------------------------
    for m in members:
        face_frac = 1.0 / specs[m]["crop"]["scale"]
        feats = features.compute(corpus, plan, bases[m], m, specs[m], face_frac, strength,
                                 work / "cache", log=log)
        dev_feats = features.compute(dev, dev_plan, bases[m], m, specs[m], face_frac, strength,
                                     None, log=log)
        step(f"features {m}")
        ri = specs[m]["real_index"]
        log(f"{m}: leave-source-out CV over {len(set(img_fold))} folds")
        cv = fit.cross_validate(bases[m], ri, feats, plan, sample_fold, val_mask, cfg["train"],
                                seed, log)
        epochs = cv["best_epoch"]
        log(f"{m}: chosen epoch {epochs} by {cfg['train'].get('select', 'loss')} (mean held-out loss "
            f"{cv['mean_val_loss'][epochs]:.4f}, AUC {cv['mean_val_auc'][epochs]:.4f}; base "
            f"{cv['mean_val_loss'][0]:.4f}, {cv['mean_val_auc'][0]:.4f}); final head on all sources")
        head, hist = fit.train_head(bases[m], ri, feats, y_all, w_all, cfg["train"], seed,
                                    epochs, log=log)
        name = f"{m}_ft"
        path = out / "models" / f"{name}.onnx"
        digest = bases[m].export(head, path)
        x = models.tensor_from_crops(np.stack([features.read_rgb(p) for p in
                                               dev.crop[m][:16, 0]]), specs[m])
        diff = models.check_export(bases[m], head, path, x)
        log(f"{m}: exported {path.name} ({digest['bytes']} bytes, ort vs torch {diff:.1e})")
        results["members"][m] = {
            "name": name, "file": path.name, **digest, "max_abs_diff": diff, "cv": cv,
            "final_train_loss": hist["train_loss"],
            "oof_ft": cv["oof"][val_rows],
            "oof_base": fit.predict(bases[m].new_head(), feats, ri, val_rows),
            "dev_ft": fit.predict(head, dev_feats, ri),
            "dev_base": models.logit_real(dev.logits[m][:, 0], ri),
        }
        del feats, dev_feats
        step(f"train {m}")

    # 5. fusion and model sets ----------------------------------------------------------------
    y_img = corpus.is_live.astype(int)
    w_img = data.balanced_weights(corpus.is_live, corpus.attack_type)
    licences = data.source_licences(train_manifest, cfg["group_by"])
    counts = data.count_by_source(corpus)
    for s in cfg["sets"]:
        ms = s["members"]
        Z = np.stack([results["members"][m]["oof_ft"] for m in ms], 1)
        fusion = fit.fit_fusion(Z, y_img, w_img, cfg.get("fusion_c", 1.0))
        Zdev = np.stack([results["members"][m]["dev_ft"] for m in ms], 1)
        set_json = {
            "name": s["name"],
            "description": s.get("description", f"{' + '.join(ms)} with heads fine-tuned by "
                                 "training/ (frozen backbones), logistic fusion"),
            "license": cfg["license"],
            "detector": {k: base_set["detector"][k] for k in ("file", "bytes", "sha256")},
            **({"face_finder": base_set["face_finder"]} if "face_finder" in base_set else {}),
            "classifiers": [member_entry(specs[m], results["members"][m]) for m in ms],
            "fusion": fusion,
            "threshold": cfg.get("threshold", 0.5),
            "training": {
                "sources": [{"repo": c["source"], "license": licences.get(c["source"], "unknown"),
                             "live": c["live"], "attacks": c["attacks"]} for c in counts],
                "report": str((out / "report.md").relative_to(REPO)) if out.is_relative_to(REPO)
                else str(out / "report.md"),
                "seed": seed,
                "command": cfg.get("command", "bash training/train.sh"),
                "base_set": base_set["name"],
            },
        }
        (out / "models" / f"{s['name']}.json").write_text(json.dumps(set_json, indent=2) + "\n")
        results["sets"][s["name"]] = {
            "members": ms, "fusion": fusion,
            "oof_p": fit.nested_fusion_oof(Z, y_img, w_img, img_fold, cfg.get("fusion_c", 1.0)),
            "dev_p": fit.apply_fusion(fusion, Zdev),
        }
        log(f"set {s['name']}: fusion {fusion}")
    step("fusion")

    # 6. report ---------------------------------------------------------------------------------
    report.write(out, cfg, corpus, dev, img_fold, results, counts, licences, repro, timings, log)
    log(f"done in {time.time() - T0:.0f} s: {out / 'report.md'}")


def member_entry(spec: dict, r: dict) -> dict:
    """The set entry of a trained member: the base member's preprocessing, the new file."""
    keep = ("crop", "size", "resize", "channels", "scale", "mean", "std", "output", "real_index")
    return {"name": r["name"], "file": r["file"], "bytes": r["bytes"], "sha256": r["sha256"],
            **{k: spec[k] for k in keep}}


if __name__ == "__main__":
    main()
