#!/usr/bin/env bash
# Idempotent set-up of the LiteLLM proxy used as a comparator by loadtests/bench_llm.py:
# its own venv (.venv-litellm, not the project's, whose packages are being measured) with
# one exact, reviewed version. 1.82.7 and 1.82.8 were trojaned (a .pth file run at every
# interpreter start): never install those, and the check below fails on any .pth file
# that is not one of the known ones.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3.11}"
VENV="${RAYGATE_LITELLM_VENV:-$ROOT/.venv-litellm}"
# The newest release whose proxy extra this machine's index can satisfy: from 1.108 on the
# extra needs litellm-proxy / litellm-proxy-extras builds the index does not carry.
VERSION="1.106.12"
PIN="litellm[proxy]==$VERSION"

log() { printf '[setup_litellm] %s\n' "$*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if "$VENV/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("litellm") != sys.argv[1])' "$VERSION" 2>/dev/null \
  && [ -x "$VENV/bin/litellm" ]; then
  log "litellm $VERSION already installed"
else
  log "installing $PIN"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "$PIN"
fi

# Every .pth file in the venv, and anything beyond what setuptools, pip and editable
# installs put there is a failure (a .pth line starting with `import` runs code at start-up).
unexpected=0
while IFS= read -r pth; do
  name="$(basename "$pth")"
  log "found $pth"
  case "$name" in
    distutils-precedence.pth|_virtualenv.pth) ;;
    *) unexpected=1; log "UNEXPECTED .pth file: $pth"; sed 's/^/    /' "$pth" >&2 ;;
  esac
done < <(find "$VENV" -name '*.pth')
if [ "$unexpected" -ne 0 ]; then
  log "refusing: review the .pth files above before using $VENV"
  exit 1
fi
"$VENV/bin/litellm" --version >/dev/null
log "ready: $VENV/bin/litellm"
