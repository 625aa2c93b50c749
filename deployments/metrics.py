"""Metrics of the model deployments, all prefixed `raygate_deployments_`.

The embedder and reranker record the size of each dynamic batch they run; the LLM
deployments export vLLM's own engine metrics (`vllm_*`, see `engine_stat_loggers`).
"""

from __future__ import annotations

from typing import Any, cast

from ray.serve.metrics import Histogram

PREFIX = "raygate_deployments_"
SIZES: list[float] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]


class BatchMetrics:
    """One per encoder replica: `kind` is embedder or reranker, `model` its id."""

    def __init__(self, kind: str, model: str):
        self._tags = {"kind": kind, "model": model}
        tags = cast(Any, ("kind", "model"))  # the stub says tuple[str]
        self._requests = Histogram(
            PREFIX + "batch_requests",
            description="Requests merged into one dynamic batch.",
            boundaries=SIZES,
            tag_keys=tags,
        )
        self._items = Histogram(
            PREFIX + "batch_items",
            description="Texts (embedder) or query-document pairs (reranker) in one batch.",
            boundaries=SIZES,
            tag_keys=tags,
        )
        self._seconds = Histogram(
            PREFIX + "batch_duration_seconds",
            description="Model time of one dynamic batch.",
            boundaries=[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
            tag_keys=tags,
        )

    def record(self, requests: int, items: int, seconds: float) -> None:
        self._requests.observe(requests, tags=self._tags)
        self._items.observe(items, tags=self._tags)
        self._seconds.observe(seconds, tags=self._tags)


def engine_stat_loggers() -> list[Any]:
    """vLLM's Prometheus stat logger on Ray metrics: running/waiting requests, KV cache
    usage, prefix cache queries/hits, token counts and latencies, labelled by
    `model_name` and the Serve replica."""
    from vllm.v1.metrics.ray_wrappers import RayPrometheusStatLogger

    return [RayPrometheusStatLogger]
