from __future__ import annotations

import pytest

from deployments.batching import token_batches


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
