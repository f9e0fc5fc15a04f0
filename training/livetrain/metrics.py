"""ISO/IEC 30107-3 figures, with the same definitions as livecheck's `src/eval/metrics.rs`.

A sample is accepted as bona fide iff ``score >= threshold``. Scores here are p_real (or any
monotone transform of it). Only processed samples reach this module (crops exist only for images
whose face reached the classifiers), so these are the "processed only" figures.
"""
from __future__ import annotations

import numpy as np


def auc(live: np.ndarray, attack: np.ndarray) -> float | None:
    """Mann-Whitney P(live score > attack score), ties counted 1/2."""
    live, attack = np.asarray(live, float), np.asarray(attack, float)
    if len(live) == 0 or len(attack) == 0:
        return None
    attack_sorted = np.sort(attack)
    below = np.searchsorted(attack_sorted, live, side="left")
    not_above = np.searchsorted(attack_sorted, live, side="right")
    return float((below + 0.5 * (not_above - below)).sum() / (len(live) * len(attack)))


def sweep(live: np.ndarray, attack: np.ndarray):
    """APCER and BPCER at every distinct score used as threshold, plus "reject everything".

    Returns (thresholds ascending, apcer, bpcer) with the last threshold = +inf.
    """
    live, attack = np.asarray(live, float), np.asarray(attack, float)
    thr = np.append(np.unique(np.concatenate([live, attack])), np.inf)
    live_s, attack_s = np.sort(live), np.sort(attack)
    # accepted = score >= thr; rejected live = score < thr
    apcer = (len(attack_s) - np.searchsorted(attack_s, thr, side="left")) / max(len(attack_s), 1)
    bpcer = np.searchsorted(live_s, thr, side="left") / max(len(live_s), 1)
    return thr, apcer, bpcer


def eer(live, attack) -> tuple[float, float] | None:
    """(EER, threshold) at the swept threshold where |APCER - BPCER| is smallest."""
    if len(live) == 0 or len(attack) == 0:
        return None
    thr, apcer, bpcer = sweep(live, attack)
    gap, mean = np.abs(apcer - bpcer), (apcer + bpcer) / 2
    # lexicographic: smallest gap, then smaller mean, then lower threshold (thr is ascending)
    i = np.lexsort((thr, mean, np.round(gap, 12)))[0]
    return float(mean[i]), float(thr[i])


def bpcer_at_apcer(live, attack, target: float) -> float | None:
    """Lowest BPCER over thresholds whose pooled APCER <= target."""
    if len(live) == 0 or len(attack) == 0:
        return None
    _, apcer, bpcer = sweep(live, attack)
    ok = apcer <= target + 1e-12
    return float(bpcer[ok].min())


def summary(scores, is_live, attack_types, threshold: float) -> dict:
    """All figures for one set of samples. `attack_types` is ignored for live samples."""
    scores = np.asarray(scores, float)
    is_live = np.asarray(is_live, bool)
    attack_types = np.asarray(attack_types, object)
    live, attack = scores[is_live], scores[~is_live]
    e = eer(live, attack)
    apcer_type = {}
    for t in sorted(set(attack_types[~is_live])):
        s = scores[~is_live & (attack_types == t)]
        apcer_type[t] = float((s >= threshold).mean())
    bpcer = float((live < threshold).mean()) if len(live) else None
    apcer_max = max(apcer_type.values()) if apcer_type else None
    return {
        "live": int(is_live.sum()),
        "attacks": int((~is_live).sum()),
        "auc": auc(live, attack),
        "eer": None if e is None else e[0],
        "eer_threshold": None if e is None else e[1],
        "bpcer_at_apcer_5": bpcer_at_apcer(live, attack, 0.05),
        "bpcer_at_apcer_10": bpcer_at_apcer(live, attack, 0.10),
        "threshold": threshold,
        "bpcer": bpcer,
        "apcer": apcer_type,
        "apcer_max": apcer_max,
        "acer": None if bpcer is None or apcer_max is None else (bpcer + apcer_max) / 2,
    }
