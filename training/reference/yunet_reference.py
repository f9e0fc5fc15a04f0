"""Reference detections of the face finder (YuNet) for tests/finder_parity.rs.

OpenCV's own FaceDetectorYN runs models/face_detection_yunet_2023mar.onnx on inputs built from
the Silent-Face reference's decoded sample images (tests/fixtures/silentface/reference, so both
sides start from the same pixels): each sample alone, the three side by side, and a 4x4
tiling of them (small faces). Each image is shrunk to fit 640x640 with INTER_AREA (never
enlarged) and placed at the top-left of a zero 640x640 input, as livecheck's finder does.

    training/.venv/bin/python training/reference/yunet_reference.py tests/fixtures/silentface tests/fixtures/yunet
"""
import hashlib
import json
import os
import sys

import cv2
import numpy as np

SIZE = 640
SCORE = 0.3  # below the set's 0.9: the test compares every face the finder could report
NMS = 0.3


def cases(silentface):
    ref = os.path.join(silentface, "reference")
    imgs = {n: np.load(os.path.join(ref, f"{n}.decoded_bgr_u8.npy")) for n in ("image_F1", "image_F2", "image_T1")}
    for n, im in imgs.items():
        yield n, im
    row = np.hstack(list(imgs.values()))
    yield "row3", row
    yield "tile4x4", np.vstack([np.hstack([row, row[:, : row.shape[1] // 3]])] * 4)


def finder_input(img):
    h, w = img.shape[:2]
    s = min(1.0, SIZE / max(h, w))
    nw, nh = min(SIZE, max(1, round(w * s))), min(SIZE, max(1, round(h * s)))
    small = img if (nw, nh) == (w, h) else cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((SIZE, SIZE, 3), np.uint8)
    canvas[:nh, :nw] = small
    return canvas, s


def main(silentface, out_dir):
    model = os.path.join(os.path.dirname(__file__), "..", "..", "models", "face_detection_yunet_2023mar.onnx")
    det = cv2.FaceDetectorYN.create(model, "", (SIZE, SIZE), SCORE, NMS, 5000)
    out = {"model": "face_detection_yunet_2023mar.onnx", "opencv": cv2.__version__, "size": SIZE,
           "score": SCORE, "nms": NMS, "images": {}}
    for name, img in cases(silentface):
        canvas, s = finder_input(img)
        _, faces = det.detect(canvas)
        faces = [] if faces is None else faces.tolist()
        out["images"][name] = {
            "shape": list(img.shape),
            "scale": s,
            "input_sha256": hashlib.sha256(canvas.tobytes()).hexdigest(),
            "faces": [[round(v, 5) for v in f[:4]] + [round(f[14], 7)] for f in faces],
        }
        print(name, img.shape, len(faces), [round(f[14], 3) for f in faces])
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "reference.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
