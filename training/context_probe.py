#!/usr/bin/env python3
"""Context probe: would a fusion that also sees how much context surrounds the face (image side
over box side, on the tighter axis: what `--min-context-ratio` gates on) and the face's size
transfer across sources better than the members' logits alone?

    livecheck check FILES... > corpus.jsonl          # JSON lines: bbox, image_size, scores
    python training/context_probe.py corpus.jsonl CORPUS_MANIFEST devset.jsonl DEVSET_MANIFEST

Each variant is a logistic regression (features standardised, live and attacks weighing 1/2 each
and every source equally within its class) over the images that reached the classifiers. It is
scored two ways: leave-one-source-out over the corpus and devset sources together, and fitted on
the corpus alone then applied to the devset. The members are those of the default set
(`silentface-minifas128-calibrated`); the shipped p_real of the JSON lines is the baseline.
Relative `file` paths in the JSON lines are resolved against `--cwd` (where `check` ran).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parent))
from livetrain import checklines  # noqa: E402
from livetrain.checklines import figures  # noqa: E402


def main() -> None:
    args = checklines.arguments(__doc__)
    rows = []
    for source, live, _, j in checklines.read_both(args):
        _, _, w, h = j["bbox"]
        width, height = j["image_size"]
        rows.append((source, live, checklines.member_logits(j), np.log(min(width / w, height / h)),
                     np.log(min(w, h)), j["p_real"]))
    src = np.array([r[0] for r in rows])
    y = np.array([r[1] for r in rows])
    z = np.array([r[2] for r in rows])
    context, face = np.array([r[3] for r in rows]), np.array([r[4] for r in rows])
    shipped = np.array([r[5] for r in rows])
    dev = np.char.startswith(src.astype(str), "devset:")
    tight = (context < np.log(2.0)).astype(float)
    print(f"{len(rows)} processed images, {len(set(src))} sources ({int(dev.sum())} devset images); "
          f"{int(tight.sum())} with less than 2x context")

    def weights(mask: np.ndarray) -> np.ndarray:
        w = np.zeros(int(mask.sum()))
        ys, ss = y[mask], src[mask]
        for cls in (True, False):
            for s in set(ss[ys == cls]):
                k = (ys == cls) & (ss == s)
                w[k] = 1.0 / k.sum()
            w[ys == cls] /= w[ys == cls].sum()
        return w * mask.sum()

    everything = np.ones(len(y), bool)
    print("\nAUC / EER / BPCER@APCER 5% / 10%\n")
    print("| fusion features | leave-one-source-out, all sources | the same, devset rows | "
          "fitted on the corpus, on the devset |")
    print("|---|---|---|---|")
    print(f"| shipped p_real (no refit) | {figures(shipped, y, everything)} | {figures(shipped, y, dev)} "
          f"| {figures(shipped, y, dev)} |")
    variants = {
        "member logits": z,
        "+ log context": np.c_[z, context],
        "+ log context, log face side": np.c_[z, context, face],
        "+ tight flag and its products with the logits": np.c_[z, tight, z * tight[:, None]],
    }
    for name, x in variants.items():
        x = (x - x.mean(0)) / (x.std(0) + 1e-9)
        # Not `fit.nested_fusion_oof`: that slices one global weight vector, whereas here each
        # training fold is reweighted so that its live and attack images keep 1/2 each.
        oof = np.zeros(len(y))
        for s in sorted(set(src)):
            train = src != s
            fit = LogisticRegression(max_iter=2000).fit(x[train], y[train], sample_weight=weights(train))
            oof[~train] = fit.decision_function(x[~train])
        fit = LogisticRegression(max_iter=2000).fit(x[~dev], y[~dev], sample_weight=weights(~dev))
        on_dev = fit.decision_function(x)
        print(f"| {name} | {figures(oof, y, everything)} | {figures(oof, y, dev)} | {figures(on_dev, y, dev)} |")


if __name__ == "__main__":
    main()
