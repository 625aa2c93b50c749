"""OpenAI bodies and SSE events from the chunks of the streaming contract.

A renderer knows one request's shape (chat completion or completion) and who answered;
`whole` renders a collected answer, `events` the SSE events of one chunk. `sse` frames a
started generation as a stream: a failure mid-stream ends it with one error event, then
`[DONE]` (see gateway.sse).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from gateway import sse
from gateway.answers import Answer, Answers
from gateway.errors import as_api_error
from gateway.targets import Started
from schemas.generation import GenerationChunk, ToolCallPart
from schemas.generation import TokenLogprob as ContractLogprob
from schemas.openai import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatDelta,
    ChatResponseMessage,
    ChoiceLogprobs,
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionUsage,
    TokenLogprob,
    TopLogprob,
)
from schemas.tools import CalledFunction, FunctionCallDelta, ToolCall, ToolCallDelta


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


def _utf8(token: str) -> list[int]:
    return list(token.encode("utf-8", errors="replace"))


def chat_logprobs(tokens: Sequence[ContractLogprob]) -> ChoiceLogprobs:
    """OpenAI's chat `logprobs` of these tokens."""
    return ChoiceLogprobs(
        content=[
            TokenLogprob(
                token=t.token,
                logprob=t.logprob,
                bytes=_utf8(t.token),
                top_logprobs=[
                    TopLogprob(token=alt, logprob=lp, bytes=_utf8(alt)) for alt, lp in t.top
                ],
            )
            for t in tokens
        ]
    )


def completion_logprobs(tokens: Sequence[ContractLogprob], offset: int) -> CompletionLogprobs:
    """OpenAI's (legacy) completions `logprobs` of these tokens, the first at `offset`
    characters into the choice's text."""
    offsets = []
    for t in tokens:
        offsets.append(offset)
        offset += len(t.token)
    return CompletionLogprobs(
        tokens=[t.token for t in tokens],
        token_logprobs=[t.logprob for t in tokens],
        top_logprobs=[dict(t.top) for t in tokens],
        text_offset=offsets,
    )


def _tool_calls(answer: Answer) -> list[ToolCall] | None:
    calls = [
        ToolCall(
            id=c.id or f"call_{answer.index}_{c.index}",
            function=CalledFunction(name=c.name or "", arguments=c.arguments),
        )
        for c in answer.tool_calls
    ]
    return calls or None


def _call_deltas(parts: Sequence[ToolCallPart]) -> list[ToolCallDelta] | None:
    deltas = [
        ToolCallDelta(
            index=p.index,
            id=p.id,
            type="function" if p.id is not None else None,
            function=FunctionCallDelta(name=p.name, arguments=p.arguments),
        )
        for p in parts
    ]
    return deltas or None


class ChatRenderer:
    """Chat completion bodies and chunks; one per response (it tracks which choices have
    begun streaming)."""

    def __init__(self, req: ChatCompletionRequest, frame: Frame):
        self._frame = frame
        self._include_usage = req.include_usage()
        self._logprobs = bool(req.logprobs)
        self._begun: set[int] = set()

    def whole(self, answers: Answers) -> ChatCompletion:
        f = self._frame
        choices = []
        for a in answers.in_order():
            calls = _tool_calls(a)
            text = a.text
            message = ChatResponseMessage(
                content=None if calls and not text else text, tool_calls=calls
            )
            logprobs = chat_logprobs(a.logprobs) if self._logprobs else None
            reason = a.finish_reason or "stop"
            choices.append(
                ChatChoice(index=a.index, message=message, finish_reason=reason, logprobs=logprobs)
            )
        return ChatCompletion(
            id=f.request_id,
            created=f.created,
            model=f.model,
            choices=choices,
            usage=usage_of(answers.last),
        )

    def _chunk(self, choices: list[ChatChunkChoice], usage: CompletionUsage | None = None) -> str:
        f = self._frame
        return sse.event(
            ChatCompletionChunk(
                id=f.request_id, created=f.created, model=f.model, choices=choices, usage=usage
            )
        )

    def events(self, chunk: GenerationChunk) -> list[str]:
        events, i = [], chunk.index
        if i not in self._begun:
            self._begun.add(i)
            role = ChatDelta(role="assistant", content="")
            events.append(self._chunk([ChatChunkChoice(index=i, delta=role)]))
        calls = _call_deltas(chunk.tool_calls)
        logprobs = chat_logprobs(chunk.logprobs) if self._logprobs and chunk.logprobs else None
        if chunk.text or calls or logprobs:  # logprobs alone: tokens held back as no text yet
            delta = ChatDelta(content=chunk.text or None, tool_calls=calls)
            events.append(self._chunk([ChatChunkChoice(index=i, delta=delta, logprobs=logprobs)]))
        if chunk.finish_reason is not None:
            final = ChatChunkChoice(index=i, delta=ChatDelta(), finish_reason=chunk.finish_reason)
            events.append(self._chunk([final]))
        return events

    def closing(self, last: GenerationChunk) -> list[str]:
        """The events after every choice has finished: usage, if asked for."""
        return [self._chunk([], usage_of(last))] if self._include_usage else []


