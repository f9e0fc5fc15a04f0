"""Unit tests of the training pipeline's pieces (no livecheck binary, no corpus needed).

    training/.venv/bin/python -m unittest discover -s training/tests
"""
import csv
import json
import subprocess
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


class TtaProbe(unittest.TestCase):
    """training/tta_probe.py on a synthetic `livecheck crops` folder."""

    def write(self, root: Path, rows: list[dict], members: list[dict], fusion: dict) -> Path:
        with open(root / "crops.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["id", "file", "label", "attack_type", "source", "view",
                                              "member", "crop", "reason", "logits"])
            w.writeheader()
            w.writerows(rows)
        spec = root / "set.json"
        spec.write_text(json.dumps({"name": "t", "classifiers": members, "fusion": fusion}))
        return spec

    def run_probe(self, *args) -> str:
        probe = Path(__file__).resolve().parents[1] / "tta_probe.py"
        out = subprocess.run([sys.executable, str(probe), *map(str, args)], check=True,
                             capture_output=True, text=True)
        return out.stdout + out.stderr

    def test_served_crop_and_view_means(self):
        # Served crops rank perfectly; view 1 ranks backwards and outweighs them in the mean.
        member = {"name": "m", "file": "m.onnx", "real_index": 1, "channels": "bgr", "scale": 1.0,
                  "mean": [0, 0, 0], "std": [1, 1, 1]}
        rows = []
        for i in range(8):
            live = i < 4
            for view, z in [(0, 1.0 if live else -1.0), (1, -3.0 if live else 3.0)]:
                rows.append({"id": i, "file": f"{i}.jpg", "label": "live" if live else "spoof",
                             "attack_type": "none" if live else "replay", "source": f"s{i % 2}",
                             "view": view, "member": "m", "crop": f"m/{i}_{view}.png", "reason": "live",
                             "logits": f"0 {z} -100"})  # p_real = sigmoid(z): logit(p_real) = z
        with tempfile.TemporaryDirectory() as d:
            spec = self.write(Path(d), rows, [member], {"rule": "logistic", "intercept": 0.0,
                                                        "coefficients": [1.0]})
            out = self.run_probe(d, spec, "--per-source")
        table = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in out.splitlines()
                 if line.startswith("| ")}
        self.assertIn("8 images, 2 sources, views 0..1", out)
        self.assertEqual(table["served crop"][1].strip(), "1.000")
        self.assertEqual(table["mean of views 0..1"][1].strip(), "0.000")
        self.assertEqual(table["s0"][:3], [" 2 ", " 2 ", " 1.000 "])
        self.assertAlmostEqual(float(table["s0"][4].split("/")[0]), 1 / (1 + np.exp(-1.0)), places=3)

    def test_flip_reads_the_member_input_exactly(self):
        import cv2
        import onnxruntime as ort
        members = [{"name": "MiniFASNetV2", "file": "MiniFASNetV2.onnx", "real_index": 1,
                    "channels": "bgr", "scale": 1.0, "mean": [0, 0, 0], "std": [1, 1, 1]},
                   {"name": "faceantispoof_minifas", "file": "faceantispoof_minifas_97.80.onnx",
                    "real_index": 0, "channels": "rgb", "scale": 1.0, "mean": [0, 0, 0],
                    "std": [255, 255, 255]}]
        rng = np.random.default_rng(0)
        rows = []
        with tempfile.TemporaryDirectory() as d:
            for m, side in zip(members, (80, 128)):
                (Path(d) / m["name"]).mkdir()
                s = ort.InferenceSession(str(MODELS / m["file"]), providers=["CPUExecutionProvider"])
                for i in range(4):
                    bgr = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
                    crop = f"{m['name']}/{i}_0.png"
                    cv2.imwrite(str(Path(d) / crop), bgr)
                    px = bgr if m["channels"] == "bgr" else bgr[:, :, ::-1]
                    x = px.astype(np.float32) / np.float32(m["std"][0])
                    z = s.run(None, {s.get_inputs()[0].name: np.ascontiguousarray(x.transpose(2, 0, 1)[None])})[0][0]
                    rows.append({"id": i, "file": f"{i}.jpg", "label": "live" if i < 2 else "spoof",
                                 "attack_type": "none" if i < 2 else "print", "source": "s", "view": 0,
                                 "member": m["name"], "crop": crop, "reason": "live",
                                 "logits": " ".join(str(float(v)) for v in z)})
            spec = self.write(Path(d), rows, members, {"rule": "logistic", "intercept": 0.0,
                                                       "coefficients": [1.0, 1.0]})
            out = self.run_probe(d, spec, "--flip", "--models", MODELS)
        within = float(out.split("logits within ")[1].split()[0])
        self.assertLess(within, 1e-4, out)
        self.assertIn("| served + flip | 2 |", out)


