"""A completions request with several prompts: one engine request per prompt, their
streams merged into one, as OpenAI numbers the choices (prompt i's choice j is
`i * n + j`).

Every prompt's generation starts before the response does (a failure before any first
token is a real HTTP status); after that the chunks are relayed as they come, each with
the whole request's usage so far, so the last one holds the exact total.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import suppress
from dataclasses import replace

from gateway.targets import GenerationBackend, Started
from schemas.generation import GenerationChunk, GenerationRequest

_END = object()  # a stream's end in the merge queue


async def start_all(
    starts: Sequence[tuple[GenerationBackend, GenerationRequest]], n: int
) -> Started:
    """Every (backend, request) started concurrently, merged; raises the first failure
    (the generations already started are closed)."""
    tasks = [asyncio.ensure_future(backend.start(request)) for backend, request in starts]
    try:
        started = list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(BaseException):
                await (await task).aclose()
        raise
    return merged(started, n)


def merged(started: Sequence[Started], n: int) -> Started:
    """One generation of several started ones (each of `n` choices)."""
    prompt_tokens = sum(s.first.prompt_tokens for s in started)
    used = [0] * len(started)  # completion tokens of each stream so far

    def renumbered(i: int, chunk: GenerationChunk) -> GenerationChunk:
        used[i] = chunk.completion_tokens
        return replace(
            chunk,
            index=i * n + chunk.index,
            prompt_tokens=prompt_tokens,
            completion_tokens=sum(used),
            replica=chunk.replica if i == 0 else None,
        )

    first = renumbered(0, started[0].first)
    return Started(started[0].served, first, _relay(started, renumbered))


async def _relay(
    started: Sequence[Started], renumbered: Callable[[int, GenerationChunk], GenerationChunk]
) -> AsyncGenerator[GenerationChunk, None]:
    queue: asyncio.Queue[tuple[int, object]] = asyncio.Queue()

    async def pump(i: int, s: Started) -> None:
        try:
            if i > 0:
                await queue.put((i, s.first))
            async for chunk in s.rest:
                await queue.put((i, chunk))
            await queue.put((i, _END))
        except Exception as exc:  # relayed: the merged stream fails with it
            await queue.put((i, exc))

    pumps = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(started)]
    try:
        open_streams = len(started)
        while open_streams:
            i, item = await queue.get()
            if item is _END:
                open_streams -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                assert isinstance(item, GenerationChunk)
                yield renumbered(i, item)
    finally:
        for task in pumps:
            task.cancel()
        for s in started:
            await s.aclose()
