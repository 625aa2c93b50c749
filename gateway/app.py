"""The gateway deployment (FastAPI ingress) and `build_app`, named by serve_config.yaml.

Route handlers are thin: parse and validate the body, call a service, pick JSON or SSE.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from ray import serve
from ray.serve import Application, Deployment
from ray.serve.handle import DeploymentHandle

from deployments.config import resolve_model_source
from deployments.embedder import EmbedderDeployment
from deployments.llm import LLMDeployment
from deployments.router import ModelRouter
from gateway import sse
from gateway.backends import ServeEmbeddingBackend, ServeLLMBackend
from gateway.config import AppConfig
from gateway.embeddings import EmbeddingBackend, EmbeddingService
from gateway.errors import install_error_handlers, parse_body
from gateway.generation import GenerationBackend, GenerationService
from schemas.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    ModelCard,
    ModelList,
)

api = FastAPI(title="raygate", docs_url=None, redoc_url=None)
install_error_handlers(api)


def _reply(result: BaseModel | AsyncIterator[str]) -> Response:
    if isinstance(result, BaseModel):
        return Response(result.model_dump_json(), media_type="application/json")
    return StreamingResponse(result, media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)


@serve.deployment
@serve.ingress(api)
class Gateway:
    def __init__(
        self,
        config: AppConfig,
        llms: Mapping[str, DeploymentHandle],
        embedders: Mapping[str, DeploymentHandle],
    ):
        self._config = config
        self._handles: dict[str, DeploymentHandle] = {**llms, **embedders}
        llm_aliases = {a: m.id for m in config.models for a in m.aliases}
        emb_aliases = {a: e.id for e in config.embedders for a in e.aliases}
        llm_router: ModelRouter[GenerationBackend] = ModelRouter(
            {name: ServeLLMBackend(h) for name, h in llms.items()}, llm_aliases
        )
        emb_router: ModelRouter[EmbeddingBackend] = ModelRouter(
            {name: ServeEmbeddingBackend(h) for name, h in embedders.items()}, emb_aliases
        )
        self._generation = GenerationService(llm_router)
        self._embeddings = EmbeddingService(emb_router)
        created = int(time.time())
        self._models = ModelList(
            data=[ModelCard(id=name, created=created) for name in self._handles]
        )

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        body = parse_body(await request.body(), ChatCompletionRequest)
        return _reply(await self._generation.chat(body))

    @api.post("/v1/completions")
    async def completions(self, request: Request) -> Response:
        body = parse_body(await request.body(), CompletionRequest)
        return _reply(await self._generation.complete(body))

    @api.post("/v1/embeddings")
    async def embeddings(self, request: Request) -> Response:
        body = parse_body(await request.body(), EmbeddingRequest)
        return _reply(await self._embeddings.embed(body))

    @api.get("/v1/models")
    async def models(self) -> Response:
        return _reply(self._models)

    @api.get("/health")
    async def health(self) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @api.get("/ready")
    async def ready(self) -> JSONResponse:
        timeout = self._config.gateway.ready_timeout_s

        async def probe(handle: DeploymentHandle) -> str:
            try:
                await asyncio.wait_for(handle.check_health.remote(), timeout)
            except Exception as exc:  # any failure means "not ready", reported by type only
                return f"unhealthy ({type(exc).__name__})"
            return "ok"

        names = list(self._handles)
        states = await asyncio.gather(*(probe(self._handles[n]) for n in names))
        report = dict(zip(names, states, strict=True))
        ready = all(s == "ok" for s in states)
        return JSONResponse(
            {"status": "ready" if ready else "not_ready", "deployments": report},
            status_code=200 if ready else 503,
        )


def as_deployment(decorated: Any) -> Deployment:
    """`@serve.deployment` turns a class into a Deployment; its type stub keeps the class."""
    return cast(Deployment, decorated)


def deployment_name(kind: str, model_id: str) -> str:
    return f"{kind}-{re.sub(r'[^A-Za-z0-9_-]', '_', model_id)}"


def load_config(args: Mapping[str, Any]) -> AppConfig:
    try:
        return AppConfig.model_validate(dict(args))
    except ValidationError as exc:
        raise ValueError(f"invalid raygate application config:\n{exc}") from None


def build_app(args: dict[str, Any]) -> Application:
    """The Serve application for `args` (serve_config.yaml's `args`); fails fast if invalid."""
    config = load_config(args)
    base = Path.cwd()
    llms = {
        m.id: as_deployment(LLMDeployment)
        .options(**m.deployment.deployment_options(deployment_name("llm", m.id)))
        .bind(m, resolve_model_source(m.model, base))
        for m in config.models
    }
    embedders = {
        e.id: as_deployment(EmbedderDeployment)
        .options(**e.deployment.deployment_options(deployment_name("embedder", e.id)))
        .bind(e, resolve_model_source(e.model, base))
        for e in config.embedders
    }
    gateway = config.gateway.deployment.deployment_options("gateway")
    return as_deployment(Gateway).options(**gateway).bind(config, llms, embedders)
