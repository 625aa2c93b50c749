#!/usr/bin/env bash
# Set up (idempotently) and run raygate's local profile: Redis on 127.0.0.1, then
# `serve run serve_config.yaml` serving the OpenAI API on http://127.0.0.1:8000.
# Ctrl-C (or SIGTERM) stops Serve and the Redis this script started.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
export RAY_AUTH_MODE=disabled HF_HUB_OFFLINE=1
REDIS_PORT="${RAYGATE_REDIS_PORT:-6379}"
RUN_DIR="$ROOT/run"
mkdir -p "$RUN_DIR"

redis_pid=""
if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  echo "[run_local] Redis already answers on 127.0.0.1:$REDIS_PORT; using it"
else
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$RUN_DIR" \
    --pidfile "$RUN_DIR/redis.pid" --daemonize yes --save "" --appendonly no
  for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  redis_pid="$(cat "$RUN_DIR/redis.pid")"
  echo "[run_local] Redis started on 127.0.0.1:$REDIS_PORT (pid $redis_pid)"
fi

serve_pid=""
stop() {
  set +e  # clean up everything, whatever each step returns
  if [ -n "$serve_pid" ]; then kill -TERM "$serve_pid" 2>/dev/null; wait "$serve_pid" 2>/dev/null; fi
  if [ -n "$redis_pid" ]; then kill -TERM "$redis_pid" 2>/dev/null; fi
}
trap stop EXIT
trap 'exit 130' INT TERM

"$ROOT/.venv/bin/serve" run serve_config.yaml "$@" &
serve_pid=$!
wait "$serve_pid"
