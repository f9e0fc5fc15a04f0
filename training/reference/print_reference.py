"""Reference image prints for tests/parity.rs (src/pipeline/print.rs), computed with OpenCV itself.

The print of a picture: the detector input (the recipe's INTER_LINEAR resize to about 192x192,
MODELS.md), shrunk to 32x32 with INTER_AREA, converted to grey (COLOR_BGR2GRAY), cv2.dct, the 8x8
lowest frequencies in zig-zag order (by row + column, then by row) without the DC term, scaled to
unit length. Inputs are the Silent-Face reference's decoded samples (tests/fixtures/silentface/
reference, so both sides start from the same pixels): each sample, the three side by side, and
each sample's top-left quarter (a small image that the detector input leaves at its own size).

    training/.venv/bin/python training/reference/print_reference.py tests/fixtures/silentface tests/fixtures/print
"""
import json
import math
import os
import sys

import cv2
import numpy as np

ZIGZAG = sorted(((i, j) for i in range(8) for j in range(8)), key=lambda p: (p[0] + p[1], p[0]))


def detector_input(img):
    h, w = img.shape[:2]
    if w * h < 192 * 192:
        return img
    ar = w / h
    return cv2.resize(img, (int(192 * math.sqrt(ar)), int(192 / math.sqrt(ar))), interpolation=cv2.INTER_LINEAR)


def image_print(img):
    small = detector_input(img)
    thumb = cv2.resize(small, (32, 32), interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(thumb, cv2.COLOR_BGR2GRAY).astype(np.float64)
    d = cv2.dct(grey)[:8, :8]
    ac = np.array([d[i, j] for i, j in ZIGZAG[1:]])
    coeffs = ac / np.linalg.norm(ac)
    bits = 0
    med = np.median(coeffs)
    for i, c in enumerate(coeffs):
        if c > med:
            bits |= 1 << (i + 1)
    return small.shape[1], small.shape[0], coeffs, bits, float(np.linalg.norm(ac))


def main(silentface, out_dir):
    ref = os.path.join(silentface, "reference")
    imgs = {n: np.load(os.path.join(ref, f"{n}.decoded_bgr_u8.npy")) for n in ("image_F1", "image_F2", "image_T1")}
    cases = dict(imgs)
    cases["row3"] = np.hstack(list(imgs.values()))
    for n, im in imgs.items():
        cases[f"{n}_quarter"] = np.ascontiguousarray(im[: im.shape[0] // 4, : im.shape[1] // 4])
    out = {"opencv": cv2.__version__, "numpy": np.__version__, "images": {}}
    for n, im in cases.items():
        w, h, coeffs, bits, energy = image_print(im)
        out["images"][n] = {
            "size": [im.shape[1], im.shape[0]],
            "detector_input": [w, h],
            "energy": energy,
            "coeffs": [float(c) for c in coeffs],
            "bits": f"{bits:016x}",
        }
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "reference.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
