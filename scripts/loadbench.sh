#!/usr/bin/env bash
# The service side by side with its Python peer (benches/versus.rs): livecheck's release binary and
# scripts/peer_service.py (the same recipe on FastAPI + uvicorn + onnxruntime + OpenCV, installed
# from PyPI into .bench-venv by this script), driven in turn at 1, 4, 16 and 64 clients, then a
# 512-client burst against livecheck. Prints a Markdown section for docs/benchmarks.md.
#
#   bash scripts/loadbench.sh                  # ~4 minutes after the builds
#   bash scripts/loadbench.sh --write-docs     # also replaces the section in docs/benchmarks.md
#
# VERSUS_SECS, VERSUS_LEVELS and VERSUS_BURST shorten or change the runs (see benches/versus.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
export LIVECHECK_MODEL_DIR="${LIVECHECK_MODEL_DIR:-$(cd ../shared/models && pwd)}"
bash scripts/setup.sh
VENV=.bench-venv
if ! "$VENV/bin/python" -c 'import cv2, onnxruntime, fastapi, uvicorn' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet numpy opencv-python-headless onnxruntime fastapi uvicorn
fi
cargo bench --bench versus -- "$@"
