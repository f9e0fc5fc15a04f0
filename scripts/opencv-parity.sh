#!/usr/bin/env bash
# Bit-exactness of livecheck's OpenCV-compatible image arithmetic against OpenCV itself: random
# cases written by cv2 (the pinned opencv-python-headless of training/requirements.txt, installed
# by training/install.sh) and the two tests that read them, tests/resize_opencv.rs (INTER_LINEAR)
# and tests/square_opencv.rs (INTER_AREA, INTER_LANCZOS4, the reflect-padded square crop and
# letterbox). Those tests are #[ignore]d in a plain `cargo test` because they need the vectors;
# CI runs this script.
#
#   bash scripts/opencv-parity.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash training/install.sh >/dev/null
py=training/.venv/bin/python
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$py" scripts/opencv-resize-vectors.py "$dir/resize"
"$py" scripts/opencv-square-vectors.py "$dir/square"
LIVECHECK_RESIZE_VECTORS="$dir/resize" LIVECHECK_SQUARE_VECTORS="$dir/square" \
  cargo test --all-features --test resize_opencv --test square_opencv -- --ignored
