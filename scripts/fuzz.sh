#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ (nightly toolchain + `cargo install cargo-fuzz`) for
# SECONDS each (default 3600), seeded from tests/fixtures/fuzz/<target>, corpora kept in fuzz/corpus/ (not
# committed) so later runs continue where earlier ones stopped. Prints one Markdown row per run
# for docs/security.md: date, target, seconds, executions, findings (crash files in
# fuzz/artifacts/<target>/).
#
#   bash scripts/fuzz.sh                      # all four targets, one hour each, one after another
#   SECONDS_PER_TARGET=900 bash scripts/fuzz.sh decode url_policy
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${SECONDS_PER_TARGET:-3600}"
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(decode request_body url_policy model_set)
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log="artifacts/$t/last-run.log"
  before=$(find "artifacts/$t" -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' | wc -l)
  set +e
  cargo +nightly fuzz run -O "$t" "corpus/$t" "../tests/fixtures/fuzz/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  after=$(find "artifacts/$t" -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' | wc -l)
  execs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -n1)
  found=$((after - before))
  if [ "$found" -eq 0 ] && [ "$rc" -eq 0 ]; then verdict="none"; else verdict="$found new artifact(s), exit $rc: see fuzz/$log"; fi
  echo "| $(date -u +%F) | \`$t\` | ${secs} s | ${execs:-?} | $verdict |"
done
