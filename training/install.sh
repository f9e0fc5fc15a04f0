#!/usr/bin/env bash
# Create training/.venv and install the pinned requirements (CPU use only).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python3}"
if [ ! -x "$here/.venv/bin/python" ]; then
  "$python" -m venv "$here/.venv"
fi
"$here/.venv/bin/python" -m pip install --quiet --upgrade pip==24.3.1
"$here/.venv/bin/python" -m pip install --quiet -r "$here/requirements.txt"
"$here/.venv/bin/python" -c "import torch, onnx, onnx2torch, onnxruntime, cv2, sklearn, matplotlib; print('training env ok: torch', torch.__version__)"
