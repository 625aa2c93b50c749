"""The quota section of the app config: where the buckets live and how Redis failures are met."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.strict import Strict

RouteClass = Literal["generation", "embeddings", "rerank"]
Mode = Literal["open", "closed"]


class QuotaConfig(Strict):
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", description="Quota store.")
    redis_password_env: str | None = Field(
        default=None, description="Environment variable holding the Redis password."
    )
    timeout_s: float = Field(default=0.1, gt=0, le=5, description="Per Redis call.")
    lease_ttl_s: float = Field(
        default=900, gt=0, description="A lease not settled by then (crashed gateway) expires."
    )
    on_redis_error: dict[RouteClass, Mode] = Field(
        default={"generation": "closed", "embeddings": "open", "rerank": "open"},
        description="Per route class: refuse (closed, 503) or admit unmetered (open).",
    )
