"""The cache's layers of the backend stack: replay a stored answer, record a new one.

Both speak `GenerationBackend` (gateway.targets), so a hit goes through the same
rendering as a model's answer: JSON or a well-formed SSE stream, with usage.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable

from gateway.answers import Answer
from gateway.cache.redis_store import CachedAnswer
from gateway.targets import GenerationBackend, Served, Started, no_more_chunks
from schemas.generation import GenerationChunk, GenerationRequest


class ReplayBackend:
    """Answers with a stored answer instead of calling a model."""

    def __init__(self, answer: CachedAnswer, prompt_tokens: int, model_id: str):
        self._answer = answer
        self._prompt_tokens = prompt_tokens
        self._model_id = model_id

    async def start(self, request: GenerationRequest) -> Started:
        answer = self._answer
        chunk = GenerationChunk(
            text=answer.text,
            prompt_tokens=self._prompt_tokens,
            completion_tokens=answer.completion_tokens,
            finish_reason=answer.finish_reason,
            tool_calls=answer.tool_calls,
        )
        return Started(Served(self._model_id), chunk, no_more_chunks())


class RecordingBackend:
    """Passes a model's chunks through; a complete answer (finish_reason "stop" or
    "tool_calls") is handed to `on_complete` with who served it. Errors, cut-short
    answers and cancelled streams are not. Only single-choice requests are recorded (the
    cache keeps one answer per question)."""

    def __init__(
        self,
        inner: GenerationBackend,
        on_complete: Callable[[Served, CachedAnswer], None],
    ):
        self._inner = inner
        self._on_complete = on_complete

    async def start(self, request: GenerationRequest) -> Started:
        started = await self._inner.start(request)
        return Started(started.served, started.first, self._recorded(started))

    async def _recorded(self, started: Started) -> AsyncGenerator[GenerationChunk, None]:
        answer = Answer(0)

        def seen(chunk: GenerationChunk) -> None:
            answer.add(chunk)
            reason = chunk.finish_reason
            if reason == "stop" or reason == "tool_calls":
                whole = CachedAnswer(
                    answer.text, chunk.completion_tokens, answer.tool_calls, reason
                )
                self._on_complete(started.served, whole)

        seen(started.first)
        try:
            async for chunk in started.rest:
                seen(chunk)
                yield chunk
        finally:
            await started.aclose()
