"""Head training on cached features, leave-source-out cross-validation, and logistic fusion."""
from __future__ import annotations

import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from .data import balanced_weights
from .metrics import auc
from .models import Base, Head, logit_real

EPS = 1e-6  # p clip before logit, as livecheck's Fusion::Logistic (LOGIT_EPS)


def predict(head: Head, feats: np.ndarray, real_index: int, rows: np.ndarray | None = None,
            batch: int = 1024) -> np.ndarray:
    """logit(p_real) of the feature rows `rows` (default all), head in eval mode."""
    head.eval()
    out = []
    xt = torch.from_numpy(np.ascontiguousarray(feats))
    rows = torch.arange(len(feats)) if rows is None else torch.from_numpy(np.asarray(rows))
    with torch.no_grad():
        for lo in range(0, len(rows), batch):
            out.append(logit_real(head(xt[rows[lo:lo + batch]].float()), real_index).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def weighted_bce(z: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """Weighted binary cross-entropy of logits z against labels y (1 = live)."""
    z = np.clip(np.asarray(z, np.float64), -30, 30)
    loss = np.logaddexp(0, z) - y * z
    return float((w * loss).sum() / w.sum())


def train_head(base: Base, real_index: int, feats: np.ndarray, y: np.ndarray, w: np.ndarray,
               cfg: dict, seed: int, epochs: int, val: tuple | None = None, log=None,
               rows: np.ndarray | None = None):
    """Train a fresh head for `epochs` epochs on feature rows `rows` (default all; `y`, `w` are
    indexed like `feats`). Loss: weighted BCE on logit(p_real) plus `l2sp` * squared distance of
    the weights to the base weights (keeps the head near the shipped model; a few hundred
    near-duplicate frames overfit otherwise).

    `val` = (rows, labels, weights): evaluated before training (epoch 0 = base model) and after
    every epoch. Returns (head, history) with per-epoch train/val loss and val logits."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    head = base.new_head(cfg.get("dropout", 0.0))
    start = {k: p.detach().clone() for k, p in head.named_parameters()}
    opt = torch.optim.Adam(head.parameters(), lr=cfg.get("lr", 3e-4))
    l2sp, batch = cfg.get("l2sp", 1e-2), cfg.get("batch", 256)
    yt, wt = torch.from_numpy(y.astype(np.float32)), torch.from_numpy(w.astype(np.float32))
    xt = torch.from_numpy(np.ascontiguousarray(feats))  # float16, converted per batch
    hist = {"train_loss": [], "val_loss": [], "val_logits": []}

    rows = np.arange(len(feats)) if rows is None else np.asarray(rows)

    def evaluate():
        if val is not None:
            z = predict(head, feats, real_index, val[0])
            hist["val_logits"].append(z)
            hist["val_loss"].append(weighted_bce(z, val[1], val[2]))

    evaluate()
    hist["train_loss"].append(
        weighted_bce(predict(head, feats, real_index, rows), y[rows], w[rows]) if epochs else None)
    for ep in range(epochs):
        t0 = time.time()
        head.train()
        order = rows[rng.permutation(len(rows))]
        total = 0.0
        for lo in range(0, len(order), batch):
            idx = torch.from_numpy(np.sort(order[lo:lo + batch]))
            z = logit_real(head(xt[idx].float()), real_index)
            bce = torch.nn.functional.binary_cross_entropy_with_logits(z, yt[idx], reduction="none")
            loss = (bce * wt[idx]).sum() / wt[idx].sum()
            reg = sum(((p - start[k]) ** 2).sum() for k, p in head.named_parameters())
            opt.zero_grad()
            (loss + l2sp * reg).backward()
            opt.step()
            total += float(loss) * len(idx)
        hist["train_loss"].append(total / len(order))
        evaluate()
        if log:
            v = f", val {hist['val_loss'][-1]:.4f}" if val is not None else ""
            log(f"    epoch {ep + 1}/{epochs}: train {hist['train_loss'][-1]:.4f}{v} "
                f"({time.time() - t0:.0f} s)")
    return head.eval(), hist


def cross_validate(base: Base, real_index: int, feats: np.ndarray, plan, sample_fold: np.ndarray,
                   val_mask: np.ndarray, cfg: dict, seed: int, log=print) -> dict:
    """Leave-source-out K-fold: for each fold, train on every planned sample of the other folds'
    sources (augmented and synthetic included) and validate on the fold's served crops (view 0,
    clean, real labels only). Picks the epoch count (0 = the base model) with the best mean over
    folds of `cfg["select"]`: "loss" (balanced validation loss) or "auc" (held-out AUC; ranking,
    which fusion and thresholds build on). Returns per-fold histories, per-epoch mean loss and
    AUC, the chosen epoch, and out-of-fold logits at that epoch."""
    folds = sorted(set(sample_fold))
    per_fold = []
    for f in folds:
        tr = sample_fold != f
        va = (sample_fold == f) & val_mask
        if not tr.any() or not va.any():
            continue
        w = np.zeros(len(plan), np.float32)
        w[tr] = balanced_weights(plan.is_live[tr], plan.attack_type[tr])
        y = plan.is_live.astype(np.float32)
        wv = balanced_weights(plan.is_live[va], plan.attack_type[va])
        log(f"  fold {f}: train {tr.sum()} samples, validate {va.sum()} images "
            f"({len(set(plan.source[va]))} sources)")
        _, hist = train_head(base, real_index, feats, y, w, cfg, seed + f, cfg["epochs"],
                             (np.flatnonzero(va), y[va], wv), log, rows=np.flatnonzero(tr))
        per_fold.append({"fold": f, "val_index": np.flatnonzero(va), **hist})
    mean_val = np.mean([h["val_loss"] for h in per_fold], axis=0)
    fold_auc = [[auc(z[y_v], z[~y_v]) for z in h["val_logits"]]
                for h in per_fold for y_v in [plan.is_live[h["val_index"]]]]
    mean_auc = np.array([np.mean([a[e] for a in fold_auc if a[e] is not None] or [np.nan])
                         for e in range(len(mean_val))])
    if cfg.get("select", "loss") == "auc" and not np.isnan(mean_auc).all():
        best = int(np.nanargmax(mean_auc))
    else:
        best = int(np.argmin(mean_val))
    oof = np.full(len(plan), np.nan, np.float32)
    for h in per_fold:
        oof[h["val_index"]] = h["val_logits"][best]
    return {"folds": per_fold, "mean_val_loss": mean_val.tolist(), "mean_val_auc": mean_auc.tolist(),
            "best_epoch": best, "oof": oof}


def clip_logit(z: np.ndarray) -> np.ndarray:
    """logit(p) with p clipped to [EPS, 1-EPS], as livecheck computes it from p."""
    lim = float(np.log((1 - EPS) / EPS))
    return np.clip(z, -lim, lim)


def fit_fusion(Z: np.ndarray, y: np.ndarray, w: np.ndarray, c: float = 1.0) -> dict:
    """Logistic regression p = sigmoid(b + Σ c_i z_i) over member logits Z [N, members]."""
    lr = LogisticRegression(C=c, max_iter=1000)
    lr.fit(clip_logit(Z), y.astype(int), sample_weight=w)
    return {"rule": "logistic", "intercept": float(lr.intercept_[0]),
            "coefficients": [float(v) for v in lr.coef_[0]]}


def apply_fusion(fusion: dict, Z: np.ndarray) -> np.ndarray:
    """Fused p_real (as livecheck computes it from the members' p_real)."""
    s = fusion["intercept"] + clip_logit(Z) @ np.asarray(fusion["coefficients"])
    return 1 / (1 + np.exp(-s))


def nested_fusion_oof(Z: np.ndarray, y: np.ndarray, w: np.ndarray, fold: np.ndarray,
                      c: float = 1.0) -> np.ndarray:
    """Out-of-fold fused p_real: the fusion of each fold is fitted on the other folds only, so
    the pooled figures do not flatter the fusion."""
    p = np.full(len(y), np.nan)
    for f in sorted(set(fold)):
        tr = fold != f
        if len(set(y[tr])) < 2:
            continue
        p[fold == f] = apply_fusion(fit_fusion(Z[tr], y[tr], w[tr], c), Z[fold == f])
    return p
