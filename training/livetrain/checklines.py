"""`livecheck check` JSON lines joined to their labelled manifests: the input of the probes
(`context_probe.py`, `member_probe.py`), which compare fusions over the corpus and the devset.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from . import metrics
from .fit import EPS

# The default set's members (`silentface-minifas128-calibrated`), the output index that means
# "real", and a short name for tables.
MEMBERS = [("MiniFASNetV2", 1, "V2"), ("MiniFASNetV1SE", 1, "V1SE"),
           ("faceantispoof_minifas", 0, "128")]


def arguments(doc: str) -> argparse.Namespace:
    """The probes' command line: corpus and devset check lines with their manifests."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("corpus_jsonl", type=Path)
    ap.add_argument("corpus_manifest", type=Path)
    ap.add_argument("devset_jsonl", type=Path)
    ap.add_argument("devset_manifest", type=Path)
    ap.add_argument("--cwd", type=Path, default=Path.cwd(), help="where `livecheck check` ran")
    return ap.parse_args()


def read(jsonl: Path, manifest: Path, prefix: str, cwd: Path):
    """(prefix + source, is_live, attack_type, line) for every line that reached the classifiers.
    Relative `file` paths in the lines are resolved against `cwd`, manifest paths against the
    manifest's folder."""
    base = manifest.resolve().parent
    labels = {str((base / r["file"]).resolve()): (r["source_repo"], r["label"] == "live",
                                                  r.get("attack_type") or "unknown")
              for r in csv.DictReader(open(manifest, newline=""))}
    for text in open(jsonl):
        j = json.loads(text)
        if j.get("reason") not in ("live", "spoof"):
            continue
        source, live, attack = labels[str((cwd / j["file"]).resolve())]
        yield prefix + source, live, attack, j


def read_both(args: argparse.Namespace):
    """The corpus lines, then the devset lines with their sources prefixed `devset:`."""
    yield from read(args.corpus_jsonl, args.corpus_manifest, "", args.cwd)
    yield from read(args.devset_jsonl, args.devset_manifest, "devset:", args.cwd)


def member_logits(line: dict) -> list[float]:
    """Each member's logit(p_real), p clipped to [EPS, 1 - EPS] as livecheck does."""
    return [float(np.log(p / (1 - p))) for p in
            (min(max(line["scores"][m][i], EPS), 1 - EPS) for m, i, _ in MEMBERS)]


def figures(score: np.ndarray, y: np.ndarray, mask: np.ndarray) -> str:
    """`AUC / EER / BPCER@APCER 5% / 10%` over the rows in `mask`."""
    live, attack = score[mask & y], score[mask & ~y]
    return (f"{metrics.auc(live, attack):.3f} / {metrics.eer(live, attack)[0]:.3f} / "
            f"{metrics.bpcer_at_apcer(live, attack, 0.05):.3f} / "
            f"{metrics.bpcer_at_apcer(live, attack, 0.10):.3f}")
