#!/usr/bin/env bash
# scripts/bench-kpi.sh — the KPI benchmark (not a test): `eventctl kpi` in one process, the same
# KPIs on a Ballista cluster (a scheduler and two executors on this machine), and DuckDB, on the
# same generated lake in one run; bytes each KPI reads; the extrapolation to a real day (1e9
# events) on two laptops. Builds eventctl in release with the `cluster` feature, makes sure the
# tools venv (DuckDB) exists, then runs scripts/bench_kpi.py. BENCH_DIR (default
# /tmp/eventplat-bench-kpi) keeps the generated lake between runs; BENCH_EVENTS (default
# 2000000) and BENCH_EVENT_SIZE (default 1KiB) change it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/services.sh up moto >/dev/null
eval "$(bash scripts/services.sh env)"
cargo build --release -p eventctl --features cluster
export EVENTCTL="${EVENTCTL:-${CARGO_TARGET_DIR:-$ROOT/target}/release/eventctl}"
exec "$EVENTPLAT_PYTHON" scripts/bench_kpi.py "$@"
