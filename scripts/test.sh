#!/usr/bin/env bash
# scripts/test.sh — the project's one test command (developers and CI).
#
# Role: bring up the local servers the tests need (scripts/services.sh up),
# export their addresses (scripts/services.sh env), then run the whole
# workspace's tests with the locked dependency set. Extra arguments go to
# cargo test, e.g.  scripts/test.sh -p event-lake -- --nocapture
# Without arguments it first validates the deployment files offline
# (scripts/validate-deploy.sh: k8s/ and docker-compose.yml), and after the
# workspace's tests runs those of the opt-in `cluster` feature (the KPI cluster
# on Ballista: it builds DataFusion with its default features, so separately).
#
# Environment:
#   CARGO_TARGET_DIR    build directory to use (CI points it at a cache outside
#                       the clone); cargo's default ./target when unset
#   EVENTPLAT_SERVICES  space-separated subset of: moto redis postgres nats
#                       (default: all of them)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf 'test.sh: %s\n' "$*" >&2; }

read -r -a services <<<"${EVENTPLAT_SERVICES:-}"
bash scripts/services.sh up "${services[@]}"
env_lines="$(bash scripts/services.sh env)"
eval "$env_lines"

if [[ -n ${CARGO_TARGET_DIR:-} ]]; then
  export CARGO_TARGET_DIR
  log "CARGO_TARGET_DIR=$CARGO_TARGET_DIR"
fi

output="$(mktemp "${TMPDIR:-/tmp}/eventplat-test.XXXXXX")"
trap 'rm -f "$output"' EXIT

# The deployment files (k8s/, docker-compose.yml) are checked offline first, unless a
# subset of the tests was asked for.
deploy_rc=0
if (($# == 0)); then
  log "validating k8s/ and docker-compose.yml"
  bash scripts/validate-deploy.sh || deploy_rc=$?
fi

log "cargo test --workspace --locked $*"
start=$SECONDS
set +e
cargo test --workspace --locked "$@" 2>&1 | tee "$output"
rc=${PIPESTATUS[0]}
if (($# == 0)); then
  log "cargo test --locked -p eventctl --features cluster --test kpi_cluster"
  cargo test --locked -p eventctl --features cluster --test kpi_cluster 2>&1 | tee -a "$output"
  cluster_rc=${PIPESTATUS[0]}
  if ((rc == 0)); then rc=$cluster_rc; fi
fi
set -e
elapsed=$((SECONDS - start))

# Sum cargo's per-binary "test result: ... N passed; N failed; N ignored" lines.
read -r passed failed ignored runs < <(
  awk '/^test result: / {
         for (i = 1; i <= NF; i++) {
           if ($(i + 1) ~ /^passed/) p += $i
           if ($(i + 1) ~ /^failed/) f += $i
           if ($(i + 1) ~ /^ignored/) g += $i
         }
         n++
       }
       END { printf "%d %d %d %d\n", p, f, g, n }' "$output"
)

if ((rc == 0 && deploy_rc != 0)); then
  echo "test.sh: the deployment files failed validation (scripts/validate-deploy.sh)"
  rc=$deploy_rc
fi
echo
if ((runs > 0)); then
  echo "tests: $passed passed, $failed failed, $ignored skipped"
fi
if ((rc == 0)); then
  echo "test.sh: OK — cargo test exited 0 after ${elapsed}s ($runs test binaries)"
else
  echo "test.sh: FAILED — cargo test exited $rc after ${elapsed}s"
fi
exit "$rc"
