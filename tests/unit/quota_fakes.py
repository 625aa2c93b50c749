"""An in-memory QuotaStore over the reference bucket arithmetic, with an injected clock."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.quota.buckets import BucketState, Decision, InMemoryBuckets
from gateway.quota.redis_store import AdmitResult, BucketCharge, QuotaStoreUnavailable


@dataclass
class Clock:
    now_ms: int = 1_000_000

    def __call__(self) -> int:
        return self.now_ms


@dataclass
class InMemoryQuotaStore:
    clock: Clock
    down: bool = False
    leases: dict[str, dict[str, int]] = field(default_factory=dict)  # key -> id -> expiry

    def __post_init__(self) -> None:
        self.buckets = InMemoryBuckets(self.clock)

    def _live(self, lease_key: str) -> dict[str, int]:
        now = self.clock()
        live = {i: exp for i, exp in self.leases.get(lease_key, {}).items() if exp > now}
        self.leases[lease_key] = live
        return live

    async def admit(
        self,
        lease_key: str,
        lease_id: str,
        lease_ttl_ms: int,
        max_leases: int | None,
        charges: Sequence[BucketCharge],
    ) -> AdmitResult:
        if self.down:
            raise QuotaStoreUnavailable("down")
        live = self._live(lease_key)
        if max_leases is not None and len(live) >= max_leases:
            levels = [self.buckets._level(c.key, c.limit, self.clock()) for c in charges]
            states = [BucketState(c.limit, lvl) for c, lvl in zip(charges, levels, strict=True)]
            return AdmitResult(Decision(False, states, None, 1000), len(live))
        decision = self.buckets.take(
            [c.key for c in charges], [c.limit for c in charges], [c.amount for c in charges]
        )
        if decision.admitted:
            live[lease_id] = self.clock() + lease_ttl_ms
        return AdmitResult(decision, len(live))

    async def settle(self, lease_key: str, lease_id: str, refunds: Sequence[BucketCharge]) -> bool:
        if self.down:
            raise QuotaStoreUnavailable("down")
        if self._live(lease_key).pop(lease_id, None) is None:
            return False
        for r in refunds:
            if r.amount > 0:
                self.buckets.refund(r.key, r.limit, r.amount)
        return True
