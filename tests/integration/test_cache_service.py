"""ResponseCache against a real Redis and the real MiniLM embedder (no Ray).

Each test uses its own key prefix, so tests share the Redis server but not entries.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.build import build_cache
from gateway.cache.config import CacheConfig, TenantCache
from gateway.cache.redis_store import CachedAnswer, RedisCacheStore
from gateway.cache.service import CacheMetrics, CacheQuery, Embed, Lookup, ResponseCache
from gateway.cache.verified import Evidence
from gateway.redis_conn import redis_client
from loadtests.cache_eval_set import load_groups, load_old_pairs, load_split
from schemas.openai import ChatCompletionRequest
from tests.integration.conftest import ROOT, RedisServer, local_args, wait_until

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
        self.verifications: list[str] = []
        super().__init__(
            lookup=lambda _, result: self.lookups.append(result),
            store=lambda _, result: self.stores.append(result),
            guard_reject=lambda _, guard: self.rejects.append(guard),
            verification=lambda _, outcome: self.verifications.append(outcome),
        )


class Make:
    """Builds started caches (one per gateway replica) sharing one test's key prefix."""

    def __init__(self, redis_url: str, embed: Embed):
        self.prefix = f"test:{uuid.uuid4().hex}"
        self.made: list[ResponseCache] = []
        self.url, self._embed = redis_url, embed

    def __call__(
        self,
        url: str | None = None,
        metrics: CacheMetrics | None = None,
        embed: Embed | None = None,
        **config: Any,
    ) -> ResponseCache:
        # Without `verification` a test gets the static threshold: the tests of the index
        # and the tiers see semantic hits at once; verified hits have tests of their own.
        config.setdefault("verification", None)
        # The in-process CPU embedder on a loaded machine can take longer than the
        # profile's 0.5 s; these tests are of the tiers (the deadline has unit tests).
        config.setdefault("embed_timeout_s", 10.0)
        settings = {"redis_url": url or self.url, "key_prefix": self.prefix, "embedder": "e"}
        cfg = CacheConfig(**(settings | config))  # embedder=None: the exact tier alone
        embedder = (embed or self._embed) if cfg.embedder is not None else None
        cache = build_cache(cfg, embedder, metrics or CacheMetrics())
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


@asynccontextmanager
async def direct_store(
    url: str, prefix: str, stream_maxlen: int = 100_000
) -> AsyncIterator[RedisCacheStore]:
    """The store without a cache around it: entries with vectors made by the test."""
    client = redis_client(url, None, 5.0)
    try:
        yield RedisCacheStore(client, 5.0, prefix, stream_maxlen)
    finally:
        await client.aclose()


