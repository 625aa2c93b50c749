"""The quota section of the app config: where the buckets live and how Redis failures are met."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.strict import Strict

RouteClass = Literal["generation", "embeddings", "rerank"]
Mode = Literal["open", "closed", "local"]


class QuotaConfig(Strict):
    enabled: bool = Field(
        default=True,
        description="False: every request is admitted unmetered and Redis is never asked "
        "(tenants' limits are not enforced: for benchmarks and single-tenant laptops).",
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="Quota store: a Redis that never evicts (maxmemory-policy noeviction).",
    )
    redis_password_env: str | None = Field(
        default=None, description="Environment variable holding the Redis password."
    )
    timeout_s: float = Field(
        default=0.1,
        gt=0,
        le=5,
        description="A round trip slower than this (net of the gateway's own event-loop lag) "
        "counts against Redis's health; `down_after` of them in a row judge it down.",
    )
    down_after: int = Field(default=3, ge=1, description="Slow round trips in a row: Redis down.")
    abandon_s: float = Field(
        default=1.0,
        gt=0,
        le=30,
        description="A round trip not back by then is abandoned and Redis judged down at once.",
    )
    lease_ttl_s: float = Field(
        default=30,
        ge=1,
        description="A lease lives this long unless its gateway replica renews it (every "
        "third of it): the concurrency slots of a replica that died come back within it.",
    )
    on_redis_error: dict[RouteClass, Mode] = Field(
        default={"generation": "local", "embeddings": "local", "rerank": "local"},
        description="Per route class, while Redis is down: refuse (closed, 503), admit "
        "unmetered (open), or enforce this replica's share of every limit in memory (local).",
    )
    heartbeat_s: float = Field(
        default=5.0, gt=0, description="How often a gateway replica counts the live replicas."
    )
