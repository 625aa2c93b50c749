"""OpenAI bodies and SSE events from the chunks of the streaming contract.

A renderer knows one request's shape (chat completion or completion) and who answered;
`whole` renders a collected answer, `events` the SSE events of one chunk. `sse` frames a
started generation as a stream: a failure mid-stream ends it with one error event, then
`[DONE]` (see gateway.sse).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass

from gateway import sse
from gateway.errors import as_api_error
from gateway.targets import Started
from schemas.generation import GenerationChunk
from schemas.openai import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatDelta,
    ChatResponseMessage,
    Completion,
    CompletionChoice,
    CompletionRequest,
    CompletionUsage,
)


@dataclass(frozen=True)
class Frame:
    """What every body and chunk of one response repeats."""

    request_id: str
    created: int
    model: str  # the model that answered


def usage_of(chunk: GenerationChunk) -> CompletionUsage:
    return CompletionUsage(
        prompt_tokens=chunk.prompt_tokens,
        completion_tokens=chunk.completion_tokens,
        total_tokens=chunk.prompt_tokens + chunk.completion_tokens,
    )


class ChatRenderer:
    def __init__(self, req: ChatCompletionRequest, frame: Frame):
        self._frame = frame
        self._include_usage = req.include_usage()

    def whole(self, text: str, last: GenerationChunk) -> ChatCompletion:
        f = self._frame
        message = ChatResponseMessage(content=text)
        return ChatCompletion(
            id=f.request_id,
            created=f.created,
            model=f.model,
            choices=[ChatChoice(message=message, finish_reason=last.finish_reason or "stop")],
            usage=usage_of(last),
        )

    def _chunk(self, choices: list[ChatChunkChoice], usage: CompletionUsage | None = None) -> str:
        f = self._frame
        return sse.event(
            ChatCompletionChunk(
                id=f.request_id, created=f.created, model=f.model, choices=choices, usage=usage
            )
        )

    def events(self, chunk: GenerationChunk, first: bool) -> list[str]:
        events = []
        if first:
            events.append(
                self._chunk([ChatChunkChoice(delta=ChatDelta(role="assistant", content=""))])
            )
        if chunk.text:
            events.append(self._chunk([ChatChunkChoice(delta=ChatDelta(content=chunk.text))]))
        if chunk.finish_reason is not None:
            final = ChatChunkChoice(delta=ChatDelta(), finish_reason=chunk.finish_reason)
            events.append(self._chunk([final]))
            if self._include_usage:
                events.append(self._chunk([], usage_of(chunk)))
        return events


class CompletionRenderer:
    def __init__(self, req: CompletionRequest, frame: Frame):
        self._frame = frame
        self._include_usage = req.include_usage()

    def _body(self, choices: list[CompletionChoice], usage: CompletionUsage | None) -> Completion:
        f = self._frame
        return Completion(
            id=f.request_id, created=f.created, model=f.model, choices=choices, usage=usage
        )

    def whole(self, text: str, last: GenerationChunk) -> Completion:
        choice = CompletionChoice(text=text, finish_reason=last.finish_reason)
        return self._body([choice], usage_of(last))

    def events(self, chunk: GenerationChunk, first: bool) -> list[str]:
        events = []
        if chunk.text or chunk.finish_reason is not None:
            choice = CompletionChoice(text=chunk.text, finish_reason=chunk.finish_reason)
            events.append(sse.event(self._body([choice], None)))
        if chunk.finish_reason is not None and self._include_usage:
            events.append(sse.event(self._body([], usage_of(chunk))))
        return events


Renderer = ChatRenderer | CompletionRenderer


def renderer(req: ChatCompletionRequest | CompletionRequest, frame: Frame) -> Renderer:
    if isinstance(req, ChatCompletionRequest):
        return ChatRenderer(req, frame)
    return CompletionRenderer(req, frame)


Ended = Callable[[GenerationChunk], Awaitable[None]]  # called with the last chunk seen


async def collect(started: Started, ended: Ended) -> tuple[str, GenerationChunk]:
    """The whole answer and its last chunk; `ended` is awaited however it ends."""
    parts: list[str] = []
    last = started.first
    try:
        async for chunk in started.chunks():
            parts.append(chunk.text)
            last = chunk
    finally:
        await started.aclose()
        await ended(last)
    if last.finish_reason is None:
        raise RuntimeError("model stream ended without a finish reason")
    return "".join(parts), last


class EventStream:
    """The SSE events of a started generation, as an async iterable: a failure mid-stream
    ends it with an error event, then [DONE]. `ended` is awaited exactly once however it
    ends: the last event sent, the client leaving mid-stream, or `aclose` before a single
    event was asked for (a client gone before the first byte still settles at once)."""

    def __init__(self, started: Started, render: Renderer, ended: Ended):
        self._started = started
        self._ended = ended
        self._done = False
        self._events = _stream(started, render, self._end)

    def __aiter__(self) -> AsyncGenerator[str, None]:
        return self._events

    async def aclose(self) -> None:
        """End the generation and settle it, if that has not happened yet (idempotent)."""
        await self._events.aclose()  # a started stream ends in its own `finally`
        if not self._done:  # never iterated
            await self._started.aclose()
            await self._end(self._started.first)

    async def _end(self, last: GenerationChunk) -> None:
        if not self._done:
            self._done = True
            await self._ended(last)


async def _stream(started: Started, render: Renderer, ended: Ended) -> AsyncGenerator[str, None]:
    last, first = started.first, True
    try:
        try:
            async for chunk in started.chunks():
                last = chunk
                for event in render.events(chunk, first):
                    yield event
                first = False
        except Exception as exc:  # after the first byte the status is sent: report in-band
            yield sse.error_event(as_api_error(exc))
        finally:
            await started.aclose()
        yield sse.DONE
    finally:  # after [DONE]: the client does not wait for the settling
        await ended(last)
