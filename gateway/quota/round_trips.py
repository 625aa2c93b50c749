"""Lua script calls to the quota Redis, many per round trip.

Calls made while a round trip is in flight leave together in the next one, as one
pipeline: a burst of 150 admissions costs a few round trips instead of 150 calls queued
behind a connection pool, and no call waits behind the others' deadlines. Each round trip
is reported to `RedisHealth`; while Redis is judged down a call fails at once. A round trip
slower than `abandon_s` is abandoned: its calls fail (their scripts may still have run, so
callers settle their leases again later).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError

from gateway.quota.health import RedisHealth


class QuotaStoreUnavailable(Exception):
    """Redis is judged down, or this call's round trip failed."""


class NotSent(QuotaStoreUnavailable):
    """Redis is judged down: the call was not sent (so it cannot have run)."""


@dataclass(frozen=True)
class Script:
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


@dataclass
class _Call:
    script: Script
    keys: Sequence[str]
    args: Sequence[object]
    future: asyncio.Future[Any]


class RoundTrips:
    def __init__(self, redis: Redis, health: RedisHealth, abandon_s: float = 1.0):
        self._redis = redis
        self._health = health
        self._abandon_s = abandon_s
        self._queue: list[_Call] = []
        self._sender: asyncio.Task[None] | None = None
        health.probe_with(redis.ping)

    @property
    def health(self) -> RedisHealth:
        return self._health

    async def call(self, script: Script, keys: Sequence[str], args: Sequence[object]) -> Any:
        """The script's reply. Raises QuotaStoreUnavailable when Redis is judged down (at
        once), when this call's round trip failed or was abandoned, or when the script
        raised. Cancelling the caller does not unsend the call."""
        self._health.watch_lag()
        if not self._health.up:
            raise NotSent(f"judged down: {self._health.reason}")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(_Call(script, keys, args, future))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_all())
        return await future

    async def _send_all(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            started = time.monotonic()
            try:
                replies = await asyncio.wait_for(self._send(batch), self._abandon_s)
            except (RedisError, OSError, TimeoutError) as exc:
                hung = isinstance(exc, TimeoutError) and self._health.slow(self._abandon_s)
                unreachable = isinstance(exc, RedisConnectionError | OSError)
                self._health.failed(f"{type(exc).__name__}: {exc}", at_once=hung or unreachable)
                for c in batch:
                    _fail(c, f"round trip failed: {type(exc).__name__}: {exc}")
                continue
            self._health.round_trip(time.monotonic() - started)
            for c, reply in zip(batch, replies, strict=True):
                if isinstance(reply, Exception):
                    _fail(c, f"{type(reply).__name__}: {reply}")
                elif not c.future.done():
                    c.future.set_result(reply)

    async def _send(self, batch: list[_Call]) -> list[Any]:
        replies = await self._pipeline(batch)
        # A restarted Redis has forgotten the scripts: load them and send those calls again.
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:
            for script in {batch[i].script for i in missing}:
                await self._redis.script_load(script.source)
            again = await self._pipeline([batch[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies

    async def _pipeline(self, batch: list[_Call]) -> list[Any]:
        pipe = self._redis.pipeline(transaction=False)
        for c in batch:
            pipe.evalsha(c.script.sha, len(c.keys), *c.keys, *c.args)  # type: ignore[arg-type]
        return list(await pipe.execute(raise_on_error=False))


def _fail(call: _Call, reason: str) -> None:
    if not call.future.done():
        call.future.set_exception(QuotaStoreUnavailable(reason))
