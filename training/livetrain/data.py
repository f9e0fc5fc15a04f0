"""Manifests, per-source capping, `livecheck crops` output, sample weights and source folds."""
from __future__ import annotations

import csv
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


def read_manifest(path: str | Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def cap_manifest(src: str | Path, dst: str | Path, cap: int | None, seed: int, group_by: str,
                 max_sources: int | None = None, exclude: set | None = None) -> list[dict]:
    """Write `dst`: at most `cap` images per (source, label) of manifest `src`, sampled with a
    fixed seed (big video sources must not dominate), file paths made absolute. Sources in
    `exclude` are left out; with `max_sources`, only that many sources are kept (the first
    names in sorted order: stable), for smoke runs. Returns the kept rows."""
    rows = read_manifest(src)
    base = Path(src).resolve().parent
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r.get(group_by, ""), r["label"].strip().lower())].append(r)
    sources = sorted({s for s, _ in groups} - set(exclude or ()))
    if max_sources is not None:
        sources = sources[:max_sources]
    rng = np.random.default_rng(seed)
    kept = []
    for key in sorted(groups):
        if key[0] not in sources:
            continue
        items = sorted(groups[key], key=lambda r: r["file"])
        if cap is not None and len(items) > cap:
            idx = np.sort(rng.choice(len(items), cap, replace=False))
            items = [items[i] for i in idx]
        kept.extend(items)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    with open(dst, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        for r in kept:
            w.writerow({**r, "file": str((base / r["file"]).resolve())})
    return kept


@dataclass
class Crops:
    """`livecheck crops` output: one entry per image whose face reached the classifiers."""

    root: Path
    file: np.ndarray  # [N] image file as in the manifest
    is_live: np.ndarray  # [N] bool
    attack_type: np.ndarray  # [N] str ("none" for live)
    source: np.ndarray  # [N] str
    views: int  # views per image (1 + jitter)
    members: list[str]
    crop: dict = field(default_factory=dict)  # member → [N, views] crop paths (absolute)
    logits: dict = field(default_factory=dict)  # member → [N, views, n_out] livecheck logits

    def __len__(self) -> int:
        return len(self.file)

    def subset(self, mask: np.ndarray) -> "Crops":
        return Crops(self.root, self.file[mask], self.is_live[mask], self.attack_type[mask],
                     self.source[mask], self.views, self.members,
                     {m: v[mask] for m, v in self.crop.items()},
                     {m: v[mask] for m, v in self.logits.items()})


def load_crops(out_dir: str | Path) -> Crops:
    """Read OUT_DIR/crops.csv (header id,file,label,attack_type,source,view,member,crop,reason,
    logits). Images missing a (view, member) row are dropped."""
    root = Path(out_dir)
    by_id: dict[str, dict] = {}
    members: list[str] = []
    views = 0
    with open(root / "crops.csv", newline="") as f:
        for r in csv.DictReader(f):
            img = by_id.setdefault(r["id"], {"row": r, "crops": {}})
            v = int(r["view"])
            img["crops"][(r["member"], v)] = (str(root / r["crop"]),
                                              [float(x) for x in r["logits"].split()])
            if r["member"] not in members:
                members.append(r["member"])
            views = max(views, v + 1)
    complete = [i for i in by_id.values()
                if all((m, v) in i["crops"] for m in members for v in range(views))]
    complete.sort(key=lambda i: int(i["row"]["id"]))
    rows = [i["row"] for i in complete]
    c = Crops(
        root=root,
        file=np.array([r["file"] for r in rows], object),
        is_live=np.array([r["label"].strip().lower() == "live" for r in rows], bool),
        attack_type=np.array([("none" if r["label"].strip().lower() == "live"
                               else (r["attack_type"] or "unknown")) for r in rows], object),
        source=np.array([r["source"] for r in rows], object),
        views=views, members=members)
    for m in members:
        c.crop[m] = np.array([[i["crops"][(m, v)][0] for v in range(views)] for i in complete],
                             object).reshape(len(complete), views)
        c.logits[m] = np.array([[i["crops"][(m, v)][1] for v in range(views)] for i in complete],
                               np.float32).reshape(len(complete), views, -1)
    return c


def balanced_weights(is_live: np.ndarray, attack_type: np.ndarray) -> np.ndarray:
    """Live samples share weight 1/2, attacks 1/2; within attacks every attack type gets an
    equal share (the corpus is ~95% replay: print and mask would otherwise not count).
    Weights are scaled to mean 1."""
    is_live = np.asarray(is_live, bool)
    attack_type = np.asarray(attack_type, object)
    w = np.zeros(len(is_live), np.float64)
    n_live = is_live.sum()
    types = sorted(set(attack_type[~is_live]))
    has_live, has_attack = n_live > 0, len(types) > 0
    live_share = 0.5 if has_attack else 1.0
    attack_share = 0.5 if has_live else 1.0
    if has_live:
        w[is_live] = live_share / n_live
    for t in types:
        sel = ~is_live & (attack_type == t)
        w[sel] = attack_share / len(types) / sel.sum()
    return (w * len(w) / w.sum()).astype(np.float32) if w.sum() > 0 else w.astype(np.float32)


def source_folds(sources: np.ndarray, is_live: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Grouped K-fold by source: returns fold index per sample. Sources are shuffled with `seed`
    and dealt greedily (largest first) to the fold with the fewest images so far, live and attack
    counted separately so that every fold gets both classes when possible."""
    sources = np.asarray(sources, object)
    uniq = sorted(set(sources))
    rng = np.random.default_rng(seed)
    uniq = [uniq[i] for i in rng.permutation(len(uniq))]
    k = max(1, min(k, len(uniq)))
    size = {s: ((sources == s) & is_live).sum() + ((sources == s) & ~is_live).sum() for s in uniq}
    uniq.sort(key=lambda s: -size[s])  # stable: ties keep the shuffled order
    live = np.zeros(k)
    attack = np.zeros(k)
    fold_of = {}
    for s in uniq:
        nl = ((sources == s) & is_live).sum()
        na = ((sources == s) & ~is_live).sum()
        # the fold that stays most balanced after adding this source
        cost = [max(live[f] + nl, attack[f] + na) + 0.5 * (live[f] + attack[f]) for f in range(k)]
        f = int(np.argmin(cost))
        fold_of[s] = f
        live[f] += nl
        attack[f] += na
    return np.array([fold_of[s] for s in sources], int)


def count_by_source(c: Crops) -> list[dict]:
    """Per source: live and attack image counts, attacks per type."""
    out = []
    for s in sorted(set(c.source)):
        sel = c.source == s
        types = defaultdict(int)
        for t in c.attack_type[sel & ~c.is_live]:
            types[t] += 1
        out.append({"source": s, "live": int((sel & c.is_live).sum()),
                    "attacks": int((sel & ~c.is_live).sum()), "types": dict(sorted(types.items()))})
    return out


def source_licences(manifest: str | Path, group_by: str) -> dict[str, str]:
    """source → licence, from the manifest's `license` column (`unknown` if none)."""
    lic: dict[str, str] = {}
    if not os.path.exists(manifest):
        return lic
    for r in read_manifest(manifest):
        lic.setdefault(r.get(group_by, ""), r.get("license", "") or "unknown")
    return lic
