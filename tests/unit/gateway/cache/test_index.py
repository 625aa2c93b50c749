from __future__ import annotations

import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from gateway.cache.index import IndexedEntry, VectorIndex
from tests.paths import ROOT


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
    index = VectorIndex(100, Clock())
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
    index = VectorIndex(100, Clock())
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
    index = VectorIndex(100, clock)
    index.add(entry(1, expires_at=1010), vec(1, 0))
    index.add(entry(2, expires_at=1020), vec(1, 0))
    index.add(entry(3, expires_at=999), vec(1, 0))  # already expired: never added
    clock.now = 1015
    assert [c.entry_id for c in index.search("p", vec(1, 0), 5)] == [2]
    assert index.expire() == 1 and len(index) == 1
    clock.now = 1030
    assert index.expire() == 1 and len(index) == 0


def test_a_vector_of_another_size_is_refused() -> None:
    index = VectorIndex(100, Clock())
    index.add(entry(1), vec(1, 0, 0))
    with pytest.raises(ValueError, match="dimensions"):
        index.add(entry(2), vec(1, 0))
    assert index.search("p", vec(1, 0), 1) == []


def test_beyond_max_entries_the_oldest_ids_leave() -> None:
    index = VectorIndex(3, Clock())
    for entry_id in (5, 1, 4):
        index.add(entry(entry_id), vec(1, 0))
    index.add_many([entry(2), entry(3, partition="other")], np.array([[1, 0], [1, 0]]))
    # Ids grow with time: 1 and 2 are the oldest, whatever order they arrived in.
    assert len(index) == 3
    assert sorted(c.entry_id for c in index.search("p", vec(1, 0), 10)) == [4, 5]
    assert [c.entry_id for c in index.search("other", vec(1, 0), 10)] == [3]
    index.add(entry(6), vec(1, 0))
    assert len(index) == 3 and index.search("other", vec(1, 0), 10) == []


def bytes_grown_over_churn() -> int:
    """Bytes the index's process grows by while 20,000 entries come and go through a
    10-entry index (after a first 1,000 to reach its steady state)."""
    index = VectorIndex(10, Clock())

    def churn(first: int, count: int) -> None:
        for entry_id in range(first, first + count):
            index.add(entry(entry_id), vec(1, 0))
            if entry_id % 2:
                index.remove(entry_id)  # a replaced entry; the others leave as the oldest

    churn(0, 1000)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        churn(1000, 20_001)  # ends on an entry kept
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(index) == 10
    return grown


def test_memory_follows_the_entries_held_not_the_entries_ever_held() -> None:
    # Measured in a fresh interpreter: CPython 3.11's tracemalloc crashes the process when
    # a thread it has not seen takes the GIL while tracing, as Ray's core-worker threads
    # do in this (session-wide) test process once the integration cluster has started.
    measure = f"from {__name__} import bytes_grown_over_churn as m; print(m())"
    done = subprocess.run(
        [sys.executable, "-c", measure], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    grown = int(done.stdout.split()[-1])
    assert grown < 50_000, f"{grown} bytes more after 20,000 entries came and went"


def test_max_entries_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        VectorIndex(0, Clock())


def test_a_full_index_drops_a_hundredth_at_once() -> None:
    index = VectorIndex(200, Clock())
    index.add_many([entry(i) for i in range(200)], np.tile(vec(1, 0), (200, 1)))
    assert len(index) == 200
    index.add(entry(200), vec(1, 0))
    assert len(index) == 198  # ids 0-2 left together
    assert min(c.entry_id for c in index.search("p", vec(1, 0), 200)) == 3
