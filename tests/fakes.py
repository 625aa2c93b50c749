"""The unit tests' fakes, one of each: each implements the interface the real part has.

`ScriptedModel` is a model backend (a Serve handle in the app) that answers, fails or
stalls on cue; `WordCounter` stands in for a tokenizer; `InMemoryQuotaStore` is the
quota store over the reference bucket arithmetic; `RecordingCache` is the response cache
as the generation path sees it, `InMemoryCacheStore` the store under the real one. All
that log, log into one `Log` so tests can check the order of events.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

import numpy as np

from deployments.prompt import DEFAULT_PROMPT, PromptOptions
from gateway.cache.redis_store import CachedAnswer, RedisCacheStore
from gateway.cache.replay import RecordingBackend, ReplayBackend
from gateway.cache.service import CacheQuery, Lookup
from gateway.quota.local_store import LocalQuotaStore
from gateway.quota.redis_store import AdmitResult, BucketCharge, LeaseSet, QuotaStoreUnavailable
from gateway.targets import GenerationBackend, Served
from schemas.embeddings import EmbeddingResult, ScoreResult
from schemas.generation import FinishReason, GenerationChunk, GenerationRequest
from schemas.openai import ChatCompletionRequest, CompletionRequest

Body = ChatCompletionRequest | CompletionRequest

Log = list[str]


class ScriptedModel:
    """Streams `pieces`, one token each (its id: the piece's first character's code point);
    `fail_before` raises before the first chunk, `fail_after` after that many chunks,
    `stall` waits forever for its first chunk (until cancelled), `delay_s` is how long the
    first chunk takes; `chunks`, if given, are streamed as they are instead of `pieces`."""

    def __init__(
        self,
        pieces: tuple[str, ...] = ("a", "b", "c"),
        fail_before: BaseException | None = None,
        fail_after: int | None = None,
        stall: bool = False,
        context: int = 2048,
        replica: str = "r1",
        delay_s: float = 0.0,
        finish: FinishReason = "stop",
        prompt_tokens: int = 5,
        log: Log | None = None,
        chunks: tuple[GenerationChunk, ...] | None = None,
    ):
        self.pieces = pieces
        self.chunks = chunks
        self.fail_before = fail_before
        self.fail_after = fail_after
        self.stall = stall
        self.context = context
        self.replica = replica
        self.delay_s = delay_s
        self.finish = finish
        self.prompt_tokens = prompt_tokens
        self.log = log if log is not None else []
        self.calls: list[GenerationRequest] = []
        self.called = asyncio.Event()  # set by the first call
        self.closed = 0

    async def max_model_len(self) -> int:
        return self.context

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        self.calls.append(request)
        self.log.append("model")
        self.called.set()
        try:
            if self.stall:
                await asyncio.Event().wait()  # never set: only a timeout ends it
            await asyncio.sleep(self.delay_s)
            if self.fail_before is not None:
                raise self.fail_before
            for chunk in self.chunks or ():
                yield chunk
            for i, piece in enumerate(() if self.chunks else self.pieces):
                if self.fail_after is not None and i == self.fail_after:
                    raise RuntimeError("engine died mid-stream")
                last = i == len(self.pieces) - 1
                yield GenerationChunk(
                    piece,
                    self.prompt_tokens,
                    i + 1,
                    self.finish if last else None,
                    self.replica if i == 0 else None,
                    (ord(piece[0]),) if piece else (),
                )
        finally:
            self.closed += 1


class WordCounter:
    """One token per word of each message (and 1 per message), or per word of a prompt;
    each token's id is the length of its text (decoded: that many `x`s). `encoded` counts
    the requests it read."""

    def __init__(self) -> None:
        self.encoded = 0

    def encode(
        self, request: GenerationRequest, options: PromptOptions = DEFAULT_PROMPT
    ) -> list[int]:
        self.encoded += 1
        if request.prompt_token_ids is not None:
            return list(request.prompt_token_ids)
        if request.prompt is not None:
            return [len(word) for word in request.prompt.split()]
        assert request.messages is not None
        texts = [str(m["content"]) for m in request.messages]
        return [len(text) for text in texts for _ in range(1 + len(text.split()))]

    def decode(self, ids: Sequence[int], param: str = "tokens") -> str:
        return " ".join(self.token_strings(ids))

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        return ["x" * n for n in ids]


@dataclass
class Clock:
    now_ms: int = 1_000_000

    def __call__(self) -> int:
        return self.now_ms


class InMemoryQuotaStore(LocalQuotaStore):
    """The quota store in memory (the local store), with a switch that takes it down."""

    def __init__(self, clock: Clock, down: bool = False, log: Log | None = None):
        super().__init__(clock)
        self.clock = clock
        self.down = down
        self.log: Log = [] if log is None else log

    async def admit(
        self,
        lease_id: str,
        lease_ttl_ms: int,
        leases: Sequence[LeaseSet],
        charges: Sequence[BucketCharge],
    ) -> AdmitResult:
        self.log.append("admit" if leases else "reserve")  # the lease's first call, or tokens
        if self.down:
            raise QuotaStoreUnavailable("down")
        return await super().admit(lease_id, lease_ttl_ms, leases, charges)

    async def settle(
        self, lease_id: str, lease_keys: Sequence[str], refunds: Sequence[BucketCharge]
    ) -> bool:
        self.log.append("settle")
        if self.down:
            raise QuotaStoreUnavailable("down")
        return await super().settle(lease_id, lease_keys, refunds)


@dataclass
class RecordingCache:
    """The response cache as the generation path uses it, in memory: `answers` by the
    request's last user text; misses are recorded into `answers`."""

    log: Log = field(default_factory=list)
    answers: dict[str, CachedAnswer] = field(default_factory=dict)
    hit_charge: float = 0.0
    probe_charge: float = 1.0
    _asked: dict[int, str] = field(default_factory=dict)  # id(lookup) -> its text

    async def lookup(
        self, query: CacheQuery, req: ChatCompletionRequest | CompletionRequest
    ) -> Lookup:
        self.log.append("cache")
        text = (
            req.messages[-1].text() if isinstance(req, ChatCompletionRequest) else str(req.prompt)
        )
        answer = self.answers.get(text)
        if answer is not None:
            return Lookup("hit", query.tenant_id, answer=answer, tier="exact")
        if "only-if-cached" in query.directives:
            return Lookup("not_cached", query.tenant_id, reason="miss")
        miss = Lookup("miss", query.tenant_id)
        self._asked[id(miss)] = text
        return miss

    def wrap(
        self, backend: GenerationBackend, lookup: Lookup, model_id: str, prompt_tokens: int
    ) -> GenerationBackend:
        if lookup.answer is not None:
            return ReplayBackend(lookup.answer, prompt_tokens, model_id)
        text = self._asked.pop(id(lookup))

        def remember(served: Served, answer: CachedAnswer) -> None:
            self.log.append(f"store:{served.model_id}")
            self.answers[text] = answer

        return RecordingBackend(backend, remember)

    def charge(self, lookup: Lookup, tokens: int) -> int:
        if lookup.status == "not_cached":  # refused before any model was called
            return math.ceil(tokens * self.probe_charge) if lookup.reason == "miss" else 0
        return int(tokens * self.hit_charge) if lookup.hit else tokens


