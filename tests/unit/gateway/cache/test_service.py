"""ResponseCache's own logic over an in-memory store: the embedding deadline, per-key
partitions, what a lookup costs."""

from __future__ import annotations

import asyncio

import numpy as np

from gateway.cache.config import CacheConfig, TenantCache
from gateway.cache.redis_store import CachedAnswer
from gateway.cache.service import CacheMetrics, CacheQuery, Lookup, ResponseCache
from schemas.openai import ChatCompletionRequest
from tests.fakes import InMemoryCacheStore


class StalledEmbedder:
    """An embedder that never answers (until its call is cancelled)."""

    def __init__(self) -> None:
        self.calls = 0
        self.cancelled = 0

    async def __call__(self, text: str) -> np.ndarray:
        self.calls += 1
        try:
            await asyncio.Event().wait()  # never set
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        raise AssertionError("unreachable")


def ask(text: str) -> ChatCompletionRequest:
    body = {"model": "m", "temperature": 0, "messages": [{"role": "user", "content": text}]}
    return ChatCompletionRequest.model_validate(body)


def query(tenant: TenantCache | None = None, key: str | None = None) -> CacheQuery:
    return CacheQuery.of("t", tenant or TenantCache(), "m", 64, key_name=key)


async def test_a_stalled_embedder_costs_a_lookup_no_more_than_the_timeout() -> None:
    store, embed, lookups = InMemoryCacheStore(), StalledEmbedder(), []
    metrics = CacheMetrics(lookup=lambda _, result: lookups.append(result))
    config = CacheConfig(embedder="e", embed_timeout_s=0.05)
    cache = ResponseCache(config, store, store, embed, metrics)
    # The embedder never answers: only the timeout ends the lookup (or the test fails here).
    found = await asyncio.wait_for(cache.lookup(query(), ask("Hi")), 5)
    assert (found.status, found.answer, found.store) == ("miss", None, True)
    assert found.headers() == {"x-raygate-cache": "miss"}
    assert lookups == ["semantic_timeout"] and embed.cancelled == embed.calls == 1
    # Stored after the answer: embedded again, timed out again, kept for the exact tier.
    cache.remember(found, CachedAnswer("Hello.", 2))
    await asyncio.wait_for(cache.drain(), 5)
    assert [(vector, answer.text) for _, answer, vector in store.entries.values()] == [
        (None, "Hello.")
    ]
    assert embed.cancelled == embed.calls == 2
    # The exact tier still answers; it never waits for the embedder.
    hit = await asyncio.wait_for(cache.lookup(query(), ask("Hi")), 5)
    assert hit.tier == "exact" and lookups[-1] == "hit_exact" and embed.calls == 2


async def test_an_embedder_within_the_timeout_is_used() -> None:
    store, lookups = InMemoryCacheStore(), []

    async def embed(text: str) -> np.ndarray:
        return np.ones(4, dtype=np.float32)

    metrics = CacheMetrics(lookup=lambda _, result: lookups.append(result))
    cache = ResponseCache(CacheConfig(embedder="e"), store, store, embed, metrics)
    found = await cache.lookup(query(), ask("Hi"))
    assert found.status == "miss" and found.vector is not None and lookups == ["miss"]
    cache.remember(found, CachedAnswer("Hello.", 2))
    await cache.drain()
    assert [vector is not None for _, _, vector in store.entries.values()] == [True]


async def test_keys_of_a_tenant_partitioned_per_key_never_share_answers() -> None:
    cache = ResponseCache(CacheConfig(), InMemoryCacheStore(), InMemoryCacheStore(), None)
    per_key, shared = TenantCache(partition="key"), TenantCache()
    assert query(shared, "a").key_name is None and query(per_key, "a").key_name == "a"
    for tenant in (per_key, shared):
        first = await cache.lookup(query(tenant, "a"), ask(f"Hi {tenant.partition}"))
        cache.remember(first, CachedAnswer("Hello.", 2))
    await cache.drain()
    assert (await cache.lookup(query(per_key, "a"), ask("Hi key"))).hit
    assert (await cache.lookup(query(per_key, "b"), ask("Hi key"))).status == "miss"
    assert (await cache.lookup(query(shared, "b"), ask("Hi tenant"))).hit


async def test_an_only_if_cached_probe_that_finds_nothing_is_charged_probe_charge() -> None:
    async def probe(cache: ResponseCache, tenant: TenantCache | None = None) -> Lookup:
        scope = CacheQuery.of("t", tenant or TenantCache(), "m", 64, "only-if-cached")
        return await cache.lookup(scope, ask("Hi"))

    def cache(**config: float) -> ResponseCache:
        return ResponseCache(CacheConfig.model_validate(config), store, store, None)

    store = InMemoryCacheStore()
    missed = await probe(cache())
    assert (missed.status, missed.reason) == ("not_cached", "miss")
    assert cache().charge(missed, 37) == 37  # probe_charge 1: its 37 prompt tokens
    assert cache(probe_charge=0.25).charge(missed, 37) == 10  # rounded up
    assert cache(probe_charge=0).charge(missed, 37) == 0
    # Not looked up at all (the tenant's cache is off): nothing to charge for.
    off = await probe(cache(), TenantCache(enabled=False))
    assert (off.status, off.reason, cache().charge(off, 37)) == ("not_cached", "off", 0)
    # A miss that ran the model is charged all it used; a probe that hits, hit_charge.
    full = cache()
    first = await full.lookup(query(), ask("Hi"))
    full.remember(first, CachedAnswer("Hello.", 2))
    await full.drain()
    assert full.charge(first, 39) == 39
    hit = await probe(full)
    assert hit.hit and full.charge(hit, 39) == 0 and cache(hit_charge=0.5).charge(hit, 39) == 20
