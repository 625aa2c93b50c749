#!/usr/bin/env bash
# Set up (idempotently) and run raygate's whole check: lint, types, unit and integration
# tests. Integration tests start their own Ray, Serve and vLLM on free loopback ports.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
PY="$ROOT/.venv/bin"
export RAY_AUTH_MODE=disabled HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

echo "== ruff"; "$PY/ruff" check . && "$PY/ruff" format --check .
echo "== mypy"; "$PY/mypy"
echo "== pytest"
# pytest exits 5 when it collected no test: that fails this script like any other error.
exec "$PY/python" -m pytest -p no:cacheprovider -q --durations=25 "$@"
