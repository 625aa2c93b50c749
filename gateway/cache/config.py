"""Cache configuration: the application's `cache` section and a tenant's overrides."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from schemas.strict import Strict

Guard = Literal["negation", "numbers", "entities", "contrast"]


class TenantCache(Strict):
    """A tenant's cache settings in the tenants file; unset fields use the app's."""

    enabled: bool = Field(default=True, description="false: this tenant's requests skip it.")
    ttl_s: int | None = Field(default=None, ge=1, description="Lifetime of its entries.")
    partition: Literal["tenant", "key"] = Field(
        default="tenant",
        description="tenant: all its keys share the cache; key: each key sees only the "
        "answers given to that key (both tiers stay inside the key's partition).",
    )


class VerificationConfig(Strict):
    """Verified semantic hits (gateway/cache/verified.py): the threshold is learned from
    the model's own answers and keeps `max_error_rate`."""

    max_error_rate: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="Most share of served semantic hits whose answer the model would not "
        "have given (an upper confidence bound, at `confidence`, from the verifications).",
    )
    confidence: float = Field(default=0.95, gt=0.5, lt=1, description="Of that bound.")
    verify_share: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Share of would-be hits above the learned threshold still verified "
        "(answered by the model and compared) so the estimate follows the traffic.",
    )
    judge: Literal["exact", "embedding", "model"] = Field(
        default="exact",
        description="How a fresh answer is compared with the cached one: the same text and "
        "tool calls (exact), answer embeddings at least `agree_similarity` alike "
        "(embedding, with the cache's embedder), or `judge_model` asked whether they agree.",
    )
    agree_similarity: float = Field(
        default=0.95, gt=0, le=1, description="The `embedding` judge's least similarity."
    )
    judge_model: str | None = Field(
        default=None, description="The `model` judge: a model id from `models`."
    )

    @model_validator(mode="after")
    def _judge_has_model(self) -> VerificationConfig:
        if self.judge == "model" and self.judge_model is None:
            raise ValueError("verification.judge 'model' needs verification.judge_model")
        return self

    scope: Literal["tenant", "model"] = Field(
        default="tenant",
        description="Whose verifications a threshold is learned from: each tenant's own "
        "(per model; no tenant's traffic moves another's threshold) or every tenant's of "
        "the model (learns faster; only where all tenants are trusted).",
    )
    evidence_ttl_s: int = Field(
        default=7 * 24 * 3600,
        ge=60,
        description="Verification counts expire this long after their last update (a "
        "changed model or traffic starts learning again).",
    )


class CacheConfig(Strict):
    """The gateway's response cache (exact + semantic tiers); absent means off."""

    redis_url: str = Field(default="redis://127.0.0.1:6379/0", description="Cache store.")
    redis_password_env: str | None = Field(
        default=None, description="Environment variable holding the Redis password."
    )
    timeout_s: float = Field(
        default=0.05, gt=0, le=5, description="Per Redis call; slower counts as unavailable."
    )
    retry_after_s: float = Field(
        default=1.0,
        ge=0,
        description="After a Redis failure the cache steps aside for this long "
        "(requests go straight to the model, paying no timeouts).",
    )
    key_prefix: str = Field(default="raygate:cache", min_length=1, description="Redis keys.")
    ttl_s: int = Field(default=3600, ge=1, description="Default lifetime of an entry.")
    embedder: str | None = Field(
        default=None,
        description="Embedder id (from `embedders`) for the semantic tier; unset: exact only.",
    )
    embed_timeout_s: float = Field(
        default=0.5,
        gt=0,
        description="Longest wait for a query's embedding; slower, the semantic tier steps "
        "aside for that request (the exact tier still answers; an answer stored after it "
        "is embedded again, within the same limit, or kept for the exact tier only).",
    )
    similarity_threshold: float = Field(
        default=0.88,
        gt=0,
        le=1,
        description="Least cosine similarity of a semantic candidate: with `verification`, "
        "the floor below which a candidate is not even verified; without it, the threshold "
        "served from (no error bound; see the evaluation).",
    )
    verification: VerificationConfig | None = Field(
        default_factory=VerificationConfig,
        description="Verified semantic hits under an error bound; null: a static threshold "
        "and the guards decide alone (no bound).",
    )
    candidates: int = Field(
        default=4, ge=1, le=64, description="Nearest entries checked against the guards."
    )
    guards: list[Guard] = Field(
        default=["negation", "numbers", "entities", "contrast"],
        description="Lexical checks a semantic candidate must pass to be served or "
        "verified: a cheap pre-filter, not what the error bound rests on.",
    )
    cache_sampled: bool = Field(
        default=False,
        description="Also cache answers sampled with temperature > 0 and no seed.",
    )
    hit_charge: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Share of a hit's tokens charged to the token quota (0: free, 1: full). "
        "The request itself always counts against the request-rate limits.",
    )
    probe_charge: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Share of its prompt tokens charged to the token quota for an "
        "`only-if-cached` probe that finds nothing (it was still looked up, embedded and "
        "searched); a probe the cache did not look up (off, uncacheable, Redis down) is free.",
    )
    stream_maxlen: int = Field(
        default=100_000,
        ge=100,
        description="Approximate length of the entry event stream. An event holds only an "
        "entry's id (about 100 bytes in Redis, whatever the entry's size), so this also "
        "bounds the stream's memory.",
    )
    index_max_entries: int = Field(
        default=100_000,
        ge=1,
        description="Most entries in each replica's semantic index; beyond it the oldest "
        "leave the index (they stay in Redis for the exact tier until their TTL). An entry "
        "takes about 2 bytes per embedding dimension plus its query.",
    )
    keyspace_events: bool = Field(
        default=True,
        description="Follow Redis's expired and evicted key events so that replicas drop "
        "entries Redis removed at once; turns on `notify-keyspace-events Exe` with CONFIG "
        "SET where that is off (where it is refused, lookups drop such entries instead).",
    )

    @model_validator(mode="after")
    def _embedding_judge_has_embedder(self) -> CacheConfig:
        if self.verification and self.verification.judge == "embedding" and not self.embedder:
            raise ValueError("cache.verification.judge 'embedding' needs cache.embedder")
        return self
