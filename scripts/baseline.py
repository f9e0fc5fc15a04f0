#!/usr/bin/env python3
"""The reference recipe (recipe.py) timed over files: the CLI peer of `livecheck check`.

    baseline.py MODEL_DIR ROUNDS IMAGE...   -> prints JSON {"per_image_ms": ..., "p_real": {...}}
"""
import json, sys, time

import cv2

from recipe import Recipe, VERSIONS

model_dir, rounds, images = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
recipe = Recipe(model_dir)


def check(path):
    img = cv2.imread(path)
    return None if img is None else recipe.check(img)[0]


scores = {p: check(p) for p in images}  # warm-up + scores
t0 = time.perf_counter()
for _ in range(rounds):
    for p in images:
        check(p)
dt = time.perf_counter() - t0
print(json.dumps({"per_image_ms": dt * 1e3 / (rounds * len(images)), "images": len(images), "rounds": rounds,
                  **VERSIONS, "p_real": scores}))
