#!/usr/bin/env bash
# What the Chromium end-to-end test (tests/browser.rs) needs beyond Rust: Debian's `chromium`,
# Node.js, and playwright-core at the version tests/browser/package-lock.json pins (it drives the
# system Chromium; it downloads no browser). Installs what is missing with apt-get (as root, or
# through sudo) and npm. Where that is impossible the test says it was skipped (and fails under
# CI, where it must run).
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
can_apt() { command -v apt-get >/dev/null && { [ -z "$sudo" ] || command -v sudo >/dev/null; }; }
apt_install() {
  $sudo apt-get install -y -qq "$@" >/dev/null 2>&1 ||
    { $sudo apt-get update -qq >/dev/null 2>&1 && $sudo apt-get install -y -qq "$@" >/dev/null 2>&1; }
}

if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  echo "browser-setup: installing chromium ..." >&2
  if ! can_apt || ! apt_install chromium; then
    echo "warning: chromium could not be installed here; tests/browser.rs will not run" >&2
  fi
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "browser-setup: installing nodejs and npm ..." >&2
  if ! can_apt || ! apt_install nodejs npm; then
    echo "warning: Node.js could not be installed here; tests/browser.rs will not run" >&2
    exit 0
  fi
fi
if [ ! -f tests/browser/node_modules/playwright-core/package.json ]; then
  echo "browser-setup: installing playwright-core (npm ci) ..." >&2
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error >/dev/null) ||
    echo "warning: npm ci failed in tests/browser; tests/browser.rs will not run" >&2
fi
