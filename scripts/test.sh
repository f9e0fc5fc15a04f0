#!/usr/bin/env bash
# The project's test command (README). Needs nothing beside the checkout: the model files are in
# models/ (and embedded in the binary), the samples in tests/fixtures. Tests on the labelled devset
# run when LIVECHECK_DEVSET names it (CI sets it); the PostgreSQL variants of the storage and API tests when LIVECHECK_TEST_POSTGRES_URL is set
# (CI sets it to the local server: postgres://postgres@127.0.0.1:5432/test), the shared rate-limit
# tests when LIVECHECK_TEST_REDIS_URL is set (CI: redis://127.0.0.1:6379/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Chromium, Node.js and playwright-core for the browser end-to-end test (tests/browser.rs).
bash scripts/browser-setup.sh
cargo test --all-features -- "$@"

# The database-fault test mounts a tmpfs and stops/starts the local PostgreSQL cluster, so it needs
# root and the PostgreSQL URL; it is #[ignore]d in a plain `cargo test` and run here (as in CI).
if [ $# -eq 0 ]; then
  if [ "$(id -u)" = 0 ] && [ -n "${LIVECHECK_TEST_POSTGRES_URL:-}" ]; then
    cargo test --all-features --test db_faults -- --ignored
  else
    echo "note: tests/db_faults.rs not run: it needs root and LIVECHECK_TEST_POSTGRES_URL" >&2
  fi
fi
