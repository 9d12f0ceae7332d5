#!/usr/bin/env bash
# scripts/bench-stats.sh — stats API benchmark (not a test).
#  1. A bench database (stats_bench) with a 10M-user key space loaded with COPY: for every
#     user u1..uN a views_received count yesterday, every third user also favorites_received
#     (BENCH_USERS, default 10,000,000; reloaded only when the row count differs or BENCH_RELOAD=1).
#  2. In the same run, wrk (1 thread, BENCH_CONNECTIONS, BENCH_SECONDS each) against:
#     - baseline: a minimal axum handler returning a fixed JSON of the same size (stats-baseline);
#     - cached: the stats API (Postgres + Redis), a hot set of 1000 users, each with its own JWT
#       (HS256, the dev/tools tokens);
#     - cached, RS256 JWKS: the same with tokens of an identity provider (RSA-2048 keys fetched
#       from a JWKS URL, services/stats/examples/bench_idp.rs), the way mobile apps sign in;
#     - cached, Redis only: the same with the in-process response layer off;
#     - uncached: random users among the 10M with a service key, cache disabled (one indexed
#       query per request).
#  Prints requests/s, p50/p99 and the ratios to the baseline (target for the cached API with
#  RS256 tokens: >= 0.70, p99 < 10 ms). A signature is checked once per token: verified tokens
#  are remembered by their SHA-256 (stats::auth), so a repeated request costs a hash and a lookup.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
eval "$(bash scripts/services.sh env)"
USERS="${BENCH_USERS:-10000000}"
SECS="${BENCH_SECONDS:-15}"
CONNS="${BENCH_CONNECTIONS:-32}"
OUT="${BENCH_DIR:-/tmp/eventplat-bench-stats}"
PGBASE="${DATABASE_URL%/*}"
DB_URL="$PGBASE/stats_bench"
mkdir -p "$OUT"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
# BENCH_PROFILE=profiling: the same build with symbols (for perf); BENCH_PERF=FILE: record a
# perf profile of the RS256 run's server into FILE.
PROFILE="${BENCH_PROFILE:-release}"
cargo build --profile "$PROFILE" -q -p stats --bins --example bench_idp
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_port() { for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }

psql -q "$DATABASE_URL" -tAc "SELECT 1 FROM pg_database WHERE datname = 'stats_bench'" | grep -q 1 || psql -q "$DATABASE_URL" -c "CREATE DATABASE stats_bench"
STATS_DATABASE_URL="$DB_URL" STATS_API=false "$BIN/stats" migrate >/dev/null
YDAY=$(date -u -d yesterday +%Y-%m-%d)
PART="daily_stats_$(date -u -d yesterday +%Y%m%d)"
psql -q "$DB_URL" -c "SELECT stats_ensure_partition('$YDAY'::date)" >/dev/null
have=$(psql -q "$DB_URL" -tAc "SELECT count(*) FROM $PART WHERE metric = 'views_received'")
if [ "${BENCH_RELOAD:-0}" = 1 ] || [ "$have" != "$USERS" ]; then
  echo "== loading $USERS users into $PART with COPY"
  start=$(date +%s)
  psql -q "$DB_URL" -c "TRUNCATE $PART"
  awk -v n="$USERS" -v d="$YDAY" 'BEGIN { OFS="\t"; for (i = 1; i <= n; i++) { print "u" i, d, "views_received", i % 97 + 1; if (i % 3 == 0) print "u" i, d, "favorites_received", i % 5 + 1 } }' \
    | psql -q "$DB_URL" -c "COPY $PART (user_id, day, metric, count) FROM STDIN"
  psql -q "$DB_URL" -c "VACUUM ANALYZE $PART"
  echo "   loaded $(psql -q "$DB_URL" -tAc "SELECT count(*) FROM $PART") rows in $(( $(date +%s) - start )) s"
else
  echo "== $PART already holds $USERS users (BENCH_RELOAD=1 to reload)"
fi

SECRET="bench-secret-bench-secret-bench-secret-0"
KEY=bench
HASH=$(printf '%s' "$KEY" | sha256sum | cut -d' ' -f1)
PREFIX="stats-bench-$$:"
start_stats() { # port extra-env...
  local port=$1; shift
  env STATS_LISTEN="127.0.0.1:$port" STATS_DATABASE_URL="$DB_URL" STATS_RUN_MIGRATIONS=false STATS_AGGREGATOR=false \
    STATS_REDIS_URL="$REDIS_URL" STATS_REDIS_PREFIX="$PREFIX" STATS_JWT_SECRET="$SECRET" STATS_SERVICE_KEY_HASHES="[\"$HASH\"]" \
    STATS_DATABASE_MAX_CONNECTIONS=8 RUST_LOG=warn "$@" "$BIN/stats" >"$OUT/stats-$port.log" 2>&1 &
  pids+=($!)
  wait_port "$port"
}
BASELINE_LISTEN=127.0.0.1:18090 "$BIN/stats-baseline" & pids+=($!)
start_stats 18083
start_stats 18084 STATS_CACHE_LOCAL_TTL_MS=0
start_stats 18085 STATS_CACHE_DISABLED=true
wait_port 18090

