"""From config to a running gateway: the Serve graph and the gateway's services.

`build_app(args)` is what serve_config.yaml's `import_path` names: it validates the args
once, binds one deployment per model and the gateway ingress over their handles.
`build_services(...)` turns the config and the deployments (as backends) into the
services the HTTP routes call; it needs no Ray, so tests call it with fakes.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

from fastapi import FastAPI
from pydantic import ValidationError
from ray import serve
from ray.serve import Application, Deployment
from ray.serve.handle import DeploymentHandle

from deployments.config import LLMModelConfig, resolve_model_source
from deployments.embedder import EmbedderDeployment
from deployments.faults import FaultyLLMDeployment
from deployments.llm import LLMDeployment
from deployments.prompt import PromptEncoder, load_prompt_encoder, load_text_token_counter
from deployments.reranker import RerankerDeployment
from deployments.synthetic import SyntheticLLMDeployment
from gateway.api import make_api
from gateway.auth import KeyRing, TenantsFile, load_tenants
from gateway.backends import Backends, Handles, Probe, serve_backends
from gateway.cache.config import CacheConfig
from gateway.cache.judge import Judge, embedding_judge, exact_judge, model_judge
from gateway.cache.redis_store import RedisCacheStore
from gateway.cache.service import CacheMetrics, Embed, ResponseCache
from gateway.config import AppConfig
from gateway.directory import AutoName, ModelDirectory
from gateway.embeddings import EmbedderTarget, EmbeddingService
from gateway.generation.service import GenerationService
from gateway.metrics import GatewayMetrics
from gateway.quota.policy import QuotaPolicy
from gateway.quota.redis_store import open_quota_store
from gateway.quota.replicas import ReplicaCount
from gateway.redis_conn import redis_client
from gateway.rerank import RerankerTarget, RerankService
from gateway.routing.catalog import ModelCatalog
from gateway.routing.planner import RoutePlanner
from gateway.targets import LLMTarget, ModelBackend
from gateway.tokenize import TokenizeService
from schemas.embeddings import EmbeddingResult


@dataclass(frozen=True)
class Services:
    """Everything the HTTP routes of one gateway replica call."""

    config: AppConfig
    keys: KeyRing
    metrics: GatewayMetrics
    quota: QuotaPolicy
    cache: ResponseCache | None
    generation: GenerationService
    embeddings: EmbeddingService
    rerank: RerankService
    probes: Mapping[str, Probe]  # every deployment's health check, by model id
    models: ModelDirectory  # what /v1/models lists and retrieves
    tokens: TokenizeService


def load_config(args: Mapping[str, Any]) -> AppConfig:
    try:
        return AppConfig.model_validate(dict(args))
    except ValidationError as exc:
        raise ValueError(f"invalid raygate application config:\n{exc}") from None


def _password(env: str | None) -> str | None:
    return os.environ.get(env) if env else None


def build_cache(
    config: CacheConfig,
    embed: Embed | None,
    metrics: CacheMetrics,
    models: Mapping[str, ModelBackend] | None = None,
) -> ResponseCache:
    password = _password(config.redis_password_env)
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
    return ResponseCache(
        config, store, follower, embed, metrics, judge=_judge(config, embed, models)
    )


def _judge(
    config: CacheConfig, embed: Embed | None, models: Mapping[str, ModelBackend] | None
) -> Judge:
    verification = config.verification
    if verification is None or verification.judge == "exact":
        return exact_judge()
    if verification.judge == "embedding":
        assert embed is not None  # the config needs an embedder for this judge
        return embedding_judge(embed, verification.agree_similarity)
    assert verification.judge_model is not None  # checked by the config
    return model_judge((models or {})[verification.judge_model])


async def _embed_one(target: EmbedderTarget, text: str) -> Any:
    result: EmbeddingResult = await target.backend.embed([text])
    return result.vectors[0]


@dataclass(frozen=True)
class _Targets:
    llms: dict[str, LLMTarget]
    embedders: dict[str, EmbedderTarget]
    rerankers: dict[str, RerankerTarget]


def _absolute_templates(config: AppConfig, base: Path) -> AppConfig:
    """The config with each model's chat template file made absolute against `base`
    (replicas need not share the working directory); raises ValueError if one is missing."""
    models = []
    for m in config.models:
        if m.chat_template is not None:
            path = (base / m.chat_template).resolve()
            if not path.is_file():
                raise ValueError(f"models[{m.id}].chat_template: no file '{path}'")
            m = m.model_copy(update={"chat_template": str(path)})
        models.append(m)
    return config.model_copy(update={"models": models})


def _targets(config: AppConfig, sources: Mapping[str, str], backends: Backends) -> _Targets:
    """Each backend with its model's tokenizer (loaded from `sources`: id -> folder)."""
    # One encoder per model folder and template: loaded once, and fallbacks that share it
    # reuse the ids.
    models = {m.id: m for m in config.models}
    models |= {f.id: models[f.wraps] for f in config.fault_injection}  # same engine
    encoders: dict[tuple[str, str | None], PromptEncoder] = {}
    for name in backends.llms:
        key = (sources[name], models[name].chat_template)
        encoders.setdefault(key, load_prompt_encoder(*key))
    return _Targets(
        llms={
            name: LLMTarget(
                b,
                encoders[sources[name], models[name].chat_template],
                weights=sources[name],
                tools=models[name].tool_parser is not None,
            )
            for name, b in backends.llms.items()
        },
        embedders={
            e.id: EmbedderTarget(
                backends.embedders[e.id], load_text_token_counter(sources[e.id]), e.truncate
            )
            for e in config.embedders
        },
        rerankers={
            r.id: RerankerTarget(
                backends.rerankers[r.id],
                load_text_token_counter(sources[r.id]),
                r.kind,
                r.max_documents,
                r.truncate,
            )
            for r in config.rerankers
        },
    )


