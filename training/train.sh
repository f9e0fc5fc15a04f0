#!/usr/bin/env bash
# Train livecheck's fine-tuned classifiers end to end.
#   bash training/train.sh            # full run (training/configs/full.json, corpus in ../corpus)
#   bash training/train.sh --smoke    # 2-3 minute pipeline check on a few devset images (CI)
#   bash training/train.sh --config FILE [--train-manifest CSV]
# Needs the livecheck binary (target/release or target/debug, or LIVECHECK_BIN); installs the
# Python environment (training/.venv) on first use.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
config="$here/configs/full.json"
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) config="$here/configs/smoke.json"; shift ;;
    --config) config="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ ! -x "$here/.venv/bin/python" ] || ! "$here/.venv/bin/python" -c "import torch, onnx2torch" 2>/dev/null; then
  bash "$here/install.sh"
fi
if [ -z "${LIVECHECK_BIN:-}" ] && [ ! -x "$here/../target/release/livecheck" ] && [ ! -x "$here/../target/debug/livecheck" ]; then
  (cd "$here/.." && cargo build --release --bin livecheck)
fi
export PYTHONHASHSEED=0 OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
exec "$here/.venv/bin/python" -W ignore::UserWarning "$here/train.py" --config "$config" "${args[@]}"
