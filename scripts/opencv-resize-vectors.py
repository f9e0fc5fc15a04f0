#!/usr/bin/env python3
"""Write random cv2.resize(INTER_LINEAR) cases to DIR for the ignored `resize_matches_opencv` test.

    python3 -m venv /tmp/cv && /tmp/cv/bin/pip install numpy opencv-python-headless
    /tmp/cv/bin/python scripts/opencv-resize-vectors.py /tmp/rz
    LIVECHECK_RESIZE_VECTORS=/tmp/rz cargo test --test resize_opencv -- --ignored
"""
import sys, os
import numpy as np, cv2

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(1)
for i in range(100):
    sw, sh = int(rng.integers(2, 700)), int(rng.integers(2, 700))
    dw, dh = (80, 80) if i < 40 else (int(rng.integers(1, 300)), int(rng.integers(1, 300)))
    img = rng.integers(0, 256, (sh, sw, 3), dtype=np.uint8)
    if i % 2:
        img = cv2.GaussianBlur(img, (5, 5), 2)
    np.save(f"{out}/src{i}.npy", img)
    np.save(f"{out}/dst{i}.npy", cv2.resize(img, (dw, dh), interpolation=cv2.INTER_LINEAR))
print(f"wrote 100 cases to {out} (OpenCV {cv2.__version__})")
