"""The application config: the `args` of serve_config.yaml, validated once by build_app."""

from __future__ import annotations

from pydantic import Field, model_validator

from deployments.config import (
    EmbedderConfig,
    EncoderConfig,
    LLMModelConfig,
    RerankerConfig,
    ServeOptions,
    Strict,
)
from gateway.auth import AuthConfig
from gateway.cache.config import CacheConfig
from gateway.quota.policy import QuotaConfig


class GatewayOptions(Strict):
    """The ingress deployment."""

    deployment: ServeOptions = Field(
        default=ServeOptions(max_ongoing_requests=512, num_cpus=0.25),
        description="How Ray Serve runs the gateway.",
    )
    ready_timeout_s: float = Field(
        default=5.0, gt=0, description="Per-deployment time limit of the /ready probe."
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
        embedder = self.cache.embedder if self.cache else None
        if embedder is not None and embedder not in {e.id for e in self.embedders}:
            raise ValueError(f"cache.embedder '{embedder}' is not an embedder id")
        return self
