"""The one place that turns failures into OpenAI error bodies and HTTP statuses."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray.exceptions import RayTaskError
from starlette.exceptions import HTTPException as StarletteHTTPException

from schemas.errors import APIError, InternalError, InvalidRequest, NotFound

log = logging.getLogger("raygate.gateway")


def typed_error(exc: BaseException) -> APIError | None:
    """The typed error behind `exc` (Ray wraps errors raised in a replica), if any."""
    if isinstance(exc, APIError):
        return exc
    cause = exc.cause if isinstance(exc, RayTaskError) else None
    return cause if isinstance(cause, APIError) else None


def as_api_error(exc: BaseException) -> APIError:
    """The typed error behind `exc`; anything else is logged and becomes a 500."""
    if (typed := typed_error(exc)) is not None:
        return typed
    log.exception("unexpected error", exc_info=exc)
    return InternalError("The server had an error while processing your request.")


def error_label(err: APIError) -> str:
    """The metrics label of an error: its code where it has one (overloaded,
    rate_limit_exceeded, ...), else its OpenAI type."""
    return err.code or err.type


def error_response(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def install_error_handlers(app: FastAPI) -> None:
    def respond(request: Request, err: APIError) -> JSONResponse:
        request.state.error = error_label(err)  # for the request metrics
        return error_response(err)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return respond(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return respond(request, NotFound("Unknown route."))
        err = InvalidRequest(str(exc.detail))
        err.status = exc.status_code
        return respond(request, err)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return respond(request, as_api_error(exc))
