"""Quota state in this process's memory: the same contract as the Redis store.

The policy uses it while the quota Redis is down and a route class is set to `local`:
each gateway replica then enforces its share of every limit by itself. Unit tests use it
as the store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from gateway.quota.buckets import BucketState, Decision, InMemoryBuckets
from gateway.quota.redis_store import AdmitResult, BucketCharge, LeaseSet


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


class LocalQuotaStore:
    def __init__(self, clock_ms: Callable[[], int] = _now_ms):
        self._clock = clock_ms
        self.buckets = InMemoryBuckets(clock_ms)
        self.leases: dict[str, dict[str, int]] = {}  # lease set -> lease id -> expiry (ms)

    def _live(self, key: str) -> dict[str, int]:
        now = self._clock()
        live = {i: exp for i, exp in self.leases.get(key, {}).items() if exp > now}
        if live:
            self.leases[key] = live
        else:
            self.leases.pop(key, None)
        return live

    async def admit(
        self,
        lease_id: str,
        lease_ttl_ms: int,
        leases: Sequence[LeaseSet],
        charges: Sequence[BucketCharge],
    ) -> AdmitResult:
        """Take every charge and add the lease to every set, or nothing (as RedisQuotaStore)."""
        for j, s in enumerate(leases):
            if s.max is not None and len(self._live(s.key)) >= s.max:
                now = self._clock()
                levels = [self.buckets.level(c.key, c.limit, now) for c in charges]
                states = [BucketState(c.limit, lvl) for c, lvl in zip(charges, levels, strict=True)]
                return AdmitResult(Decision(False, states, None, 1000), denied_lease=j)
        decision = self.buckets.take(
            [c.key for c in charges], [c.limit for c in charges], [c.amount for c in charges]
        )
        if decision.admitted:
            for s in leases:
                self._live(s.key)
                self.leases.setdefault(s.key, {})[lease_id] = self._clock() + lease_ttl_ms
        return AdmitResult(decision)

    async def settle(
        self, lease_id: str, lease_keys: Sequence[str], refunds: Sequence[BucketCharge]
    ) -> bool:
        """End the lease and refund; False if it was not live (as RedisQuotaStore)."""
        live = [self._live(k).pop(lease_id, None) is not None for k in lease_keys]
        if not any(live):
            return False
        for r in refunds:
            if r.amount > 0:
                self.buckets.refund(r.key, r.limit, r.amount)
        return True

    async def renew(self, lease_id: str, lease_keys: Sequence[str], lease_ttl_ms: int) -> bool:
        """Extend a live lease by `lease_ttl_ms` from now (as RedisQuotaStore)."""
        held = False
        for key in lease_keys:
            live = self._live(key)
            if lease_id in live:
                live[lease_id] = self._clock() + lease_ttl_ms
                held = True
        return held

    def in_flight(self, key: str) -> int:
        return len(self._live(key))

    async def heartbeat(self, replica_id: str, ttl_ms: int) -> int:
        """The live gateway replicas this store knows of: only this one."""
        return 1
