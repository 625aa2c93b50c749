#!/usr/bin/env bash
# Set up (idempotently) and run raygate's local profile: Redis, Prometheus (with
# raygate's alert rules) and a Pushgateway for batch jobs on 127.0.0.1, then
# `serve run serve_config.yaml` in configs/cluster.env's environment, serving the
# OpenAI API on http://127.0.0.1:8000.
# Ctrl-C (or SIGTERM) stops Serve and whatever this script started.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
export RAY_AUTH_MODE=disabled HF_HUB_OFFLINE=1
set -a; . configs/cluster.env; set +a  # the cluster's environment (HTTP in through HAProxy)
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

push_pid="" prom_pid="" serve_pid=""
stop() {
  set +e  # clean up everything, whatever each step returns
  if [ -n "$serve_pid" ]; then kill -TERM "$serve_pid" 2>/dev/null; wait "$serve_pid" 2>/dev/null; fi
  for pid in "$prom_pid" "$push_pid" "$redis_pid"; do
    if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null; fi
  done
}
trap stop EXIT
trap 'exit 130' INT TERM

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

PUSH_PORT="${RAYGATE_PUSHGATEWAY_PORT:-9091}"
PROM_PORT="${RAYGATE_PROMETHEUS_PORT:-9090}"
if listening "$PUSH_PORT"; then
  echo "[run_local] something already listens on 127.0.0.1:$PUSH_PORT; no Pushgateway started"
else
  prometheus-pushgateway --web.listen-address="127.0.0.1:$PUSH_PORT" >"$RUN_DIR/pushgateway.log" 2>&1 &
  push_pid=$!
  echo "[run_local] Pushgateway on 127.0.0.1:$PUSH_PORT (pid $push_pid)"
fi
if listening "$PROM_PORT"; then
  echo "[run_local] something already listens on 127.0.0.1:$PROM_PORT; no Prometheus started"
else
  # Scrapes every Ray node (found through Ray's discovery file) and the Pushgateway.
  "$ROOT/.venv/bin/python" -m observability.prometheus --out "$RUN_DIR/prometheus.yml" \
    --pushgateway "127.0.0.1:$PUSH_PORT"
  prometheus --config.file="$RUN_DIR/prometheus.yml" --storage.tsdb.path="$RUN_DIR/prometheus-data" \
    --web.listen-address="127.0.0.1:$PROM_PORT" >"$RUN_DIR/prometheus.log" 2>&1 &
  prom_pid=$!
  echo "[run_local] Prometheus on http://127.0.0.1:$PROM_PORT (pid $prom_pid)"
fi


"$ROOT/.venv/bin/serve" run serve_config.yaml "$@" &
serve_pid=$!
wait "$serve_pid"
