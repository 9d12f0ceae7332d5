#!/usr/bin/env bash
# scripts/bench-kpi.sh — the KPI benchmark (not a test): `eventctl kpi` vs DuckDB computing the
# same KPIs on the same generated lake, in one run; shards + merge; the extrapolation to 1e9
# events on two laptops over 1 Gbit/s. Builds eventctl in release, makes sure the tools venv
# (DuckDB) exists, then runs scripts/bench_kpi.py. BENCH_DIR (default /tmp/eventplat-bench-kpi)
# keeps the generated lake between runs; BENCH_EVENTS (default 2000000) and BENCH_EVENT_SIZE
# (default 1KiB) change it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/services.sh up moto >/dev/null
eval "$(bash scripts/services.sh env)"
cargo build --release -p eventctl
exec "$EVENTPLAT_PYTHON" scripts/bench_kpi.py "$@"
