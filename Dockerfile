# The image the Helm chart runs (Ray head, Ray workers, the batch CronJob): raygate at
# /app with its venv on PATH, run as the unprivileged user raygate (uid and gid 1000, the
# chart's runAsUser/runAsGroup), who owns /app.
#   docker build -t raygate:local .                     offline CPU profile: vLLM's CPU build
#                                                       and the models prepared from PyPI
#   docker build --build-arg PROFILE=gpu -t raygate:gpu .   CUDA vLLM; models from the hub
# (Not built by the test suite: this machine has no container runtime.)
FROM python:3.11-slim-bookworm
ARG PROFILE=local
RUN groupadd --gid 1000 raygate \
 && useradd --uid 1000 --gid 1000 --create-home --shell /usr/sbin/nologin raygate
WORKDIR /app
COPY --chown=1000:1000 . /app
# Built as root (setup.sh installs Debian packages); what the build wrote is handed to
# raygate in the same layer (the copied sources already are).
RUN if [ "$PROFILE" = "gpu" ]; then \
      python3.11 -m venv .venv && .venv/bin/pip install --no-cache-dir -e ".[gpu]"; \
    else \
      RAYGATE_EXTRAS=cpu PYTHON=python3.11 scripts/setup.sh && rm -rf /root/.cache/pip; \
    fi \
 && find /app \! -user 1000 -exec chown -h 1000:1000 {} +
ENV PATH=/app/.venv/bin:$PATH HOME=/home/raygate
# Numeric, so that Kubernetes' runAsNonRoot can verify it without the passwd file.
USER 1000:1000
