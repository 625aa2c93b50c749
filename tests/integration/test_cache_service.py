"""ResponseCache against a real Redis and the real MiniLM embedder (no Ray).

Each test uses its own key prefix, so tests share the Redis server but not entries.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.build import build_cache
from gateway.cache.config import CacheConfig, TenantCache
from gateway.cache.redis_store import CachedAnswer
from gateway.cache.service import CacheMetrics, CacheQuery, Embed, Lookup, ResponseCache
from loadtests.eval_cache import load_pairs
from schemas.openai import ChatCompletionRequest
from tests.integration.conftest import ROOT, RedisServer, wait_until

ON = TenantCache()


@pytest.fixture(scope="module")
def embed() -> Embed:
    from deployments.embedder import SentenceEmbedder

    model = SentenceEmbedder(str(ROOT / "models" / "all-MiniLM-L6-v2"), "cpu", True, 32)

    async def one(text: str) -> np.ndarray:
        return (await asyncio.to_thread(model.encode, [text])).vectors[0]

    return one


class Recorder(CacheMetrics):
    def __init__(self) -> None:
        self.lookups: list[str] = []
        self.stores: list[str] = []
        self.rejects: list[str] = []
        super().__init__(
            lookup=lambda _, result: self.lookups.append(result),
            store=lambda _, result: self.stores.append(result),
            guard_reject=lambda _, guard: self.rejects.append(guard),
        )


class Make:
    """Builds started caches (one per gateway replica) sharing one test's key prefix."""

    def __init__(self, redis_url: str, embed: Embed):
        self.prefix = f"test:{uuid.uuid4().hex}"
        self.made: list[ResponseCache] = []
        self._url, self._embed = redis_url, embed

    def __call__(
        self, url: str | None = None, metrics: CacheMetrics | None = None, **config: Any
    ) -> ResponseCache:
        cfg = CacheConfig(
            redis_url=url or self._url, key_prefix=self.prefix, embedder="e", **config
        )
        cache = build_cache(cfg, self._embed, metrics or CacheMetrics())
        cache.start()
        self.made.append(cache)
        return cache


@pytest.fixture
async def make(redis_server: RedisServer, embed: Embed) -> AsyncIterator[Make]:
    maker = Make(redis_server.url, embed)
    yield maker
    for cache in maker.made:
        await cache.stop()


def ask(text: str, system: str | None = None, **fields: Any) -> ChatCompletionRequest:
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": text}
    ]
    body = {"model": "m", "messages": messages, "temperature": 0, **fields}
    return ChatCompletionRequest.model_validate(body)


async def lookup(
    cache: ResponseCache,
    req: ChatCompletionRequest,
    tenant: str = "t1",
    settings: TenantCache = ON,
    max_tokens: int = 64,
    cache_control: str | None = None,
) -> Lookup:
    return await cache.lookup(CacheQuery.of(tenant, settings, "m", max_tokens, cache_control), req)


async def store(cache: ResponseCache, req: ChatCompletionRequest, text: str, **kw: Any) -> Lookup:
    """What the gateway does on a miss: look up, then remember the model's answer."""
    found = await lookup(cache, req, **kw)
    cache.remember(found, CachedAnswer(text, completion_tokens=len(text.split())))
    await cache.drain()
    return found


async def indexed(cache: ResponseCache, size: int) -> None:
    await asyncio.wait_for(cache.until(lambda c: c.index_size == size), 10)


async def test_exact_then_semantic_hits(make: Make) -> None:
    cache = make()
    first = await store(cache, ask("How do I reset my password?"), "Click 'Forgot password'.")
    assert first.status == "miss" and first.headers() == {"x-raygate-cache": "miss"}
    exact = await lookup(cache, ask("How do I  reset my password? "))
    assert exact.tier == "exact" and exact.answer is not None
    assert exact.answer.text == "Click 'Forgot password'."
    await indexed(cache, 1)
    semantic = await lookup(cache, ask("How can I reset my password?"))
    assert semantic.tier == "semantic" and semantic.similarity is not None
    assert 0.88 <= semantic.similarity < 1.0
    assert semantic.headers()["x-raygate-cache-tier"] == "semantic"
    assert (await lookup(cache, ask("What is the capital of France?"))).status == "miss"


async def test_an_entry_written_by_one_replica_is_found_by_another(make: Make) -> None:
    writer, reader = make(), make()
    await asyncio.wait_for(reader.synced.wait(), 10)
    started = time.perf_counter()
    await store(writer, ask("What are your opening hours?"), "9 to 5.")
    await indexed(reader, 1)
    print(f"visible on the other replica after {(time.perf_counter() - started) * 1e3:.1f} ms")
    found = await lookup(reader, ask("What are your opening hours today?"))
    assert found.tier == "semantic"
    # A replica started later loads what is already there.
    late = make()
    await asyncio.wait_for(late.synced.wait(), 10)
    assert late.index_size == 1


