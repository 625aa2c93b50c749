"""Per-request metrics of the gateway (`raygate_gateway_` prefix, like gateway.metrics).

`RequestMetricsMiddleware` counts every HTTP request by tenant, model, route and status,
times it to its last byte and keeps the in-flight gauge; handlers fill in the labels
they learn (`labels_of(request)`). `TimedBackend` wraps the model call of a generation
request to observe time to first token, time per output token and mid-stream errors.
Labels stay bounded: tenants and models come from config, routes from the API's own
paths (anything else is `other`), statuses and error codes from fixed sets.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, cast

from ray.serve.metrics import Counter, Gauge, Histogram
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import error_label, typed_error
from gateway.targets import GenerationBackend
from schemas.generation import GenerationChunk, GenerationRequest

PREFIX = "raygate_gateway_"
NONE = "none"  # a label not known for this request (no key, no model)
LATENCY_S = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]
TTFT_S = [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30]
TPOT_S = [0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28]


@dataclass
class RequestLabels:
    """What a handler learns about its request, read when the response has ended."""

    tenant: str = NONE
    model: str = NONE
    error: str | None = None  # a failure after the status was sent (mid-stream)


def labels_of(request: Request) -> RequestLabels:
    """The labels RequestMetricsMiddleware made for this request."""
    return cast(RequestLabels, request.state.labels)


class RequestMetrics:
    def __init__(self) -> None:
        def tags(*keys: str) -> Any:
            return cast(Any, keys)  # the stub says tuple[str]

        self.requests = Counter(
            PREFIX + "requests_total",
            description="HTTP requests by tenant, model, route and status code.",
            tag_keys=tags("tenant", "model", "route", "status"),
        )
        self.errors = Counter(
            PREFIX + "errors_total",
            description="Failed requests by status and error code or type; mid-stream "
            "failures included (status 200: it was sent before they failed).",
            tag_keys=tags("tenant", "model", "route", "status", "type"),
        )
        self.duration = Histogram(
            PREFIX + "request_duration_seconds",
            description="Time from request to the last byte of the response.",
            boundaries=LATENCY_S,
            tag_keys=tags("model", "route"),
        )
        self.in_flight = Gauge(
            PREFIX + "requests_in_flight",
            description="Requests this gateway replica is serving now.",
            tag_keys=tags(
                "route",
            ),
        )
        self.ttft = Histogram(
            PREFIX + "time_to_first_token_seconds",
            description="From sending a generation to the model to its first token, by "
            "the model that answered (cache hits excluded).",
            boundaries=TTFT_S,
            tag_keys=tags(
                "model",
            ),
        )
        self.tpot = Histogram(
            PREFIX + "time_per_output_token_seconds",
            description="Mean time between output tokens after the first, per request.",
            boundaries=TPOT_S,
            tag_keys=tags(
                "model",
            ),
        )
        self.tokens = Counter(
            PREFIX + "tokens_total",
            description="Tokens by tenant, model and kind (prompt, completion); cache "
            "hits included.",
            tag_keys=tags("tenant", "model", "kind"),
        )
        self._in_flight: dict[str, int] = {}

    def started(self, route: str) -> None:
        self._in_flight[route] = self._in_flight.get(route, 0) + 1
        self.in_flight.set(self._in_flight[route], tags={"route": route})

    def finished(
        self, route: str, status: int, labels: RequestLabels, error: str | None, seconds: float
    ) -> None:
        self._in_flight[route] -= 1
        self.in_flight.set(self._in_flight[route], tags={"route": route})
        who = {
            "tenant": labels.tenant,
            "model": labels.model,
            "route": route,
            "status": str(status),
        }
        self.requests.inc(tags=who)
        self.duration.observe(seconds, tags={"model": labels.model, "route": route})
        if error is not None:
            self.errors.inc(tags={**who, "type": error})

    def count_tokens(self, tenant: str, model: str, prompt: int, completion: int) -> None:
        for kind, count in (("prompt", prompt), ("completion", completion)):
            if count:
                self.tokens.inc(count, tags={"tenant": tenant, "model": model, "kind": kind})


@cache
def request_metrics() -> RequestMetrics:
    """One per gateway replica, created on first use (inside the replica)."""
    return RequestMetrics()


class RequestMetricsMiddleware:
    """Pure ASGI: sees the status as it is sent and the end of a streamed body."""

    def __init__(self, app: ASGIApp, route_of: Callable[[str], str]):
        self._app = app
        self._route_of = route_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        route = self._route_of(scope["path"])
        labels = RequestLabels()
        state = scope.setdefault("state", {})  # what handlers see as request.state
        state["labels"] = labels
        status = 500  # unless a response starts
        metrics = request_metrics()
        started = time.perf_counter()
        metrics.started(route)

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, sending)
        finally:
            # the error handlers name the error; a bare status (Serve's own 503s) is kept
            error = labels.error or state.get("error")
            if error is None and status >= 400:
                error = str(status)
            metrics.finished(route, status, labels, error, time.perf_counter() - started)


class TimedBackend:
    """A generation call observed: time to first token and per output token by the model
    that answered (`served_by()`, known once the fallback chain has picked one), and a
    failure after the first token recorded on `labels`."""

    def __init__(
        self,
        inner: GenerationBackend,
        served_by: Callable[[], str],
        labels: RequestLabels,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self._inner = inner
        self._served_by = served_by
        self._labels = labels
        self._clock = clock

    async def max_model_len(self) -> int:
        return await self._inner.max_model_len()

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        metrics = request_metrics()
        sent = self._clock()
        first_at: float | None = None
        first_tokens = last_tokens = 0
        last_at = sent
        try:
            async for chunk in self._inner.stream(request):
                now = self._clock()
                if first_at is None:
                    first_at, first_tokens = now, chunk.completion_tokens
                    metrics.ttft.observe(now - sent, tags={"model": self._served_by()})
                last_at, last_tokens = now, chunk.completion_tokens
                yield chunk
        except Exception as exc:
            if first_at is not None:  # before it, the HTTP status tells
                typed = typed_error(exc)
                self._labels.error = error_label(typed) if typed else "internal_error"
            raise
        if first_at is not None and last_tokens > first_tokens:
            per_token = (last_at - first_at) / (last_tokens - first_tokens)
            metrics.tpot.observe(per_token, tags={"model": self._served_by()})
