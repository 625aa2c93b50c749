"""Fakes for the routing tests: a model backend that answers, fails or stalls on cue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from schemas.generation import GenerationChunk, GenerationRequest


class ScriptedModel:
    """Streams `pieces`; `fail_before` raises before the first chunk, `fail_after` after
    that many chunks, `stall` waits forever for its first chunk (until cancelled), `delay_s`
    is how long the first chunk takes."""

    def __init__(
        self,
        pieces: tuple[str, ...] = ("a", "b", "c"),
        fail_before: BaseException | None = None,
        fail_after: int | None = None,
        stall: bool = False,
        context: int = 2048,
        replica: str = "r1",
        delay_s: float = 0.0,
    ):
        self.pieces = pieces
        self.fail_before = fail_before
        self.fail_after = fail_after
        self.stall = stall
        self.context = context
        self.replica = replica
        self.delay_s = delay_s
        self.calls: list[GenerationRequest] = []
        self.called = asyncio.Event()  # set by the first call
        self.closed = 0

    async def max_model_len(self) -> int:
        return self.context

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        self.calls.append(request)
        self.called.set()
        try:
            if self.stall:
                await asyncio.Event().wait()  # never set: only a timeout ends it
            await asyncio.sleep(self.delay_s)
            if self.fail_before is not None:
                raise self.fail_before
            for i, piece in enumerate(self.pieces):
                if self.fail_after is not None and i == self.fail_after:
                    raise RuntimeError("engine died mid-stream")
                last = i == len(self.pieces) - 1
                yield GenerationChunk(
                    piece, 5, i + 1, "stop" if last else None, self.replica if i == 0 else None
                )
        finally:
            self.closed += 1


class WordCounter:
    """One token per word of each message (and 1 per message)."""

    def encode(self, request: GenerationRequest) -> list[int]:
        if request.prompt_token_ids is not None:
            return list(request.prompt_token_ids)
        assert request.messages is not None
        return [len(text) for _, text in request.messages for _ in range(1 + len(text.split()))]