class InMemoryCacheStore(RedisCacheStore):
    """The cache store's entry reads and writes in memory (no TTL, no event stream: a
    ResponseCache over it is not started, so its semantic index stays empty)."""

    def __init__(self) -> None:  # no Redis client
        self.entries: dict[int, tuple[str, CachedAnswer, np.ndarray | None]] = {}
        self.exact: dict[str, int] = {}

    async def put(
        self,
        partition: str,
        exact_key: str,
        query: str | None,
        vector: np.ndarray | None,
        answer: CachedAnswer,
        ttl_s: int,
    ) -> int:
        entry_id = len(self.entries) + 1
        self.entries[entry_id] = (partition, answer, vector)
        self.exact[exact_key] = entry_id
        return entry_id

    async def get_exact(self, exact_key: str, partition: str) -> tuple[int, CachedAnswer] | None:
        entry_id = self.exact.get(exact_key)
        answer = None if entry_id is None else await self.get(entry_id, partition)
        return None if entry_id is None or answer is None else (entry_id, answer)

    async def get(self, entry_id: int, partition: str) -> CachedAnswer | None:
        stored, answer, _ = self.entries.get(entry_id, ("", None, None))
        return answer if stored == partition else None


class TextWordCounter:
    """Stands in for an encoder's tokenizer: words + 2 ([CLS] and [SEP]) per text; a
    truncated text keeps its first words."""

    def counts(self, texts: list[str]) -> list[int]:
        return [len(t.split()) + 2 for t in texts]

    def truncate(self, texts: list[str], max_tokens: int) -> list[str]:
        return [" ".join(t.split()[:max_tokens]) for t in texts]


class FakeEmbedder:
    """Vector i of a call is [len(text), i, 0, ...]: lets tests see order and content."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def max_input_tokens(self) -> int:
        return 8

    async def embed(self, texts: list[str]) -> EmbeddingResult:
        self.calls.append(texts)
        vectors = np.zeros((len(texts), 4), dtype=np.float32)
        for i, text in enumerate(texts):
            vectors[i, :2] = (len(text), i)
        return EmbeddingResult(vectors, [len(t.split()) for t in texts])


class FakeReranker:
    """Score = words the document shares with the query; tokens = words + 2."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.in_flight = self.most_in_flight = 0

    async def score(self, query: str, documents: list[str]) -> ScoreResult:
        self.calls.append((query, documents))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0)  # a real call yields to the others while it runs
        self.in_flight -= 1
        words = set(query.lower().split())
        scores = np.array(
            [len(words & set(d.lower().split())) for d in documents], dtype=np.float32
        )
        return ScoreResult(scores, [len(d.split()) + 2 for d in documents])

    async def max_input_tokens(self) -> int:
        return 6
