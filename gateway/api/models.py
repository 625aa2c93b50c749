"""GET /v1/models, /v1/models/{model}, /health and /ready."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from gateway.api.common import RouteTable, json_reply, principal_of
from gateway.backends import Probe
from schemas.openai import ModelList

if TYPE_CHECKING:
    from gateway.build import Services


async def _state(probe: Probe) -> str:
    try:
        await probe()
    except Exception:  # any failure means "not ready"; its details stay in the logs
        return "unhealthy"
    return "ok"


class Readiness:
    """Every deployment's health, probed at most once per `ttl_s`: /ready fans out to all
    deployments, so callers within that time (and concurrent ones) share one report."""

    def __init__(
        self,
        probes: Mapping[str, Probe],
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._probes = probes
        self._ttl_s = ttl_s
        self._clock = clock
        self._report: asyncio.Task[dict[str, str]] | None = None
        self._at = -math.inf

    async def report(self) -> dict[str, str]:
        """Deployment -> "ok" or "unhealthy"."""
        fresh = self._clock() - self._at < self._ttl_s
        if self._report is None or (self._report.done() and not fresh):
            self._report = asyncio.ensure_future(self._probe())
            self._at = self._clock()
        return await asyncio.shield(self._report)

    async def _probe(self) -> dict[str, str]:
        states = await asyncio.gather(*(_state(probe) for probe in self._probes.values()))
        return dict(zip(self._probes, states, strict=True))


class ModelRoutes:
    def __init__(self, services: Services):
        self._services = services
        self._readiness = Readiness(services.probes, services.config.gateway.ready_cache_s)

    def table(self) -> RouteTable:
        return [
            ("GET", "/v1/models", self.models, None),
            ("GET", "/v1/models/{model:path}", self.model, None),  # ids may hold a '/'
            ("GET", "/health", self.health, None),
            ("GET", "/ready", self.ready, None),
        ]

    async def models(self, request: Request) -> Response:
        principal = principal_of(self._services, request)
        cards = self._services.models.cards(principal.may_use)
        return json_reply(ModelList(data=cards), {})

    async def model(self, request: Request, model: str) -> Response:
        """The card /v1/models lists for `model` (an id, an alias or `auto`); 404
        `model_not_found` for a name the caller's tenant cannot use."""
        principal = principal_of(self._services, request)
        return json_reply(self._services.models.card(model, principal.may_use), {})

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(self, request: Request) -> Response:
        """200 when every deployment passes its health check, else 503 naming which."""
        report = await self._readiness.report()
        ready = all(state == "ok" for state in report.values())
        return JSONResponse(
            {"status": "ready" if ready else "not_ready", "deployments": report},
            status_code=200 if ready else 503,
        )
