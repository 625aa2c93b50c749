"""The Redis connections of the gateway (quota store, cache store)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError


def redis_client(
    url: str, password: str | None, timeout_s: float, max_connections: int = 64
) -> Redis:
    """A client whose calls wait (up to timeout_s) for one of `max_connections` pooled
    connections: redis-py's default pool raises once 100 calls are in flight, which a
    gateway replica taking hundreds of requests at once would turn into errors."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s,
        password=password,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        # A pooled connection that died with its server is replaced at once; redis-py's
        # default backs off with jitter for up to a second, beyond a per-call budget.
        retry=Retry(NoBackoff(), retries=1),
    )
    return Redis(connection_pool=pool)


async def within(awaitable: Awaitable[Any], timeout_s: float, error: type[Exception]) -> Any:
    """Await a Redis call; slowness and connection trouble become `error`."""
    try:
        return await asyncio.wait_for(awaitable, timeout_s)
    except (RedisError, TimeoutError, OSError) as exc:
        raise error(f"{type(exc).__name__}: {exc}") from exc
