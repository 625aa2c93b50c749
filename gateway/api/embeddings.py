"""POST /v1/embeddings: parse, prepare (route, count tokens), metered call, JSON."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from fastapi import Request
from fastapi.responses import Response

from gateway.api.common import RouteTable, body_of, json_reply, metered, principal_of
from schemas.openai import EmbeddingRequest

if TYPE_CHECKING:
    from gateway.build import Services


class EmbeddingRoutes:
    def __init__(self, services: Services):
        self._services = services

    def table(self) -> RouteTable:
        return [("POST", "/v1/embeddings", self.embeddings, EmbeddingRequest)]

    async def embeddings(self, request: Request) -> Response:
        services = self._services
        principal = principal_of(services, request)
        body = await body_of(services, request, EmbeddingRequest)
        response, lease = await metered(
            services,
            request,
            principal,
            "embeddings",
            partial(services.embeddings.prepare, body, principal.may_use),
            partial(services.embeddings.embed, body),
            lambda r: r.usage.prompt_tokens,
        )
        return json_reply(response, lease.headers)
