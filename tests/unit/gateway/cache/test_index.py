from __future__ import annotations

import numpy as np
import pytest

from gateway.cache.index import IndexedEntry, VectorIndex


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def vec(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def entry(entry_id: int, partition: str = "p", expires_at: float = 2000.0) -> IndexedEntry:
    return IndexedEntry(entry_id, partition, f"q{entry_id}", expires_at)


def test_search_ranks_by_cosine_within_one_partition() -> None:
    index = VectorIndex(Clock())
    index.add(entry(1), vec(1, 0, 0))
    index.add(entry(2), vec(1, 1, 0))  # not normalised: the index normalises
    index.add(entry(3, partition="other"), vec(1, 0, 0))
    found = index.search("p", vec(2, 0, 0), k=5)
    assert [c.entry_id for c in found] == [1, 2]
    # fp16 codes: similarities within 1e-3
    assert found[0].similarity == pytest.approx(1.0, abs=1e-3)
    assert found[1].similarity == pytest.approx(1 / np.sqrt(2), abs=1e-3)
    assert index.search("missing", vec(1, 0, 0), k=5) == []


def test_remove_and_re_add_are_idempotent() -> None:
    index = VectorIndex(Clock())
    index.add(entry(1), vec(1, 0))
    index.add(entry(1), vec(0, 1))  # a replayed event: ignored
    assert len(index) == 1 and index.search("p", vec(1, 0), 1)[0].similarity == pytest.approx(
        1, abs=1e-3
    )
    index.remove(1)
    index.remove(1)
    assert len(index) == 0 and index.search("p", vec(1, 0), 1) == []


def test_expired_entries_are_not_found_and_are_swept() -> None:
    clock = Clock()
    index = VectorIndex(clock)
    index.add(entry(1, expires_at=1010), vec(1, 0))
    index.add(entry(2, expires_at=1020), vec(1, 0))
    index.add(entry(3, expires_at=999), vec(1, 0))  # already expired: never added
    clock.now = 1015
    assert [c.entry_id for c in index.search("p", vec(1, 0), 5)] == [2]
    assert index.expire() == 1 and len(index) == 1
    clock.now = 1030
    assert index.expire() == 1 and len(index) == 0


def test_a_vector_of_another_size_is_refused() -> None:
    index = VectorIndex(Clock())
    index.add(entry(1), vec(1, 0, 0))
    with pytest.raises(ValueError, match="dimensions"):
        index.add(entry(2), vec(1, 0))
    assert index.search("p", vec(1, 0), 1) == []
