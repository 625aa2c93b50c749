"""The gateway deployment (FastAPI ingress) and `build_app`, named by serve_config.yaml.

Route handlers are thin: authenticate, parse, prepare (route + count tokens), admit
against the quota, delegate to a service, pick JSON or SSE, settle the quota.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from functools import cache, partial
from pathlib import Path
from typing import Any, TypeVar, cast

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from ray import serve
from ray.serve import Application, Deployment
from ray.serve.handle import DeploymentHandle

from deployments.config import LLMModelConfig, resolve_model_source
from deployments.embedder import EmbedderDeployment
from deployments.faults import FaultyLLMDeployment
from deployments.llm import LLMDeployment
from deployments.prompt import PromptEncoder, load_prompt_encoder, load_text_token_counter
from deployments.reranker import RerankerDeployment
from gateway import sse
from gateway.auth import KeyRing, Principal, TenantsFile, load_tenants
from gateway.backends import ServeEmbeddingBackend, ServeLLMBackend, ServeRerankBackend
from gateway.body import parse_body
from gateway.cache.config import CacheConfig
from gateway.cache.redis_store import CachedAnswer, RedisCacheStore
from gateway.cache.replay import RecordingBackend, ReplayBackend
from gateway.cache.service import CacheMetrics, Embed, Lookup, ResponseCache
from gateway.config import AppConfig
from gateway.embeddings import EmbedderTarget, EmbeddingService, PreparedEmbedding
from gateway.errors import install_error_handlers
from gateway.generation import GenerationService, Prepared
from gateway.metrics import GatewayMetrics
from gateway.quota.policy import Lease, QuotaPolicy, RouteClass
from gateway.quota.redis_store import RedisQuotaStore
from gateway.redis_conn import redis_client
from gateway.rerank import PreparedRerank, RerankerTarget, RerankService
from gateway.routing.catalog import ModelCatalog
from gateway.routing.planner import RoutePlanner
from gateway.targets import LLMTarget
from gateway.telemetry import (
    RequestLabels,
    RequestMetricsMiddleware,
    TimedBackend,
    labels_of,
    request_metrics,
)
from schemas.embeddings import EmbeddingResult
from schemas.errors import NotFound
from schemas.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    ModelCard,
    ModelList,
)
from schemas.rerank import RerankRequest, ScoreRequest, TeiRerankRequest

api = FastAPI(title="raygate", docs_url=None, redoc_url=None)
install_error_handlers(api)


@cache
def _api_paths() -> frozenset[str]:
    return frozenset(r.path for r in api.routes if isinstance(r, APIRoute))


def route_label(path: str) -> str:
    """A path's metrics label: one of the API's routes, else `other` (bounded)."""
    return path if path in _api_paths() else "other"


# Before the class: @serve.ingress freezes a copy of the app (its middleware included)
api.add_middleware(RequestMetricsMiddleware, route_of=route_label)


R = TypeVar("R")
Run = Callable[[Prepared], Awaitable[BaseModel | AsyncGenerator[str, None]]]


def build_cache(config: CacheConfig, embed: Embed | None, metrics: CacheMetrics) -> ResponseCache:
    password = os.environ.get(config.redis_password_env) if config.redis_password_env else None
    store = RedisCacheStore(
        redis_client(config.redis_url, password, config.timeout_s),
        config.timeout_s,
        config.key_prefix,
        config.stream_maxlen,
    )
    # The follower blocks on the entry stream for up to a second at a time.
    follower = RedisCacheStore(
        redis_client(config.redis_url, password, 2.0 + config.timeout_s),
        2.0 + config.timeout_s,
        config.key_prefix,
        config.stream_maxlen,
    )
    return ResponseCache(config, store, follower, embed, metrics)


# Module-level names that Gateway uses are defined before it: `@serve.deployment`
# serialises the class as it is decorated, with the globals known at that point.
async def _embed_one(target: EmbedderTarget, text: str) -> Any:
    result: EmbeddingResult = await target.backend.embed([text])
    return result.vectors[0]


def _served_headers(prepared: Prepared) -> dict[str, str]:
    """Which model answered (after fallbacks) and, for prefix affinity, which replica."""
    headers = {"x-raygate-model": prepared.served_by}
    if prepared.served.calls > 1 or prepared.served.passed_over:
        headers["x-raygate-passed-over"] = ",".join(prepared.served.passed_over)
    if prepared.served.replica is not None:
        headers["x-raygate-replica"] = prepared.served.replica
    return headers


def _reply(result: BaseModel | AsyncIterator[str], headers: Mapping[str, str]) -> Response:
    if isinstance(result, BaseModel):
        return Response(result.model_dump_json(), media_type="application/json", headers=headers)
    return StreamingResponse(result, media_type=sse.MEDIA_TYPE, headers={**sse.HEADERS, **headers})


@serve.deployment
@serve.ingress(api)
class Gateway:
    def __init__(
        self,
        config: AppConfig,
        tenants: TenantsFile,
        sources: Mapping[str, str],
        llms: Mapping[str, DeploymentHandle],
        embedders: Mapping[str, DeploymentHandle],
        rerankers: Mapping[str, DeploymentHandle],
        faults: Mapping[str, DeploymentHandle],
    ):
        self._config = config
        self._handles: dict[str, DeploymentHandle] = {
            **llms,
            **faults,
            **embedders,
            **rerankers,
        }
        self._keys = KeyRing(tenants, config.auth)
        self._metrics = GatewayMetrics()
        # One encoder per model folder: loaded once, and fallbacks that share it reuse
        # the token ids.
        encoders: dict[str, PromptEncoder] = {}
        for name in {**llms, **faults}:
            if sources[name] not in encoders:
                encoders[sources[name]] = load_prompt_encoder(sources[name])
        llm_targets = {
            name: LLMTarget(ServeLLMBackend(h), encoders[sources[name]])
            for name, h in {**llms, **faults}.items()
        }
        emb_config = {e.id: e for e in config.embedders}
        emb_targets = {
            name: EmbedderTarget(
                ServeEmbeddingBackend(h),
                load_text_token_counter(sources[name]),
                emb_config[name].truncate,
            )
            for name, h in embedders.items()
        }
        rr_config = {r.id: r for r in config.rerankers}
        rr_targets = {
            name: RerankerTarget(
                ServeRerankBackend(h),
                load_text_token_counter(sources[name]),
                rr_config[name].kind,
                rr_config[name].max_documents,
                rr_config[name].truncate,
            )
            for name, h in rerankers.items()
        }
        self._generation = GenerationService(
            RoutePlanner(
                llm_targets,
                {a: m.id for m in config.models for a in m.aliases},
                config.routing,
                self._metrics.chain_events(),
                self._metrics.record_breaker,
            )
        )
        self._embeddings = EmbeddingService(
            ModelCatalog(emb_targets, {a: e.id for e in config.embedders for a in e.aliases})
        )
        self._rerank = RerankService(
            ModelCatalog(rr_targets, {a: r.id for r in config.rerankers for a in r.aliases})
        )
        quota = config.quota
        password = os.environ.get(quota.redis_password_env) if quota.redis_password_env else None
        redis = redis_client(quota.redis_url, password, quota.timeout_s)
        self._quota = QuotaPolicy(
            RedisQuotaStore(redis, quota.timeout_s), quota, self._metrics.record_quota_decision
        )
        self._created = int(time.time())
        self._cache: ResponseCache | None = None
        if config.cache is not None:
            embed: Embed | None = None
            if config.cache.embedder is not None:
                embed = partial(_embed_one, emb_targets[config.cache.embedder])
            self._cache = build_cache(config.cache, embed, self._metrics.cache_metrics())
            self._cache.start()  # Serve runs constructors on the replica's event loop

    def _principal(self, request: Request) -> Principal:
        principal = self._keys.authenticate(request.headers.get("authorization"))
        labels_of(request).tenant = principal.tenant.id
        return principal

    async def _settle(self, lease: Lease, used_tokens: int) -> None:
        # Shielded: a cancelled request (client gone) still returns its unused tokens.
        await asyncio.shield(self._quota.settle(lease, used_tokens))

    async def _finish(
        self, lease: Lease, lookup: Lookup | None, prepared: Prepared, labels: RequestLabels
    ) -> None:
        """Settle the quota and count the tokens, however the generation ended."""
        labels.model = prepared.served_by
        request_metrics().count_tokens(
            labels.tenant, labels.model, prepared.prompt_tokens, prepared.completion_tokens
        )
        await self._settle(lease, self._charge(lookup, prepared))

    async def _lookup(
        self,
        request: Request,
        principal: Principal,
        body: ChatCompletionRequest | CompletionRequest,
        prepared: Prepared,
    ) -> Lookup | None:
        """Consult the cache; on a hit the answer replays, on a miss it is recorded."""
        if self._cache is None:
            return None
        tenant = principal.tenant
        lookup = await self._cache.lookup(
            tenant.id,
            tenant.cache,
            prepared.model_id,
            body,
            prepared.max_tokens,
            request.headers.get("cache-control"),
        )
        if lookup.answer is not None:
            prepared.backend = ReplayBackend(
                lookup.answer, prepared.prompt_tokens, prepared.backend
            )
        elif lookup.store:
            cache = self._cache

            def remember(answer: CachedAnswer) -> None:
                if prepared.served_by == prepared.model_id:  # not a fallback's answer
                    cache.remember(lookup, answer)

            prepared.backend = RecordingBackend(prepared.backend, remember)
        return lookup

    def _charge(self, lookup: Lookup | None, prepared: Prepared) -> int:
        if self._cache is None or lookup is None:
            return prepared.used_tokens
        return self._cache.charge(lookup, prepared.used_tokens)

    async def _generate(
        self,
        request: Request,
        principal: Principal,
        body: ChatCompletionRequest | CompletionRequest,
        run: Run,
    ) -> Response:
        """Prepare, admit, consult the cache, run, and settle however it ends."""
        prepared = await self._generation.prepare(body, principal.may_use)
        labels = labels_of(request)
        labels.model = prepared.model_id
        self._metrics.record_route(prepared.decision, prepared.model_id)
        lease = await self._quota.admit(principal, "generation", prepared.reserved_tokens)
        # timed below the cache: a replayed answer is no model latency
        prepared.backend = TimedBackend(prepared.backend, lambda: prepared.served_by, labels)
        lookup: Lookup | None = None
        try:
            lookup = await self._lookup(request, principal, body, prepared)
            refusal = lookup.refusal() if lookup else None
            if refusal is not None:
                raise refusal
            result = await run(prepared)
        except BaseException:
            await self._finish(lease, lookup, prepared, labels)
            raise
        headers = {
            **lease.headers,
            **(lookup.headers() if lookup else {}),
            **_served_headers(prepared),
        }
        if isinstance(result, BaseModel):
            await self._finish(lease, lookup, prepared, labels)
            return _reply(result, headers)

        async def settled_stream() -> AsyncGenerator[str, None]:
            try:
                async for event in result:
                    yield event
            finally:
                await self._finish(lease, lookup, prepared, labels)

        return _reply(settled_stream(), headers)

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        principal = self._principal(request)
        body = parse_body(await request.body(), ChatCompletionRequest)
        run = partial(self._generation.chat, body)
        return await self._generate(request, principal, body, run)

    @api.post("/v1/completions")
    async def completions(self, request: Request) -> Response:
        principal = self._principal(request)
        body = parse_body(await request.body(), CompletionRequest)
        run = partial(self._generation.complete, body)
        return await self._generate(request, principal, body, run)

    async def _metered(
        self,
        request: Request,
        principal: Principal,
        route_class: RouteClass,
        prepared: PreparedEmbedding | PreparedRerank,
        call: Callable[[], Awaitable[R]],
        used_tokens: Callable[[R], int],
    ) -> tuple[R, Lease]:
        """Admit against the quota, call the model, settle to the tokens it read."""
        labels = labels_of(request)
        labels.model = prepared.model_id
        lease = await self._quota.admit(principal, route_class, prepared.reserved_tokens)
        used = 0  # nothing is charged unless the model answers
        try:
            result = await call()
            used = used_tokens(result)
        finally:
            await self._settle(lease, used)
            request_metrics().count_tokens(labels.tenant, labels.model, used, 0)
        return result, lease

    @api.post("/v1/embeddings")
    async def embeddings(self, request: Request) -> Response:
        principal = self._principal(request)
        body = parse_body(await request.body(), EmbeddingRequest)
        prepared = await self._embeddings.prepare(body, principal.may_use)
        response, lease = await self._metered(
            request,
            principal,
            "embeddings",
            prepared,
            partial(self._embeddings.embed, body, prepared),
            lambda r: r.usage.prompt_tokens,
        )
        return _reply(response, lease.headers)

    @api.post("/v1/rerank")
    async def rerank(self, request: Request) -> Response:
        principal = self._principal(request)
        body = parse_body(await request.body(), RerankRequest)
        pairs = [(body.query, doc) for doc in body.texts()]
        prepared = await self._rerank.prepare(body.model, pairs, principal.may_use)
        response, lease = await self._metered(
            request,
            principal,
            "rerank",
            prepared,
            partial(self._rerank.rerank, prepared, body.top_n, body.return_documents),
            lambda r: r.usage.total_tokens,
        )
        return _reply(response, lease.headers)

    @api.post("/rerank")
    async def tei_rerank(self, request: Request) -> Response:
        """Hugging Face text-embeddings-inference's rerank route, on the first reranker."""
        principal = self._principal(request)
        body = parse_body(await request.body(), TeiRerankRequest)
        model = self._rerank.default_model
        if model is None:
            raise NotFound("No reranker is deployed.")
        pairs = [(body.query, text) for text in body.texts]
        prepared = await self._rerank.prepare(model, pairs, principal.may_use, "texts")
        (ranks, _), lease = await self._metered(
            request,
            principal,
            "rerank",
            prepared,
            partial(self._rerank.tei_rerank, prepared, body.return_text),
            lambda r: r[1],
        )
        payload = "[" + ",".join(r.model_dump_json() for r in ranks) + "]"
        return Response(payload, media_type="application/json", headers=lease.headers)

    @api.post("/v1/score")
    async def score(self, request: Request) -> Response:
        principal = self._principal(request)
        body = parse_body(await request.body(), ScoreRequest)
        prepared = await self._rerank.prepare(body.model, body.pairs(), principal.may_use, "text_2")
        response, lease = await self._metered(
            request,
            principal,
            "rerank",
            prepared,
            partial(self._rerank.score, prepared),
            lambda r: r.usage.total_tokens,
        )
        return _reply(response, lease.headers)

    @api.get("/v1/models")
    async def models(self, request: Request) -> Response:
        principal = self._principal(request)
        names = [name for name in self._handles if principal.may_use(name)]
        auto = self._config.routing.auto
        if auto is not None and any(principal.may_use(m.id) for m in self._config.models):
            names.append(auto.name)  # routes among the models above
        cards = [ModelCard(id=name, created=self._created) for name in names]
        return _reply(ModelList(data=cards), {})

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


