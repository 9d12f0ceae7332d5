#!/usr/bin/env bash
# scripts/bench-bus.sh — what compression saves on the JetStream bus and what it costs (not a
# test). Generates a 1 KB and a 10 KB corpus with `eventctl gen` and runs the `bus_bytes`
# example (libs/event-bus/examples/bus_bytes.rs): for each option (none, zstd per message,
# S2 stream compression, both) it publishes the events to a fresh stream of a private
# nats-server and prints bytes per event in the stream (state and on disk) and received by a
# consumer, CPU per event at the publisher and the consumer, and ratios against `none`.
#
# Environment: BENCH_EVENTS_1K, BENCH_EVENTS_10K (events per stream, default 50000 and 20000), BENCH_DIR (default
# /tmp/eventplat-bench-bus), NATS_SERVER_BIN (a nats-server 2.10 or newer; scripts/services.sh
# installs one).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
N1="${BENCH_EVENTS_1K:-50000}"
N10="${BENCH_EVENTS_10K:-20000}"
OUT="${BENCH_DIR:-/tmp/eventplat-bench-bus}"
mkdir -p "$OUT"
if [ -z "${NATS_SERVER_BIN:-}" ]; then
  eval "$(bash scripts/services.sh env)"
fi
export NATS_SERVER_BIN
"$NATS_SERVER_BIN" --version
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
# The generator's output does not depend on the profile: any eventctl build will do.
EVENTCTL="${EVENTCTL:-}"
for b in "$TARGET/release/eventctl" "$TARGET/debug/eventctl"; do
  if [ -z "$EVENTCTL" ] && [ -x "$b" ]; then EVENTCTL="$b"; fi
done
if [ -z "$EVENTCTL" ]; then cargo build -q -p eventctl; EVENTCTL="$TARGET/debug/eventctl"; fi
# The measurement itself in release (zstd's C code too).
cargo build --release -q -p event-bus --features testing --example bus_bytes
# Distinct events (the bus sees each once): as many lines as events.
"$EVENTCTL" gen -n "$N1" --size 1KiB --out "$OUT/1k.ndjson" >/dev/null
"$EVENTCTL" gen -n "$N10" --size 10KiB --out "$OUT/10k.ndjson" >/dev/null
"$TARGET/release/examples/bus_bytes" "$OUT/1k.ndjson:$N1" "$OUT/10k.ndjson:$N10"
