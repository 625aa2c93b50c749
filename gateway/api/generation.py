"""POST /v1/chat/completions and /v1/completions: parse, delegate, JSON or SSE."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Request
from fastapi.responses import Response

from gateway.api.common import RouteTable, body_of, json_reply, principal_of, sse_reply
from gateway.auth import Principal
from gateway.generation.plan import Body
from gateway.generation.service import Caller
from gateway.telemetry import labels_of
from schemas.openai import ChatCompletionRequest, CompletionRequest

if TYPE_CHECKING:
    from gateway.build import Services


class GenerationRoutes:
    def __init__(self, services: Services):
        self._services = services

    def table(self) -> RouteTable:
        return [
            ("POST", "/v1/chat/completions", self.chat_completions, ChatCompletionRequest),
            ("POST", "/v1/completions", self.completions, CompletionRequest),
        ]

    async def chat_completions(self, request: Request) -> Response:
        principal = principal_of(self._services, request)
        body = await body_of(self._services, request, ChatCompletionRequest)
        return await self._generate(request, principal, body)

    async def completions(self, request: Request) -> Response:
        principal = principal_of(self._services, request)
        body = await body_of(self._services, request, CompletionRequest)
        return await self._generate(request, principal, body)

    async def _generate(self, request: Request, principal: Principal, body: Body) -> Response:
        caller = Caller(principal, labels_of(request), request.headers.get("cache-control"))
        reply = await self._services.generation.generate(body, caller)
        if reply.events is not None:
            return sse_reply(reply.events, reply.headers)
        assert reply.body is not None
        return json_reply(reply.body, reply.headers)
