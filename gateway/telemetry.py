"""Per-request observation: the metrics middleware and the timing layer of the backend stack.

`RequestMetricsMiddleware` counts every HTTP request by tenant, model, route and status,
times it to its last byte and keeps the in-flight gauge; handlers fill in the labels
they learn (`labels_of(request)`). `TimedBackend` wraps the model call of a generation
request to observe time to first token, time per output token and mid-stream errors.
The metrics themselves are declared in gateway.metrics. Labels stay bounded: tenants and
models come from config, routes from the API's own paths (anything else is `other`),
statuses and error codes from fixed sets.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import cast

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import error_label, typed_error
from gateway.metrics import RequestMetrics
from gateway.targets import GenerationBackend, Started
from gateway.timing import Stages
from schemas.generation import GenerationChunk, GenerationRequest

NONE = "none"  # a label not known for this request (no key, no model)


@dataclass
class RequestLabels:
    """What a handler learns about its request, read when the response has ended."""

    tenant: str = NONE
    model: str = NONE
    error: str | None = None  # a failure after the status was sent (mid-stream)
    stages: Stages = field(default_factory=Stages)  # where its time went (gateway.timing)


def labels_of(request: Request) -> RequestLabels:
    """The labels RequestMetricsMiddleware made for this request."""
    return cast(RequestLabels, request.state.labels)


class RequestMetricsMiddleware:
    """Pure ASGI: sees the status as it is sent and the end of a streamed body."""

    def __init__(self, app: ASGIApp, route_of: Callable[[str], str], metrics: RequestMetrics):
        self._app = app
        self._route_of = route_of
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        route = self._route_of(scope["path"])
        labels = RequestLabels()
        state = scope.setdefault("state", {})  # what handlers see as request.state
        state["labels"] = labels
        status = 500  # unless a response starts
        metrics = self._metrics
        started = time.perf_counter()
        metrics.started(route)

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if labels.stages:
                    timing = (b"server-timing", labels.stages.header().encode())
                    message = {**message, "headers": [*message.get("headers", ()), timing]}
            await send(message)

        try:
            await self._app(scope, receive, sending)
        finally:
            # the error handlers name the error; a bare status (Serve's own 503s) is kept
            error = labels.error or state.get("error")
            if error is None and status >= 400:
                error = str(status)
            seconds = time.perf_counter() - started
            metrics.finished(route, status, labels.tenant, labels.model, error, seconds)
            metrics.observe_stages(labels.model, labels.stages)


def record_engine_stages(stages: Stages, ttft_s: float, first: GenerationChunk) -> None:
    """The model call's stages: ttft, and as the model replica accounts for it (its
    timings on the first chunk), hop = ttft minus the replica's own time, enc, eq, pf."""
    stages.add("ttft", ttft_s)
    timings = first.timings
    if timings is None:
        return
    stages.add("hop", max(0.0, ttft_s - timings.replica_s))
    stages.add("enc", timings.encode_s)
    if timings.queued_s is not None:
        stages.add("eq", timings.queued_s)
    if timings.prefill_s is not None:
        stages.add("pf", timings.prefill_s)


class TimedBackend:
    """The timing layer of the backend stack: time to first token and per output token
    by the model that answered, and a failure after the first token recorded on
    `labels` (before it, the HTTP status tells)."""

    def __init__(
        self,
        inner: GenerationBackend,
        metrics: RequestMetrics,
        labels: RequestLabels,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self._inner = inner
        self._metrics = metrics
        self._labels = labels
        self._clock = clock

    async def start(self, request: GenerationRequest) -> Started:
        sent = self._clock()
        started = await self._inner.start(request)
        first_at = self._clock()
        model = started.served.model_id
        self._metrics.ttft.observe(first_at - sent, tags={"model": model})
        record_engine_stages(self._labels.stages, first_at - sent, started.first)
        return Started(started.served, started.first, self._timed(started, first_at))

    async def _timed(self, started: Started, first_at: float) -> AsyncGenerator[GenerationChunk]:
        first_tokens = last_tokens = started.first.completion_tokens
        last_at = first_at
        try:
            async for chunk in started.rest:
                last_at, last_tokens = self._clock(), chunk.completion_tokens
                yield chunk
        except Exception as exc:
            typed = typed_error(exc)
            self._labels.error = error_label(typed) if typed else "internal_error"
            raise
        finally:
            await started.aclose()
        if last_tokens > first_tokens:
            per_token = (last_at - first_at) / (last_tokens - first_tokens)
            self._metrics.tpot.observe(per_token, tags={"model": started.served.model_id})
