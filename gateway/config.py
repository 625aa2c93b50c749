"""The application config: the `args` of serve_config.yaml, validated once by build_app."""

from __future__ import annotations

from pydantic import Field, model_validator

from deployments.config import (
    EmbedderConfig,
    EncoderConfig,
    FaultConfig,
    LLMModelConfig,
    RerankerConfig,
    ServeOptions,
)
from gateway.auth import AuthConfig
from gateway.body import MAX_TEXT_CHARS
from gateway.cache.config import CacheConfig
from gateway.quota.config import QuotaConfig
from gateway.routing.config import RoutingConfig
from schemas.strict import Strict


class GatewayOptions(Strict):
    """The ingress deployment."""

    deployment: ServeOptions = Field(
        default=ServeOptions(max_ongoing_requests=512, num_cpus=0.25),
        description="How Ray Serve runs the gateway.",
    )
    ready_timeout_s: float = Field(
        default=5.0, gt=0, description="Per-deployment time limit of the /ready probe."
    )
    ready_cache_s: float = Field(
        default=1.0,
        ge=0,
        description="How long one /ready report is reused (it probes every deployment).",
    )
    max_text_chars: int = Field(
        default=MAX_TEXT_CHARS,
        ge=1,
        description="Longest string in a request body, checked before any tokenizer; longer: 400.",
    )
    max_choices: int = Field(
        default=8,
        ge=1,
        le=128,
        description="Largest `n` (answers per request) accepted; more: 400. Each choice "
        "is a sequence in the engine's batch and reserves max_tokens of the quota.",
    )
    max_body_bytes: int = Field(
        default=8 * 2**20,
        ge=1024,
        description="Largest request body read (Content-Length or streamed); larger: 413.",
    )


class AppConfig(Strict):
    """Everything build_app needs; unknown keys are errors."""

    models: list[LLMModelConfig] = Field(min_length=1, description="vLLM model deployments.")
    embedders: list[EmbedderConfig] = Field(
        default_factory=list, description="Embedding model deployments."
    )
    rerankers: list[RerankerConfig] = Field(
        default_factory=list, description="Reranker deployments (/v1/rerank, /rerank, /v1/score)."
    )
    fault_injection: list[FaultConfig] = Field(
        default_factory=list,
        description="Models that wrap a real one and fail on purpose (chaos drills, tests).",
    )
    routing: RoutingConfig = Field(
        default_factory=RoutingConfig,
        description="The `auto` model, fallback chains, breakers, timeouts, backpressure.",
    )
    gateway: GatewayOptions = Field(default_factory=GatewayOptions, description="The ingress.")
    auth: AuthConfig = Field(description="API keys and tenants.")
    quota: QuotaConfig = Field(default_factory=QuotaConfig, description="Quota store and policy.")
    cache: CacheConfig | None = Field(
        default=None, description="Response cache (exact + semantic); absent: no cache."
    )

    @model_validator(mode="after")
    def _unique_names(self) -> AppConfig:
        seen: set[str] = set()
        items: list[LLMModelConfig | EncoderConfig] = [
            *self.models,
            *self.embedders,
            *self.rerankers,
        ]
        for item in items:
            for name in [item.id, *item.aliases]:
                if name in seen:
                    raise ValueError(f"model name '{name}' is used twice")
                seen.add(name)
        llm_ids = {m.id for m in self.models}
        for fault in self.fault_injection:
            if fault.id in seen:
                raise ValueError(f"model name '{fault.id}' is used twice")
            seen.add(fault.id)
            if fault.wraps not in llm_ids:
                raise ValueError(
                    f"fault_injection '{fault.id}' wraps unknown model '{fault.wraps}'"
                )
        self._check_routing(llm_ids | {f.id for f in self.fault_injection}, seen)
        embedder = self.cache.embedder if self.cache else None
        if embedder is not None and embedder not in {e.id for e in self.embedders}:
            raise ValueError(f"cache.embedder '{embedder}' is not an embedder id")
        verification = self.cache.verification if self.cache else None
        if verification and verification.judge_model not in (None, *llm_ids):
            raise ValueError(f"cache judge_model '{verification.judge_model}' is not a model id")
        return self

    def _check_routing(self, generation_ids: set[str], all_names: set[str]) -> None:
        names = generation_ids | {a for m in self.models for a in m.aliases}
        routing = self.routing
        for field in ("fallbacks", "first_token_timeouts"):
            not_ids = sorted(set(getattr(routing, field)) - generation_ids)
            if not_ids:
                raise ValueError(f"routing.{field} keys must be model ids, not {not_ids}")
        used = [n for chain in routing.fallbacks.values() for n in chain]
        if routing.auto is not None:
            if routing.auto.name in all_names:
                raise ValueError(f"routing.auto.name '{routing.auto.name}' is also a model name")
            used += [routing.auto.default, *(rule.model for rule in routing.auto.rules)]
        unknown = sorted({n for n in used if n not in names})
        if unknown:
            raise ValueError(f"routing names unknown LLM models: {unknown}")
