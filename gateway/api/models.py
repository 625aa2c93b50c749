"""GET /v1/models, /health and /ready."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from gateway.api.common import RouteTable, json_reply, principal_of
from gateway.backends import Probe
from schemas.openai import ModelCard, ModelList

if TYPE_CHECKING:
    from gateway.build import Services


async def _state(probe: Probe) -> str:
    try:
        await probe()
    except Exception as exc:  # any failure means "not ready", reported by type only
        return f"unhealthy ({type(exc).__name__})"
    return "ok"


class ModelRoutes:
    def __init__(self, services: Services):
        self._services = services

    def table(self) -> RouteTable:
        return [
            ("GET", "/v1/models", self.models),
            ("GET", "/health", self.health),
            ("GET", "/ready", self.ready),
        ]

    async def models(self, request: Request) -> Response:
        services = self._services
        principal = principal_of(services, request)
        names = [name for name in services.probes if principal.may_use(name)]
        config = services.config
        auto = config.routing.auto
        if auto is not None and any(principal.may_use(m.id) for m in config.models):
            names.append(auto.name)  # routes among the models above
        cards = [ModelCard(id=name, created=services.created) for name in names]
        return json_reply(ModelList(data=cards), {})

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(self, request: Request) -> Response:
        """200 when every deployment passes its health check, else 503 naming which."""
        probes = self._services.probes
        states = await asyncio.gather(*(_state(probe) for probe in probes.values()))
        report = dict(zip(probes, states, strict=True))
        ready = all(s == "ok" for s in states)
        return JSONResponse(
            {"status": "ready" if ready else "not_ready", "deployments": report},
            status_code=200 if ready else 503,
        )
