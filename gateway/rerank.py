"""POST /v1/rerank, /v2/rerank, /rerank and /v1/score without HTTP: route, check, score,
sort.

The reranker deployment scores (query, document) pairs; this service validates a
request against the model's limits (document count, tokens per input unless the
deployment truncates), counts tokens for the quota, and shapes the answer.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from gateway.embeddings import TokenCounter, refuse_over_long
from gateway.routing.catalog import ModelCatalog
from schemas.embeddings import ScoreResult
from schemas.errors import InvalidRequest
from schemas.rerank import (
    BilledUnits,
    MetaTokens,
    RerankDocument,
    RerankResponse,
    RerankResult,
    RerankUsage,
    RerankV2Meta,
    RerankV2Response,
    RerankV2Result,
    ScoreData,
    ScoreResponse,
    TeiRank,
)


class RerankBackend(Protocol):
    async def score(self, query: str, documents: list[str]) -> ScoreResult: ...

    async def max_input_tokens(self) -> int: ...


class DocumentTokens(TokenCounter, Protocol):
    def truncate(self, texts: list[str], max_tokens: int) -> list[str]:
        """Each text cut after its first `max_tokens` tokens (special tokens not counted)."""
        ...


@dataclass(frozen=True)
class RerankerTarget:
    backend: RerankBackend
    tokens: DocumentTokens
    kind: Literal["cross-encoder", "bi-encoder"]
    max_documents: int
    truncate: bool


@dataclass(frozen=True)
class PreparedRerank:
    model_id: str
    backend: RerankBackend
    pairs: list[tuple[str, str]]
    reserved_tokens: int  # counted without truncation: an upper bound of the real usage


def usage(result: ScoreResult) -> RerankUsage:
    tokens = int(sum(result.token_counts))
    return RerankUsage(prompt_tokens=tokens, total_tokens=tokens)


DOCS_PER_SEARCH = 100  # Cohere bills one search unit per query and up to 100 documents
CALLS_PER_REQUEST = 4  # reranker deployment calls one request has in flight at most


class RerankService:
    def __init__(
        self, catalog: ModelCatalog[RerankerTarget], clock: Callable[[], float] = time.time
    ):
        self._catalog = catalog
        self._clock = clock

    @property
    def default_model(self) -> str | None:
        """The model of requests that name none (TEI's /rerank): the first configured."""
        return next(iter(self._catalog.model_ids()), None)

    async def prepare(
        self,
        model: str,
        pairs: Sequence[tuple[str, str]],
        may_use: Callable[[str], bool] = lambda _: True,
        param: str = "documents",
        max_tokens_per_doc: int | None = None,
    ) -> PreparedRerank:
        """Route `model`, cut each document to `max_tokens_per_doc` tokens if given, and
        count the tokens. Raises ModelNotFound (404) for a model the caller cannot use and
        InvalidRequest (400, naming `param`) for too many documents or, where the
        deployment does not truncate, an input over the model's token limit."""
        route = self._catalog.resolve(model, may_use)
        target = route.target
        if len(pairs) > target.max_documents:
            raise InvalidRequest(
                f"{len(pairs)} {param}; this model takes at most {target.max_documents} "
                "per request",
                param=param,
            )
        queries = list(dict.fromkeys(q for q, _ in pairs))
        docs = [d for _, d in pairs]
        if max_tokens_per_doc is not None:
            docs = await asyncio.to_thread(target.tokens.truncate, docs, max_tokens_per_doc)
            pairs = [(q, d) for (q, _), d in zip(pairs, docs, strict=True)]
        counts = await asyncio.to_thread(target.tokens.counts, queries + docs)
        query_tokens = dict(zip(queries, counts[: len(queries)], strict=True))
        doc_tokens = counts[len(queries) :]
        # A cross-encoder reads [CLS] query [SEP] document [SEP]: both counts carry
        # [CLS] and [SEP], one of which the pair does not repeat.
        shared = 1 if target.kind == "cross-encoder" else 0
        pair_tokens = [
            query_tokens[q] + n - shared for (q, _), n in zip(pairs, doc_tokens, strict=True)
        ]
        if not target.truncate:
            limit = await target.backend.max_input_tokens()
            if target.kind == "cross-encoder":
                refuse_over_long(pair_tokens, limit, param, " (query and document together)")
            else:
                refuse_over_long(list(query_tokens.values()), limit, "query")
                refuse_over_long(doc_tokens, limit, param)
        return PreparedRerank(route.model_id, target.backend, list(pairs), sum(pair_tokens))

    async def _score(self, prepared: PreparedRerank) -> ScoreResult:
        """Score every pair: one deployment call per distinct query, at most
        CALLS_PER_REQUEST at a time (a many-to-many /v1/score of 1,000 distinct queries
        must not put 1,000 calls in the reranker's queue ahead of everyone else's)."""
        by_query: dict[str, list[int]] = {}
        for i, (query, _) in enumerate(prepared.pairs):
            by_query.setdefault(query, []).append(i)
        slots = asyncio.Semaphore(CALLS_PER_REQUEST)

        async def call(query: str, rows: list[int]) -> ScoreResult:
            async with slots:
                return await prepared.backend.score(query, [prepared.pairs[i][1] for i in rows])

        results = await asyncio.gather(*(call(q, rows) for q, rows in by_query.items()))
        scores = np.empty(len(prepared.pairs), dtype=np.float32)
        tokens = [0] * len(prepared.pairs)
        for rows, result in zip(by_query.values(), results, strict=True):
            scores[rows] = result.scores
            for row, n in zip(rows, result.token_counts, strict=True):
                tokens[row] = n
        return ScoreResult(scores, tokens)

    async def _ranked(
        self, prepared: PreparedRerank, top_n: int | None
    ) -> tuple[list[int], ScoreResult]:
        """The documents' indices by score, best first (the first `top_n`), and the scores."""
        result = await self._score(prepared)
        order = sorted(range(len(result.scores)), key=lambda i: -float(result.scores[i]))
        return order[: top_n or len(order)], result

    async def rerank(
        self, prepared: PreparedRerank, top_n: int | None, return_documents: bool
    ) -> RerankResponse:
        """Cohere v1's answer (and Jina's)."""
        order, result = await self._ranked(prepared, top_n)
        results = [
            RerankResult(
                index=i,
                relevance_score=float(result.scores[i]),
                document=RerankDocument(text=prepared.pairs[i][1]) if return_documents else None,
            )
            for i in order
        ]
        return RerankResponse(
            id=f"rerank-{uuid.uuid4().hex}",
            model=prepared.model_id,
            results=results,
            usage=usage(result),
        )

    async def rerank_v2(self, prepared: PreparedRerank, top_n: int | None) -> RerankV2Response:
        """Cohere v2's answer: no documents, and Cohere's `meta` with the tokens read."""
        order, result = await self._ranked(prepared, top_n)
        results = [RerankV2Result(index=i, relevance_score=float(result.scores[i])) for i in order]
        meta = RerankV2Meta(
            billed_units=BilledUnits(search_units=-(-len(prepared.pairs) // DOCS_PER_SEARCH)),
            tokens=MetaTokens(input_tokens=usage(result).total_tokens),
        )
        return RerankV2Response(id=f"rerank-{uuid.uuid4().hex}", results=results, meta=meta)

    async def tei_rerank(
        self, prepared: PreparedRerank, return_text: bool
    ) -> tuple[list[TeiRank], int]:
        """TEI's answer (a bare list) and the tokens it used."""
        response = await self.rerank(prepared, None, return_text)
        ranks = [
            TeiRank(
                index=r.index,
                score=r.relevance_score,
                text=r.document.text if r.document else None,
            )
            for r in response.results
        ]
        return ranks, response.usage.total_tokens

    async def score(self, prepared: PreparedRerank) -> ScoreResponse:
        result = await self._score(prepared)
        return ScoreResponse(
            id=f"score-{uuid.uuid4().hex}",
            created=int(self._clock()),
            model=prepared.model_id,
            data=[ScoreData(index=i, score=float(s)) for i, s in enumerate(result.scores)],
            usage=usage(result),
        )
