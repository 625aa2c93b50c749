"""RequestCounters: every request counted once, by how it ended."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from deployments.counters import RequestCounters


def test_running_is_what_has_not_ended() -> None:
    c = RequestCounters(started=5, finished=2, aborted=1, failed=1)
    assert c.running == 1
    assert c.snapshot() == {"started": 5, "finished": 2, "aborted": 1, "failed": 1, "running": 1}


async def stream(counters: RequestCounters, fail: bool = False) -> AsyncGenerator[int, None]:
    with counters.counting():
        yield 1
        if fail:
            raise RuntimeError("engine failed")
        yield 2


async def test_a_stream_read_to_its_end_finished() -> None:
    c = RequestCounters()
    assert [x async for x in stream(c)] == [1, 2]
    assert c.snapshot() == {"started": 1, "finished": 1, "aborted": 0, "failed": 0, "running": 0}


async def test_a_stream_that_raises_failed_and_the_error_goes_on() -> None:
    c = RequestCounters()
    with pytest.raises(RuntimeError, match="engine failed"):
        _ = [x async for x in stream(c, fail=True)]
    assert (c.failed, c.running) == (1, 0)


async def test_a_stream_closed_early_was_aborted() -> None:
    c = RequestCounters()
    chunks = stream(c)
    assert await anext(chunks) == 1
    assert c.running == 1
    await chunks.aclose()  # what Serve does when the caller leaves
    assert (c.aborted, c.finished, c.running) == (1, 0, 0)


async def test_a_cancelled_stream_was_aborted() -> None:
    c = RequestCounters()
    blocked = asyncio.Event()

    async def waiting() -> None:
        with c.counting():
            blocked.set()
            await asyncio.Event().wait()  # until cancelled

    task = asyncio.create_task(waiting())
    await blocked.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (c.aborted, c.running) == (1, 0)
