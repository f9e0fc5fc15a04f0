#!/usr/bin/env python3
"""Test-time augmentation probe: would averaging a member's logit over several crops of one face
(jittered face boxes, a horizontal flip) rank live faces above attacks better than the served
crop alone?

    livecheck crops DATASET OUT --model-set SET --jitter 6 --jitter-shift 0.03 --jitter-scale 0.03
    python training/tta_probe.py OUT SET_JSON [--models DIR] [--flip] [--per-source]

Reads `OUT/crops.csv` (view 0 = the served crop, views 1..N = jittered boxes, logits as livecheck
computed them). With `--flip`, the members are also run in onnxruntime on the mirrored served
crop (the PNG is the member's exact input pixels; the unflipped run is checked against
livecheck's logits). Each variant averages every member's logit(p_real) (or p_real) over its
views and fuses them with the set's own logistic fusion, unchanged, so that only the averaging
differs between rows. Figures are over the images that reached the classifiers (processed only),
with `livetrain.metrics` (the definitions of livecheck's `src/eval/metrics.rs`).

`--per-source` also prints, per source, each member's AUC, the fused AUC and the median fused
p_real of live images and of attacks: where pooled figures lose to within-source ones, the
sources' score levels differ.
"""
from __future__ import annotations

import argparse
import collections
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from livetrain import metrics  # noqa: E402
from livetrain.fit import EPS, clip_logit  # noqa: E402
from livetrain.models import logit_real, tensor_from_crops  # noqa: E402

FLIP = -1  # view id of the flipped served crop


def member_logit(logits, real_index: int) -> float:
    """logit(p_real) of one member's raw outputs, clipped as livecheck clips it."""
    return float(clip_logit(logit_real(np.asarray([logits], float), real_index))[0])


