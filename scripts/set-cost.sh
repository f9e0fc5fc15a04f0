#!/usr/bin/env bash
# Cost per image of two model sets, side by side under the same machine load: the release binary's
# `check` on the three upstream samples, pinned to one core, the sets alternated ROUNDS times; the
# median of the stage timings each `check` line reports (`timings_ms`). Prints one line per set and
# the ratios.
#
#   bash scripts/set-cost.sh                                   # silentface vs the calibrated set
#   bash scripts/set-cost.sh SET_A SET_B [ROUNDS]              # any two sets (names or files)
set -euo pipefail
cd "$(dirname "$0")/.."
a=${1:-silentface}; b=${2:-silentface-minifas128-calibrated}; rounds=${3:-15}
bash scripts/setup.sh
cargo build --release --all-targets --quiet
bin=target/release/livecheck
samples=(tests/fixtures/silentface/image_T1.jpg tests/fixtures/silentface/image_F1.jpg tests/fixtures/silentface/image_F2.jpg)
pin=(); command -v taskset >/dev/null && pin=(taskset -c 0)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for _ in $(seq "$rounds"); do
  for s in "$a" "$b"; do
    RAYON_NUM_THREADS=1 "${pin[@]}" "$bin" check --model-set "$s" "${samples[@]}" >> "$tmp/$(basename "$s")"
  done
done
median() { grep -o "\"$1\":[0-9.e-]*" "$2" | cut -d: -f2 | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
for s in "$a" "$b"; do
  f="$tmp/$(basename "$s")"
  printf '%-40s classify %7.2f ms   total %7.2f ms   (median of %d images)\n' \
    "$s" "$(median classify "$f")" "$(median total "$f")" "$(grep -c . "$f")"
done
fa="$tmp/$(basename "$a")"; fb="$tmp/$(basename "$b")"
awk -v c1="$(median classify "$fa")" -v c2="$(median classify "$fb")" \
    -v t1="$(median total "$fa")" -v t2="$(median total "$fb")" \
    'BEGIN { printf "ratio %s / %s: classify %.2fx, total %.2fx\n", ARGV[1], ARGV[2], c2 / c1, t2 / t1 }' "$b" "$a"
