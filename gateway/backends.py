"""Adapters from Ray Serve handles to the interfaces the gateway's services use."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import cast

from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from schemas.embeddings import EmbeddingResult, ScoreResult
from schemas.generation import GenerationChunk, GenerationRequest


class ServeLLMBackend:
    """A streaming call to an LLMDeployment; closing the iterator cancels the call."""

    def __init__(self, handle: DeploymentHandle):
        self._info = handle
        self._handle = handle.options(stream=True)
        self._max_model_len: int | None = None

    async def max_model_len(self) -> int:
        if self._max_model_len is None:  # fixed for the life of the deployment
            info = await self._info.info.remote()
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
            info = await self._handle.info.remote()
            self._max_input_tokens = int(info["max_input_tokens"])
        return self._max_input_tokens


class ServeEmbeddingBackend(_Limits):
    async def embed(self, texts: list[str]) -> EmbeddingResult:
        result: EmbeddingResult = await self._handle.embed.remote(texts)
        return result


class ServeRerankBackend(_Limits):
    async def score(self, query: str, documents: list[str]) -> ScoreResult:
        result: ScoreResult = await self._handle.score.remote(query, documents)
        return result
