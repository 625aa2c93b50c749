"""The response cache as the gateway uses it: look up before the model, remember after.

Lookup order inside the request's partition (see keys.py): the exact tier (one Redis
round trip), then, if an embedder is configured, the semantic tier: embed the query,
search this replica's index, check the best candidates against the floor and the guards
(decision.py), read the chosen answer back from Redis. With `verification` (the
default) the candidate is then served only above the threshold learned from earlier
verifications (verified.py); otherwise the lookup is a `verify`: the model answers, and
its answer, once complete, is compared with the candidate's and counted in Redis. The
cache never fails a request: when Redis or the embedder misbehaves it steps aside (and
says so in a metric and the response header) and the request goes to the model.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from gateway.cache.config import CacheConfig, TenantCache, VerificationConfig
from gateway.cache.decision import decide
from gateway.cache.index import VectorIndex
from gateway.cache.judge import Embed, Judge, exact_judge
from gateway.cache.keys import CacheKey, cache_key, cacheable, deterministic
from gateway.cache.redis_store import (
    CachedAnswer,
    CacheStoreUnavailable,
    EntryEvent,
    GoneEntries,
    RedisCacheStore,
)
from gateway.cache.replay import RecordingBackend, ReplayBackend
from gateway.cache.verified import Evidence, choose, learned_threshold
from gateway.targets import GenerationBackend, Served
from schemas.errors import NotCached
from schemas.openai import ChatCompletionRequest, CompletionRequest

log = logging.getLogger("raygate.cache")

Status = Literal[
    "hit", "miss", "verify", "bypass", "refresh", "off", "uncacheable", "unavailable",
    "not_cached",
]  # fmt: skip


@dataclass
class CacheMetrics:
    """Where the cache reports (GatewayMetrics in the app, lists in tests)."""

    lookup: Callable[[str, str], None] = lambda tenant, result: None
    store: Callable[[str, str], None] = lambda tenant, result: None
    similarity: Callable[[float], None] = lambda value: None
    guard_reject: Callable[[str, str], None] = lambda tenant, guard: None
    entries: Callable[[int], None] = lambda count: None
    verification: Callable[[str, str], None] = lambda tenant, outcome: None


@dataclass(frozen=True)
class Verifying:
    """A candidate not served but verified: the model's answer is compared with it."""

    question: str  # the query text the model answered afresh
    candidate: CachedAnswer
    similarity: float
    scope: str  # whose evidence the outcome counts in (see VerificationConfig.scope)


@dataclass
class Lookup:
    """The outcome of a lookup, and what to store once the model has answered."""

    status: Status
    tenant: str
    key: CacheKey | None = None
    ttl_s: int = 0
    answer: CachedAnswer | None = None
    tier: Literal["exact", "semantic"] | None = None
    similarity: float | None = None
    vector: np.ndarray | None = field(default=None, repr=False)
    reason: str | None = None  # why not_cached: the status the lookup would have had
    verifying: Verifying | None = None
    semantic_timeout: bool = False  # the embedding took over embed_timeout_s: no semantic tier

    @property
    def hit(self) -> bool:
        return self.answer is not None

    @property
    def store(self) -> bool:
        return self.key is not None and self.status in ("miss", "verify", "refresh")

    def refusal(self) -> NotCached | None:
        """The error to answer with instead of calling the model, if any."""
        if self.status != "not_cached":
            return None
        return NotCached(f"No cached answer for this request (cache: {self.reason}).")

    def headers(self) -> dict[str, str]:
        out: dict[str, str] = {"x-raygate-cache": self.status}
        if self.tier is not None:
            out["x-raygate-cache-tier"] = self.tier
        if self.similarity is not None:
            out["x-raygate-cache-similarity"] = f"{self.similarity:.4f}"
        return out


def cache_control(header: str | None) -> frozenset[str]:
    return frozenset(d.strip().lower() for d in (header or "").split(",") if d.strip())


@dataclass(frozen=True)
class CacheQuery:
    """How one request asks the cache: its partition's scope and the client's
    Cache-Control directives. Part of a generation's plan, decided before admission."""

    tenant_id: str
    tenant: TenantCache
    model_id: str  # the model routed to; a fallback's answer is not stored under it
    max_tokens: int  # what the answer may use (after context checks)
    directives: frozenset[str] = frozenset()
    key_name: str | None = None  # the caller's key where the tenant partitions per key

    @classmethod
    def of(
        cls,
        tenant_id: str,
        tenant: TenantCache,
        model_id: str,
        max_tokens: int,
        cache_control_header: str | None = None,
        key_name: str | None = None,
    ) -> CacheQuery:
        """The query of a request by the key `key_name`; the key scopes the partition only
        where the tenant's cache is partitioned per key (`partition: key`)."""
        own = key_name if tenant.partition == "key" else None
        directives = cache_control(cache_control_header)
        return cls(tenant_id, tenant, model_id, max_tokens, directives, own)


