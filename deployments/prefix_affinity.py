"""Prefix-affinity replica choice for LLM deployments (a Ray Serve request router).

vLLM keeps the KV cache of recent prompts (prefix caching): a conversation's next turn,
or any prompt that starts like an earlier one, skips the prefill of the shared part if
it lands on the replica that served it. Each handle's router (one per gateway replica)
remembers which replica last received each block of prompt tokens, as a chain of block
hashes like vLLM's own, and sends a request to the replica holding its longest known
prefix, unless that replica's queue is longer than the shortest by more than
`max_imbalance` requests, or full; then, and for prompts with no known prefix, the
least loaded replica wins (Serve's usual choice).

What one gateway replica learnt, another does not know. A client that names the
conversation (OpenAI's `prompt_cache_key`, or `user`) gets the same replica from every
gateway replica: the key picks it by rendezvous hashing, stable across processes.
"""

from __future__ import annotations

import hashlib
import random
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

from schemas.generation import GenerationRequest


def block_hashes(token_ids: Sequence[int], block_tokens: int, max_blocks: int) -> list[int]:
    """Hash of each full block of tokens, chained: equal hashes mean equal prefixes."""
    hashes: list[int] = []
    previous = 0
    for start in range(0, min(len(token_ids), block_tokens * max_blocks), block_tokens):
        block = tuple(token_ids[start : start + block_tokens])
        if len(block) < block_tokens:
            break
        previous = hash((previous, block))
        hashes.append(previous)
    return hashes


class PrefixIndex:
    """Which replica received which prefix last, for the most recent `capacity` blocks."""

    def __init__(self, capacity: int):
        self._capacity = capacity
        self._owner: OrderedDict[int, str] = OrderedDict()

    def longest_match(self, hashes: Sequence[int], replicas: set[str]) -> tuple[str | None, int]:
        """The replica holding the longest prefix (among `replicas`) and its length in blocks."""
        for depth in range(len(hashes), 0, -1):
            owner = self._owner.get(hashes[depth - 1])
            if owner is not None and owner in replicas:
                return owner, depth
        return None, 0

    def record(self, hashes: Sequence[int], replica: str) -> None:
        for h in hashes:
            self._owner[h] = replica
            self._owner.move_to_end(h)
        while len(self._owner) > self._capacity:
            self._owner.popitem(last=False)

    def forget(self, replica: str) -> None:
        for h in [h for h, owner in self._owner.items() if owner == replica]:
            del self._owner[h]


def generation_request(request: PendingRequest | None) -> GenerationRequest | None:
    for arg in request.args if request is not None else []:
        if isinstance(arg, GenerationRequest):
            return arg
    return None


def rendezvous(key: str, replicas: list[str]) -> str:
    """The replica that `key` belongs to: the same in every process, and only the keys of
    a replica that leaves move elsewhere."""

    def weight(replica: str) -> bytes:
        return hashlib.blake2b(f"{key}\0{replica}".encode(), digest_size=8).digest()

    return max(replicas, key=weight)


class PrefixAffinityRouter(RequestRouter):
    """Requests are matched to their replica by request id (no FIFO reassignment), so
    the replica chosen for a prompt's prefix is the one that serves it."""

    def initialize_state(self, **kwargs: Any) -> None:
        self._block_tokens = int(kwargs.get("block_tokens", 16))
        self._max_blocks = int(kwargs.get("max_prefix_tokens", 8192)) // self._block_tokens
        self._max_imbalance = int(kwargs.get("max_imbalance", 4))
        self._index = PrefixIndex(int(kwargs.get("capacity_blocks", 200_000)))
        # Block hashes by internal request id, from routing until routed (bounded: a
        # request cancelled while being routed never reaches on_request_routed).
        self._hashes: OrderedDict[str, list[int]] = OrderedDict()

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        request = generation_request(pending_request)
        ids = request.prompt_token_ids if request is not None else None
        hashes = block_hashes(ids, self._block_tokens, self._max_blocks) if ids else []
        if pending_request is not None and hashes:
            self._hashes[pending_request.metadata.internal_request_id] = hashes
            while len(self._hashes) > 10_000:
                self._hashes.popitem(last=False)
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        if request is not None and request.affinity_key:
            owner: str | None = rendezvous(request.affinity_key, sorted(by_id))
        else:
            owner, _ = self._index.longest_match(hashes, set(by_id))
        if owner is None or len(candidate_replicas) == 1:
            return [random.sample(candidate_replicas, min(2, len(candidate_replicas)))]
        preferred = by_id[owner]
        others = [r for r in candidate_replicas if r is not preferred]
        if self._overloaded(preferred, others):
            return [others]
        return [[preferred], others]

    def _overloaded(self, preferred: RunningReplica, others: list[RunningReplica]) -> bool:
        """Known queue lengths say the preferred replica is too far behind the others."""
        cache = self.replica_queue_len_cache
        mine = cache.get(preferred.replica_id)
        theirs = [q for q in (cache.get(r.replica_id) for r in others) if q is not None]
        return mine is not None and bool(theirs) and mine - min(theirs) > self._max_imbalance

    def on_request_routed(
        self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any
    ) -> None:
        hashes = self._hashes.pop(pending_request.metadata.internal_request_id, None)
        if hashes:
            self._index.record(hashes, replica_id.unique_id)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self._index.forget(replica_id.unique_id)
