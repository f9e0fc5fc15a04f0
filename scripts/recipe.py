"""The reference recipe (shared/models/MODELS.md) on onnxruntime + OpenCV: the stack users compare
livecheck against. Shared by the CLI baseline (baseline.py) and the HTTP peer (peer_service.py).

Single-threaded per instance (ORT intra/inter-op threads = 1, cv2.setNumThreads(1)).
"""
import math

import cv2
import numpy as np
import onnxruntime as ort

cv2.setNumThreads(1)


class Recipe:
    """RetinaFace (Silent-Face export) + MiniFASNetV2 (scale 2.7) + MiniFASNetV1SE (scale 4.0),
    softmax scores summed; p_real is class 1 of the sum divided by the number of models."""

    def __init__(self, model_dir):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        cpu = ["CPUExecutionProvider"]
        self.det = ort.InferenceSession(f"{model_dir}/retinaface_silentface.onnx", so, providers=cpu)
        v2 = ort.InferenceSession(f"{model_dir}/MiniFASNetV2.onnx", so, providers=cpu)
        v1 = ort.InferenceSession(f"{model_dir}/MiniFASNetV1SE.onnx", so, providers=cpu)
        self.classifiers = ((v2, 2.7), (v1, 4.0))
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
        summed = np.zeros(3)
        for sess, s in self.classifiers:
            x = self.crop(img, bbox, s).astype(np.float32).transpose(2, 0, 1)[None]
            logits = sess.run(None, {"input": x})[0][0]
            e = np.exp(logits - logits.max())
            summed += e / e.sum()
        return float(summed[1] / len(self.classifiers)), bbox


VERSIONS = {"opencv": cv2.__version__, "onnxruntime": ort.__version__}
