"""How many gateway replicas are live: each one heartbeats into the quota Redis.

While Redis is down the `local` quota mode divides every limit by the last count known
(before the first heartbeat: the configured number of replicas).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Protocol

from gateway.quota.redis_store import QuotaStoreUnavailable


class Heartbeats(Protocol):
    async def heartbeat(self, replica_id: str, ttl_ms: int) -> int: ...


class ReplicaCount:
    def __init__(self, store: Heartbeats, initial: int, every_s: float):
        self._store = store
        self._count = max(1, initial)
        self._every_s = every_s
        self._id = uuid.uuid4().hex
        self._task: asyncio.Task[None] | None = None

    def count(self) -> int:
        """The live replicas, as last known."""
        return self._count

    def start(self) -> None:
        """Heartbeat in the background from now on (idempotent; needs a running loop)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await self.beat()
            await asyncio.sleep(self._every_s)  # the heartbeat period itself

    async def beat(self) -> None:
        """One heartbeat; the count stays as it was if Redis does not answer."""
        try:
            self._count = max(1, await self._store.heartbeat(self._id, int(self._every_s * 3000)))
        except QuotaStoreUnavailable:
            pass
