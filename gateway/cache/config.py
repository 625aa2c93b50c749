"""Cache configuration: the application's `cache` section and a tenant's overrides."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

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
        description="Least cosine similarity of a semantic candidate (see the evaluation).",
    )
    candidates: int = Field(
        default=4, ge=1, le=64, description="Nearest entries checked against the guards."
    )
    guards: list[Guard] = Field(
        default=["negation", "numbers", "entities", "contrast"],
        description="Lexical checks a semantic candidate must pass to be served.",
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
