"""Generation backends around the cache: replay a stored answer, record a new one.

Both speak the streaming contract (schemas.generation), so a hit goes through the same
rendering as a model's answer: JSON or a well-formed SSE stream, with usage.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing

from gateway.cache.redis_store import CachedAnswer
from gateway.targets import GenerationBackend
from schemas.generation import GenerationChunk, GenerationRequest


class ReplayBackend:
    """Answers with a stored answer instead of calling a model."""

    def __init__(self, answer: CachedAnswer, prompt_tokens: int, model: GenerationBackend):
        self._answer = answer
        self._prompt_tokens = prompt_tokens
        self._model = model

    async def max_model_len(self) -> int:
        return await self._model.max_model_len()

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        yield GenerationChunk(
            text=self._answer.text,
            prompt_tokens=self._prompt_tokens,
            completion_tokens=self._answer.completion_tokens,
            finish_reason="stop",
        )


class RecordingBackend:
    """Passes a model's chunks through; a complete answer (finish_reason "stop") is
    handed to `on_complete`. Errors, cut-short answers and cancelled streams are not."""

    def __init__(self, inner: GenerationBackend, on_complete: Callable[[CachedAnswer], None]):
        self._inner = inner
        self._on_complete = on_complete

    async def max_model_len(self) -> int:
        return await self._inner.max_model_len()

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        parts: list[str] = []
        async with aclosing(self._inner.stream(request)) as chunks:
            async for chunk in chunks:
                parts.append(chunk.text)
                if chunk.finish_reason == "stop":
                    self._on_complete(CachedAnswer("".join(parts), chunk.completion_tokens))
                yield chunk
