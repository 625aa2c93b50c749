"""POST /v1/embeddings without HTTP: route, call the embedder, encode the vectors."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from gateway.routing.catalog import ModelCatalog
from schemas.embeddings import EmbeddingResult
from schemas.errors import InvalidRequest
from schemas.openai import Embedding, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage


class EmbeddingBackend(Protocol):
    async def embed(self, texts: list[str]) -> EmbeddingResult: ...

    async def max_input_tokens(self) -> int: ...


class TokenCounter(Protocol):
    """Tokens per text under the model's tokenizer, before any truncation."""

    def counts(self, texts: list[str]) -> list[int]: ...


@dataclass(frozen=True)
class EmbedderTarget:
    backend: EmbeddingBackend
    tokens: TokenCounter
    truncate: bool = True  # over-long inputs: truncated by the model, or refused here


def refuse_over_long(counts: list[int], limit: int, param: str, what: str = "") -> None:
    """400 for the first input over the model's token limit (truncation switched off)."""
    for i, n in enumerate(counts):
        if n > limit:
            raise InvalidRequest(
                f"{param}[{i}] has {n} tokens; this model reads at most {limit}{what}. "
                "Shorten it (this deployment does not truncate).",
                param=param,
            )


@dataclass(frozen=True)
class PreparedEmbedding:
    model_id: str
    backend: EmbeddingBackend
    texts: list[str]
    reserved_tokens: int  # counted without truncation: an upper bound of the real usage


def encode_vector(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        # OpenAI's base64 format: the little-endian float32 bytes of the vector.
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector.tolist()]


class EmbeddingService:
    def __init__(self, catalog: ModelCatalog[EmbedderTarget]):
        self._catalog = catalog

    async def prepare(
        self, req: EmbeddingRequest, may_use: Callable[[str], bool] = lambda _: True
    ) -> PreparedEmbedding:
        route = self._catalog.resolve(req.model, may_use)
        texts = req.texts()
        if any(not t for t in texts):
            raise InvalidRequest("input must not contain empty strings", param="input")
        target = route.target
        counts = await asyncio.to_thread(target.tokens.counts, texts)
        if not target.truncate:
            refuse_over_long(counts, await target.backend.max_input_tokens(), "input")
        return PreparedEmbedding(route.model_id, target.backend, texts, sum(counts))

    async def embed(self, req: EmbeddingRequest, prepared: PreparedEmbedding) -> EmbeddingResponse:
        result = await prepared.backend.embed(prepared.texts)
        vectors = result.vectors
        if req.dimensions is not None and req.dimensions != vectors.shape[1]:
            # Cutting vectors short is only sound for Matryoshka-trained models.
            raise InvalidRequest(
                f"this model returns {vectors.shape[1]} dimensions; "
                "other values of `dimensions` are not supported",
                param="dimensions",
            )
        data = [
            Embedding(index=i, embedding=encode_vector(v, req.encoding_format))
            for i, v in enumerate(vectors)
        ]
        tokens = int(sum(result.token_counts))
        return EmbeddingResponse(
            data=data,
            model=prepared.model_id,
            usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
        )
