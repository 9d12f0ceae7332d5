#!/usr/bin/env bash
# Benchmark of the features' windows from the lake (eventctl features backfill / export):
# generates a week of events of the business types (eventctl gen), ingests them into a local
# lake, then measures
#   - the rebuild into Redis (`features backfill --reset`): events/s read from the lake;
#   - the point-in-time export of a spine of BENCH_SPINE_ROWS (product, ts) rows spread over
#     the week (`features export`): rows/s;
# against a baseline in the same run: reading the same tables back as JSON (`eventctl cat`
# of each counted type to /dev/null), the decoding both commands start with.
# Settings: BENCH_EVENTS (default 1,000,000), BENCH_PRODUCTS (100,000), BENCH_SPINE_ROWS
# (1,000,000), BENCH_DIR (kept; default a temporary folder, removed), BENCH_TARGET_DIR (a
# separate target directory for the release build), REDIS_URL.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash scripts/services.sh env)"
target="${BENCH_TARGET_DIR:-${CARGO_TARGET_DIR:-target}}"
CARGO_TARGET_DIR="$target" cargo build --release -p eventctl --no-default-features
bin="$target/release/eventctl"
events="${BENCH_EVENTS:-1000000}"
products="${BENCH_PRODUCTS:-100000}"
rows="${BENCH_SPINE_ROWS:-1000000}"
if [[ -n ${BENCH_DIR:-} ]]; then
  work="$BENCH_DIR"
  mkdir -p "$work"
else
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
fi
export FEATURES_KEY_PREFIX="bench:features-lake:$$:"
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }

echo "generating $events events over 168 hours ($products products) and ingesting them"
"$bin" gen -n "$events" --hours 168 --types 9 --products "$products" --size 512 --no-evolve --seed 7 -o "$work/events.ndjson"
"$bin" ingest --lake "$work/lake" "$work/events.ndjson" >/dev/null
rm -f "$work/events.ndjson"

types=(product_viewed search_results_shown product_liked product_favorited conversation_started)
t0=$(now)
read_events=0
for t in "${types[@]}"; do
  n=$("$bin" cat --lake "$work/lake" --type "$t" | wc -l)
  read_events=$((read_events + n))
done
t1=$(now)
base=$(secs "$t0" "$t1")
echo "baseline: eventctl cat of the 5 counted types: $read_events events in ${base} s ($(python3 -c "print(round($read_events / $base))") events/s)"

t0=$(now)
"$bin" features backfill --lake "$work/lake" --reset --json >"$work/backfill.json"
t1=$(now)
took=$(secs "$t0" "$t1")
python3 - "$work/backfill.json" "$took" "$base" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1])); took = float(sys.argv[2]); base = float(sys.argv[3])
h = r["handover"]
print(f"backfill: {h['events']} events ({h['hits']} hits) in {took:.2f} s (inside: {r['seconds']:.2f} s): "
      f"{h['events'] / took:,.0f} events/s, {base / took:.2f} x the baseline's rate")
EOF

python3 - "$work/spine.csv" "$rows" "$products" <<'EOF'
import random, sys, time
path, rows, products = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
now = int(time.time() * 1000)
week = 7 * 24 * 3600 * 1000
rng = random.Random(3)
with open(path, "w") as f:
    f.write("product_id,ts\n")
    for _ in range(rows):
        f.write(f"p{int(products * rng.random() ** 2)},{now - rng.randrange(week)}\n")
EOF
t0=$(now)
"$bin" features export --lake "$work/lake" --spine "$work/spine.csv" --out "$work/train.parquet" --json >"$work/export.json"
t1=$(now)
took=$(secs "$t0" "$t1")
python3 - "$work/export.json" "$took" "$base" "$read_events" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1])); took = float(sys.argv[2]); base = float(sys.argv[3]); n = int(sys.argv[4])
print(f"export: {r['rows']} spine rows ({r['products']} products), {r['events']} events read, {r['counted']} counted, "
      f"in {took:.2f} s: {r['rows'] / took:,.0f} rows/s; reading alone (baseline) {base:.2f} s, "
      f"so {took / base:.2f} x the time of the read")
EOF
redis-cli -u "${REDIS_URL:-redis://127.0.0.1:6379}" --scan --pattern "${FEATURES_KEY_PREFIX}*" | xargs -r -n 1000 redis-cli -u "${REDIS_URL:-redis://127.0.0.1:6379}" unlink >/dev/null
