"""Unit tests of the training pipeline's pieces (no livecheck binary, no corpus needed).

    training/.venv/bin/python -m unittest discover -s training/tests
"""
import csv
import sys
import tempfile
import unittest
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from livetrain import augment, data, fit, metrics, models  # noqa: E402

MODELS = Path(__file__).resolve().parents[2] / "models"


class Metrics(unittest.TestCase):
    def brute(self, live, attack):
        thr = sorted(set(live) | set(attack)) + [np.inf]
        rows = [((np.array(attack) >= t).mean(), (np.array(live) < t).mean(), t) for t in thr]
        return rows

    def test_against_brute_force(self):
        rng = np.random.default_rng(1)
        for _ in range(20):
            live = np.round(rng.uniform(0, 1, rng.integers(1, 30)), 1)
            attack = np.round(rng.uniform(0, 1, rng.integers(1, 30)) * 0.8, 1)
            pairs = [(l > a) + 0.5 * (l == a) for l in live for a in attack]
            self.assertAlmostEqual(metrics.auc(live, attack), np.mean(pairs))
            rows = self.brute(live, attack)
            best = min(rows, key=lambda r: (round(abs(r[0] - r[1]), 12), (r[0] + r[1]) / 2, r[2]))
            e, t = metrics.eer(live, attack)
            self.assertAlmostEqual(e, (best[0] + best[1]) / 2)
            self.assertEqual(t, best[2])
            for target in (0.05, 0.1):
                want = min(r[1] for r in rows if r[0] <= target)
                self.assertAlmostEqual(metrics.bpcer_at_apcer(live, attack, target), want)

    def test_summary_per_type(self):
        s = metrics.summary([0.9, 0.2, 0.6, 0.1], [True, True, False, False],
                            ["none", "none", "print", "replay"], 0.5)
        self.assertEqual(s["apcer"], {"print": 1.0, "replay": 0.0})
        self.assertEqual(s["bpcer"], 0.5)
        self.assertIsNone(metrics.summary([0.3], [True], ["none"], 0.5)["auc"])


class Data(unittest.TestCase):
    def test_balanced_weights(self):
        live = np.array([1, 1, 1, 0, 0, 0, 0, 0], bool)
        types = np.array(["none"] * 3 + ["replay"] * 4 + ["print"], object)
        w = data.balanced_weights(live, types)
        self.assertAlmostEqual(w[live].sum(), w[~live].sum(), places=5)
        self.assertAlmostEqual(w[types == "replay"].sum(), w[types == "print"].sum(), places=5)
        self.assertAlmostEqual(w.mean(), 1.0, places=5)

    def test_source_folds_keep_sources_whole(self):
        rng = np.random.default_rng(0)
        sources = np.array([f"s{i}" for i in rng.integers(0, 12, 500)], object)
        live = rng.random(500) < 0.5
        folds = data.source_folds(sources, live, 5, 0)
        for s in set(sources):
            self.assertEqual(len(set(folds[sources == s])), 1)
        self.assertEqual(set(folds), set(range(5)))
        np.testing.assert_array_equal(folds, data.source_folds(sources, live, 5, 0))

    def test_cap_manifest(self):
        with tempfile.TemporaryDirectory() as d:
            src = Path(d) / "m.csv"
            with open(src, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["file", "label", "attack_type", "source_repo"])
                for i in range(50):
                    w.writerow([f"a/{i}.jpg", "live" if i % 2 else "spoof", "replay", "big" if i < 40 else "small"])
            kept = data.cap_manifest(src, Path(d) / "c.csv", 5, 0, "source_repo")
            again = data.cap_manifest(src, Path(d) / "c2.csv", 5, 0, "source_repo")
            self.assertEqual(len(kept), 5 + 5 + 5 + 5)
            self.assertEqual([r["file"] for r in kept], [r["file"] for r in again])
            rows = data.read_manifest(Path(d) / "c.csv")
            self.assertTrue(all(Path(r["file"]).is_absolute() for r in rows))


class Augment(unittest.TestCase):
    def test_shapes_and_determinism(self):
        rng = np.random.default_rng(0)
        for size in (80, 128):
            img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            bg = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            for kind in augment.SYNTHETIC_KINDS:
                a = augment.synthesize(kind, img, np.random.default_rng(5), 0.37, bg)
                b = augment.synthesize(kind, img, np.random.default_rng(5), 0.37, bg)
                self.assertEqual((a.shape, a.dtype), (img.shape, np.uint8))
                np.testing.assert_array_equal(a, b)
                self.assertGreater(np.abs(a.astype(int) - img).mean(), 1.0)
            p = augment.photometric(img, np.random.default_rng(3))
            self.assertEqual((p.shape, p.dtype), (img.shape, np.uint8))


@unittest.skipUnless((MODELS / "MiniFASNetV2.onnx").exists(), "models/ not present")
class Models(unittest.TestCase):
    def test_head_reproduces_base_and_export_roundtrip(self):
        import onnxruntime as ort
        import torch

        spec = {"channels": "bgr", "scale": 1.0, "mean": [0, 0, 0], "std": [1, 1, 1]}
        crops = np.random.default_rng(0).integers(0, 256, (4, 80, 80, 3), dtype=np.uint8)
        x = models.tensor_from_crops(crops, spec)
        sess = ort.InferenceSession(str(MODELS / "MiniFASNetV2.onnx"))
        ref = np.concatenate([sess.run(None, {"input": x[i:i + 1]})[0] for i in range(4)])
        for start in models.HEAD_STARTS:
            base = models.Base(MODELS / "MiniFASNetV2.onnx", start)
            head = base.new_head().eval()
            with torch.no_grad():
                z = head(torch.from_numpy(base.features(x))).numpy()
            np.testing.assert_allclose(z, ref, atol=1e-4)
            with torch.no_grad():
                for p in head.parameters():
                    p.add_(0.01 * torch.randn_like(p))
            with tempfile.TemporaryDirectory() as d:
                path = Path(d) / "ft.onnx"
                info = base.export(head, path)
                self.assertEqual(info["bytes"], path.stat().st_size)
                self.assertLess(models.check_export(base, head, path, x), 1e-4)

    def test_logit_real_and_fusion(self):
        z = np.array([[0.3, 1.2, -0.5], [2.0, -1.0, 0.0]], np.float32)
        p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        np.testing.assert_allclose(models.logit_real(z, 1), np.log(p[:, 1] / (1 - p[:, 1])), rtol=1e-5)
        fusion = {"intercept": 0.5, "coefficients": [1.0, -2.0]}
        Z = np.array([[0.0, 1.0]])
        self.assertAlmostEqual(float(fit.apply_fusion(fusion, Z)[0]), 1 / (1 + np.exp(1.5)))


if __name__ == "__main__":
    unittest.main()
