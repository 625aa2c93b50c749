"""Adapters from Ray Serve handles to the interfaces the gateway's services use.

A full deployment queue (Serve's BackPressureError) becomes our 503 `overloaded` with
Retry-After: Serve's own handler for it would answer in plain text. Streams leave it to
the fallback chain, which moves on to the next model first.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from deployments.batching import DynamicBatcher
from deployments.config import EmbedderConfig
from gateway.embeddings import EmbeddingBackend
from gateway.rerank import RerankBackend
from gateway.targets import ModelBackend
from schemas.embeddings import EmbeddingResult, ScoreResult
from schemas.errors import Overloaded
from schemas.generation import GenerationChunk, GenerationRequest

T = TypeVar("T")


async def unary(call: Awaitable[T]) -> T:
    try:
        return await call
    except BackPressureError:
        raise Overloaded("The model is at capacity; try again shortly.") from None


class _Info:
    """A deployment's `info()`, asked once: it is fixed for the life of the deployment."""

    def __init__(self, handle: DeploymentHandle):
        self._handle = handle
        self._info: dict[str, Any] | None = None

    async def limit(self, key: str) -> int:
        if self._info is None:
            info: dict[str, Any] = await unary(self._handle.info.remote())
            self._info = info
            return int(info[key])
        return int(self._info[key])


class ServeLLMBackend(_Info):
    """A streaming call to an LLMDeployment; closing the iterator cancels the call."""

    def __init__(self, handle: DeploymentHandle):
        super().__init__(handle)
        self._stream = handle.options(stream=True)

    async def max_model_len(self) -> int:
        return await self.limit("max_model_len")

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        # stream=True handles return generators; the stub types the union.
        response = cast(DeploymentResponseGenerator, self._stream.generate.remote(request))
        done = False
        try:
            async for chunk in response:
                yield chunk
            done = True
        finally:
            if not done:
                response.cancel()


class _Limits(_Info):
    async def max_input_tokens(self) -> int:
        return await self.limit("max_input_tokens")


class ServeEmbeddingBackend(_Limits):
    """Calls to an EmbedderDeployment. With `single_text_calls` (EmbedderConfig's
    `single_text_calls_in_flight`), one-text requests share calls: a free call slot takes
    a text at once, and the texts that arrive while every slot is busy go together in the
    next call (at most `max_texts_per_call`)."""

    def __init__(
        self, handle: DeploymentHandle, single_text_calls: int | None, max_texts_per_call: int
    ):
        super().__init__(handle)
        self._shared: DynamicBatcher[str, EmbeddingResult] | None = None
        if single_text_calls is not None:
            self._shared = DynamicBatcher(
                self._embed_shared, max_texts_per_call, 0.0, single_text_calls
            )

    async def embed(self, texts: list[str]) -> EmbeddingResult:
        """The vectors of `texts`; raises Overloaded when the embedder's queue is full, and
        what the embedder raised (for every request that shared the call)."""
        if self._shared is not None and len(texts) == 1:
            return await self._shared.submit(texts[0])
        return await self._call(texts)

    async def _embed_shared(self, texts: list[str]) -> list[EmbeddingResult]:
        return (await self._call(texts)).split([1] * len(texts))

    async def _call(self, texts: list[str]) -> EmbeddingResult:
        result: EmbeddingResult = await unary(self._handle.embed.remote(texts))
        return result


class ServeRerankBackend(_Limits):
    async def score(self, query: str, documents: list[str]) -> ScoreResult:
        result: ScoreResult = await unary(self._handle.score.remote(query, documents))
        return result


Probe = Callable[[], Awaitable[None]]  # a deployment's health check; raises when unhealthy


@dataclass(frozen=True)
class Handles:
    """The Serve handles of the gateway's deployments, by model id."""

    llms: Mapping[str, DeploymentHandle]  # vLLM deployments and fault-injection wrappers
    embedders: Mapping[str, DeploymentHandle]
    rerankers: Mapping[str, DeploymentHandle]

    def all(self) -> dict[str, DeploymentHandle]:
        return {**self.llms, **self.embedders, **self.rerankers}


@dataclass(frozen=True)
class Backends:
    """The deployments as the gateway's services call them (fakes in unit tests)."""

    llms: Mapping[str, ModelBackend]
    embedders: Mapping[str, EmbeddingBackend]
    rerankers: Mapping[str, RerankBackend]
    probes: Mapping[str, Probe]  # every deployment's health check, for /ready


def serve_backends(
    handles: Handles, embedders: Sequence[EmbedderConfig], probe_timeout_s: float
) -> Backends:
    def probe(handle: DeploymentHandle) -> Probe:
        async def check() -> None:
            await asyncio.wait_for(handle.check_health.remote(), probe_timeout_s)

        return check

    return Backends(
        llms={name: ServeLLMBackend(h) for name, h in handles.llms.items()},
        embedders={
            e.id: ServeEmbeddingBackend(
                handles.embedders[e.id], e.single_text_calls_in_flight, e.encode_batch_size
            )
            for e in embedders
        },
        rerankers={name: ServeRerankBackend(h) for name, h in handles.rerankers.items()},
        probes={name: probe(h) for name, h in handles.all().items()},
    )
