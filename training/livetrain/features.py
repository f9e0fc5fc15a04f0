"""Training samples (crop view + augmentation) and their cached backbone features.

A *plan* lists the samples once for all members: image index, view, what to do to the crop
(`clean`, `photo` = photometric augmentation, or a synthetic attack kind), a seed, and the
resulting label / attack type. Every member then renders the plan from its own crops (same
images, same seeds) and runs its frozen backbone once; heads train on the cached features.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from . import augment
from .data import Crops
from .models import Base, tensor_from_crops


@dataclass
class Plan:
    image: np.ndarray  # [M] index into Crops
    view: np.ndarray  # [M] crop view (0 = served crop)
    op: np.ndarray  # [M] "clean" | "photo" | synthetic kind
    seed: np.ndarray  # [M] per-sample seed
    bg: np.ndarray  # [M] image whose crop stands in for the surroundings (synthetic only)
    is_live: np.ndarray  # [M]
    attack_type: np.ndarray  # [M]
    source: np.ndarray  # [M]

    def __len__(self):
        return len(self.image)

    def key(self) -> str:
        h = hashlib.sha256()
        for a in (self.image, self.view, self.op.astype(str), self.seed, self.bg):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]


def make_plan(c: Crops, cfg: dict, seed: int) -> Plan:
    """Samples for `c`: view 0 clean (the served crop; validation uses these), the jittered views
    clean too if `clean_views` is "all", `photometric_per_view` augmented copies of every view,
    and for each live image `synthetic_per_live` synthetic attacks (kinds in turn, random view),
    labelled as attacks of that kind."""
    rng = np.random.default_rng(seed)
    rows = []
    n = len(c)
    for i in range(n):
        for v in range(c.views):
            if v == 0 or cfg.get("clean_views", "all") == "all":
                rows.append((i, v, "clean", 0))
            for _ in range(cfg.get("photometric_per_view", 1)):
                rows.append((i, v, "photo", 0))
    kinds = cfg.get("synthetic_kinds", list(augment.SYNTHETIC_KINDS))
    live_idx = np.flatnonzero(c.is_live)
    for j, i in enumerate(np.repeat(live_idx, cfg.get("synthetic_per_live", 1))):
        rows.append((int(i), int(rng.integers(c.views)), kinds[j % len(kinds)], 0))
    image = np.array([r[0] for r in rows], int)
    op = np.array([r[2] for r in rows], object)
    synthetic = op != "clean"
    synthetic &= op != "photo"
    return Plan(
        image=image,
        view=np.array([r[1] for r in rows], int),
        op=op,
        seed=rng.integers(0, 2**31, len(rows)),
        bg=rng.integers(0, max(n, 1), len(rows)),
        is_live=np.where(synthetic, False, c.is_live[image]),
        attack_type=np.where(synthetic, op, c.attack_type[image]).astype(object),
        source=c.source[image],
    )


def read_rgb(path: str) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(path)
    return np.ascontiguousarray(img[:, :, ::-1])


def render(c: Crops, plan: Plan, k: int, member: str, face_frac: float,
           photometric_strength: float) -> np.ndarray:
    """The RGB crop of sample k for `member`."""
    img = read_rgb(c.crop[member][plan.image[k], plan.view[k]])
    op = plan.op[k]
    if op == "clean":
        return img
    rng = np.random.default_rng(int(plan.seed[k]))
    if op != "photo":
        bg = read_rgb(c.crop[member][plan.bg[k], 0])
        img = augment.synthesize(op, img, rng, face_frac, bg)
    return augment.photometric(img, rng, photometric_strength)


def compute(c: Crops, plan: Plan, base: Base, member: str, spec: dict, face_frac: float,
            photometric_strength: float, cache_dir: Path | None, batch: int = 128,
            log=print) -> np.ndarray:
    """Backbone features [M, ...] (float16) of every planned sample, cached on disk by content."""
    key = hashlib.sha256(json.dumps([plan.key(), member, str(base.path), base.start, spec,
                                     face_frac, photometric_strength, str(c.root),
                                     list(map(str, c.file[:50]))]).encode()).hexdigest()[:16]
    path = cache_dir / f"{member}-{key}.npy" if cache_dir else None
    if path is not None and path.exists():
        log(f"  {member}: features from cache {path.name}")
        return np.load(path)
    t0 = time.time()
    out = None
    for lo in range(0, len(plan), batch):
        ks = range(lo, min(lo + batch, len(plan)))
        crops = np.stack([render(c, plan, k, member, face_frac, photometric_strength) for k in ks])
        f = base.features(tensor_from_crops(crops, spec))
        if out is None:
            out = np.empty((len(plan),) + f.shape[1:], np.float16)
        out[lo:lo + len(f)] = f
    log(f"  {member}: {len(plan)} samples, features {out.shape[1:]} in {time.time() - t0:.0f} s")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, out)
    return out