def llm_options(model: LLMModelConfig) -> dict[str, Any]:
    options = model.deployment.deployment_options(deployment_name("llm", model.id))
    if model.prefix_affinity is not None:
        options["request_router_config"] = model.prefix_affinity.request_router_config()
    return options


def load_config(args: Mapping[str, Any]) -> AppConfig:
    try:
        return AppConfig.model_validate(dict(args))
    except ValidationError as exc:
        raise ValueError(f"invalid raygate application config:\n{exc}") from None


def build_app(args: dict[str, Any]) -> Application:
    """The Serve application for `args` (serve_config.yaml's `args`); fails fast if invalid.

    Relative paths (model folders, the tenants file) are resolved against the working
    directory; keys given by environment variable are read and hashed here.
    """
    config = load_config(args)
    base = Path.cwd()
    tenants = load_tenants(base / config.auth.tenants_file)
    KeyRing(tenants, config.auth)  # fail now on an unknown anonymous tenant
    sources = {m.id: resolve_model_source(m.model, base) for m in config.models}
    sources |= {e.id: resolve_model_source(e.model, base) for e in config.embedders}
    sources |= {r.id: resolve_model_source(r.model, base) for r in config.rerankers}
    llms = {
        m.id: as_deployment(LLMDeployment).options(**llm_options(m)).bind(m, sources[m.id])
        for m in config.models
    }
    faults = {
        f.id: as_deployment(FaultyLLMDeployment)
        .options(**f.deployment.deployment_options(deployment_name("llm", f.id)))
        .bind(f, llms[f.wraps])
        for f in config.fault_injection
    }
    sources |= {f.id: sources[f.wraps] for f in config.fault_injection}
    embedders = {
        e.id: as_deployment(EmbedderDeployment)
        .options(**e.deployment.deployment_options(deployment_name("embedder", e.id)))
        .bind(e, sources[e.id])
        for e in config.embedders
    }
    rerankers = {
        r.id: as_deployment(RerankerDeployment)
        .options(**r.deployment.deployment_options(deployment_name("reranker", r.id)))
        .bind(r, sources[r.id])
        for r in config.rerankers
    }
    gateway = config.gateway.deployment.deployment_options("gateway")
    return (
        as_deployment(Gateway)
        .options(**gateway)
        .bind(config, tenants, sources, llms, embedders, rerankers, faults)
    )
