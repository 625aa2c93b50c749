"""The in-process vector index of one gateway replica: FAISS, one flat index per partition.

It is a copy of what Redis holds (built at start, then kept in sync from the entry
stream), so it may lag or hold an entry Redis has already dropped: a hit is always read
back from Redis before it is served, so staleness can only cost a hit, never serve a
wrong or expired answer. Entries leave when their TTL passes (checked on the clock
given), when a newer answer replaces them, when Redis no longer has them, or, beyond
`max_entries`, oldest first (entry ids grow with time, so every replica drops the same;
a hundredth at a time).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np

from gateway.cache.decision import Candidate

# One query at a time: OpenMP threads only contend with the event loop and the engine.
faiss.omp_set_num_threads(1)


@dataclass(frozen=True)
class IndexedEntry:
    entry_id: int
    partition: str
    query: str
    expires_at: float


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Float32 rows scaled to length 1 (zero rows stay zero)."""
    rows = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms > 0, norms, 1)


class VectorIndex:
    """Exhaustive (exact) inner-product search per partition, over fp16 codes."""

    def __init__(self, max_entries: int, clock: Callable[[], float] = time.time):
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.dimensions: int | None = None  # set by the first vector
        self.max_entries = max_entries
        self._clock = clock
        self._partitions: dict[str, faiss.IndexIDMap2] = {}
        self._entries: dict[int, IndexedEntry] = {}
        # Heaps of (expires_at, id) and of ids (oldest first); an id removed otherwise
        # stays until it surfaces or the heap is rebuilt (when mostly such ids).
        self._expiry: list[tuple[float, int]] = []
        self._age: list[int] = []

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, entry: IndexedEntry, vector: np.ndarray) -> None:
        self.add_many([entry], np.asarray(vector, dtype=np.float32).reshape(1, -1))

    def add_many(self, entries: list[IndexedEntry], vectors: np.ndarray) -> None:
        """Add entries (row i of `vectors` is entry i's); known or expired ones are skipped."""
        now = self._clock()
        keep = [
            i
            for i, e in enumerate(entries)
            if e.entry_id not in self._entries and e.expires_at > now
        ]
        if not keep:
            return
        rows = unit_rows(np.asarray(vectors)[keep])
        if self.dimensions is None:
            self.dimensions = int(rows.shape[1])
        if rows.shape[1] != self.dimensions:
            raise ValueError(f"vector has {rows.shape[1]} dimensions, the index {self.dimensions}")
        by_partition: dict[str, list[int]] = {}
        for row, i in enumerate(keep):
            by_partition.setdefault(entries[i].partition, []).append(row)
        for partition, picked in by_partition.items():
            index = self._partitions.get(partition)
            if index is None:
                # Half-precision codes: half the memory and scan time of float32, and
                # similarities off by ~1e-4 at most (far below any useful threshold step).
                codes = faiss.IndexScalarQuantizer(
                    self.dimensions, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
                )
                index = self._partitions[partition] = faiss.IndexIDMap2(codes)
            ids = np.array([entries[keep[r]].entry_id for r in picked], dtype=np.int64)
            index.add_with_ids(rows[picked], ids)
        for i in keep:
            entry = entries[i]
            self._entries[entry.entry_id] = entry
            heapq.heappush(self._expiry, (entry.expires_at, entry.entry_id))
            heapq.heappush(self._age, entry.entry_id)
        self._drop_oldest()

    def _drop_oldest(self) -> None:
        """Beyond max_entries, remove the oldest entries (by id) down to 99% of it, in one
        pass: a removal rewrites the partition's codes (~50 ms at 100k entries of 384
        dimensions), so it is paid once per hundredth of the index, not once per add."""
        if len(self._entries) <= self.max_entries:
            return
        keep = self.max_entries - self.max_entries // 100
        excess = len(self._entries) - keep
        oldest: list[int] = []
        while len(oldest) < excess:
            entry_id = heapq.heappop(self._age)
            if entry_id in self._entries:
                oldest.append(entry_id)
        self.remove(*oldest)

    def remove(self, *entry_ids: int) -> None:
        by_partition: dict[str, list[int]] = {}
        for entry_id in entry_ids:
            entry = self._entries.pop(entry_id, None)
            if entry is not None:
                by_partition.setdefault(entry.partition, []).append(entry_id)
        for partition, ids in by_partition.items():
            index = self._partitions[partition]
            # One pass over the partition (the stub only knows the IDSelector overload).
            index.remove_ids(np.array(ids, dtype=np.int64))  # type: ignore[arg-type]
            if index.ntotal == 0:
                del self._partitions[partition]
        self._compact()

    def _compact(self) -> None:
        """Rebuild the heaps once they are mostly ids removed meanwhile, so that their
        memory follows the index's size, not the number of entries ever held."""
        live = len(self._entries)
        if len(self._expiry) > 2 * live + 64:
            self._expiry = [(e.expires_at, e.entry_id) for e in self._entries.values()]
            heapq.heapify(self._expiry)
        if len(self._age) > 2 * live + 64:
            self._age = list(self._entries)
            heapq.heapify(self._age)

    def expire(self) -> int:
        """Drop entries whose TTL has passed; returns how many."""
        now, due = self._clock(), []
        while self._expiry and self._expiry[0][0] <= now:
            due.append(heapq.heappop(self._expiry)[1])
        live = [entry_id for entry_id in due if entry_id in self._entries]
        self.remove(*live)
        return len(live)

    def search(self, partition: str, vector: np.ndarray, k: int) -> list[Candidate]:
        """The k nearest live entries of one partition, by cosine similarity."""
        index = self._partitions.get(partition)
        query = unit_rows(np.asarray(vector).reshape(1, -1))
        if index is None or query.shape[1] != self.dimensions:
            return []
        scores, ids = index.search(query, k)
        now = self._clock()
        out = []
        for score, entry_id in zip(scores[0], ids[0], strict=True):
            entry = self._entries.get(int(entry_id))
            if entry is not None and entry.expires_at > now:
                out.append(Candidate(entry.entry_id, float(score), entry.query))
        return out

    def clear(self) -> None:
        self._partitions.clear()
        self._entries.clear()
        self._expiry.clear()
        self._age.clear()
