from __future__ import annotations

import asyncio

import pytest

from deployments.batching import DynamicBatcher, token_batches


def test_passes_are_bounded_by_count_and_padded_tokens() -> None:
    lengths = [5, 100, 6, 7, 90, 8]
    passes = token_batches(lengths, max_tokens=200, max_count=3)
    assert sorted(i for p in passes for i in p) == list(range(len(lengths)))  # each once
    for p in passes:
        assert len(p) <= 3
        assert len(p) * max(lengths[i] for i in p) <= 200
    # Short items travel together instead of being padded to a long one.
    assert passes[0] == [0, 2, 3]


def test_an_item_over_the_budget_gets_a_pass_of_its_own() -> None:
    assert token_batches([10, 500, 10], max_tokens=100, max_count=8) == [[0, 2], [1]]


@pytest.mark.parametrize("n", [0, 1, 7])
def test_every_item_is_placed_once(n: int) -> None:
    passes = token_batches([3] * n, max_tokens=6, max_count=4)
    assert [i for p in passes for i in p] == list(range(n))
    assert all(len(p) <= 2 for p in passes)


async def test_calls_queued_while_the_model_runs_form_the_next_batch() -> None:
    started, release = asyncio.Event(), asyncio.Event()
    batches: list[list[int]] = []

    async def run(items: list[int]) -> list[int]:
        batches.append(items)
        if len(batches) == 1:
            started.set()
            await release.wait()  # the model is busy with the first batch
        return [i * 10 for i in items]

    batcher: DynamicBatcher[int, int] = DynamicBatcher(run, 4, batch_wait_timeout_s=0)
    first = asyncio.ensure_future(batcher.submit(0))
    await started.wait()
    rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 7)]
    await asyncio.sleep(0)  # one scheduler turn: the six calls queue up
    release.set()
    assert await first == 0
    assert await asyncio.gather(*rest) == [10, 20, 30, 40, 50, 60]
    assert batches == [[0], [1, 2, 3, 4], [5, 6]]  # full batches, in order


async def test_an_error_reaches_every_caller_of_its_batch_and_the_batcher_goes_on() -> None:
    async def run(items: list[str]) -> list[str]:
        if "bad" in items:
            raise ValueError("model failed")
        return [s.upper() for s in items]

    batcher: DynamicBatcher[str, str] = DynamicBatcher(run, 8, batch_wait_timeout_s=0.001)
    results = await asyncio.gather(
        batcher.submit("a"), batcher.submit("bad"), return_exceptions=True
    )
    assert all(isinstance(r, ValueError) for r in results)
    assert await batcher.submit("ok") == "OK"


async def test_a_caller_that_gave_up_is_left_out() -> None:
    seen: list[list[str]] = []

    async def run(items: list[str]) -> list[str]:
        seen.append(items)
        return items

    batcher: DynamicBatcher[str, str] = DynamicBatcher(run, 8, batch_wait_timeout_s=0.05)
    gone = asyncio.ensure_future(batcher.submit("gone"))
    await asyncio.sleep(0)
    gone.cancel()
    assert await batcher.submit("kept") == "kept"
    assert seen == [["kept"]]


async def test_with_free_slots_calls_run_at_once_and_only_the_overflow_is_merged() -> None:
    release = asyncio.Event()
    batches: list[list[int]] = []

    async def run(items: list[int]) -> list[int]:
        batches.append(items)
        if len(batches) <= 2:
            await release.wait()  # both slots busy
        return items

    batcher: DynamicBatcher[int, int] = DynamicBatcher(run, 8, 0.0, concurrency=2)
    busy = []
    for i in (0, 1):
        busy.append(asyncio.ensure_future(batcher.submit(i)))
        for _ in range(20):  # scheduler turns, no waiting on time
            await asyncio.sleep(0)
        assert len(batches) == i + 1  # it started though another runs: a slot was free
    assert batches == [[0], [1]]
    rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(2, 6)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*busy, *rest) == list(range(6))
    assert batches[2:] == [[2, 3, 4, 5]]  # what queued meanwhile went as one
