"""The gateway's embedder calls: one-text requests share calls, the rest go alone."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from ray.serve.exceptions import BackPressureError

from gateway.backends import ServeEmbeddingBackend
from schemas.embeddings import EmbeddingResult
from schemas.errors import Overloaded


class FakeEmbedder:
    """An embedder handle: each text's vector is [its length, call number]."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.release = asyncio.Event()
        self.full = False
        self.embed = self  # handle.embed.remote(...)

    def remote(self, texts: list[str]) -> Any:
        self.calls.append(texts)
        number = len(self.calls)

        async def answer() -> EmbeddingResult:
            if self.full:
                raise BackPressureError(num_queued_requests=1, max_queued_requests=1)
            await self.release.wait()
            vectors = np.array([[len(t), number] for t in texts], dtype=np.float32)
            return EmbeddingResult(vectors, [len(t) for t in texts])

        return answer()


def backend(handle: FakeEmbedder, calls: int | None = 1) -> ServeEmbeddingBackend:
    return ServeEmbeddingBackend(handle, calls, max_texts_per_call=3)  # type: ignore[arg-type]


async def test_single_texts_that_arrive_while_the_call_slot_is_busy_share_the_next() -> None:
    handle = FakeEmbedder()
    embedder = backend(handle)
    first = asyncio.ensure_future(embedder.embed(["a"]))
    for _ in range(20):  # scheduler turns, no waiting on time
        await asyncio.sleep(0)
    assert handle.calls == [["a"]]
    waiting = [asyncio.ensure_future(embedder.embed(["b" * n])) for n in range(2, 7)]
    await asyncio.sleep(0)
    handle.release.set()
    results = await asyncio.gather(first, *waiting)
    assert handle.calls == [["a"], ["bb", "bbb", "bbbb"], ["bbbbb", "bbbbbb"]]  # at most 3
    for n, result in enumerate(results, start=1):  # each gets its own row back
        assert result.vectors.shape == (1, 2) and result.vectors[0, 0] == n
        assert result.token_counts == [n]
    assert [int(r.vectors[0, 1]) for r in results] == [1, 2, 2, 2, 3, 3]


async def test_requests_of_several_texts_and_unshared_backends_call_alone() -> None:
    handle = FakeEmbedder()
    handle.release.set()
    shared, alone = backend(handle), backend(handle, calls=None)
    both = await shared.embed(["x", "yy"])
    assert both.token_counts == [1, 2] and handle.calls == [["x", "yy"]]
    await asyncio.gather(alone.embed(["p"]), alone.embed(["q"]))
    assert handle.calls[1:] == [["p"], ["q"]]


@pytest.mark.parametrize("calls", [1, None])
async def test_a_full_embedder_queue_is_overloaded_for_every_request(calls: int | None) -> None:
    handle = FakeEmbedder()
    handle.full = True
    embedder = backend(handle, calls)
    results = await asyncio.gather(
        embedder.embed(["a"]), embedder.embed(["b"]), return_exceptions=True
    )
    assert all(isinstance(r, Overloaded) for r in results)