def flipped_logits(out: Path, rows: list[dict], members: dict, models: Path) -> dict:
    """(image id, member) -> logit(p_real) of the mirrored served crop."""
    import cv2
    import onnxruntime as ort

    sessions = {
        name: ort.InferenceSession(str(models / m["file"]), providers=["CPUExecutionProvider"])
        for name, m in members.items()
    }
    worst = 0.0
    result = {}
    for r in rows:
        if r["view"] != "0":
            continue
        m, s = members[r["member"]], sessions[r["member"]]
        rgb = cv2.imread(str(out / r["crop"]), cv2.IMREAD_COLOR)[:, :, ::-1]

        def run(img):
            return s.run(None, {s.get_inputs()[0].name: tensor_from_crops(img[None], m)})[0][0]

        plain = run(rgb)
        worst = max(worst, float(np.abs(plain - np.asarray(r["logits"].split(), float)).max()))
        result[(r["id"], r["member"])] = member_logit(run(rgb[:, ::-1]), m["real_index"])
    # livecheck's CLI multiplies in bf16 on CPUs that have it: logits differ by up to ~6e-2.
    print(f"flip: unflipped onnxruntime logits within {worst:.3g} of livecheck's", file=sys.stderr)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("crops", type=Path, help="a `livecheck crops` output folder")
    ap.add_argument("set", type=Path, help="the model set JSON the crops were made with")
    ap.add_argument("--models", type=Path, default=Path("models"), help="folder of the ONNX files")
    ap.add_argument("--flip", action="store_true", help="also score the mirrored served crop")
    ap.add_argument("--per-source", action="store_true", help="per-source table of the served crop")
    args = ap.parse_args()

    spec = json.loads(args.set.read_text())
    members = {c["name"]: c for c in spec["classifiers"]}
    names = list(members)
    fusion = spec["fusion"]
    if fusion["rule"] != "logistic":
        sys.exit("tta_probe: the set's fusion must be logistic")
    coef, intercept = np.asarray(fusion["coefficients"], float), float(fusion["intercept"])

    rows = list(csv.DictReader(open(args.crops / "crops.csv", newline="")))
    images: dict[str, dict] = {}
    for r in rows:
        d = images.setdefault(r["id"], {"live": r["label"] == "live", "source": r["source"],
                                        "views": collections.defaultdict(dict)})
        logit = member_logit([float(x) for x in r["logits"].split()],
                             members[r["member"]]["real_index"])
        d["views"][int(r["view"])][r["member"]] = logit
    if args.flip:
        for (i, name), logit in flipped_logits(args.crops, rows, members, args.models).items():
            images[i]["views"][FLIP][name] = logit
    jittered = max(max(d["views"]) for d in images.values())
    sources = sorted({d["source"] for d in images.values()})
    print(f"{len(images)} images, {len(sources)} sources, views 0..{jittered}"
          f"{' + flip' if args.flip else ''}; set {spec['name']}")

    def fused(d: dict, views: list[int], space: str) -> float:
        x = np.array([[d["views"][v][n] for n in names] for v in views])
        if space == "prob":
            p = np.clip((1 / (1 + np.exp(-x))).mean(0), EPS, 1 - EPS)
            x = np.log(p / (1 - p))
        else:
            x = x.mean(0)
        return intercept + float(coef @ x)

    variants = [("served crop", [0], "logit")]
    variants += [(f"mean of views 0..{k}", list(range(k + 1)), "logit") for k in range(1, jittered + 1)]
    variants += [(f"mean of p, views 0..{jittered}", list(range(jittered + 1)), "prob")]
    if args.flip:
        variants += [("flip alone", [FLIP], "logit"), ("served + flip", [0, FLIP], "logit"),
                     ("served + flip, mean of p", [0, FLIP], "prob"),
                     (f"views 0..{jittered} + flip", list(range(jittered + 1)) + [FLIP], "logit")]

    print(f"\n| variant | crops per member | AUC | EER | BPCER@APCER 5% | BPCER@APCER 10% | per-source AUC mean / worst |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, views, space in variants:
        s = {i: fused(d, views, space) for i, d in images.items()}
        live = np.array([s[i] for i, d in images.items() if d["live"]])
        attack = np.array([s[i] for i, d in images.items() if not d["live"]])
        per = []
        for src in sources:
            a = metrics.auc([s[i] for i, d in images.items() if d["source"] == src and d["live"]],
                            [s[i] for i, d in images.items() if d["source"] == src and not d["live"]])
            if a is not None:
                per.append(a)
        print(f"| {name} | {len(views)} | {metrics.auc(live, attack):.3f} | {metrics.eer(live, attack)[0]:.3f} "
              f"| {metrics.bpcer_at_apcer(live, attack, 0.05):.3f} "
              f"| {metrics.bpcer_at_apcer(live, attack, 0.10):.3f} | {np.mean(per):.3f} / {min(per):.3f} |")

    if args.per_source:
        print(f"\n| source | live | attacks | " + " | ".join(f"AUC {n}" for n in names)
              + " | AUC fused | median p_real live / attack |")
        print("|---|---:|---:|" + "---:|" * (len(names) + 1) + "---|")
        for src in sources:
            ds = [d for d in images.values() if d["source"] == src]
            lv, at = [d for d in ds if d["live"]], [d for d in ds if not d["live"]]
            cells = []
            for n in names:
                a = metrics.auc([d["views"][0][n] for d in lv], [d["views"][0][n] for d in at])
                cells.append("-" if a is None else f"{a:.3f}")
            f_live = np.array([fused(d, [0], "logit") for d in lv])
            f_att = np.array([fused(d, [0], "logit") for d in at])
            a = metrics.auc(f_live, f_att)
            med = lambda v: f"{1 / (1 + np.exp(-np.median(v))):.3f}" if len(v) else "-"  # noqa: E731
            print(f"| {src} | {len(lv)} | {len(at)} | " + " | ".join(cells)
                  + f" | {'-' if a is None else f'{a:.3f}'} | {med(f_live)} / {med(f_att)} |")


if __name__ == "__main__":
    main()
