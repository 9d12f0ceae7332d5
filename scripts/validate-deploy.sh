#!/usr/bin/env bash
# scripts/validate-deploy.sh — validate k8s/ and docker-compose.yml offline.
#
# Role: part of the test command (scripts/test.sh calls it). The Kubernetes schemas come
# with PyPI's kubernetes-validate and the Compose specification's schema with PyPI's
# check-jsonschema, both pinned and installed into the tools venv by scripts/services.sh.
#
# Environment:
#   EVENTPLAT_TOOLS_DIR   tools folder (default: $HOME/.cache/eventplat)
#   EVENTPLAT_K8S_VERSION Kubernetes version to validate against (default: 1.31)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${EVENTPLAT_TOOLS_DIR:-${HOME:?HOME is not set}/.cache/eventplat}"
PY="$TOOLS_DIR/venv/bin/python"
K8S_VERSION="${EVENTPLAT_K8S_VERSION:-1.31}"

"$PY" -c 'import kubernetes_validate, check_jsonschema' 2>/dev/null \
  || bash "$ROOT/scripts/services.sh" up moto >/dev/null
exec "$PY" "$ROOT/scripts/validate_deploy.py" "$K8S_VERSION"
