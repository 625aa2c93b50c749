"""Quota policy: what a request costs, admit or refuse it, settle it to real usage.

A request reserves one request, `tokens` tokens (prompt + max_tokens for generation,
input tokens for embeddings) and one concurrency lease, from its tenant's buckets and
its key's; when it ends (however it ends) `settle` returns the unused tokens and the
lease. A gateway that dies mid-request leaks nothing for long: its leases expire.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gateway.auth import BucketLimit, Limits, Principal
from gateway.quota.buckets import BucketState, Limit
from gateway.quota.config import QuotaConfig, RouteClass
from gateway.quota.redis_store import AdmitResult, BucketCharge, QuotaStoreUnavailable
from schemas.errors import QuotaUnavailable, RateLimited, retry_after

log = logging.getLogger("raygate.quota")


def duration(ms: int) -> str:
    """OpenAI's reset format: 17ms, 1.5s, 6m0s."""
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:
        return f"{ms / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    minutes, seconds = divmod(math.ceil(ms / 1000), 60)
    return f"{minutes}m{seconds}s"


def _limit(b: BucketLimit) -> Limit:
    return Limit(rate_per_min=b.per_minute, burst=b.capacity)


@dataclass
class Lease:
    id: str
    principal: Principal
    route_class: RouteClass
    lease_key: str
    charges: list[BucketCharge]
    reserved_tokens: int
    headers: dict[str, str] = field(default_factory=dict)
    metered: bool = True  # False: admitted without Redis, nothing to settle

    def refunds(self, used_tokens: int) -> list[BucketCharge]:
        unused = max(0, self.reserved_tokens - used_tokens)
        return [
            BucketCharge(c.key, c.limit, unused if c.key.endswith(":tok") else 0)
            for c in self.charges
        ]


DecisionRecorder = Callable[[str, str, str], None]  # tenant, route class, decision


class QuotaStore(Protocol):
    """RedisQuotaStore in the app; an in-memory fake in unit tests."""

    async def admit(
        self,
        lease_key: str,
        lease_id: str,
        lease_ttl_ms: int,
        max_leases: int | None,
        charges: Sequence[BucketCharge],
    ) -> AdmitResult: ...

    async def settle(
        self, lease_key: str, lease_id: str, refunds: Sequence[BucketCharge]
    ) -> bool: ...


class QuotaPolicy:
    def __init__(self, store: QuotaStore, config: QuotaConfig, record: DecisionRecorder) -> None:
        self._store = store
        self._config = config
        self._record = record

    @staticmethod
    def _charges(principal: Principal, tokens: int) -> list[BucketCharge]:
        tag = f"rg:q:{{{principal.tenant.id}}}"
        scopes: list[tuple[str, Limits]] = [(tag, principal.tenant.limits)]
        if principal.key is not None:
            scopes.append((f"{tag}:key:{principal.key.name}", principal.key.limits))
        charges = []
        for prefix, limits in scopes:
            if limits.requests is not None:
                charges.append(BucketCharge(f"{prefix}:req", _limit(limits.requests), 1))
            if limits.tokens is not None:
                charges.append(BucketCharge(f"{prefix}:tok", _limit(limits.tokens), tokens))
        return charges

    @staticmethod
    def _headers(charges: list[BucketCharge], states: list[BucketState]) -> dict[str, str]:
        headers: dict[str, str] = {}
        for kind, suffix in (("requests", ":req"), ("tokens", ":tok")):
            mine = [s for c, s in zip(charges, states, strict=True) if c.key.endswith(suffix)]
            if not mine:
                continue
            tightest = min(mine, key=lambda s: s.remaining)
            headers[f"x-ratelimit-limit-{kind}"] = str(int(tightest.limit.burst))
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(tightest.remaining)))
            headers[f"x-ratelimit-reset-{kind}"] = duration(tightest.reset_ms)
        return headers

    async def admit(self, principal: Principal, route_class: RouteClass, tokens: int) -> Lease:
        """Reserve one request, `tokens` tokens and a concurrency lease from the tenant's and
        the key's buckets, atomically. Returns the Lease (its headers carry OpenAI's
        x-ratelimit-* state). Raises RateLimited (429, with Retry-After) when a bucket or
        the concurrency limit refuses, and QuotaUnavailable (503) when Redis cannot be
        reached and the route class fails closed; failing open returns an unmetered lease."""
        tenant = principal.tenant
        charges = self._charges(principal, tokens)
        lease = Lease(
            id=uuid.uuid4().hex,
            principal=principal,
            route_class=route_class,
            lease_key=f"rg:q:{{{tenant.id}}}:leases",
            charges=charges,
            reserved_tokens=tokens,
        )
        try:
            result = await self._store.admit(
                lease.lease_key,
                lease.id,
                int(self._config.lease_ttl_s * 1000),
                tenant.limits.concurrent_requests,
                charges,
            )
        except QuotaStoreUnavailable as exc:
            if self._config.on_redis_error.get(route_class, "closed") == "open":
                log.warning("quota store unavailable, admitting unmetered: %s", exc)
                self._record(tenant.id, route_class, "admitted_without_redis")
                lease.metered = False
                return lease
            log.warning("quota store unavailable, refusing: %s", exc)
            self._record(tenant.id, route_class, "rejected_without_redis")
            raise QuotaUnavailable() from None
        decision = result.decision
        lease.headers = self._headers(charges, decision.states)
        if decision.admitted:
            self._record(tenant.id, route_class, "admitted")
            return lease
        raise self._refusal(lease, decision.denied_index, decision.retry_after_ms)

    def _refusal(self, lease: Lease, index: int | None, wait_ms: int | None) -> RateLimited:
        tenant = lease.principal.tenant
        headers = dict(lease.headers)
        if index is None:
            limit = tenant.limits.concurrent_requests
            self._record(tenant.id, lease.route_class, "limited_concurrency")
            message = f"Too many concurrent requests for tenant '{tenant.id}' (limit {limit})."
            kind = "requests"
        else:
            charge = lease.charges[index]
            kind = "tokens" if charge.key.endswith(":tok") else "requests"
            scope = "key" if ":key:" in charge.key else "tenant"
            self._record(tenant.id, lease.route_class, f"limited_{scope}_{kind}")
            who = f"tenant '{tenant.id}'"
            if scope == "key":
                who = f"key '{lease.principal.key_name}' of {who}"
            per_min = charge.limit.rate_per_min
            if wait_ms is None:
                return RateLimited(
                    f"Request too large for {kind} per min: limit {int(charge.limit.burst)}, "
                    f"requested {int(charge.amount)}.",
                    kind=kind,
                    headers=headers,
                )
            message = (
                f"Rate limit reached for {kind} per min on {who}: "
                f"limit {per_min:g}/min, burst {charge.limit.burst:g}."
            )
        wait = wait_ms if wait_ms is not None else 1000
        headers |= retry_after(wait / 1000)
        headers["retry-after-ms"] = str(wait)
        return RateLimited(
            f"{message} Please try again in {duration(wait)}.", kind=kind, headers=headers
        )

    async def settle(self, lease: Lease, used_tokens: int) -> None:
        """Return the reserved tokens beyond `used_tokens` and the concurrency lease. Never
        raises: if Redis is unreachable the lease expires on its own (counted as
        settle_failed)."""
        if not lease.metered:
            return
        try:
            await self._store.settle(lease.lease_key, lease.id, lease.refunds(used_tokens))
        except QuotaStoreUnavailable as exc:  # the lease expires on its own
            log.warning("could not settle lease %s: %s", lease.id, exc)
            self._record(lease.principal.tenant.id, lease.route_class, "settle_failed")
