"""The reference recipe (shared/models/MODELS.md) on onnxruntime + OpenCV: the stack users compare
livecheck against. Shared by the CLI baseline (baseline.py) and the HTTP peer (peer_service.py).

`Recipe(model_dir)` is the Silent-Face pair. `Recipe(model_dir, set_file)` runs any livecheck
model-set file (models/sets/*.json) the way its members' own projects do: Silent-Face's clamped
crop + INTER_LINEAR, or face-antispoof-onnx's reflect-padded square crop + letterbox (the code
quoted in training/reference/faceantispoof_reference.py), then the set's fusion rule (mean of
p_real, or logistic over logit(p_real)). Member files are looked up in model_dir and
model_dir/candidates.

Single-threaded per instance (ORT intra/inter-op threads = 1, cv2.setNumThreads(1)).
"""
import json
import math
import os

import cv2
import numpy as np
import onnxruntime as ort

cv2.setNumThreads(1)


class Recipe:
    """RetinaFace (Silent-Face export) + the set's classifiers (by default MiniFASNetV2 at scale 2.7
    and MiniFASNetV1SE at scale 4.0, p_real the mean of their softmax class 1, as upstream)."""

    def __init__(self, model_dir, set_file=None):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        cpu = ["CPUExecutionProvider"]

        def session(name):
            for d in (model_dir, os.path.join(model_dir, "candidates")):
                if os.path.exists(os.path.join(d, name)):
                    return ort.InferenceSession(os.path.join(d, name), so, providers=cpu)
            raise FileNotFoundError(f"{name} not in {model_dir} or its candidates/")

        spec = json.load(open(set_file or SILENTFACE_SET))
        self.det = session(spec["detector"]["file"])
        self.classifiers = [(session(m["file"]), m) for m in spec["classifiers"]]
        self.fusion = spec["fusion"]
        self._priors = {}

    def priors(self, w, h):
        if (w, h) not in self._priors:
            out = []
            for k, (step, sizes) in enumerate(zip([8, 16, 32], [(16, 32), (64, 128), (256, 512)])):
                fw, fh = w, h
                for _ in range(k + 3):
                    fw, fh = (fw - 1) // 2 + 1, (fh - 1) // 2 + 1
                for i in range(fh):
                    for j in range(fw):
                        for m in sizes:
                            out.append(((j + .5) * step / w, (i + .5) * step / h, m / w, m / h))
            self._priors[(w, h)] = np.array(out, np.float32)
        return self._priors[(w, h)]

    @staticmethod
    def crop(img, bbox, scale, out_w=80, out_h=80):
        H, W = img.shape[:2]
        x, y, bw, bh = bbox
        scale = min((H - 1) / bh, min((W - 1) / bw, scale))
        nw, nh = bw * scale, bh * scale
        cx, cy = bw / 2 + x, bh / 2 + y
        l, t, r, b = cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2
        if l < 0: r -= l; l = 0
        if t < 0: b -= t; t = 0
        if r > W - 1: l -= r - W + 1; r = W - 1
        if b > H - 1: t -= b - H + 1; b = H - 1
        return cv2.resize(img[int(t):int(b) + 1, int(l):int(r) + 1], (out_w, out_h))

    @staticmethod
    def square_reflect(img, bbox, factor):
        """face-antispoof-onnx's `crop` (box given as x1, y1, x2, y2 there; here x, y, w, h)."""
        H, W = img.shape[:2]
        x, y, w, h = bbox
        max_dim = max(w, h)
        x = int(x + w / 2 - max_dim * factor / 2)
        y = int(y + h / 2 - max_dim * factor / 2)
        side = int(max_dim * factor)
        x1, y1, x2, y2 = max(0, x), max(0, y), min(W, x + side), min(H, y + side)
        pads = (int(max(0, -y)), int(max(0, y + side - H)), int(max(0, -x)), int(max(0, x + side - W)))
        region = img[y1:y2, x1:x2] if x2 > x1 and y2 > y1 else np.zeros((0, 0, 3), img.dtype)
        return cv2.copyMakeBorder(region, *pads, cv2.BORDER_REFLECT_101)

    @staticmethod
    def letterbox(img, size):
        """face-antispoof-onnx's `preprocess` before the /255 (applied with the member's std)."""
        ratio = float(size) / max(img.shape[:2])
        sh, sw = (int(v * ratio) for v in img.shape[:2])
        img = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_LANCZOS4 if ratio > 1.0 else cv2.INTER_AREA)
        dh, dw = size - sh, size - sw
        return cv2.copyMakeBorder(img, dh // 2, dh - dh // 2, dw // 2, dw - dw // 2, cv2.BORDER_REFLECT_101)

    def member_p_real(self, sess, m, img, bbox):
        n = m["size"]
        if m["crop"]["kind"] == "clamp":
            crop = self.crop(img, bbox, m["crop"]["scale"], n, n)
        else:
            crop = self.square_reflect(img, bbox, m["crop"]["scale"])
            crop = self.letterbox(crop, n) if m["resize"] == "letterbox" else cv2.resize(crop, (n, n))
        if m["channels"] == "rgb":
            crop = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
        x = (crop.astype(np.float32) * m["scale"] - np.float32(m["mean"])) / np.float32(m["std"])
        logits = sess.run(None, {sess.get_inputs()[0].name: x.transpose(2, 0, 1)[None]})[0].reshape(-1)
        if m["output"] == "sigmoid":
            return float(1 / (1 + np.exp(-logits[0])))
        e = np.exp(logits - logits.max())
        return float((e / e.sum())[m["real_index"]])

    def check(self, img):
        """p_real of a BGR image (numpy HxWx3 uint8), and the face box [x, y, w, h]."""
        H, W = img.shape[:2]
        small = img
        if W * H >= 192 * 192:
            ar = W / H
            small = cv2.resize(img, (int(192 * math.sqrt(ar)), int(192 / math.sqrt(ar))), interpolation=cv2.INTER_LINEAR)
        h, w = small.shape[:2]
        blob = (small.astype(np.float32) - np.array([104, 117, 123], np.float32)).transpose(2, 0, 1)[None]
        loc, conf = self.det.run(None, {"data": blob})
        i = int(np.argmax(conf[0, :, 1]))
        p = self.priors(w, h)[i]
        l = loc[0, i]
        cx, cy = p[0] + 0.1 * l[0] * p[2], p[1] + 0.1 * l[1] * p[3]
        bw, bh = p[2] * math.exp(0.2 * l[2]), p[3] * math.exp(0.2 * l[3])
        x1, y1, x2, y2 = (cx - bw / 2) * W, (cy - bh / 2) * H, (cx + bw / 2) * W, (cy + bh / 2) * H
        bbox = [int(x1), int(y1), int(x2 - x1 + 1), int(y2 - y1 + 1)]
        ps = [self.member_p_real(sess, m, img, bbox) for sess, m in self.classifiers]
        f = self.fusion
        if f["rule"] == "mean":
            return sum(w * p for w, p in zip(f["weights"], ps)) / sum(f["weights"]), bbox
        z = f["intercept"] + sum(c * math.log(p / (1 - p))
                                 for c, p in zip(f["coefficients"], (min(max(p, 1e-6), 1 - 1e-6) for p in ps)))
        return 1 / (1 + math.exp(-z)), bbox


# The default set, as livecheck builds it in (models/sets/silentface.json).
SILENTFACE_SET = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models", "sets", "silentface.json")

VERSIONS = {"opencv": cv2.__version__, "onnxruntime": ort.__version__}
