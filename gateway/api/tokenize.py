"""POST /tokenize and /detokenize (vLLM's server routes): parse, metered call, JSON.

Each takes one request from the caller's request buckets (it costs the gateway CPU) and
no tokens (vLLM's server does not count them), through the same admission as embeddings.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from fastapi import Request
from fastapi.responses import Response

from gateway.api.common import RouteTable, body_of, json_reply, metered, principal_of
from schemas.tokenize import DetokenizeRequest, TokenizeRequest

if TYPE_CHECKING:
    from gateway.build import Services


class TokenizeRoutes:
    def __init__(self, services: Services):
        self._services = services

    def table(self) -> RouteTable:
        return [
            ("POST", "/tokenize", self.tokenize, TokenizeRequest),
            ("POST", "/detokenize", self.detokenize, DetokenizeRequest),
        ]

    async def tokenize(self, request: Request) -> Response:
        services = self._services
        principal = principal_of(services, request)
        body = await body_of(services, request, TokenizeRequest)
        response, lease = await metered(
            services,
            request,
            principal,
            "generation",
            partial(services.tokens.prepare_tokenize, body, principal.may_use),
            partial(services.tokens.tokenize, body),
            lambda _: 0,
        )
        return json_reply(response, lease.headers)

    async def detokenize(self, request: Request) -> Response:
        services = self._services
        principal = principal_of(services, request)
        body = await body_of(services, request, DetokenizeRequest)
        response, lease = await metered(
            services,
            request,
            principal,
            "generation",
            partial(services.tokens.prepare_detokenize, body, principal.may_use),
            services.tokens.detokenize,
            lambda _: 0,
        )
        return json_reply(response, lease.headers)
