#!/usr/bin/env python3
"""The reference recipe (recipe.py) timed over files: the CLI peer of `livecheck check`.

    baseline.py [--model-set FILE] MODEL_DIR ROUNDS IMAGE...
        -> prints JSON {"per_image_ms": ..., "p_real": {...}}

Without --model-set: the Silent-Face pair. FILE is a livecheck model-set file (models/sets/).
"""
import json, sys, time

import cv2

from recipe import Recipe, VERSIONS

args = sys.argv[1:]
set_file = None
if args[:1] == ["--model-set"]:
    set_file, args = args[1], args[2:]
model_dir, rounds, images = args[0], int(args[1]), args[2:]
recipe = Recipe(model_dir, set_file)


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
