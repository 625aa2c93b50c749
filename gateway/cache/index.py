"""The in-process vector index of one gateway replica: FAISS, one flat index per partition.

It is a copy of what Redis holds (built at start, then kept in sync from the entry
stream), so it may lag or hold an entry Redis has already dropped: a hit is always read
back from Redis before it is served, so staleness can only cost a hit, never serve a
wrong or expired answer. Entries leave when their TTL passes (checked on the clock
given), when a newer answer replaces them, or when Redis no longer has them.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np

from gateway.cache.decision import Candidate


@dataclass(frozen=True)
class IndexedEntry:
    entry_id: int
    partition: str
    query: str
    expires_at: float


def unit(vector: np.ndarray) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


class VectorIndex:
    def __init__(self, clock: Callable[[], float] = time.time):
        self.dimensions: int | None = None  # set by the first vector
        self._clock = clock
        self._partitions: dict[str, faiss.IndexIDMap2] = {}
        self._entries: dict[int, IndexedEntry] = {}
        self._expiry: list[tuple[float, int]] = []  # heap

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, entry_id: int) -> bool:
        return entry_id in self._entries

    def add(self, entry: IndexedEntry, vector: np.ndarray) -> None:
        if entry.entry_id in self._entries or entry.expires_at <= self._clock():
            return
        v = unit(vector)
        if self.dimensions is None:
            self.dimensions = int(v.shape[0])
        if v.shape[0] != self.dimensions:
            raise ValueError(f"vector has {v.shape[0]} dimensions, the index {self.dimensions}")
        index = self._partitions.get(entry.partition)
        if index is None:
            flat = faiss.IndexFlatIP(self.dimensions)
            index = self._partitions[entry.partition] = faiss.IndexIDMap2(flat)
        index.add_with_ids(v.reshape(1, -1), np.array([entry.entry_id], dtype=np.int64))
        self._entries[entry.entry_id] = entry
        heapq.heappush(self._expiry, (entry.expires_at, entry.entry_id))

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
        if index is None or unit(vector).shape[0] != self.dimensions:
            return []
        scores, ids = index.search(unit(vector).reshape(1, -1), k)
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