def evidence_scope(verification: VerificationConfig | None, tenant_id: str, model_id: str) -> str:
    """The evidence scope of a tenant's requests to a model (see VerificationConfig.scope)."""
    owner = [model_id] if verification and verification.scope == "model" else []
    owner = owner or [tenant_id, model_id]
    return hashlib.sha256("\0".join(owner).encode()).hexdigest()[:32]


class ResponseCache:
    def __init__(
        self,
        config: CacheConfig,
        store: RedisCacheStore,
        follower: RedisCacheStore,
        embed: Embed | None,
        metrics: CacheMetrics | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        judge: Judge | None = None,
        draw: Callable[[], float] = random.random,
    ):
        """`follower` reads the entry stream (a connection that may block); `embed`
        turns a query into a vector (None: exact tier only); `judge` compares a
        verification's answers (default: exact); `draw` picks which would-be hits are
        still verified (uniform in [0, 1))."""
        self._config = config
        self._store = store
        self._follower = follower
        self._embed = embed
        self._metrics = metrics or CacheMetrics()
        self._monotonic = monotonic
        self._draw = draw
        self._judge = judge or exact_judge()
        self._index = VectorIndex(config.index_max_entries)
        self._down_until = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._sync_task: asyncio.Task[None] | None = None
        self.synced = asyncio.Event()  # set once the index holds what Redis held
        self._applied = asyncio.Condition()  # notified whenever the index changes

    # ------------------------------------------------------------------ lookup

    def _ttl(self, tenant: TenantCache) -> int:
        return tenant.ttl_s or self._config.ttl_s

    def _step_aside(self, exc: Exception) -> None:
        log.warning("cache store unavailable, stepping aside: %s", exc)
        self._down_until = self._monotonic() + self._config.retry_after_s

    async def _embed_within(self, query: str) -> np.ndarray:
        """The query's embedding; TimeoutError (the call cancelled) after embed_timeout_s."""
        assert self._embed is not None
        async with asyncio.timeout(self._config.embed_timeout_s):
            return await self._embed(query)

    async def lookup(
        self, query: CacheQuery, req: ChatCompletionRequest | CompletionRequest
    ) -> Lookup:
        """The cache's answer for `req`: a hit (with the answer), a miss to record, or why
        the cache stays out of it. Never raises for the cache's own failures: when Redis
        or the embedder misbehaves the lookup says `unavailable` (or skips the semantic
        tier) and the request goes to the model."""
        result = await self._lookup(query, req)
        if "only-if-cached" in query.directives and not result.hit:
            result = Lookup("not_cached", query.tenant_id, reason=result.status)
        label = f"hit_{result.tier}" if result.hit else result.status
        if result.semantic_timeout:
            label = "semantic_timeout"  # a miss: the semantic tier stepped aside
        self._metrics.lookup(query.tenant_id, label)
        return result

    def wrap(
        self, backend: GenerationBackend, lookup: Lookup, model_id: str, prompt_tokens: int
    ) -> GenerationBackend:
        """The cache's layer of the backend stack: a hit replays the stored answer (as
        `model_id`, to a prompt of `prompt_tokens`); a miss to store records the model's
        complete answer, unless a fallback gave it; otherwise `backend` itself."""
        if lookup.answer is not None:
            return ReplayBackend(lookup.answer, prompt_tokens, model_id)
        if not lookup.store:
            return backend

        def remember(served: Served, answer: CachedAnswer) -> None:
            if served.model_id == model_id:  # not a fallback's answer
                self.remember(lookup, answer)

        return RecordingBackend(backend, remember)

    async def _lookup(
        self, scope: CacheQuery, req: ChatCompletionRequest | CompletionRequest
    ) -> Lookup:
        tenant_id, tenant, max_tokens = scope.tenant_id, scope.tenant, scope.max_tokens
        directives = scope.directives
        if not tenant.enabled:
            return Lookup("off", tenant_id)
        if not (deterministic(req) or self._config.cache_sampled) or not cacheable(req):
            return Lookup("uncacheable", tenant_id)
        if "no-store" in directives:
            return Lookup("bypass", tenant_id)
        if self._monotonic() < self._down_until:
            return Lookup("unavailable", tenant_id)
        key = cache_key(tenant_id, scope.model_id, req, max_tokens, scope.key_name)
        found = Lookup("miss", tenant_id, key, self._ttl(tenant))
        if "no-cache" in directives:
            found.status = "refresh"
            return found
        try:
            exact = await self._store.get_exact(key.exact, key.partition)
            if exact is not None and exact[1].completion_tokens <= max_tokens:
                found.status, found.answer, found.tier = "hit", exact[1], "exact"
                found.similarity = 1.0
                return found
            if key.query is not None and self._embed is not None:
                await self._semantic(found, key.query, self.scope_of(scope))
        except CacheStoreUnavailable as exc:
            self._step_aside(exc)
            return Lookup("unavailable", tenant_id)
        return found

    def scope_of(self, query: CacheQuery) -> str:
        """Whose verification evidence `query`'s semantic hits rest on (a Redis key part)."""
        return evidence_scope(self._config.verification, query.tenant_id, query.model_id)

    async def evidence(self, query: CacheQuery) -> Evidence:
        """The verification outcomes counted so far for `query`'s scope. Raises
        CacheStoreUnavailable when Redis does not answer in time."""
        return Evidence.from_counts(await self._store.evidence(self.scope_of(query)))

    async def _semantic(self, found: Lookup, query: str, scope: str) -> None:
        assert self._embed is not None and found.key is not None
        try:
            found.vector = await self._embed_within(query)
        except TimeoutError:
            log.warning("cache embedding too slow, semantic tier skipped")
            found.semantic_timeout = True
            return
        except Exception as exc:  # the embedder is down or overloaded: exact tier only
            log.warning("cache embedding failed, semantic tier skipped: %s", exc)
            return
        key = found.key
        candidates = self._index.search(key.partition, found.vector, self._config.candidates)
        threshold, guards = self._config.similarity_threshold, self._config.guards
        decision = decide(query, candidates, threshold, guards)
        for guard in decision.rejected_by:
            self._metrics.guard_reject(found.tenant, guard)
        if decision.best_similarity is not None:
            self._metrics.similarity(decision.best_similarity)
        chosen = decision.chosen
        while chosen is not None:
            answer = await self._store.get(chosen.entry_id, key.partition)
            if answer is not None:
                if answer.completion_tokens <= key.max_tokens:
                    await self._serve_or_verify(found, query, answer, chosen.similarity, scope)
                return
            # Gone from Redis (evicted, expired, replaced): forget it here too and decide
            # again among the other candidates (at most `candidates` round trips).
            self._index.remove(chosen.entry_id)
            candidates = [c for c in candidates if c.entry_id != chosen.entry_id]
            chosen = decide(query, candidates, threshold, guards).chosen

    async def _serve_or_verify(
        self, found: Lookup, query: str, answer: CachedAnswer, similarity: float, scope: str
    ) -> None:
        found.tier, found.similarity = "semantic", similarity
        verification = self._config.verification
        if verification is not None:
            evidence = Evidence.from_counts(await self._store.evidence(scope))
            bound, confidence = verification.max_error_rate, verification.confidence
            threshold = learned_threshold(evidence, bound, confidence)
            if choose(similarity, threshold, verification.verify_share, self._draw()) == "verify":
                verifying = Verifying(query, answer, similarity, scope)
                found.status, found.verifying = "verify", verifying
                return
        found.status, found.answer = "hit", answer

    def charge(self, lookup: Lookup, tokens: int) -> int:
        """Tokens to charge the quota for a request that used `tokens`: a hit `hit_charge`
        of them, a refused `only-if-cached` probe (its prompt alone) `probe_charge` of them
        if the cache looked and found nothing, none if it did not look; others all."""
        if lookup.status == "not_cached":  # refused before the model was called
            looked = lookup.reason in ("miss", "verify")
            return math.ceil(tokens * self._config.probe_charge) if looked else 0
        return math.ceil(tokens * self._config.hit_charge) if lookup.hit else tokens

    # ------------------------------------------------------------------ storing

    def remember(self, lookup: Lookup, answer: CachedAnswer) -> None:
        """Store a complete answer in the background (the response is not delayed)."""
        if not lookup.store:
            return
        self._background(self._put(lookup, answer))
        if lookup.verifying is not None:
            self._background(self._verify(lookup.tenant, lookup.verifying, answer))

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _verify(self, tenant: str, verifying: Verifying, fresh: CachedAnswer) -> None:
        """Judge the model's fresh answer against the candidate's; count the outcome."""
        verification = self._config.verification
        assert verification is not None
        try:
            agreed = await self._judge(verifying.question, verifying.candidate, fresh)
            name = Evidence.field(verifying.similarity, agreed)
            await self._store.add_evidence(verifying.scope, name, verification.evidence_ttl_s)
        except Exception as exc:  # the judge or Redis failed: this outcome is not counted
            log.warning("cache verification not counted: %s", exc)
            self._metrics.verification(tenant, "failed")
            return
        self._metrics.verification(tenant, "agree" if agreed else "disagree")

    async def _put(self, lookup: Lookup, answer: CachedAnswer) -> None:
        key = lookup.key
        assert key is not None
        vector = lookup.vector
        if vector is None and key.query is not None and self._embed is not None:
            try:
                vector = await self._embed_within(key.query)
            except Exception as exc:  # TimeoutError included
                log.warning("cache embedding failed, stored for the exact tier only: %r", exc)
        try:
            await self._store.put(key.partition, key.exact, key.query, vector, answer, lookup.ttl_s)
        except CacheStoreUnavailable as exc:
            self._step_aside(exc)
            self._metrics.store(lookup.tenant, "failed")
            return
        self._metrics.store(lookup.tenant, "stored")

    async def drain(self) -> None:
        """Wait for background stores (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # ------------------------------------------------------------- replica sync

    def start(self) -> None:
        if self._embed is not None and self._sync_task is None:
            self._sync_task = asyncio.get_running_loop().create_task(self._follow())

    async def stop(self) -> None:
        """Stop following Redis and wait for background stores and verifications."""
        task, self._sync_task = self._sync_task, None
        # redis-py can swallow a cancellation that lands inside a blocking stream read
        # (the read then ends normally and the loop reads again), so cancel until it ends.
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.1)
        await self.drain()

    async def _rebuild(self) -> str:
        """Load every entry into a fresh index; returns the stream position it reflects."""
        after = await self._follower.last_event_id()
        index = VectorIndex(self._config.index_max_entries)
        async for batch in self._follower.scan_entries():
            index.add_many([e.entry for e in batch], np.stack([e.vector for e in batch]))
        self._index = index
        return after

    async def _changed(self) -> None:
        self._metrics.entries(len(self._index))
        async with self._applied:
            self._applied.notify_all()

    async def until(self, predicate: Callable[[ResponseCache], bool]) -> None:
        """Wait until the replica's index satisfies `predicate` (no polling)."""
        async with self._applied:
            await self._applied.wait_for(lambda: predicate(self))

    async def _apply(self, events: list[EntryEvent]) -> None:
        """Apply stream events in order; a put's entry is read back from Redis (events
        carry only ids), so an entry already gone is not added."""
        puts = [event.entry_id for event in events if event.op == "put"]
        stored = await self._follower.fetch_entries(puts)
        for event in events:
            if event.op == "del":
                self._index.remove(event.entry_id)
            elif (entry := stored.get(event.entry_id)) is not None:
                self._index.add(entry.entry, entry.vector)

    async def _follow(self) -> None:
        """Keep the index in step with Redis: rebuild it, then apply the entry stream and
        drop what Redis reports expired or evicted (subscribed before the rebuild, so that
        nothing removed meanwhile is missed); on any failure, start over."""
        while True:
            gone: GoneEntries | None = None
            try:
                if self._config.keyspace_events:
                    gone = await self._follower.watch_gone()
                after = await self._rebuild()
                self.synced.set()
                await self._changed()
                while True:
                    events = await self._follower.read_events(after, 1000)
                    if events:
                        after = events[-1][0]
                        await self._apply([event for _, event in events])
                    if gone is not None:
                        self._index.remove(*await gone.pending())
                    self._index.expire()
                    await self._changed()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis gone or restarted: rebuild when it is back
                self.synced.clear()
                log.warning("cache index sync lost (%s); rebuilding", exc)
                await asyncio.sleep(max(self._config.retry_after_s, 0.1))
            finally:
                if gone is not None:
                    await gone.close()

    @property
    def index_size(self) -> int:
        return len(self._index)
