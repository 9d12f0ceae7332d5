#!/usr/bin/env bash
# scripts/bench-timeline.sh — timeline benchmark (not a test). Generates events with
# `eventctl gen` (BENCH_EVENT_SIZE, default 10KiB as in production), then services/timeline/examples/bench.rs (release):
#   1. builds the compact items (CPU baseline), writes them with put_batch in batches of 500
#      -> items/s, and the write/build ratio;
#   2. serves GET /v1/users/{u}/events?limit=1000 (a user with 1,200 events) and /healthz on
#      the same server -> p50/p99 of each and their ratio.
# Against SQLite (BENCH_SQLITE_EVENTS, default 20000) and the DynamoDB stand-in moto
# (BENCH_DYNAMO_EVENTS, default 3000: moto serves ~150 ops/s, so its figures show moto, not
# DynamoDB; the store's op rate is measured as a baseline). BENCH_REQUESTS (default 200;
# 50 on moto). Prints one JSON line per backend.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${BENCH_DIR:-/tmp/eventplat-bench-timeline}"
rm -rf "$OUT"; mkdir -p "$OUT"
eval "$(bash scripts/services.sh env)"
bash scripts/services.sh up >/dev/null
BIN="${CARGO_TARGET_DIR:-$ROOT/target}"
# eventctl only generates the input: its debug build is enough (no release build of datafusion).
cargo build -q -p eventctl || { [[ -x $BIN/debug/eventctl ]] && echo "bench: eventctl does not build now; using the existing $BIN/debug/eventctl" >&2; }
cargo build -q --release -p timeline --example bench
SQLITE_N="${BENCH_SQLITE_EVENTS:-20000}"
DYNAMO_N="${BENCH_DYNAMO_EVENTS:-3000}"
REQ="${BENCH_REQUESTS:-200}"
"$BIN/debug/eventctl" gen -n "$SQLITE_N" --size "${BENCH_EVENT_SIZE:-10KiB}" --out "$OUT/events.ndjson" 2>/dev/null
head -n "$DYNAMO_N" "$OUT/events.ndjson" > "$OUT/events-dynamo.ndjson"
echo "== SQLite ($SQLITE_N events)"
"$BIN/release/examples/bench" sqlite "$OUT/events.ndjson" "$REQ"
echo "== DynamoDB stand-in (moto at $AWS_ENDPOINT_URL, $DYNAMO_N events)"
"$BIN/release/examples/bench" dynamodb "$OUT/events-dynamo.ndjson" "$(( REQ < 50 ? REQ : 50 ))"
