#!/usr/bin/env python3
"""Reference tensors for the `faceantispoof_minifas` member (face-antispoof-onnx, Apache-2.0).

For each Silent-Face sample, starting from the upstream reference's decoded BGR image and face box
(../shared/testdata/silentface/reference), run face-antispoof-onnx's own preprocessing (`crop` and
`preprocess` below, copied verbatim from johnraivenolazo/face-antispoof-onnx commit 2b9830b,
src/inference/preprocess.py, with the /255 split out so the 8-bit image can be saved) and the
model on onnxruntime. Writes tests/fixtures/faceantispoof/: `<image>.crop_rgb_u8.npy` (the
128x128 RGB image before /255) and `reference.json` (box, logits, p_real = softmax[0]).

    bash training/install.sh   # once: the venv with numpy, opencv, onnxruntime
    training/.venv/bin/python training/reference/faceantispoof_reference.py
"""
import json
import os
import sys

import cv2
import numpy as np
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SHARED = os.path.join(REPO, "..", "shared")
REF = os.path.join(SHARED, "testdata", "silentface", "reference")
MODEL = os.path.join(SHARED, "models", "candidates", "faceantispoof_minifas_97.80.onnx")
OUT = os.path.join(REPO, "tests", "fixtures", "faceantispoof")


def crop(img, bbox, bbox_expansion_factor):
    """Extract square face crop from bbox with expansion. Pad edges with reflection. (verbatim)"""
    original_height, original_width = img.shape[:2]
    x, y, w, h = bbox
    w = w - x
    h = h - y
    if w <= 0 or h <= 0:
        raise ValueError("Invalid bbox dimensions")
    max_dim = max(w, h)
    center_x = x + w / 2
    center_y = y + h / 2
    x = int(center_x - max_dim * bbox_expansion_factor / 2)
    y = int(center_y - max_dim * bbox_expansion_factor / 2)
    crop_size = int(max_dim * bbox_expansion_factor)
    crop_x1 = max(0, x)
    crop_y1 = max(0, y)
    crop_x2 = min(original_width, x + crop_size)
    crop_y2 = min(original_height, y + crop_size)
    top_pad = int(max(0, -y))
    left_pad = int(max(0, -x))
    bottom_pad = int(max(0, (y + crop_size) - original_height))
    right_pad = int(max(0, (x + crop_size) - original_width))
    if crop_x2 > crop_x1 and crop_y2 > crop_y1:
        img = img[crop_y1:crop_y2, crop_x1:crop_x2, :]
    else:
        img = np.zeros((0, 0, 3), dtype=img.dtype)
    return cv2.copyMakeBorder(img, top_pad, bottom_pad, left_pad, right_pad, cv2.BORDER_REFLECT_101)


def letterbox_u8(img, model_img_size):
    """`preprocess` up to the /255 (verbatim otherwise)."""
    new_size = model_img_size
    old_size = img.shape[:2]
    ratio = float(new_size) / max(old_size)
    scaled_shape = tuple([int(x * ratio) for x in old_size])
    interpolation = cv2.INTER_LANCZOS4 if ratio > 1.0 else cv2.INTER_AREA
    img = cv2.resize(img, (scaled_shape[1], scaled_shape[0]), interpolation=interpolation)
    delta_w = new_size - scaled_shape[1]
    delta_h = new_size - scaled_shape[0]
    top, bottom = delta_h // 2, delta_h - (delta_h // 2)
    left, right = delta_w // 2, delta_w - (delta_w // 2)
    return cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_REFLECT_101)


def main():
    os.makedirs(OUT, exist_ok=True)
    upstream = json.load(open(os.path.join(REF, "upstream_reference.json")))
    sess = ort.InferenceSession(MODEL, providers=["CPUExecutionProvider"])
    out = {"model": os.path.basename(MODEL), "onnxruntime": ort.__version__,
           "opencv": cv2.__version__, "images": {}}
    for name in ["image_F1", "image_F2", "image_T1"]:
        bgr = np.load(os.path.join(REF, f"{name}.decoded_bgr_u8.npy"))
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        x, y, w, h = upstream[f"{name}.jpg"]["bbox_xywh"]
        face = crop(rgb, (x, y, x + w, y + h), 1.5)
        u8 = letterbox_u8(face, 128)
        np.save(os.path.join(OUT, f"{name}.crop_rgb_u8.npy"), u8)
        tensor = (u8.transpose(2, 0, 1).astype(np.float32) / 255.0)[None]
        logits = sess.run(None, {"input": tensor})[0][0].astype(np.float64)
        e = np.exp(logits - logits.max())
        p = e / e.sum()
        out["images"][name] = {"bbox_xywh": [x, y, w, h], "crop_side": int(face.shape[0]),
                               "logits": logits.tolist(), "p_real": float(p[0])}
        print(name, out["images"][name], file=sys.stderr)
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
