#!/usr/bin/env bash
# scripts/bench-gateway.sh — gateway benchmark (not a test). wrk posts batches of 500 events of
# ~1 KB (unique ids) for BENCH_SECONDS (default 20) through:
#   1. `eventctl dev` (gateway + lake writer on the in-process bus, local lake);
#   2. the gateway binary publishing to a private NATS JetStream (file store);
# and, in the same run, `eventctl ingest` of 200,000 events of ~1 KB as the batch baseline.
# Prints events/s, p50/p99 per request, peak RSS, non-2xx answers and the ratios. For `eventctl
# dev` it also prints the events committed to the lake's Delta tables (counted with `eventctl
# query` after dev was stopped with SIGINT, which drains the bus: every accepted event is
# written and committed) over the time from the start of the load to the end of the drain.
# Then:
#   3. the lake-writer binary reads what the gateway left in the JetStream stream into a local
#      lake (Delta commits, max_age 5 s): events/s from its start until it acked every
#      message of the stream (NATS monitoring /jsz against lake_writer_acked_total), its
#      commits, and its peak RSS.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECS="${BENCH_SECONDS:-20}"
CONNS="${BENCH_CONNECTIONS:-8}"
OUT="${BENCH_DIR:-/tmp/eventplat-bench-gw}"
rm -rf "$OUT"; mkdir -p "$OUT"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
command -v nats-server >/dev/null || bash scripts/services.sh up nats
cargo build --release -q -p eventctl -p gateway -p lake-writer
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
KEY=bench
HASH=$(printf '%s' "$KEY" | sha256sum | cut -d' ' -f1)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }
peak_rss_mb() { awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }
run_wrk() { # url label pid
  local line
  line=$(BENCH_API_KEY=$KEY wrk -t2 -c"$CONNS" -d"${SECS}s" --timeout 10s -s scripts/bench/post-events.lua "$1" | grep '^BENCH')
  eval "$(echo "$line" | sed 's/^BENCH //')"
  # Only answered-2xx requests count: 429/503 are backpressure, not throughput.
  local eps=$(((requests - errors_status) * batch * 1000000 / duration_us))
  printf '%-22s %10s events/s accepted  p50 %6.1f ms  p99 %6.1f ms  requests %s (429/503: %s)  peak RSS %s MiB\n' \
    "$2" "$eps" "$(echo "$p50_us/1000" | bc -l)" "$(echo "$p99_us/1000" | bc -l)" "$requests" "$errors_status" "$(peak_rss_mb "$3")"
  echo "$eps"
}

echo "== baseline: eventctl ingest (200,000 events of ~1 KiB)"
"$BIN/eventctl" gen -n 200000 --size 1KiB --out "$OUT/base.ndjson" 2>/dev/null
base=$("$BIN/eventctl" ingest --json --no-progress --lake "$OUT/lake-batch" "$OUT/base.ndjson" | awk -F': ' '/events_per_s/ {gsub(",","",$2); printf "%.0f", $2}')
echo "eventctl ingest         $base events/s"

echo "== in-process bus: eventctl dev"
"$BIN/eventctl" dev --lake "$OUT/lake-dev" --listen 127.0.0.1:18080 --api-key "$KEY" --max-age-secs 5 \
  --timeline-db "$OUT/dev-data/timeline.db" --stats-db "$OUT/dev-data/stats.db" --timeline-listen 127.0.0.1:18082 \
  --stats-listen 127.0.0.1:18083 --features-listen 127.0.0.1:18084 --features-grpc-listen 127.0.0.1:18051 >"$OUT/dev.log" 2>&1 &