def write_check_lines(root: Path, per_source: int, line) -> list:
    """A synthetic corpus (3 sources) and devset (1 source): manifests and `livecheck check` lines,
    half live, half replay. `line(name, live)` gives each line's fields; each file ends with a
    `no_face` line, which the probes must skip. Returns the probes' arguments."""
    for name, sources in (("corpus", ["a/x", "b/y", "c/z"]), ("devset", ["d/w"])):
        with open(root / f"{name}.csv", "w", newline="") as f, open(root / f"{name}.jsonl", "w") as j:
            w = csv.writer(f)
            w.writerow(["file", "label", "attack_type", "source_repo", "license"])
            for s in sources:
                for i in range(per_source):
                    live = i % 2 == 0
                    file = f"{name}_{s.replace('/', '+')}_{i}.jpg"
                    w.writerow([file, "live" if live else "spoof", "none" if live else "replay", s, "none"])
                    j.write(json.dumps({"file": file, **line(name, live)}) + "\n")
            j.write(json.dumps({"file": file, "reason": "no_face"}) + "\n")
    return [root / "corpus.jsonl", root / "corpus.csv", root / "devset.jsonl", root / "devset.csv", "--cwd", root]


def run_probe(script: str, args: list) -> str:
    probe = Path(__file__).resolve().parents[1] / script
    return subprocess.run([sys.executable, str(probe), *args], check=True, capture_output=True, text=True).stdout


class ContextProbe(unittest.TestCase):
    """training/context_probe.py on synthetic `livecheck check` lines."""

    def test_reads_check_lines_and_scores_the_shipped_p_real(self):
        rng = np.random.default_rng(1)
        shipped = {}

        def line(name, live):
            p = float(np.clip(rng.normal(0.7 if live else 0.3, 0.2), 0.01, 0.99))
            shipped.setdefault(name, []).append((live, p))
            side = int(rng.integers(40, 200))
            return {"reason": "live" if p >= 0.5 else "spoof", "p_real": p, "bbox": [0, 0, side, side],
                    "image_size": [400, 300],
                    "scores": {"MiniFASNetV2": [1 - p, p, 0.0], "MiniFASNetV1SE": [1 - p, p, 0.0],
                               "faceantispoof_minifas": [p, 1 - p]}}

        with tempfile.TemporaryDirectory() as d:
            out = run_probe("context_probe.py", write_check_lines(Path(d), 6, line))
        self.assertIn("24 processed images, 4 sources (6 devset images)", out)
        rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in out.splitlines() if line.startswith("| ")}
        live = [p for name in shipped for lv, p in shipped[name] if lv]
        attack = [p for name in shipped for lv, p in shipped[name] if not lv]
        self.assertEqual(rows["shipped p_real (no refit)"][0].split("/")[0].strip(),
                         f"{metrics.auc(live, attack):.3f}")
        self.assertEqual(len(rows), 6)  # header, shipped and four variants


class MemberProbe(unittest.TestCase):
    """training/member_probe.py: the fit is livecheck's (`eval --calibrate`), and every subset is scored."""

    def test_weights_and_fit_match_the_calibrator(self):
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        import member_probe
        from sklearn.linear_model import LogisticRegression

        # src/eval/calibrate.rs `weights_balance_classes_and_attack_types`: live 1/2; replay 3,
        # print 1 share the attack half as sqrt(3) : 1.
        y = np.array([True, False, False, False, False])
        attack = np.array(["none", "replay", "replay", "replay", "print"])
        w = member_probe.weights(y, attack)
        replay = 0.5 * np.sqrt(3) / (np.sqrt(3) + 1)
        self.assertAlmostEqual(w[0], 0.5)
        self.assertAlmostEqual(w[1:4].sum(), replay)
        self.assertAlmostEqual(w[4], 0.5 - replay)

        rng = np.random.default_rng(3)
        y = rng.random(400) < 0.5
        attack = np.where(y, "none", np.where(rng.random(400) < 0.2, "print", "replay"))
        x = np.c_[np.where(y, 1.5, -1.0) + rng.normal(0, 1.2, 400), rng.normal(0, 1, 400)]
        w = member_probe.weights(y, attack)
        beta = member_probe.fit(x, y, w)
        # Newton's method with an L2 of 1e-3 on the coefficients is sklearn's objective at C = 1000.
        ref = LogisticRegression(C=1 / member_probe.L2, tol=1e-10, max_iter=10000).fit(x, y, sample_weight=w)
        np.testing.assert_allclose(beta, np.r_[ref.intercept_, ref.coef_[0]], atol=1e-4)

    def test_scores_every_subset(self):
        rng = np.random.default_rng(2)

        def line(name, live):
            p = [float(np.clip(rng.normal(0.7 if live else 0.3, 0.2), 0.01, 0.99)) for _ in range(3)]
            return {"reason": "live", "scores": {"MiniFASNetV2": [1 - p[0], p[0], 0.0],
                                                 "MiniFASNetV1SE": [1 - p[1], p[1], 0.0],
                                                 "faceantispoof_minifas": [p[2], 1 - p[2]]}}

        with tempfile.TemporaryDirectory() as d:
            out = run_probe("member_probe.py", write_check_lines(Path(d), 8, line))
        self.assertIn("32 processed images (16 live), 4 sources (8 devset images)", out)
        rows = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line][1:]
        # 3 single members, 3 pairs and the triple with three rules each: 3 + 3 * 3 + 3.
        self.assertEqual(len(rows), 15)
        self.assertEqual(sum("mean of logits" in r for r in rows), 4)

if __name__ == "__main__":
    unittest.main()
