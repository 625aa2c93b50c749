"""What the generation path needs of a model, and what a started generation is.

Two interfaces, one per layer of the backend stack (cache -> timing -> fallback chain ->
Serve handle, see gateway/generation/service.py):

* `ModelBackend` is one model: a Serve handle in the app, a fake in unit tests. It
  streams the chunks of the streaming contract (schemas.generation).
* `GenerationBackend` is a layer above the models: `start()` waits for the first chunk
  and returns a `Started` generation, which says who answers (`Served`) as a value.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Protocol

from deployments.prompt import DEFAULT_PROMPT, PromptOptions
from schemas.generation import GenerationChunk, GenerationRequest


class ModelBackend(Protocol):
    """A streaming call to one model; closing the iterator cancels the call."""

    def stream(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]: ...

    async def max_model_len(self) -> int: ...


class PromptCounter(Protocol):
    """The model's own chat template and tokenizer (deployments.prompt.PromptEncoder)."""

    def encode(
        self, request: GenerationRequest, options: PromptOptions = DEFAULT_PROMPT
    ) -> list[int]: ...

    def decode(self, ids: Sequence[int], param: str = "tokens") -> str: ...

    def token_strings(self, ids: Sequence[int]) -> list[str]: ...


@dataclass(frozen=True)
class LLMTarget:
    backend: ModelBackend
    prompts: PromptCounter  # models with the same tokenizer share one object
    weights: str | None = None  # what it serves (its model folder); None: not known
    tools: bool = False  # it reads tool calls out of its answers (has a tool parser)


@dataclass(frozen=True)
class Served:
    """Who answers a generation, known once its first chunk is in."""

    model_id: str  # the model whose answer is streamed (the one asked for, on a cache hit)
    replica: str | None = None  # its replica, as the first chunk tells
    calls: int = 0  # model calls made (0: replayed from the cache)
    passed_over: tuple[str, ...] = ()  # models that failed or were skipped first

    def headers(self) -> dict[str, str]:
        """`x-raygate-model`, and `-passed-over` / `-replica` where they say something."""
        headers = {"x-raygate-model": self.model_id}
        if self.calls > 1 or self.passed_over:
            headers["x-raygate-passed-over"] = ",".join(self.passed_over)
        if self.replica is not None:
            headers["x-raygate-replica"] = self.replica
        return headers


@dataclass(frozen=True)
class Started:
    """A generation whose first chunk has arrived: no pre-stream error can follow.

    `rest` yields the chunks after `first`; closing it (`aclose`) cancels the call."""

    served: Served
    first: GenerationChunk
    rest: AsyncGenerator[GenerationChunk, None]

    async def chunks(self) -> AsyncIterator[GenerationChunk]:
        yield self.first
        async for chunk in self.rest:
            yield chunk

    async def aclose(self) -> None:
        with suppress(Exception):
            await self.rest.aclose()


class GenerationBackend(Protocol):
    async def start(self, request: GenerationRequest) -> Started:
        """Wait for the first chunk. Raises the typed error of a failure before it (so the
        client still gets a real HTTP status); cancelling the wait cancels the call."""
        ...


async def no_more_chunks() -> AsyncGenerator[GenerationChunk, None]:
    """The `rest` of a generation that was whole in its first chunk."""
    return
    yield  # makes this an async generator
