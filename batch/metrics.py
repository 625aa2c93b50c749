"""Job metrics pushed to a Prometheus Pushgateway, all prefixed `raygate_batch_`.

A nightly job lives minutes to hours and no Prometheus scrape would find it: it pushes
its numbers (grouped by `pipeline`) while it runs, at most every `interval_s`, and once
more when it ends. Pushes replace only the metrics they carry, so a failed run keeps
the time of the last success that the batch alert watches.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway

log = logging.getLogger("raygate.batch")
PREFIX = "raygate_batch_"


class JobMetrics:
    def __init__(
        self,
        pushgateway: str,
        pipeline: str,
        job_id: str,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._url = pushgateway
        self._grouping = {"pipeline": pipeline}
        self._interval_s = interval_s
        self._clock = clock
        self._last_push = float("-inf")
        self._unpushed = False  # progress set since the last push
        self._registry = registry = CollectorRegistry()
        self._rows = Gauge(
            PREFIX + "rows",
            "Rows of this run by status: classified, dead_letter, pending.",
            ["job_id", "status"],
            registry=registry,
        )
        self._rate = Gauge(
            PREFIX + "rows_per_second", "Rows per second so far.", ["job_id"], registry=registry
        )
        self._duration = Gauge(
            PREFIX + "duration_seconds", "Run time so far.", ["job_id"], registry=registry
        )
        self._job_id = job_id

    def progress(self, classified: int, dead: int, pending: int, seconds: float) -> None:
        for status, rows in (
            ("classified", classified),
            ("dead_letter", dead),
            ("pending", pending),
        ):
            self._rows.labels(self._job_id, status).set(rows)
        self._rate.labels(self._job_id).set((classified + dead) / seconds if seconds > 0 else 0)
        self._duration.labels(self._job_id).set(seconds)
        self._unpushed = True
        if self._clock() - self._last_push >= self._interval_s:
            self._push()

    def ended(self, ok: bool) -> None:
        """The run is over: stamp `last_success` or `last_failure` with the time now."""
        registry = CollectorRegistry()
        outcome = "success" if ok else "failure"
        Gauge(
            f"{PREFIX}last_{outcome}_timestamp_seconds",
            f"Unix time the last run of this pipeline ended in {outcome}.",
            registry=registry,
        ).set_to_current_time()
        if self._unpushed:
            self._push()
        self._push(registry)

    def _push(self, registry: CollectorRegistry | None = None) -> None:
        if registry is None:
            self._last_push, self._unpushed = self._clock(), False
        try:
            pushadd_to_gateway(
                self._url, "raygate-batch", registry or self._registry, self._grouping, timeout=5
            )
        except OSError as exc:  # metrics must never fail the job
            log.warning("could not push metrics to %s: %s", self._url, exc)
