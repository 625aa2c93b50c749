"""Chat completions and completions: OpenAI requests in, OpenAI bodies or SSE out.

`GenerationService` holds no HTTP: it turns a validated request into a
`GenerationRequest`, calls the model deployment through a `GenerationBackend` (a Serve
handle in the app, a fake in unit tests) and renders the chunks of the streaming
contract (schemas.generation) as OpenAI objects.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field

from gateway import sse
from gateway.errors import as_api_error
from gateway.routing.fallback import Served
from gateway.routing.planner import RoutePlanner
from gateway.targets import GenerationBackend
from schemas.generation import GenerationChunk, GenerationRequest, SamplingOptions
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


@dataclass
class Prepared:
    """A routed, tokenized request that fits the context, not yet sent to the model."""

    model_id: str  # the model routed to (the cache's partition); `served` says who answered
    backend: GenerationBackend  # the fallback chain (wrapped by the cache on a hit or miss)
    request: GenerationRequest  # carries the prompt as token ids
    prompt_tokens: int
    max_tokens: int
    served: Served = field(default_factory=Served)
    decision: str = "explicit"  # how the model was chosen: explicit, alias, auto
    completion_tokens: int = 0  # generated so far, updated while the answer streams

    @property
    def served_by(self) -> str:
        return self.served.model_id or self.model_id

    @property
    def reserved_tokens(self) -> int:
        return self.prompt_tokens + self.max_tokens

    @property
    def used_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def sampling_options(req: ChatCompletionRequest | CompletionRequest) -> SamplingOptions:
    max_tokens = req.token_limit()
    return SamplingOptions(
        max_tokens=max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k,
        min_p=req.min_p,
        seed=req.seed,
        stop=req.stop_list(),
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        repetition_penalty=req.repetition_penalty,
        ignore_eos=req.ignore_eos,
        min_tokens=req.min_tokens,
    )


def chat_generation_request(req: ChatCompletionRequest, request_id: str) -> GenerationRequest:
    return GenerationRequest(
        request_id=request_id,
        sampling=sampling_options(req),
        messages=[(m.role, m.text()) for m in req.messages],
        affinity_key=req.prompt_cache_key or req.user,
    )


def completion_generation_request(req: CompletionRequest, request_id: str) -> GenerationRequest:
    prompt = req.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], int):
        return GenerationRequest(
            request_id=request_id,
            sampling=sampling_options(req),
            prompt_token_ids=[int(t) for t in prompt],
            affinity_key=req.prompt_cache_key or req.user,
        )
    text = prompt if isinstance(prompt, str) else str(prompt[0])
    return GenerationRequest(
        request_id=request_id,
        sampling=sampling_options(req),
        prompt=text,
        affinity_key=req.prompt_cache_key or req.user,
    )


def usage_of(chunk: GenerationChunk) -> CompletionUsage:
    return CompletionUsage(
        prompt_tokens=chunk.prompt_tokens,
        completion_tokens=chunk.completion_tokens,
        total_tokens=chunk.prompt_tokens + chunk.completion_tokens,
    )


@dataclass
class Generated:
    """A whole (non-streamed) generation."""

    text: str
    last: GenerationChunk


async def collect(chunks: AsyncIterator[GenerationChunk]) -> Generated:
    parts: list[str] = []
    last: GenerationChunk | None = None
    async for chunk in chunks:
        parts.append(chunk.text)
        last = chunk
    if last is None or last.finish_reason is None:
        raise RuntimeError("model stream ended without a finish reason")
    return Generated("".join(parts), last)


class StartedStream:
    """A stream whose first chunk has arrived, so no pre-stream error can follow."""

    def __init__(self, first: GenerationChunk, rest: AsyncIterator[GenerationChunk]):
        self.first = first
        self.rest = rest

    async def chunks(self) -> AsyncIterator[GenerationChunk]:
        yield self.first
        async for chunk in self.rest:
            yield chunk

    async def aclose(self) -> None:
        aclose = getattr(self.rest, "aclose", None)
        if aclose is not None:
            await aclose()


async def start_stream(chunks: AsyncIterator[GenerationChunk]) -> StartedStream:
    """Wait for the first chunk: errors before it surface here, as exceptions."""
    iterator = aiter(chunks)
    first = await anext(iterator)
    return StartedStream(first, iterator)


RenderEvents = Callable[[GenerationChunk, bool], list[str]]


class GenerationService:
    def __init__(self, planner: RoutePlanner, clock: Callable[[], float] = time.time):
        self._planner = planner
        self._clock = clock

    async def prepare(
        self,
        req: ChatCompletionRequest | CompletionRequest,
        may_use: Callable[[str], bool] = lambda _: True,
    ) -> Prepared:
        """Route (alias, `auto`, access), tokenize, check the context, build the chain."""
        if isinstance(req, ChatCompletionRequest):
            request = chat_generation_request(req, f"chatcmpl-{uuid.uuid4().hex}")
        else:
            request = completion_generation_request(req, f"cmpl-{uuid.uuid4().hex}")
        routed = await self._planner.route(req.model, request, may_use)
        return Prepared(
            routed.model_id,
            routed.chain,
            routed.request,
            routed.prompt_tokens,
            routed.max_tokens,
            routed.chain.served,
            routed.decision,
        )

    @staticmethod
    async def _metered(prepared: Prepared) -> AsyncGenerator[GenerationChunk, None]:
        """The model's chunks, counting completion tokens; closing it closes the call."""
        async with aclosing(prepared.backend.stream(prepared.request)) as chunks:
            async for chunk in chunks:
                prepared.completion_tokens = chunk.completion_tokens
                yield chunk

    # ---------------------------------------------------------------- chat completions

    async def chat(
        self, req: ChatCompletionRequest, prepared: Prepared
    ) -> ChatCompletion | AsyncGenerator[str, None]:
        request_id = prepared.request.request_id
        chunks = self._metered(prepared)
        created = int(self._clock())
        if not req.stream:
            done = await collect(chunks)
            return ChatCompletion(
                id=request_id,
                created=created,
                model=prepared.served_by,
                choices=[
                    ChatChoice(
                        message=ChatResponseMessage(content=done.text),
                        finish_reason=done.last.finish_reason or "stop",
                    )
                ],
                usage=usage_of(done.last),
            )
        started = await start_stream(chunks)
        model_id = prepared.served_by  # known once the first chunk is in
        include_usage = req.include_usage()

        def frame(choices: list[ChatChunkChoice], usage: CompletionUsage | None = None) -> str:
            return sse.event(
                ChatCompletionChunk(
                    id=request_id, created=created, model=model_id, choices=choices, usage=usage
                )
            )

        def render(chunk: GenerationChunk, first: bool) -> list[str]:
            events = []
            if first:
                role = ChatDelta(role="assistant", content="")
                events.append(frame([ChatChunkChoice(delta=role)]))
            if chunk.text:
                events.append(frame([ChatChunkChoice(delta=ChatDelta(content=chunk.text))]))
            if chunk.finish_reason is not None:
                events.append(
                    frame([ChatChunkChoice(delta=ChatDelta(), finish_reason=chunk.finish_reason)])
                )
                if include_usage:
                    events.append(frame([], usage_of(chunk)))
            return events

        return self._events(started, render)

    # ---------------------------------------------------------------------- completions

    async def complete(
        self, req: CompletionRequest, prepared: Prepared
    ) -> Completion | AsyncGenerator[str, None]:
        request_id = prepared.request.request_id
        chunks = self._metered(prepared)
        created = int(self._clock())

        def body(
            choices: list[CompletionChoice], usage: CompletionUsage | None = None
        ) -> Completion:
            return Completion(
                id=request_id,
                created=created,
                model=prepared.served_by,  # read after the first chunk: the chain has chosen
                choices=choices,
                usage=usage,
            )

        if not req.stream:
            done = await collect(chunks)
            choice = CompletionChoice(text=done.text, finish_reason=done.last.finish_reason)
            return body([choice], usage_of(done.last))
        started = await start_stream(chunks)
        include_usage = req.include_usage()

        def render(chunk: GenerationChunk, first: bool) -> list[str]:
            events = []
            if chunk.text or chunk.finish_reason is not None:
                choice = CompletionChoice(text=chunk.text, finish_reason=chunk.finish_reason)
                events.append(sse.event(body([choice])))
            if chunk.finish_reason is not None and include_usage:
                events.append(sse.event(body([], usage_of(chunk))))
            return events

        return self._events(started, render)

    # ------------------------------------------------------------------------ streaming

    @staticmethod
    async def _events(started: StartedStream, render: RenderEvents) -> AsyncGenerator[str, None]:
        """SSE events of a started stream; a failure mid-stream ends it with an error event."""
        first = True
        try:
            async for chunk in started.chunks():
                for event in render(chunk, first):
                    yield event
                first = False
        except Exception as exc:  # after the first byte the status is sent: report in-band
            yield sse.error_event(as_api_error(exc))
        finally:
            await started.aclose()
        yield sse.DONE
