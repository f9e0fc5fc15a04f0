#!/usr/bin/env bash
# The project's test command (README). Uses ../shared/models unless LIVECHECK_MODEL_DIR is set, and
# runs the PostgreSQL variants of the storage and API tests when LIVECHECK_TEST_POSTGRES_URL is set
# (CI sets it to the local server: postgres://postgres@127.0.0.1:5432/test).
set -euo pipefail
cd "$(dirname "$0")/.."
export LIVECHECK_MODEL_DIR="${LIVECHECK_MODEL_DIR:-$(cd ../shared/models && pwd)}"
bash scripts/setup.sh
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
