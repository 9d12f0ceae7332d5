#!/usr/bin/env bash
# Benchmark of the timeline's cold tier (issue 24): a heavy user's 100,000 events over two
# years paged 1,000 at a time from the lake's history table, uncompacted and compacted, with
# GETs answered at once and with S3's first-byte latency emulated; against a naive reader of
# the same table in the same run (see libs/event-lake/benches/history_pages.rs for what it
# builds and measures, and its BENCH_* settings). BENCH_TARGET_DIR: a separate target
# directory for the optimised build.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${BENCH_TARGET_DIR:-${CARGO_TARGET_DIR:-target}}"
CARGO_TARGET_DIR="$target" cargo bench -p event-lake --bench history_pages
