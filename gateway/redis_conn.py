"""The Redis connections of the gateway (quota store, cache store)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError


def redis_client(url: str, password: str | None, timeout_s: float) -> Redis:
    return Redis.from_url(
        url,
        password=password,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        # A pooled connection that died with its server is replaced at once; redis-py's
        # default backs off with jitter for up to a second, beyond a per-call budget.
        retry=Retry(NoBackoff(), retries=1),
    )


async def within(awaitable: Awaitable[Any], timeout_s: float, error: type[Exception]) -> Any:
    """Await a Redis call; slowness and connection trouble become `error`."""
    try:
        return await asyncio.wait_for(awaitable, timeout_s)
    except (RedisError, TimeoutError, OSError) as exc:
        raise error(f"{type(exc).__name__}: {exc}") from exc
