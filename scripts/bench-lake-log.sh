#!/usr/bin/env bash
# scripts/bench-lake-log.sh — lake log benchmark (not a test): the time to plan a one-hour query
# (`eventctl query --explain --stats`, i.e. process start + Delta log replay from the newest
# checkpoint + partition pruning) on a table of 10,000 files in 1,000 commits and on a table of
# 10,000 commits of one file, each at a checkpoint and 99 commits past one, against the folder
# layout's planning measured in the same run: one prefix LIST of that hour's folder
# (os.listdir on a local lake, list_objects_v2 on moto's S3). Prints medians (ms), the ratio,
# GET/LIST counts and the `eventctl --version` process-start floor.
#
# Run: scripts/bench-lake-log.sh   (builds eventctl in release, starts moto, uses the tools venv)
# Environment: BENCH_DIR (/tmp/eventplat-bench-log), BENCH_RUNS (7), BENCH_A_FILES (10000),
# BENCH_A_COMMITS (1000), BENCH_B_COMMITS (10000), BENCH_DAYS (30), BENCH_S3=0 to skip S3,
# EVENTCTL (a prebuilt binary: skips the build). Details: scripts/bench_lake_log.py.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/services.sh up moto >/dev/null
eval "$(bash scripts/services.sh env)"
[[ -n ${EVENTCTL:-} ]] || cargo build --release -p eventctl
exec "$EVENTPLAT_PYTHON" scripts/bench_lake_log.py "$@"
