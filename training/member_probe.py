#!/usr/bin/env python3
"""Member probe: which subset of the default set's members, and which fusion rule, ranks best on
sources it never saw?

    livecheck check FILES... > corpus.jsonl          # JSON lines with each member's scores
    python training/member_probe.py corpus.jsonl CORPUS_MANIFEST devset.jsonl DEVSET_MANIFEST

For every non-empty subset of the members of `silentface-minifas128-calibrated` it fits the same
logistic fusion as `livecheck eval --calibrate` (src/eval/calibrate.rs: Newton's method on the
members' logit(p_real), live 1/2, attacks 1/2 with each attack type a share proportional to the
square root of its count, L2 1e-3 on the coefficients) and scores it three ways, over the images
that reached the classifiers:

- leave-one-source-out over the corpus and devset sources together (each source scored by a fit
  that never saw it), all rows;
- the same scores, devset rows only;
- fitted on the whole corpus, applied to the devset (what shipping a corpus-calibrated set does).

Two fixed rules that need no fit are scored as well: the mean of the members' logits, and their
minimum (an image is as live as its most suspicious member says), each over the subset.
Relative `file` paths in the JSON lines are resolved against `--cwd` (where `check` ran).
Runs in `training/.venv` (numpy only).
"""
from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from livetrain import checklines  # noqa: E402
from livetrain.checklines import MEMBERS, figures  # noqa: E402

# The L2 penalty on the coefficients of src/eval/calibrate.rs.
L2 = 1e-3


def weights(y: np.ndarray, attack: np.ndarray) -> np.ndarray:
    """Live 1/2 in total; attacks 1/2, each attack type a share proportional to the square root of
    its count (src/eval/calibrate.rs `weights`)."""
    w = np.zeros(len(y))
    w[y] = 0.5 / max(int(y.sum()), 1)
    types, counts = np.unique(attack[~y], return_counts=True)
    roots = np.sqrt(counts).sum()
    for t, n in zip(types, counts):
        w[~y & (attack == t)] = 0.5 * np.sqrt(n) / roots / n
    return w


def fit(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """[intercept, coefficients...] as src/eval/calibrate.rs fits them."""
    X = np.c_[np.ones(len(x)), x]
    beta = np.zeros(X.shape[1])
    pen = np.full(X.shape[1], L2)
    pen[0] = 0
    for _ in range(50):
        mu = 1 / (1 + np.exp(-(X @ beta)))
        grad = X.T @ (w * (y - mu)) - pen * beta
        hess = (X * (w * mu * (1 - mu))[:, None]).T @ X + np.diag(pen)
        step = np.linalg.solve(hess, grad)
        beta += step
        if np.abs(step).sum() < 1e-10:
            break
    return beta


def main() -> None:
    args = checklines.arguments(__doc__)
    rows = [(source, live, attack, checklines.member_logits(j))
            for source, live, attack, j in checklines.read_both(args)]
    src = np.array([r[0] for r in rows])
    y = np.array([r[1] for r in rows])
    attack = np.array([r[2] for r in rows])
    z = np.array([r[3] for r in rows])
    dev = np.char.startswith(src.astype(str), "devset:")
    everything = np.ones(len(y), bool)
    print(f"{len(rows)} processed images ({int(y.sum())} live), {len(set(src))} sources "
          f"({int(dev.sum())} devset images)\n")
    print("AUC / EER / BPCER@APCER 5% / 10%\n")
    print("| members | rule | leave-one-source-out, all sources | the same, devset rows | "
          "fitted on the corpus, on the devset |")
    print("|---|---|---|---|---|")
    for k in range(1, len(MEMBERS) + 1):
        for subset in itertools.combinations(range(len(MEMBERS)), k):
            name = " + ".join(MEMBERS[i][2] for i in subset)
            x = z[:, subset]
            oof = np.zeros(len(y))
            for s in sorted(set(src)):
                train = src != s
                beta = fit(x[train], y[train], weights(y[train], attack[train]))
                oof[~train] = beta[0] + x[~train] @ beta[1:]
            beta = fit(x[~dev], y[~dev], weights(y[~dev], attack[~dev]))
            on_dev = beta[0] + x @ beta[1:]
            coef = ", ".join(f"{b:.3f}" for b in beta)
            print(f"| {name} | logistic ({coef}) | {figures(oof, y, everything)} | "
                  f"{figures(oof, y, dev)} | {figures(on_dev, y, dev)} |")
            if k > 1:
                for rule, score in (("mean of logits", x.mean(1)), ("min of logits", x.min(1))):
                    print(f"| {name} | {rule} | {figures(score, y, everything)} | "
                          f"{figures(score, y, dev)} | {figures(score, y, dev)} |")


if __name__ == "__main__":
    main()
