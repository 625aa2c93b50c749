"""Leases whose settle (or admission) did not come back are settled again, by lease id.

Settling is idempotent (a lease that is no longer live refunds nothing), so a call whose
round trip failed, whether or not its script ran, is simply sent again until it lands or
the lease would have expired anyway. Without this a Redis latency spike would leave ghost
leases filling `concurrent_requests` until they expire (`lease_ttl_s`, 15 minutes).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.quota.redis_store import BucketCharge, QuotaStoreUnavailable

if TYPE_CHECKING:
    from gateway.quota.policy import QuotaStore

log = logging.getLogger("raygate.quota")


@dataclass(frozen=True)
class _Pending:
    store: QuotaStore
    route_class: str
    lease_keys: Sequence[str]
    refunds: Sequence[BucketCharge]
    until: float  # monotonic seconds: past it, the lease has expired by itself


class Resettler:
    """Retries settles every `every_s` in one background task; holds at most `max_pending`
    (the oldest is dropped first: its lease expires by itself)."""

    def __init__(
        self,
        record: Callable[[str, str, str], None],
        every_s: float = 0.5,
        max_pending: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._record = record
        self._every_s = every_s
        self._max_pending = max_pending
        self._clock = clock
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(
        self,
        store: QuotaStore,
        route_class: str,
        lease_id: str,
        lease_keys: Sequence[str],
        refunds: Sequence[BucketCharge],
        ttl_ms: int,
    ) -> None:
        """Settle this lease again later (refunding `refunds`), for up to `ttl_ms`."""
        if not lease_keys:
            return
        until = self._clock() + ttl_ms / 1000
        self._pending[lease_id] = _Pending(store, route_class, lease_keys, refunds, until)
        while len(self._pending) > self._max_pending:
            self._pending.popitem(last=False)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self._pending:
            await asyncio.sleep(self._every_s)  # the retry period itself
            await self.retry()

    async def retry(self) -> None:
        """One pass: settle every pending lease once, all at once (one pipelined round
        trip); keep those that fail."""
        now = self._clock()
        for lease_id in [i for i, p in self._pending.items() if now > p.until]:
            del self._pending[lease_id]
        pending = list(self._pending.items())
        outcomes = await asyncio.gather(
            *(p.store.settle(i, p.lease_keys, p.refunds) for i, p in pending),
            return_exceptions=True,
        )
        for (lease_id, p), outcome in zip(pending, outcomes, strict=True):
            if isinstance(outcome, QuotaStoreUnavailable):
                continue
            if isinstance(outcome, BaseException):
                raise outcome
            self._pending.pop(lease_id, None)
            if outcome:  # a lease that would have been a ghost until it expired
                tenant = p.lease_keys[0].split("{", 1)[-1].split("}", 1)[0]
                self._record(tenant, p.route_class, "ghost_settled")
