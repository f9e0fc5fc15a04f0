#!/usr/bin/env bash
# Render an eval report.html headless with Chromium and print the PNG path, to check by eye that
# the page (tables, inline SVG plots) displays without any network access.
#
# Usage: scripts/check-report.sh [REPORT_HTML] [OUT_PNG]
#   REPORT_HTML defaults to eval-out/report.html, OUT_PNG to <report dir>/report.png.
#
# Installs Debian's chromium with apt-get when it is missing (needs root; a large download).
# Chromium is started with background networking, component updates and sync disabled; the page
# itself references no URL (livecheck's eval test checks that).
set -euo pipefail

report="${1:-eval-out/report.html}"
if [[ ! -f "$report" ]]; then
    echo "error: $report not found (run: livecheck eval DATASET --out eval-out)" >&2
    exit 1
fi
report="$(cd "$(dirname "$report")" && pwd)/$(basename "$report")"
png="${2:-$(dirname "$report")/report.png}"
case "$png" in
    /*) ;;
    *) png="$(pwd)/$png" ;;
esac

browser=""
for b in chromium chromium-browser; do
    if command -v "$b" >/dev/null 2>&1; then
        browser="$b"
        break
    fi
done
if [[ -z "$browser" ]]; then
    echo "chromium not found; installing it with apt-get" >&2
    if [[ "$(id -u)" -ne 0 ]]; then
        SUDO=sudo
    else
        SUDO=""
    fi
    $SUDO apt-get update >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends chromium >&2
    browser=chromium
fi

profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT

"$browser" --headless --no-sandbox --disable-gpu \
    --disable-background-networking --disable-component-update --disable-sync \
    --no-first-run --user-data-dir="$profile" \
    --screenshot="$png" --window-size=1280,2400 \
    "file://$report" >&2

if [[ ! -s "$png" ]]; then
    echo "error: chromium wrote no screenshot to $png" >&2
    exit 1
fi
echo "$png"