echo "== 1000 hot users with their JWTs (HS256 from stats token; RS256 from the stand-in identity provider)"
: >"$OUT/tokens.txt"
hot=()
for i in $(seq 1 1000); do u="u$(( (i * 9973) % USERS + 1 ))"; hot+=("$u"); echo "$u $(STATS_JWT_SECRET=$SECRET "$BIN/stats" token "$u" 3600)" >>"$OUT/tokens.txt"; done
IDP=127.0.0.1:18091
"$BIN/examples/bench_idp" "$IDP" "$OUT/tokens-rs256.txt" "${hot[@]}" & pids+=($!)
wait_port 18091
start_stats 18086 STATS_JWKS_URL="http://$IDP/keys" STATS_JWT_ISSUER="http://$IDP" STATS_JWT_AUDIENCE='["bench-app"]'
curl -sf -o /dev/null -H "Authorization: Bearer $(awk 'NR==1 {print $2}' "$OUT/tokens-rs256.txt")" "http://127.0.0.1:18086/v1/users/$(awk 'NR==1 {print $1}' "$OUT/tokens-rs256.txt")/stats?days=7" \
  || { echo "the RS256 token was refused" >&2; exit 1; }
curl -sf -H "Authorization: Bearer $(awk 'NR==1 {print $2}' "$OUT/tokens.txt")" "http://127.0.0.1:18083/v1/users/$(awk 'NR==1 {print $1}' "$OUT/tokens.txt")/stats?days=7" | head -c 300; echo

run_wrk() { # label url [env...]
  local label=$1 url=$2; shift 2
  local line
  line=$(env "$@" wrk -t1 -c"$CONNS" -d"${SECS}s" --timeout 5s -s scripts/bench/stats-get.lua "$url" | grep '^BENCH')
  eval "$(echo "$line" | sed 's/^BENCH //')"
  local rps=$(( (requests - errors_status) * 1000000 / duration_us ))
  printf '%-26s %8s req/s  p50 %6.2f ms  p99 %6.2f ms  non-2xx %s  socket errors %s\n' "$label" "$rps" \
    "$(echo "$p50_us/1000" | bc -l)" "$(echo "$p99_us/1000" | bc -l)" "$errors_status" "$errors_other" >&2
  echo "$rps $p99_us"
}
# Warm the caches of the hot set.
env BENCH_TOKENS="$OUT/tokens.txt" wrk -t1 -c8 -d3s -s scripts/bench/stats-get.lua http://127.0.0.1:18083 >/dev/null
env BENCH_TOKENS="$OUT/tokens.txt" wrk -t1 -c8 -d3s -s scripts/bench/stats-get.lua http://127.0.0.1:18084 >/dev/null
env BENCH_TOKENS="$OUT/tokens-rs256.txt" wrk -t1 -c8 -d3s -s scripts/bench/stats-get.lua http://127.0.0.1:18086 >/dev/null

echo "== wrk -t1 -c$CONNS -d${SECS}s (2 cores shared by wrk and the server)"
read -r base_rps base_p99 < <(run_wrk "baseline (minimal axum)" http://127.0.0.1:18090 BENCH_KEY=$KEY BENCH_USERS="$USERS")
read -r cached_rps cached_p99 < <(run_wrk "cached (hot users, HS256)" http://127.0.0.1:18083 BENCH_TOKENS="$OUT/tokens.txt")
perf_pid=
if [ -n "${BENCH_PERF:-}" ]; then
  perf record -F 999 -g -o "$BENCH_PERF" -p "$(ss -ltnpH 'sport = :18086' | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)" -- sleep "$SECS" >/dev/null 2>&1 &
  perf_pid=$!
fi
read -r rs_rps rs_p99 < <(run_wrk "cached (hot users, RS256)" http://127.0.0.1:18086 BENCH_TOKENS="$OUT/tokens-rs256.txt")
[ -n "$perf_pid" ] && wait "$perf_pid"
read -r redis_rps redis_p99 < <(run_wrk "cached, Redis only" http://127.0.0.1:18084 BENCH_TOKENS="$OUT/tokens.txt")
read -r db_rps db_p99 < <(run_wrk "uncached (random of 10M)" http://127.0.0.1:18085 BENCH_KEY=$KEY BENCH_USERS="$USERS")
echo "== ratios to the baseline"
printf 'cached RS256 / baseline      %.2f  (target >= 0.70; p99 %.2f ms, target < 10)\n' "$(echo "$rs_rps/$base_rps" | bc -l)" "$(echo "$rs_p99/1000" | bc -l)"
printf 'cached HS256 / baseline      %.2f  (p99 %.2f ms)\n' "$(echo "$cached_rps/$base_rps" | bc -l)" "$(echo "$cached_p99/1000" | bc -l)"
printf 'cached Redis-only / baseline %.2f  (p99 %.2f ms)\n' "$(echo "$redis_rps/$base_rps" | bc -l)" "$(echo "$redis_p99/1000" | bc -l)"
printf 'uncached / baseline          %.2f  (p99 %.2f ms)\n' "$(echo "$db_rps/$base_rps" | bc -l)" "$(echo "$db_p99/1000" | bc -l)"
redis-cli -u "$REDIS_URL" --scan --pattern "${PREFIX}*" 2>/dev/null | head -100000 | xargs -r -n 1000 redis-cli -u "$REDIS_URL" DEL >/dev/null 2>&1 || true
