#!/usr/bin/env bash
# Speed and memory of livecheck next to the Python stack users compare it with (the same recipe on
# onnxruntime + OpenCV, installed from PyPI into .bench-venv by this script), in one command, so
# the ratio is taken under the same machine load. Prints a Markdown section for docs/benchmarks.md.
#
#   bash scripts/bench.sh                 # the default set (silentface-minifas128-calibrated), ~5 minutes
#   bash scripts/bench.sh silentface      # any set in models/sets/ (or a file)
#
# With a set, both sides run it: livecheck with --model-set, the Python stack with the same set
# file through scripts/recipe.py (each member's own preprocessing, the set's fusion). The p_real
# both give each sample image is compared, so the two are known to compute the same thing.
set -euo pipefail
cd "$(dirname "$0")/.."
SET="${1:-silentface-minifas128-calibrated}"
SET_FILE="$SET"
[ -f "$SET_FILE" ] || SET_FILE="models/sets/$SET.json"
[ -f "$SET_FILE" ] || { echo "bench: no model-set file $SET or $SET_FILE" >&2; exit 2; }
export LIVECHECK_MODEL_SET="$SET_FILE"
export LIVECHECK_MODEL_DIR="${LIVECHECK_MODEL_DIR:-$(cd ../shared/models && pwd)}"
VENV=.bench-venv
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet numpy opencv-python-headless onnxruntime
fi
SAMPLES=(../shared/testdata/silentface/*.jpg)
mapfile -t DEVSET < <(ls ../shared/testdata/devset/live/* ../shared/testdata/devset/spoof/* | sort)

bash scripts/setup.sh
[ -n "${LIVECHECK_BENCH_SKIP_BUILD:-}" ] || cargo build --release --quiet --bench throughput --bin livecheck
BENCH_BIN=$(ls -t target/release/deps/throughput-* | grep -v '\.d$' | head -n1)

echo "running Python baseline (1 thread) ..." >&2
py_samples=$(OMP_NUM_THREADS=1 "$VENV/bin/python" scripts/baseline.py --model-set "$SET_FILE" "$LIVECHECK_MODEL_DIR" 30 "${SAMPLES[@]}")
py_devset=$(OMP_NUM_THREADS=1 "$VENV/bin/python" scripts/baseline.py --model-set "$SET_FILE" "$LIVECHECK_MODEL_DIR" 2 "${DEVSET[@]}")
lc_samples=$(target/release/livecheck check --multi-face-scan false "${SAMPLES[@]}")
echo "running livecheck throughput bench ..." >&2
lc=$("$BENCH_BIN" --bench)
echo "measuring peak memory of check over the devset ..." >&2
rss_kb=$( { /usr/bin/time -f '%M' target/release/livecheck check ../shared/testdata/devset/live ../shared/testdata/devset/spoof >/dev/null; } 2>&1 | tail -n1 )
rss1_kb=$( { /usr/bin/time -f '%M' target/release/livecheck check --threads 1 ../shared/testdata/devset/live ../shared/testdata/devset/spoof >/dev/null; } 2>&1 | tail -n1 )

python3 - "$py_samples" "$py_devset" "$lc" "$rss_kb" "$rss1_kb" "$lc_samples" <<'PY'
import json, sys, platform, os
ps, pd, lc = (json.loads(a) for a in sys.argv[1:4])
rss, rss1 = int(sys.argv[4]) / 1024, int(sys.argv[5]) / 1024
lc_p = {l["file"]: l["p_real"] for l in map(json.loads, sys.argv[6].splitlines())}
diff = max(abs(lc_p[f] - p) for f, p in ps["p_real"].items())
agree = sum((lc_p[f] >= 0.5) == (p >= 0.5) for f, p in ps["p_real"].items())

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
s = lc["samples_split_ms"]; d = lc["devset_split_ms"]
print(f"""## End to end (scripts/bench.sh {lc['model_set']}, {cpu}, {lc['cores']} cores)

Model set `{lc['model_set']}` on both sides.

| workload | livecheck (tract) | Python: onnxruntime {ps['onnxruntime']} + OpenCV {ps['opencv']} | livecheck / Python |
|---|---|---|---|
| 3 samples (640x480 JPEG), ms per image, 1 thread | {lc['samples_per_image_ms']:.2f} | {ps['per_image_ms']:.2f} | {lc['samples_per_image_ms']/ps['per_image_ms']:.2f} |
| devset ({lc['devset_images']} images, mixed sizes), ms per image, 1 thread | {lc['devset_per_image_ms']:.2f} | {pd['per_image_ms']:.2f} | {lc['devset_per_image_ms']/pd['per_image_ms']:.2f} |

Stage split, ms per image (1 thread): samples decode {s['decode']:.2f}, detect {s['detect']:.2f}, classify {s['classify']:.2f};
devset decode {d['decode']:.2f}, detect {d['detect']:.2f}, classify {d['classify']:.2f}.

Devset throughput: {lc['devset_images_per_s_1_thread']:.1f} images/s on 1 thread, {lc['devset_images_per_s_all_cores']:.1f} images/s on {lc['cores']} threads
(scaling {lc['devset_images_per_s_all_cores']/lc['devset_images_per_s_1_thread']:.2f}x).

Same computation: on the 3 samples, livecheck's and Python's p_real differ by at most {diff:.2g}
and agree on {agree} of 3 verdicts at 0.5.

Peak RSS of `livecheck check` over the devset: {rss:.0f} MB with all cores, {rss1:.0f} MB with `--threads 1`.""")
PY