def random_units(count: int, dimensions: int = 384) -> np.ndarray:
    rows = np.random.default_rng(7).standard_normal((count, dimensions)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def entry_keys(client: Any, prefix: str) -> list[bytes]:
    return list(client.scan_iter(match=f"{prefix}:entry:*"))


async def test_exact_then_semantic_hits(make: Make) -> None:
    cache = make()
    first = await store(cache, ask("How do I reset my password?"), "Click 'Forgot password'.")
    assert first.status == "miss" and first.headers() == {"x-raygate-cache": "miss"}
    exact = await lookup(cache, ask("How do I reset my password?"))
    assert exact.tier == "exact" and exact.answer is not None
    assert exact.answer.text == "Click 'Forgot password'."
    await indexed(cache, 1)
    semantic = await lookup(cache, ask("How can I reset my password?"))
    assert semantic.tier == "semantic" and semantic.similarity is not None
    assert 0.88 <= semantic.similarity < 1.0
    assert semantic.headers()["x-raygate-cache-tier"] == "semantic"
    assert (await lookup(cache, ask("What is the capital of France?"))).status == "miss"


async def test_the_exact_tier_keys_on_the_text_as_sent(make: Make) -> None:
    cache = make(embedder=None)  # the exact tier alone: nothing else can match
    code = "Does this print 2?\nfor x in [1, 2]:\n    if x > 1:\n        print(x)\n    pass"
    await store(cache, ask("Simplify x\u00b2 + x\u00b2."), "2x\u00b2")
    await store(cache, ask(code), "Yes.")
    assert (await lookup(cache, ask("Simplify x\u00b2 + x\u00b2."))).tier == "exact"
    assert (await lookup(cache, ask(code))).tier == "exact"
    others = [
        "Simplify x2 + x2.",  # NFKC's reading of the first
        "Simplify x\u00b2 + x\u00b2. ",
        "Simplify  x\u00b2 + x\u00b2.",
        code.replace("\n    pass", "\n        pass"),  # pass inside the if
    ]
    for other in others:
        assert (await lookup(cache, ask(other))).status == "miss", other


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


async def test_a_cold_cache_verifies_instead_of_serving(make: Make) -> None:
    """Nothing learned yet: a semantic candidate is not served, not even the inverted
    question at 0.978; the model answers, and its answer, compared with the candidate's,
    is counted for the tenant's threshold."""
    metrics = Recorder()
    cache = make(metrics=metrics, verification={})
    answer = "Yes, if one party consents."
    await store(cache, ask("Is it legal to record a phone call?"), answer)
    await indexed(cache, 1)
    probe = await lookup(
        cache, ask("Is recording a phone call legal?"), cache_control="only-if-cached"
    )
    assert (probe.status, probe.reason) == ("not_cached", "verify")  # not served: a 504
    assert cache.charge(probe, 9) == 9  # it looked (probe_charge 1 of its prompt tokens)
    found = await lookup(cache, ask("Is recording a phone call legal?"))
    assert (found.status, found.hit, found.store) == ("verify", False, True)
    assert found.headers()["x-raygate-cache"] == "verify" and found.similarity is not None
    cache.remember(found, CachedAnswer(answer, 6))  # the model agrees
    await cache.drain()
    near = await lookup(cache, ask("Is it illegal to record a phone call?"))
    assert near.status == "verify" and near.similarity is not None and near.similarity > 0.97
    cache.remember(near, CachedAnswer("Only without anyone's consent.", 5))
    await cache.drain()
    assert metrics.verifications == ["agree", "disagree"]
    assert metrics.lookups == ["miss", "not_cached", "verify", "verify"]
    counted = await cache.evidence(CacheQuery.of("t1", ON, "m", 64))
    assert counted.verifications == 2
    await indexed(cache, 3)  # the fresh answers are stored as entries of their own


async def test_the_embedding_judge_and_a_judge_that_fails(make: Make, embed: Embed) -> None:
    """Answers compared by their embeddings: alike agree, unlike disagree; when the judge
    cannot embed, the outcome is not counted and nothing else fails."""

    async def judged(text: str) -> np.ndarray:
        if text.startswith("BROKEN"):
            raise RuntimeError("embedder down")
        return await embed(text)

    metrics = Recorder()
    cache = make(metrics=metrics, embed=judged, verification={"judge": "embedding"})
    await store(cache, ask("Is it legal to record a phone call?"), "Yes, with consent.")
    await indexed(cache, 1)
    asked = {  # each a new wording (a repeated one would be an exact hit of the last)
        "Is recording a phone call legal?": "Yes, with consent!",
        "Is it lawful to record a phone call?": "Paris is the capital of France.",
        "Can I legally record a phone call?": "BROKEN",
    }
    for question, fresh in asked.items():
        found = await lookup(cache, ask(question))
        assert found.status == "verify"
        cache.remember(found, CachedAnswer(fresh, 4))
        await cache.drain()
    assert metrics.verifications == ["agree", "disagree", "failed"]
    assert (await cache.evidence(CacheQuery.of("t1", ON, "m", 64))).verifications == 2


async def test_replicas_serve_from_the_threshold_learned_together(make: Make) -> None:
    """The evidence is in Redis: once it certifies a similarity for a tenant, every
    replica serves from there; another tenant's threshold is its own."""
    replicas = [make(verification={"verify_share": 0}) for _ in range(2)]
    for tenant in ("t1", "t2"):
        await store(replicas[0], ask("How do I reset my password?"), "Click.", tenant=tenant)
    for replica in replicas:
        await indexed(replica, 2)
    paraphrase = ask("How can I reset my password?")
    first = await lookup(replicas[1], paraphrase)
    assert first.status == "verify" and first.similarity is not None
    t1 = CacheQuery.of("t1", ON, "m", 64)
    async with direct_store(make.url, make.prefix) as direct:
        field = Evidence.field(first.similarity, agreed=True)
        for _ in range(299):  # a Clopper-Pearson bound under 1% at 95%, no disagreement
            await direct.add_evidence(replicas[0].scope_of(t1), field, 3600)
    for replica in replicas:
        served = await lookup(replica, paraphrase)
        assert (served.status, served.tier) == ("hit", "semantic") and served.answer is not None
    assert (await lookup(replicas[0], paraphrase, tenant="t2")).status == "verify"


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
    assert refused.refusal() is not None and cache.charge(refused, 100) == 100  # probe_charge
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
    pairs = load_old_pairs()
    for i, pair in enumerate(pairs):
        await store(cache, ask(pair.stored), f"answer {i}", tenant=f"pair-{i}")
    await indexed(cache, len(pairs))
    served = [
        (await lookup(cache, ask(pair.asked), tenant=f"pair-{i}")).hit
        for i, pair in enumerate(pairs)
    ]
    false_hits = [p for p, hit in zip(pairs, served, strict=True) if hit and not p.agree]
    hits = [p for p, hit in zip(pairs, served, strict=True) if hit and p.agree]
    assert false_hits == []
    assert len(hits) / sum(p.agree for p in pairs) >= 0.8


async def test_the_default_profile_on_the_dev_split(make: Make) -> None:
    """The local profile's cache settings replaying the dev split through Redis, the
    model's fresh answers played by the labels (one answer per group; each near miss its
    own): nothing wrong is ever served, and every candidate not served is verified and
    counted in the evidence as the labels say."""
    profile = CacheConfig.model_validate(local_args()["cache"])
    settings = profile.model_dump(exclude={"redis_url", "key_prefix", "embedder"})
    metrics = Recorder()
    cache = make(metrics=metrics, **settings)
    dev = set(load_split()["dev"])
    asked: list[tuple[str, str]] = []  # (text, the answer the model gives it)
    for group in (g for g in load_groups() if g.id in dev):
        asked += [(text, f"answer {group.id}") for text in group.members]
        asked += [(n.text, f"answer {group.id}/{i}") for i, n in enumerate(group.near_misses)]
    stored = served = 0
    wrong: list[str] = []
    for text, answer in asked:
        found = await lookup(cache, ask(text))
        if found.hit:
            assert found.answer is not None
            served += 1
            if found.answer.text != answer:
                wrong.append(text)
            continue
        cache.remember(found, CachedAnswer(answer, 2))
        await cache.drain()
        stored += 1
        await indexed(cache, stored)
    verified = metrics.lookups.count("verify")
    print(f"dev split: {len(asked)} lookups, {served} served, {verified} verified")
    assert wrong == []
    assert metrics.verifications.count("disagree") > 0  # near misses met, verified, not served
    assert len(metrics.verifications) == verified > 0
    evidence = await cache.evidence(CacheQuery.of("t1", ON, "m", 64))
    assert evidence.verifications == verified


async def test_the_event_stream_is_bounded_in_bytes(make: Make, redis_server: RedisServer) -> None:
    """Events carry only entry ids: however large the entries, the stream's memory is
    bounded by its length alone (the queries, vectors and answers stay in the entries)."""
    question = "Please summarise the following document for me. " * 400  # 20 kB
    async with direct_store(redis_server.url, make.prefix, stream_maxlen=100) as store:
        for i, vector in enumerate(random_units(600)):
            answer = CachedAnswer(f"answer {i}", 2)
            await store.put("p", f"key-{i}", f"{question} {i}", vector, answer, 3600)
    r = redis_server.client()
    events = f"{make.prefix}:events"
    length, used = r.xlen(events), r.memory_usage(events, samples=0)
    print(f"stream after 600 entries of 20 kB: {length} events, {used} bytes")
    assert length <= 100 + 100  # MAXLEN ~ trims whole nodes of 100 events
    assert used < 200 * 100  # under 100 bytes an event


async def test_a_lookup_repairs_the_index_when_its_candidates_are_gone(
    make: Make, redis_server: RedisServer
) -> None:
    """An entry Redis no longer has (here deleted behind the cache's back, as eviction
    would without key events) leaves the index at the first lookup that picks it, and
    the lookup goes on to the next candidate instead of missing."""
    cache = make(keyspace_events=False)
    await store(cache, ask("How do I reset my password?"), "first")
    # no-cache: stored even though the first one would answer it
    await store(cache, ask("How can I reset my password?"), "second", cache_control="no-cache")
    await indexed(cache, 2)
    found = await lookup(cache, ask("How could I reset my password?"))
    assert found.tier == "semantic" and found.answer is not None
    served = found.answer.text
    other = "second" if served == "first" else "first"
    r = redis_server.client()
    [gone] = [k for k in entry_keys(r, make.prefix) if served in r.hget(k, "answer").decode()]
    r.delete(gone)
    again = await lookup(cache, ask("How could I reset my password?"))
    assert again.answer is not None and again.answer.text == other
    assert cache.index_size == 1
    r.delete(*entry_keys(r, make.prefix))
    assert (await lookup(cache, ask("How could I reset my password?"))).status == "miss"
    assert cache.index_size == 0


async def test_entries_redis_evicts_leave_every_index(make: Make, tmp_path: Path) -> None:
    """Redis evicting entries under maxmemory tells every replica (key events), so an
    index does not keep what Redis dropped until its TTL."""
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        r = redis.client()
        r.config_set("maxmemory-policy", "volatile-lru")  # only keys with a TTL go
        replicas = [make(url=redis.url), make(url=redis.url)]
        for replica in replicas:
            await asyncio.wait_for(replica.synced.wait(), 10)
        async with direct_store(redis.url, make.prefix) as store:
            for i, vector in enumerate(random_units(50)):
                answer = CachedAnswer("a", 1)
                await store.put("p", f"key-{i}", f"question {i}", vector, answer, 3600)
        for replica in replicas:
            await indexed(replica, 50)
        r.config_set("maxmemory", r.info("memory")["used_memory"] + 256 * 1024)
        filler = 0
        while len(entry_keys(r, make.prefix)) > 25:  # until Redis evicted half the entries
            r.set(f"filler:{filler}", b"x" * 8192, ex=3600)
            filler += 1
            assert filler < 10_000, "Redis did not evict"

        def holds_what_redis_holds(cache: ResponseCache) -> bool:
            return cache.index_size == len(entry_keys(r, make.prefix))

        for replica in replicas:
            await asyncio.wait_for(replica.until(holds_what_redis_holds), 10)
        flags = r.config_get("notify-keyspace-events")["notify-keyspace-events"]
        assert set("Exe") <= set(flags)  # turned on by the cache
    finally:
        redis.stop()


async def test_where_config_is_refused_the_index_still_follows(
    make: Make, redis_server: RedisServer
) -> None:
    """A Redis user without CONFIG (as on managed services): no key events, the replica
    syncs all the same (TTL sweeps and lookups drop what Redis dropped)."""
    r = redis_server.client()
    user = f"nocfg-{uuid.uuid4().hex[:8]}"
    r.acl_setuser(
        user, enabled=True, nopass=True, commands=["+@all", "-config"], keys=["*"], channels=["*"]
    )
    url = f"redis://{user}@127.0.0.1:{redis_server.port}/0"
    writer, reader = make(url=url), make(url=url)
    await asyncio.wait_for(reader.synced.wait(), 10)
    await store(writer, ask("What are your opening hours?"), "9 to 5.")
    await indexed(reader, 1)
    assert (await lookup(reader, ask("What are your opening hours today?"))).tier == "semantic"
