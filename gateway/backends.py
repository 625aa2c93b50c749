"""Adapters from Ray Serve handles to the interfaces the gateway's services use."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from schemas.embeddings import EmbeddingResult
from schemas.generation import GenerationChunk, GenerationRequest


class ServeLLMBackend:
    """A streaming call to an LLMDeployment; closing the iterator cancels the call."""

    def __init__(self, handle: DeploymentHandle):
        self._handle = handle.options(stream=True)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
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


class ServeEmbeddingBackend:
    def __init__(self, handle: DeploymentHandle):
        self._handle = handle

    async def embed(self, texts: list[str]) -> EmbeddingResult:
        result: EmbeddingResult = await self._handle.embed.remote(texts)
        return result