def _quota(config: AppConfig, metrics: GatewayMetrics) -> QuotaPolicy:
    q = config.quota
    store = open_quota_store(q, _password(q.redis_password_env))
    replicas = ReplicaCount(store, config.gateway.deployment.num_replicas or 1, q.heartbeat_s)
    return QuotaPolicy(store, q, metrics.record_quota_decision, replicas)


def build_services(
    config: AppConfig,
    tenants: TenantsFile,
    sources: Mapping[str, str],
    backends: Backends,
    metrics: GatewayMetrics,
    created: int | None = None,
) -> Services:
    """The services of one gateway replica. Loads the models' tokenizers and makes the
    Redis clients (which connect on first use). `created` is the `created` of every model
    card (None: now); build_app fixes it once, so that every replica tells the same."""
    targets = _targets(config, sources, backends)
    quota = _quota(config, metrics)
    cache = None
    if config.cache is not None:
        embedder = config.cache.embedder
        embed = None if embedder is None else partial(_embed_one, targets.embedders[embedder])
        llms = {model_id: target.backend for model_id, target in targets.llms.items()}
        cache = build_cache(config.cache, embed, metrics.cache_metrics(), llms)
    llm_aliases = {a: m.id for m in config.models for a in m.aliases}
    planner = RoutePlanner(
        targets.llms,
        llm_aliases,
        config.routing,
        metrics.chain_events(),
        metrics.record_breaker,
    )
    emb_aliases = {a: e.id for e in config.embedders for a in e.aliases}
    rr_aliases = {a: r.id for r in config.rerankers for a in r.aliases}
    return Services(
        config=config,
        keys=KeyRing(tenants, config.auth),
        metrics=metrics,
        quota=quota,
        cache=cache,
        generation=GenerationService(
            planner, quota, cache, metrics, max_choices=config.gateway.max_choices
        ),
        embeddings=EmbeddingService(ModelCatalog(targets.embedders, emb_aliases)),
        rerank=RerankService(ModelCatalog(targets.rerankers, rr_aliases)),
        probes=backends.probes,
        models=_directory(
            config,
            backends.probes,
            {**llm_aliases, **emb_aliases, **rr_aliases},
            int(time.time()) if created is None else created,
        ),
        tokens=TokenizeService(planner),
    )