class CompletionRenderer:
    def __init__(self, req: CompletionRequest, frame: Frame):
        self._frame = frame
        self._include_usage = req.include_usage()
        self._logprobs = req.logprobs is not None
        self._offsets: dict[int, int] = {}  # characters streamed per choice

    def _body(self, choices: list[CompletionChoice], usage: CompletionUsage | None) -> Completion:
        f = self._frame
        return Completion(
            id=f.request_id, created=f.created, model=f.model, choices=choices, usage=usage
        )

    def whole(self, answers: Answers) -> Completion:
        choices = [
            CompletionChoice(
                index=a.index,
                text=a.text,
                finish_reason=a.finish_reason,
                logprobs=completion_logprobs(a.logprobs, 0) if self._logprobs else None,
            )
            for a in answers.in_order()
        ]
        return self._body(choices, usage_of(answers.last))

    def events(self, chunk: GenerationChunk) -> list[str]:
        if not (chunk.text or chunk.finish_reason is not None or chunk.logprobs):
            return []
        offset = self._offsets.get(chunk.index, 0)
        self._offsets[chunk.index] = offset + len(chunk.text)
        logprobs = completion_logprobs(chunk.logprobs, offset) if self._logprobs else None
        choice = CompletionChoice(
            index=chunk.index, text=chunk.text, finish_reason=chunk.finish_reason, logprobs=logprobs
        )
        return [sse.event(self._body([choice], None))]

    def closing(self, last: GenerationChunk) -> list[str]:
        return [sse.event(self._body([], usage_of(last)))] if self._include_usage else []


Renderer = ChatRenderer | CompletionRenderer


def renderer(req: ChatCompletionRequest | CompletionRequest, frame: Frame) -> Renderer:
    if isinstance(req, ChatCompletionRequest):
        return ChatRenderer(req, frame)
    return CompletionRenderer(req, frame)


Ended = Callable[[GenerationChunk], Awaitable[None]]  # called with the last chunk seen


async def collect(started: Started, ended: Ended) -> Answers:
    """Every choice's whole answer; `ended` is awaited however it ends."""
    answers = Answers(started.first)
    try:
        async for chunk in started.rest:
            answers.add(chunk)
    finally:
        await started.aclose()
        await ended(answers.last)
    if not answers.complete:
        raise RuntimeError("model stream ended without a finish reason")
    return answers


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
    last = started.first
    try:
        try:
            async for chunk in started.chunks():
                last = chunk
                for event in render.events(chunk):
                    yield event
            for event in render.closing(last):
                yield event
        except Exception as exc:  # after the first byte the status is sent: report in-band
            yield sse.error_event(as_api_error(exc))
        finally:
            await started.aclose()
        yield sse.DONE
    finally:  # after [DONE]: the client does not wait for the settling
        await ended(last)
