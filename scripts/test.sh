#!/usr/bin/env bash
# The project's test command (README). Uses ../shared/models unless LIVECHECK_MODEL_DIR is set, and
# runs the PostgreSQL variants of the storage and API tests when LIVECHECK_TEST_POSTGRES_URL is set
# (CI sets it to the local server: postgres://postgres@127.0.0.1:5432/test).
set -euo pipefail
cd "$(dirname "$0")/.."
export LIVECHECK_MODEL_DIR="${LIVECHECK_MODEL_DIR:-$(cd ../shared/models && pwd)}"
cargo test --all-features -- "$@"
