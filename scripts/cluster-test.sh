#!/usr/bin/env bash
# The multi-replica test (issue 12): nginx on 127.0.0.1 in front of three `livecheck serve`
# processes sharing the local PostgreSQL and Redis; a rate limit across replicas, SIGKILL of one
# replica under load, SIGTERM drain of another, then every answered reference and audit row checked
# (tests/cluster.rs says exactly what). Installs nginx from the Debian archive when it is missing
# (needs root or sudo). Prints the figures recorded in docs/deploy.md.
#
#   bash scripts/cluster-test.sh             # dev profile (what CI runs)
#   bash scripts/cluster-test.sh --release   # the figures in docs/deploy.md
#
# LIVECHECK_TEST_POSTGRES_URL and LIVECHECK_TEST_REDIS_URL default to the local servers.
set -euo pipefail
cd "$(dirname "$0")/.."
export LIVECHECK_TEST_POSTGRES_URL="${LIVECHECK_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
export LIVECHECK_TEST_REDIS_URL="${LIVECHECK_TEST_REDIS_URL:-redis://127.0.0.1:6379/}"

if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing nginx (Debian package nginx-light or nginx)" >&2
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends nginx-light >/dev/null 2>&1 \
    || DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends nginx >/dev/null
  # The package starts a system nginx on port 80; this test runs its own.
  { $sudo systemctl disable --now nginx 2>/dev/null || $sudo service nginx stop 2>/dev/null || $sudo pkill -x nginx; } >/dev/null 2>&1 || true
fi
bash scripts/setup.sh
cargo test --all-features "$@" --test cluster -- --ignored --nocapture
