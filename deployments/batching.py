"""Dynamic batching of concurrent calls, and forward passes bounded by tokens.

A dynamic batch may hold many short texts or a few long ones. Padding makes a pass cost
about count x longest tokens, so items are sorted by length and cut into passes whose
padded size stays under a token budget: long inputs cannot form one pass that blows
memory or latency, and short ones are not padded to the longest.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


def token_batches(lengths: Sequence[int], max_tokens: int, max_count: int) -> list[list[int]]:
    """Indices of the items, grouped into passes of at most `max_count` items and at most
    `max_tokens` padded tokens (an item longer than that alone gets a pass of its own)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    passes: list[list[int]] = []
    current: list[int] = []
    for i in order:
        size = len(current) + 1
        if current and (size > max_count or size * lengths[i] > max_tokens):
            passes.append(current)
            current = []
        current.append(i)
    if current:
        passes.append(current)
    return passes


class DynamicBatcher(Generic[In, Out]):
    """Merges concurrent calls into one model call.

    A batch is formed when the model is free: every call that queued while the previous
    batch ran (up to `max_batch_size`) goes in, and only a batch that is not full waits up
    to `batch_wait_timeout_s` for more. Ray Serve's `@serve.batch` forms batches on its
    timer instead, also while the model is busy, so a model slower than the timer gets
    batches of one or two (measured: 1.8 requests per batch with 28 waiting).

    `concurrency` batches may run at once (a caller of a remote model keeps several calls
    in flight, so the model always has the next one): a call that finds one of them free
    starts a batch at once, and only calls that arrive while all are busy are merged.
    """

    def __init__(
        self,
        run: Callable[[list[In]], Awaitable[list[Out]]],
        max_batch_size: int,
        batch_wait_timeout_s: float,
        concurrency: int = 1,
    ):
        self._run = run
        self.max_batch_size = max_batch_size
        self.batch_wait_timeout_s = batch_wait_timeout_s
        self.concurrency = concurrency
        self._queue: deque[tuple[In, asyncio.Future[Out]]] = deque()
        self._arrived = asyncio.Event()
        self._workers: set[asyncio.Task[None]] = set()

    async def submit(self, item: In) -> Out:
        """`run`'s output for `item`, once a batch holding it has run; raises what `run`
        raised for that batch."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Out] = loop.create_future()
        self._queue.append((item, future))
        self._arrived.set()
        self._workers = {worker for worker in self._workers if not worker.done()}
        while len(self._workers) < self.concurrency:
            self._workers.add(loop.create_task(self._work()))
        return await future

    async def _next_batch(self) -> list[tuple[In, asyncio.Future[Out]]]:
        while not self._queue:
            self._arrived.clear()
            await self._arrived.wait()
        deadline = asyncio.get_running_loop().time() + self.batch_wait_timeout_s
        while len(self._queue) < self.max_batch_size:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                break
        batch: list[tuple[In, asyncio.Future[Out]]] = []
        while self._queue and len(batch) < self.max_batch_size:
            item, future = self._queue.popleft()
            if not future.done():  # a caller that gave up is left out
                batch.append((item, future))
        return batch

    async def _work(self) -> None:
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            try:
                outputs = await self._run([item for item, _ in batch])
            except Exception as exc:  # every caller of the batch gets the error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), output in zip(batch, outputs, strict=True):
                if not future.done():
                    future.set_result(output)