def _directory(
    config: AppConfig, model_ids: Iterable[str], aliases: Mapping[str, str], created: int
) -> ModelDirectory:
    auto = config.routing.auto
    named = None if auto is None else AutoName(auto.name, aliases.get(auto.default, auto.default))
    return ModelDirectory(model_ids, aliases, named, created)


# ------------------------------------------------------------------------ the Serve graph


class Gateway:
    """The ingress deployment's class (build_app applies `serve.ingress`): in each replica it
    builds the services over the deployments' handles, then the HTTP app over them."""

    def __init__(
        self,
        config: AppConfig,
        tenants: TenantsFile,
        sources: Mapping[str, str],
        llms: Mapping[str, DeploymentHandle],
        embedders: Mapping[str, DeploymentHandle],
        rerankers: Mapping[str, DeploymentHandle],
        created: int,
    ):
        backends = serve_backends(
            Handles(llms, embedders, rerankers), config.embedders, config.gateway.ready_timeout_s
        )
        self._services = build_services(
            config, tenants, sources, backends, GatewayMetrics(), created
        )
        if self._services.cache is not None:
            self._services.cache.start()  # Serve runs constructors on the replica's loop

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Serve's hook, called in the replica after the constructor: the HTTP app."""
        return make_api(self._services)


def as_deployment(decorated: Any) -> Deployment:
    """`serve.deployment` turns a class into a Deployment; its type stub keeps the class."""
    return cast(Deployment, decorated)


def deployment_name(kind: str, model_id: str) -> str:
    return f"{kind}-{re.sub(r'[^A-Za-z0-9_-]', '_', model_id)}"


def llm_options(model: LLMModelConfig) -> dict[str, Any]:
    options = model.deployment.deployment_options(deployment_name("llm", model.id))
    if model.prefix_affinity is not None:
        options["request_router_config"] = model.prefix_affinity.request_router_config()
    return options


def build_app(args: dict[str, Any]) -> Application:
    """The Serve application for `args` (serve_config.yaml's `args`); fails fast if invalid.

    Relative paths (model folders, the tenants file) are resolved against the working
    directory; keys given by environment variable are read and hashed here.
    """
    base = Path.cwd()
    config = _absolute_templates(load_config(args), base)
    tenants = load_tenants(base / config.auth.tenants_file)
    KeyRing(tenants, config.auth)  # fail now on an unknown anonymous tenant
    sources = {m.id: resolve_model_source(m.model, base) for m in config.models}
    sources |= {e.id: resolve_model_source(e.model, base) for e in config.embedders}
    sources |= {r.id: resolve_model_source(r.model, base) for r in config.rerankers}
    llms = {
        m.id: as_deployment(LLMDeployment if m.synthetic is None else SyntheticLLMDeployment)
        .options(**llm_options(m))
        .bind(m, sources[m.id])
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
        .options(**e.deployment_options(deployment_name("embedder", e.id)))
        .bind(e, sources[e.id])
        for e in config.embedders
    }
    rerankers = {
        r.id: as_deployment(RerankerDeployment)
        .options(**r.deployment_options(deployment_name("reranker", r.id)))
        .bind(r, sources[r.id])
        for r in config.rerankers
    }
    gateway = as_deployment(serve.deployment(serve.ingress()(Gateway)))
    return gateway.options(**config.gateway.deployment.deployment_options("gateway")).bind(
        config, tenants, sources, {**llms, **faults}, embedders, rerankers, int(time.time())
    )
