"""What every route module shares: who is calling, replying, metered model calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Protocol, TypeVar

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send

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
# (request, then the route's path parameters by name: FastAPI documents and passes them)
Handler = Callable[..., Awaitable[Response]]
# method, path, handler, the wire model of its JSON body (None: no body)
RouteTable = list[tuple[str, str, Handler, type[BaseModel] | None]]
OFF_LOOP_BYTES = 256 * 1024  # bodies this large are parsed off the event loop


def principal_of(services: Services, request: Request) -> Principal:
    """Authenticate the request (401 otherwise) and label it with its tenant."""
    labels = labels_of(request)
    labels.stages.mark()
    principal = services.keys.authenticate(request.headers.get("authorization"))
    labels.tenant = principal.tenant.id
    labels.stages.lap("auth")
    return principal


async def body_of(services: Services, request: Request, model: type[M]) -> M:
    """The request's JSON body as `model`. Raises PayloadTooLarge (413) past the gateway's
    `max_body_bytes`, by Content-Length before reading or as the bytes stream in, and
    InvalidRequest (400) for anything that is not strict JSON of that shape."""
    options = services.config.gateway
    limit = options.max_body_bytes
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
    raw = b"".join(chunks)
    if size < OFF_LOOP_BYTES:
        body = parse_body(raw, model, options.max_text_chars)
    else:  # a large body is parsed in a thread: the event loop keeps serving the others
        body = await asyncio.to_thread(parse_body, raw, model, options.max_text_chars)
    labels_of(request).stages.lap("parse")
    return body


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than this server takes ({limit} bytes).")


def json_reply(body: BaseModel, headers: Mapping[str, str]) -> Response:
    return Response(body.model_dump_json(), media_type="application/json", headers=headers)


class Closeable(Protocol):
    def __aiter__(self) -> AsyncIterator[str]: ...

    async def aclose(self) -> None: ...


class _EventResponse(StreamingResponse):
    """A StreamingResponse that closes its events when it is done, however it is done:
    Starlette leaves an iterator it never started (the client left first) unclosed."""

    def __init__(self, events: Closeable, headers: Mapping[str, str]):
        super().__init__(events, media_type=sse.MEDIA_TYPE, headers={**sse.HEADERS, **headers})
        self._events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await asyncio.shield(self._events.aclose())


def sse_reply(events: Closeable, headers: Mapping[str, str]) -> Response:
    """The events as an SSE response; they are closed when it ends, sent or not."""
    return _EventResponse(events, headers)


class Metered(Protocol):
    """A prepared call, admitted against the quota by its token count before it runs."""

    @property
    def model_id(self) -> str: ...

    @property
    def reserved_tokens(self) -> int: ...


P = TypeVar("P", bound=Metered)


async def metered(
    services: Services,
    request: Request,
    principal: Principal,
    route_class: RouteClass,
    prepare: Callable[[], Awaitable[P]],
    call: Callable[[P], Awaitable[R]],
    used_tokens: Callable[[R], int],
) -> tuple[R, Lease]:
    """Admit against the quota (one request), then prepare the call (route, count its
    tokens), reserve its tokens, call the model, and settle to the tokens it read: a tenant
    without quota costs no tokenizing, and nothing is charged unless the model answers.
    Raises what admission, `prepare` or `call` raise; the lease is settled on every way out."""
    labels = labels_of(request)
    stages = labels.stages
    stages.mark()
    lease = await services.quota.admit(principal, route_class)
    stages.lap("admit")
    used = 0
    try:
        prepared = await prepare()
        stages.lap("tok")
        labels.model = prepared.model_id
        await services.quota.reserve(lease, prepared.reserved_tokens)
        stages.lap("reserve")
        result = await call(prepared)
        stages.lap("model")
        used = used_tokens(result)
    finally:
        await asyncio.shield(services.quota.settle(lease, used))  # a cancelled call too
        services.metrics.requests.count_tokens(labels.tenant, labels.model, used, 0)
    return result, lease
