"""The gateway's Prometheus metrics, all prefixed `raygate_gateway_`.

Exported through Ray's metrics agent (each node's --metrics-export-port). Label values
are bounded: tenants and route classes come from config, decisions from a fixed set.
"""

from __future__ import annotations

from typing import Any, cast

from ray.serve.metrics import Counter

PREFIX = "raygate_gateway_"


class GatewayMetrics:
    def __init__(self) -> None:
        self._quota_decisions = Counter(
            PREFIX + "quota_decisions_total",
            description="Quota decisions by outcome: admitted, limited_<scope>_<kind>, "
            "limited_concurrency, admitted_without_redis, rejected_without_redis, "
            "settle_failed.",
            tag_keys=cast(Any, ("tenant", "route_class", "decision")),  # stub says tuple[str]
        )

    def record_quota_decision(self, tenant: str, route_class: str, decision: str) -> None:
        self._quota_decisions.inc(
            tags={"tenant": tenant, "route_class": route_class, "decision": decision}
        )
