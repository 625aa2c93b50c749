"""Adapters from Ray Serve handles to the interfaces the gateway's services use.

A full deployment queue (Serve's BackPressureError) becomes our 503 `overloaded` with
Retry-After: Serve's own handler for it would answer in plain text. Streams leave it to
the fallback chain, which moves on to the next model first.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable
from typing import TypeVar, cast

from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from schemas.embeddings import EmbeddingResult, ScoreResult
from schemas.errors import Overloaded
from schemas.generation import GenerationChunk, GenerationRequest

T = TypeVar("T")


async def unary(call: Awaitable[T]) -> T:
    try:
        return await call
    except BackPressureError:
        raise Overloaded("The model is at capacity; try again shortly.") from None


class ServeLLMBackend:
    """A streaming call to an LLMDeployment; closing the iterator cancels the call."""

    def __init__(self, handle: DeploymentHandle):
        self._info = handle
        self._handle = handle.options(stream=True)
        self._max_model_len: int | None = None

    async def max_model_len(self) -> int:
        if self._max_model_len is None:  # fixed for the life of the deployment
            info = await unary(self._info.info.remote())
            self._max_model_len = int(info["max_model_len"])
        return self._max_model_len

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        # stream=True handles return generators; the stub types the union.
        response = cast(DeploymentResponseGenerator, self._handle.generate.remote(request))
        done = False
        try:
            async for chunk in response:
                yield chunk
            done = True
        finally:
            if not done:
                response.cancel()


class _Limits:
    """The model's input limit, asked once (fixed for the life of the deployment)."""

    def __init__(self, handle: DeploymentHandle):
        self._handle = handle
        self._max_input_tokens: int | None = None

    async def max_input_tokens(self) -> int:
        if self._max_input_tokens is None:
            info = await unary(self._handle.info.remote())
            self._max_input_tokens = int(info["max_input_tokens"])
        return self._max_input_tokens


class ServeEmbeddingBackend(_Limits):
    async def embed(self, texts: list[str]) -> EmbeddingResult:
        result: EmbeddingResult = await unary(self._handle.embed.remote(texts))
        return result


class ServeRerankBackend(_Limits):
    async def score(self, query: str, documents: list[str]) -> ScoreResult:
        result: ScoreResult = await unary(self._handle.score.remote(query, documents))
        return result
