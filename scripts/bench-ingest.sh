#!/usr/bin/env bash
# scripts/bench-ingest.sh — the ingest benchmark (not a test): eventctl vs DuckDB on the same
# generated data, in one run. Builds eventctl in release, makes sure the tools venv (DuckDB)
# exists, then runs scripts/bench_ingest.py. BENCH_DIR (default /tmp/eventplat-bench) holds
# the generated inputs and the lakes; BENCH_SMALL / BENCH_LARGE change the event counts.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/services.sh up moto >/dev/null
eval "$(bash scripts/services.sh env)"
# BENCH_PROFILE=profiling: the release build with symbols (target/profiling/), for perf.
PROFILE="${BENCH_PROFILE:-release}"
cargo build --profile "$PROFILE" -p eventctl
export EVENTCTL="${EVENTCTL:-${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE/eventctl}"
exec "$EVENTPLAT_PYTHON" scripts/bench_ingest.py "$@"
