"""This replica's live leases are kept alive; a dead replica's expire within `lease_ttl_s`.

Every lease is admitted for `lease_ttl_s` (30 s) and renewed for another one every third
of that, all of this replica's leases in one pipelined round trip. A replica that dies
stops renewing, so the concurrency slots it held come back within `lease_ttl_s` instead of
staying taken for as long as the longest request could run.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from gateway.quota.redis_store import QuotaStoreUnavailable

if TYPE_CHECKING:
    from gateway.quota.policy import Lease

log = logging.getLogger("raygate.quota")


class Renewals:
    def __init__(self, ttl_ms: int):
        self._ttl_ms = ttl_ms
        self._live: dict[str, Lease] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def live(self) -> int:
        return len(self._live)

    def keep(self, lease: Lease) -> None:
        """Renew this lease from now on, until `forget` (needs a running loop)."""
        self._live[lease.id] = lease
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def forget(self, lease: Lease) -> None:
        self._live.pop(lease.id, None)

    async def _run(self) -> None:
        while self._live:
            await asyncio.sleep(self._ttl_ms / 3000)  # the renewal period itself
            await self.renew()

    async def renew(self) -> None:
        """One pass: every live lease renewed in every store that holds it. A renewal that
        fails is tried again next pass (the lease has two more periods to live)."""
        calls = [
            hold.store.renew(lease.id, hold.lease_keys, self._ttl_ms)
            for lease in list(self._live.values())
            for hold in lease.holds
        ]
        for outcome in await asyncio.gather(*calls, return_exceptions=True):
            if isinstance(outcome, QuotaStoreUnavailable):
                log.debug("lease renewal failed: %s", outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
