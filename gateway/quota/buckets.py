"""Token-bucket arithmetic: the pure core of quotas (times in milliseconds, clock injected).

A bucket holds up to `burst` units and refills continuously at `rate_per_min`. Taking
`cost` succeeds only if the bucket holds that much; several buckets are taken all or
nothing. The Redis store runs the same arithmetic in one Lua script (quota/redis_store.py); the
in-memory buckets here are its reference, and the local store's (quota/local_store.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Limit:
    """One bucket's shape."""

    rate_per_min: float  # refill
    burst: float  # capacity

    @property
    def rate_per_ms(self) -> float:
        return self.rate_per_min / 60_000.0


@dataclass(frozen=True, slots=True)
class BucketState:
    """A bucket after a decision: what is left and when it will be full again."""

    limit: Limit
    remaining: float

    @property
    def reset_ms(self) -> int:
        missing = self.limit.burst - self.remaining
        if missing <= 0:
            return 0
        if self.limit.rate_per_ms <= 0:
            return 0
        return math.ceil(missing / self.limit.rate_per_ms)


def refill(level: float, updated_ms: int, now_ms: int, limit: Limit) -> float:
    elapsed = max(0, now_ms - updated_ms)
    return min(limit.burst, level + elapsed * limit.rate_per_ms)


def wait_ms(level: float, cost: float, limit: Limit) -> int | None:
    """How long until `cost` fits; None if it never can (more than the burst)."""
    if cost > limit.burst:
        return None
    if level >= cost:
        return 0
    if limit.rate_per_ms <= 0:
        return None
    return math.ceil((cost - level) / limit.rate_per_ms)


@dataclass(frozen=True, slots=True)
class Decision:
    admitted: bool
    states: list[BucketState]  # per bucket, after the decision
    denied_index: int | None = None  # which bucket said no
    retry_after_ms: int | None = None  # None with admitted=False: can never fit


@dataclass
class _Bucket:
    level: float
    updated_ms: int


@dataclass
class InMemoryBuckets:
    """Reference implementation of take/refund over named buckets."""

    clock_ms: Callable[[], int]
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def level(self, key: str, limit: Limit, now: int) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            return limit.burst
        return refill(bucket.level, bucket.updated_ms, now, limit)

    def take(
        self, keys: Sequence[str], limits: Sequence[Limit], costs: Sequence[float]
    ) -> Decision:
        now = self.clock_ms()
        levels = [self.level(k, lim, now) for k, lim in zip(keys, limits, strict=True)]
        for i, (level, limit, cost) in enumerate(zip(levels, limits, costs, strict=True)):
            wait = wait_ms(level, cost, limit)
            if wait != 0:
                states = [BucketState(lim, lvl) for lim, lvl in zip(limits, levels, strict=True)]
                return Decision(False, states, denied_index=i, retry_after_ms=wait)
        after = [lvl - cost for lvl, cost in zip(levels, costs, strict=True)]
        for key, level in zip(keys, after, strict=True):
            self._buckets[key] = _Bucket(level, now)
        return Decision(
            True, [BucketState(lim, lvl) for lim, lvl in zip(limits, after, strict=True)]
        )

    def refund(self, key: str, limit: Limit, amount: float) -> float:
        now = self.clock_ms()
        level = min(limit.burst, self.level(key, limit, now) + amount)
        self._buckets[key] = _Bucket(level, now)
        return level