pids+=($!); dev_pid=$!
wait_port 18080
load_start=$(date +%s.%N)
dev=$(run_wrk http://127.0.0.1:18080 "in-process (dev)" "$dev_pid" | tee -a /dev/stderr | tail -1)
# Into the lake: SIGINT drains the bus (the lake writer writes and commits what it holds).
drain_start=$(date +%s.%N)
kill -INT "$dev_pid"
wait "$dev_pid" || echo "eventctl dev exited with $? (see $OUT/dev.log)" >&2
drain_end=$(date +%s.%N)
lake_events=$("$BIN/eventctl" query --lake "$OUT/lake-dev" -f csv 'SELECT count(*) AS n FROM lake.events' 2>/dev/null | tail -1)
lake_secs=$(echo "$drain_end - $load_start" | bc -l)
lake_eps=$(printf '%.0f' "$(echo "$lake_events / $lake_secs" | bc -l)")
printf '%-22s %10s events/s committed to the lake (%s events in %.1f s, of which %.1f s draining after the load)\n' \
  "in-process (dev) lake" "$lake_eps" "$lake_events" "$lake_secs" "$(echo "$drain_end - $drain_start" | bc -l)"

echo "== NATS JetStream: gateway binary"
nats-server -js -a 127.0.0.1 -p 14222 -m 18222 -sd "$OUT/nats" >"$OUT/nats.log" 2>&1 &
pids+=($!)
wait_port 14222
GATEWAY_LISTEN=127.0.0.1:18081 GATEWAY_API_KEY_HASHES=$HASH GATEWAY_BUS__URL=nats://127.0.0.1:14222 RUST_LOG=warn \
  "$BIN/gateway" >"$OUT/gateway.log" 2>&1 &
pids+=($!); gw_pid=$!
wait_port 18081
js=$(run_wrk http://127.0.0.1:18081 "JetStream (gateway)" "$gw_pid" | tee -a /dev/stderr | tail -1)

echo "== overload: 256 connections against the JetStream gateway"
CONNS=256 run_wrk http://127.0.0.1:18081 "JetStream, 256 conns" "$gw_pid" | head -1 || true
echo "gateway peak RSS after overload: $(peak_rss_mb "$gw_pid") MiB"

echo "== lake writer: the JetStream stream into a local lake"
kill "$gw_pid" 2>/dev/null || true
wait "$gw_pid" 2>/dev/null || true
stream_msgs() { python3 -c 'import json,sys,urllib.request
d=json.load(urllib.request.urlopen("http://127.0.0.1:18222/jsz?streams=true"))
print(sum(s["state"]["messages"] for a in d.get("account_details",[]) for s in a.get("stream_detail",[]) if s["name"]=="EVENTS"))'; }
metric() { curl -s http://127.0.0.1:18085/metrics | awk -v m="$1" '$1==m || index($1, m "{")==1 {t+=$2} END {printf "%.0f", t}'; }
total=$(stream_msgs)
lw_start=$(date +%s.%N)
LAKE_WRITER_LAKE="$OUT/lake-writer" LAKE_WRITER_LISTEN=127.0.0.1:18085 LAKE_WRITER_MAX_AGE_SECS=5 \
  LAKE_WRITER_COMPACT_EVERY_SECS=0 LAKE_WRITER_BUS__URL=nats://127.0.0.1:14222 RUST_LOG=warn \
  "$BIN/lake-writer" >"$OUT/lake-writer.log" 2>&1 &
pids+=($!); lw_pid=$!
wait_port 18085
acked=0
for _ in $(seq 1200); do
  acked=$(metric lake_writer_acked_total)
  [ "$acked" -ge "$total" ] && break
  sleep 0.5
done
lw_end=$(date +%s.%N)
lw_secs=$(echo "$lw_end - $lw_start" | bc -l)
lw_eps=$(printf '%.0f' "$(echo "$acked / $lw_secs" | bc -l)")
printf '%-22s %10s events/s committed to the lake (%s of %s messages acked in %.1f s, %s files, %s rows, peak RSS %s MiB)\n' \
  "lake writer" "$lw_eps" "$acked" "$total" "$lw_secs" "$(metric lake_writer_files_written_total)" \
  "$(metric lake_writer_rows_written_total)" "$(peak_rss_mb "$lw_pid")"
kill -INT "$lw_pid" 2>/dev/null || true
wait "$lw_pid" 2>/dev/null || true

printf 'ratios to eventctl ingest: in-process %.2f (into the lake %.2f), JetStream %.2f, lake writer %.2f\n' "$(echo "$dev/$base" | bc -l)" \
  "$(echo "$lake_eps/$base" | bc -l)" "$(echo "$js/$base" | bc -l)" "$(echo "$lw_eps/$base" | bc -l)"
