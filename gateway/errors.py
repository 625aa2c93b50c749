"""The one place that turns failures into OpenAI error bodies and HTTP statuses."""

from __future__ import annotations

import json
import logging
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from ray.exceptions import RayTaskError
from starlette.exceptions import HTTPException as StarletteHTTPException

from schemas.errors import APIError, InternalError, InvalidRequest, NotFound

log = logging.getLogger("raygate.gateway")

M = TypeVar("M", bound=BaseModel)


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


def _loc_to_param(loc: tuple[Any, ...]) -> str | None:
    param = ""
    for part in loc:
        if isinstance(part, int):
            param += f"[{part}]"
        elif not str(part).startswith(("function-", "list[", "str", "int")):
            param += f".{part}" if param else str(part)
    return param or None


def parse_body(raw: bytes, model: type[M]) -> M:
    """Parse and validate a JSON request body, or raise InvalidRequest saying why."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request ({exc}). "
            "The body must be a JSON object."
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        param = _loc_to_param(first["loc"])
        where = f" at '{param}'" if param else ""
        if first["type"] == "extra_forbidden":
            message = f"Unrecognized request argument supplied: {param}"
        else:
            message = f"Invalid request{where}: {first['msg']}"
        raise InvalidRequest(message, param=param) from None


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
