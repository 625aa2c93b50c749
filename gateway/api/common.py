"""What every route module shares: who is calling, replying, metered model calls."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from gateway import sse
from gateway.auth import Principal
from gateway.body import parse_body
from gateway.quota.config import RouteClass
from gateway.quota.policy import Lease
from gateway.telemetry import labels_of
from schemas.errors import PayloadTooLarge

if TYPE_CHECKING:
    from gateway.build import Services

R = TypeVar("R")
M = TypeVar("M", bound=BaseModel)
Handler = Callable[[Request], Awaitable[Response]]
# method, path, handler, the wire model of its JSON body (None: no body)
RouteTable = list[tuple[str, str, Handler, type[BaseModel] | None]]


def principal_of(services: Services, request: Request) -> Principal:
    """Authenticate the request (401 otherwise) and label it with its tenant."""
    principal = services.keys.authenticate(request.headers.get("authorization"))
    labels_of(request).tenant = principal.tenant.id
    return principal


async def body_of(services: Services, request: Request, model: type[M]) -> M:
    """The request's JSON body as `model`. Raises PayloadTooLarge (413) past the gateway's
    `max_body_bytes`, by Content-Length before reading or as the bytes stream in, and
    InvalidRequest (400) for anything that is not strict JSON of that shape."""
    limit = services.config.gateway.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return parse_body(b"".join(chunks), model)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than this server takes ({limit} bytes).")


def json_reply(body: BaseModel, headers: Mapping[str, str]) -> Response:
    return Response(body.model_dump_json(), media_type="application/json", headers=headers)


def sse_reply(events: Any, headers: Mapping[str, str]) -> Response:
    return StreamingResponse(events, media_type=sse.MEDIA_TYPE, headers={**sse.HEADERS, **headers})


class Metered(Protocol):
    """A prepared call, admitted against the quota by its token count before it runs."""

    @property
    def model_id(self) -> str: ...

    @property
    def reserved_tokens(self) -> int: ...


async def metered(
    services: Services,
    request: Request,
    principal: Principal,
    route_class: RouteClass,
    prepared: Metered,
    call: Callable[[], Awaitable[R]],
    used_tokens: Callable[[R], int],
) -> tuple[R, Lease]:
    """Admit against the quota, call the model, settle to the tokens it read (nothing is
    charged unless the model answers)."""
    labels = labels_of(request)
    labels.model = prepared.model_id
    lease = await services.quota.admit(principal, route_class, prepared.reserved_tokens)
    used = 0
    try:
        result = await call()
        used = used_tokens(result)
    finally:
        await asyncio.shield(services.quota.settle(lease, used))  # a cancelled call too
        services.metrics.requests.count_tokens(labels.tenant, labels.model, used, 0)
    return result, lease
