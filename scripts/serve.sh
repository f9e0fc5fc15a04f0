#!/usr/bin/env bash
# The README's first command: the service, built in release mode (what operators run; the dev
# build is several times slower), on 127.0.0.1:8080 with the model files embedded in the binary and
# the audit in ./livecheck.db. Extra arguments go to `livecheck serve` (see `--help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec cargo run --release --quiet -- serve "$@"
