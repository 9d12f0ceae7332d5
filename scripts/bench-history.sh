#!/usr/bin/env bash
# Benchmarks of the timeline's cold tier (issue 24), two parts:
#
# 1. Paging: a heavy user's 100,000 events over two years paged 1,000 at a time from the
#    lake's history table, uncompacted and compacted, with GETs answered at once and with
#    S3's first-byte latency emulated; against a naive reader of the same table in the same
#    run (libs/event-lake/benches/history_pages.rs says what it builds and measures, and its
#    BENCH_* settings).
# 2. Build and storage: BENCH_BUILD_EVENTS (100,000) generated events of BENCH_BUILD_SIZE
#    (10KiB) in a closed month, ingested into a local lake, then `eventctl timeline backfill`
#    (build + compaction): events/s of the build, MB/s of the compaction, and the history
#    table's bytes against the JSON's (the storage ratio the cost model uses); baseline in the
#    same run: `eventctl cat` of the lake (decoding every event, what the build starts with).
#
# BENCH_TARGET_DIR: a separate target directory for the optimised builds. BENCH_PART=1 or 2:
# one part only.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${BENCH_TARGET_DIR:-${CARGO_TARGET_DIR:-target}}"
part="${BENCH_PART:-all}"

if [[ $part == all || $part == 1 ]]; then
  echo "== part 1: paging a heavy user's history"
  CARGO_TARGET_DIR="$target" cargo bench -p event-lake --bench history_pages
fi

if [[ $part == all || $part == 2 ]]; then
  echo "== part 2: building the history table"
  CARGO_TARGET_DIR="$target" cargo build --release -p eventctl --no-default-features
  bin="$target/release/eventctl"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  n="${BENCH_BUILD_EVENTS:-100000}"
  size="${BENCH_BUILD_SIZE:-10KiB}"
  "$bin" gen -n "$n" --types 20 --users 100000 --size "$size" --start 2026-10-01T00:00:00Z --hours 48 --no-evolve --seed 11 -o "$work/events.ndjson"
  json_bytes=$(stat -c %s "$work/events.ndjson")
  "$bin" ingest --lake "$work/lake" "$work/events.ndjson" >/dev/null
  rm -f "$work/events.ndjson"
  t0=$(date +%s.%N)
  "$bin" cat --lake "$work/lake" >/dev/null
  t1=$(date +%s.%N)
  "$bin" timeline backfill --lake "$work/lake" --json >"$work/report.json"
  python3 - "$json_bytes" "$t0" "$t1" "$n" "$work/report.json" <<'PY'
import json, sys
json_bytes, t0, t1, n = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
r = json.load(open(sys.argv[5]))
c = r["compaction"]
cat_s = t1 - t0
build_s = r["seconds"] - c["seconds"]
print(f"events: {n:,} of {json_bytes / n:,.0f} B, {json_bytes / 1e6:,.0f} MB of JSON; {r['rows']:,} history rows ({r['rows'] / n:.2f} per event)")
print(f"baseline, eventctl cat: {cat_s:.1f} s = {n / cat_s:,.0f} events/s")
print(f"build: {build_s:.1f} s = {r['events'] / build_s:,.0f} events/s, {r['files_written']} files, {r['commits']} commits; ratio build time / baseline time = {build_s / cat_s:.2f}")
print(f"compaction: {c['merges']} merges, {c['files_in']} files of {c['bytes_in'] / 1e6:,.1f} MB (build files) into {c['files_out']} runs of {c['bytes_out'] / 1e6:,.1f} MB (runs) in {c['seconds']:.1f} s = {c['bytes_in'] / 1e6 / max(c['seconds'], 1e-9):,.1f} MB/s read")
print(f"storage: JSON x rows per event / history bytes = {json_bytes * r['rows'] / n / max(c['bytes_out'], 1):.2f} (runs), {json_bytes * r['rows'] / n / max(c['bytes_in'], 1):.2f} (build files)")
PY
fi
