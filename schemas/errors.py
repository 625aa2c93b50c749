"""The error catalogue: every typed API error, each with its HTTP status and OpenAI type.

Deployments and the gateway raise them; Ray re-raises them in the gateway (they pickle
by their constructor arguments); `gateway.errors` is the one place that turns them into
an OpenAI error body. `retry_after` is the one way a Retry-After header is written.
"""

from __future__ import annotations

import math
from typing import Any


def retry_after(seconds: float) -> dict[str, str]:
    """The Retry-After header for a wait of `seconds`: whole seconds, rounded up (a client
    told to come back sooner than it may is only refused again), at least 1."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


class APIError(Exception):
    status: int = 500
    type: str = "internal_error"
    code: str | None = None
    headers: dict[str, str] | None = None  # extra response headers (Retry-After, ...)

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.param, self.code))

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def _rebuild(cls: type[APIError], message: str, param: str | None, code: str | None) -> APIError:
    return cls(message, param=param, code=code)


class InvalidRequest(APIError):
    status = 400
    type = "invalid_request_error"


class PayloadTooLarge(APIError):
    """A request body over the gateway's limit, refused before it is parsed."""

    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class ModelNotFound(APIError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"

    def __init__(self, model: str, *, param: str | None = "model", code: str | None = None):
        super().__init__(
            f"The model '{model}' does not exist or you do not have access to it.",
            param=param,
            code=code,
        )
        self.model = model

    def __reduce__(self) -> tuple[Any, ...]:
        return (ModelNotFound, (self.model,))


class NotFound(APIError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ServiceUnavailable(APIError):
    status = 503
    type = "service_unavailable"
    code = "service_unavailable"


class InternalError(APIError):
    status = 500
    type = "internal_error"
    code = "internal_error"


class Overloaded(ServiceUnavailable):
    """The model's queues are full (or its circuit is open): come back later."""

    code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: float = 1.0, **kwargs: str | None):
        super().__init__(message, **kwargs)
        self.headers = retry_after(retry_after_s)


class GatewayTimeout(APIError):
    """No answer (or no first token) within the request's time limit."""

    status = 504
    type = "timeout"
    code = "timeout"


class AuthenticationFailed(APIError):
    """A missing, malformed or unknown API key."""

    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class RateLimited(APIError):
    """A request, token or concurrency limit is reached; `kind` is OpenAI's error type
    (`requests` or `tokens`) and `headers` carry the rate-limit state and Retry-After."""

    status = 429
    code = "rate_limit_exceeded"

    def __init__(
        self, message: str, *, kind: str = "requests", headers: dict[str, str] | None = None
    ):
        super().__init__(message)
        self.type = kind
        self.headers = headers

    def __reduce__(self) -> tuple[Any, ...]:
        return (RateLimited, (self.message,), {"type": self.type, "headers": self.headers})


class QuotaUnavailable(ServiceUnavailable):
    """The quota store cannot be reached and the route fails closed."""

    def __init__(self) -> None:
        super().__init__("Rate limits cannot be checked right now; try again shortly.")
        self.headers = retry_after(1)


class NotCached(APIError):
    """`Cache-Control: only-if-cached` and no cached answer (RFC 9111's 504)."""

    status = 504
    type = "cache_miss"
    code = "not_cached"