async def test_tenants_and_conversations_never_share_entries(make: Make) -> None:
    cache = make()
    await store(cache, ask("Tell me a joke.", system="You are terse."), "No.", tenant="a")
    await indexed(cache, 1)
    assert (await lookup(cache, ask("Tell me a joke.", system="You are terse."), "b")).status == (
        "miss"
    )
    assert (await lookup(cache, ask("Tell me a joke.", system="You are kind."), "a")).status == (
        "miss"
    )
    assert (await lookup(cache, ask("Tell me a joke.", system="You are terse."), "a")).hit


async def test_near_misses_are_turned_down_by_guards(make: Make) -> None:
    metrics = Recorder()
    cache = make(metrics=metrics)
    await store(cache, ask("Can I get a refund?"), "Yes, within 30 days.")
    await indexed(cache, 1)
    found = await lookup(cache, ask("Can I not get a refund?"))
    assert found.status == "miss" and metrics.rejects == ["negation"]


async def test_ttl_expiry(make: Make, redis_server: RedisServer) -> None:
    cache = make()
    short = TenantCache(ttl_s=1)
    await store(cache, ask("What is 2+2?"), "4", settings=short)
    await indexed(cache, 1)
    r = redis_server.client()
    keys = [k for k in r.keys(f"{make.prefix}:*") if b":entry:" in k or b":exact:" in k]
    assert len(keys) == 2 and all(0 < r.pttl(k) <= 1000 for k in keys)
    wait_until(lambda: not any(r.exists(k) for k in keys), 5, "entry expired in Redis")
    assert (await lookup(cache, ask("What is 2+2?"), settings=short)).status == "miss"
    await indexed(cache, 0)  # swept from the replica's index too


async def test_refresh_replaces_and_too_long_answers_miss(make: Make) -> None:
    cache = make()
    await store(cache, ask("Name a colour."), "Red.")
    refreshed = await store(cache, ask("Name a colour."), "Blue is one.", cache_control="no-cache")
    assert refreshed.status == "refresh"
    found = await lookup(cache, ask("Name a colour."))
    assert found.answer is not None and found.answer.text == "Blue is one."
    await indexed(cache, 1)  # the replaced entry left the index
    assert (await lookup(cache, ask("Name a colour."), max_tokens=2)).status == "miss"


async def test_what_is_never_looked_up_or_stored(make: Make) -> None:
    cache = make()
    sampled = await lookup(cache, ask("Hi", temperature=0.7))
    assert sampled.status == "uncacheable" and not sampled.store
    assert (await lookup(cache, ask("Hi"), cache_control="no-store")).status == "bypass"
    assert (await lookup(cache, ask("Hi"), settings=TenantCache(enabled=False))).status == "off"
    refused = await lookup(cache, ask("Hi"), cache_control="only-if-cached")
    assert refused.status == "not_cached" and refused.reason == "miss"
    assert refused.refusal() is not None and cache.charge(refused, 100) == 0
    sampled_on = make(cache_sampled=True)
    assert (await lookup(sampled_on, ask("Hi", temperature=0.7))).status == "miss"


async def test_redis_down_steps_aside(make: Make, tmp_path: Path) -> None:
    down = RedisServer(tmp_path)  # a port where nothing listens (yet)
    metrics = Recorder()
    cache = make(url=down.url, metrics=metrics, retry_after_s=60)
    first = await lookup(cache, ask("Hi"))
    second = await lookup(cache, ask("Hi"))
    assert (first.status, second.status) == ("unavailable", "unavailable")
    assert not first.store and metrics.lookups == ["unavailable", "unavailable"]


async def test_evaluation_set_through_redis(make: Make) -> None:
    """Every near miss of the evaluation set is turned down at the default threshold."""
    cache = make()
    pairs = load_pairs()
    for i, pair in enumerate(pairs):
        await store(cache, ask(pair.stored), f"answer {i}", tenant=f"pair-{i}")
    await indexed(cache, len(pairs))
    served = [
        (await lookup(cache, ask(pair.asked), tenant=f"pair-{i}")).hit
        for i, pair in enumerate(pairs)
    ]
    false_hits = [p for p, hit in zip(pairs, served, strict=True) if hit and p.expect == "miss"]
    hits = [p for p, hit in zip(pairs, served, strict=True) if hit and p.expect == "hit"]
    assert false_hits == []
    assert len(hits) / sum(p.expect == "hit" for p in pairs) >= 0.8
