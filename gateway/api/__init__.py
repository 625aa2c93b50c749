"""The HTTP API: one thin route module per API, assembled into one FastAPI app.

Each route module has a plain class of handlers and its route table; `make_api` binds
them to an app with the error handlers, the metrics middleware and an OpenAPI document
that describes the bodies the handlers read (`gateway/api/openapi.py`), in the replica
(Serve calls it through the ingress's `__serve_build_asgi_app__`), so there is no
module-level app and no decoration order to keep.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from fastapi import FastAPI
from pydantic import BaseModel
from starlette.routing import compile_path

from gateway.api.embeddings import EmbeddingRoutes
from gateway.api.generation import GenerationRoutes
from gateway.api.models import ModelRoutes
from gateway.api.openapi import openapi_document
from gateway.api.rerank import RerankRoutes
from gateway.api.tokenize import TokenizeRoutes
from gateway.errors import install_error_handlers
from gateway.telemetry import RequestMetricsMiddleware

if TYPE_CHECKING:
    from gateway.build import Services


def make_api(services: Services) -> FastAPI:
    """The gateway's ASGI app over `services`."""
    api = FastAPI(title="raygate", docs_url=None, redoc_url=None)
    install_error_handlers(api)
    paths: set[str] = set()
    bodies: dict[tuple[str, str], type[BaseModel]] = {}
    for routes in (
        GenerationRoutes(services),
        EmbeddingRoutes(services),
        RerankRoutes(services),
        ModelRoutes(services),
        TokenizeRoutes(services),
    ):
        for method, path, handler, body in routes.table():
            api.add_api_route(path, handler, methods=[method])
            paths.add(path)
            if body is not None:
                bodies[method, path] = body
    api.openapi_schema = openapi_document(api, bodies)  # what app.openapi() serves
    api.add_middleware(
        RequestMetricsMiddleware, route_of=route_labels(paths), metrics=services.metrics.requests
    )
    return api


def route_labels(paths: Iterable[str]) -> Callable[[str], str]:
    """A request path's metrics label: the route of `paths` it matches (for one with
    parameters, its template: `/v1/models/{model}`), else `other` (bounded)."""
    known = frozenset(paths)
    templates = [(compile_path(p)[0], p.replace(":path}", "}")) for p in known if "{" in p]

    def label(path: str) -> str:
        if path in known:
            return path
        return next((name for regex, name in templates if regex.match(path)), "other")

    return label
