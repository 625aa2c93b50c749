"""Quota policy: admit a request, reserve its tokens, settle it to real usage.

A request is admitted in two steps, so that a tenant without quota cannot spend the
gateway's CPU: `admit` takes one request from the tenant's and key's request buckets and a
concurrency lease in both lease sets, before the request is tokenized; `reserve` then takes
its tokens (prompt + max_tokens for generation, input tokens for embeddings). When it ends
(however it ends) `settle` returns the unused tokens and the lease. Live leases are
renewed (gateway.quota.renewal), so a gateway that dies mid-request leaks nothing for
long: its leases expire within `lease_ttl_s`.

When the quota Redis is judged down (gateway.quota.health), each route class meets it its
own way: `closed` refuses (503), `open` admits unmetered, `local` enforces this replica's
share of every limit (limit / live gateway replicas) in memory until Redis is back. A call
whose round trip failed may still have run in Redis; its lease is settled again in the
background (`Resettler`), so a latency spike leaves no ghost leases behind.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from gateway.auth import BucketLimit, Limits, Principal
from gateway.quota.buckets import BucketState, Limit
from gateway.quota.config import QuotaConfig, RouteClass
from gateway.quota.local_store import LocalQuotaStore
from gateway.quota.redis_store import AdmitResult, BucketCharge, LeaseSet, QuotaStoreUnavailable
from gateway.quota.renewal import Renewals
from gateway.quota.resettle import Resettler
from gateway.quota.round_trips import NotSent
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


class QuotaStore(Protocol):
    """RedisQuotaStore or LocalQuotaStore."""

    async def admit(
        self,
        lease_id: str,
        lease_ttl_ms: int,
        leases: Sequence[LeaseSet],
        charges: Sequence[BucketCharge],
    ) -> AdmitResult: ...

    async def settle(
        self, lease_id: str, lease_keys: Sequence[str], refunds: Sequence[BucketCharge]
    ) -> bool: ...

    async def renew(self, lease_id: str, lease_keys: Sequence[str], lease_ttl_ms: int) -> bool: ...


@dataclass
class Hold:
    """What one store holds for a lease: its lease sets and what was taken."""

    store: QuotaStore
    lease_keys: list[str]
    charges: list[BucketCharge] = field(default_factory=list)

    def refunds(self, unused_tokens: int) -> list[BucketCharge]:
        return [
            replace(c, amount=unused_tokens if c.key.endswith(":tok") else 0) for c in self.charges
        ]


@dataclass
class Lease:
    id: str
    principal: Principal
    route_class: RouteClass
    sets: list[LeaseSet]
    holds: list[Hold] = field(default_factory=list)  # none: admitted unmetered
    reserved_tokens: int = 0
    headers: dict[str, str] = field(default_factory=dict)


DecisionRecorder = Callable[[str, str, str], None]  # tenant, route class, decision


class Replicas(Protocol):
    """How many gateway replicas share the limits (gateway.quota.replicas.ReplicaCount)."""

    def count(self) -> int: ...

    def start(self) -> None: ...


class QuotaPolicy:
    def __init__(
        self,
        store: QuotaStore,
        config: QuotaConfig,
        record: DecisionRecorder,
        replicas: Replicas | None = None,
        local: LocalQuotaStore | None = None,
    ) -> None:
        self._store = store
        self._config = config
        self._record = record
        self._replicas = replicas
        self._local = local or LocalQuotaStore()
        self._resettler = Resettler(record)
        self._ttl_ms = int(config.lease_ttl_s * 1000)
        self._renewals = Renewals(self._ttl_ms)

    async def admit(self, principal: Principal, route_class: RouteClass) -> Lease:
        """Take one request from the tenant's and the key's request buckets and a lease
        in their lease sets (capped by `concurrent_requests`), atomically. Returns the
        Lease (its headers carry OpenAI's x-ratelimit-*-requests state). Raises
        RateLimited (429, with Retry-After) when a bucket or a concurrency cap refuses,
        and QuotaUnavailable (503) when Redis is down and the route class fails closed.
        With the quota disabled, admits unmetered (a Lease without holds) and raises nothing."""
        if not self._config.enabled:
            return Lease(uuid.uuid4().hex, principal, route_class, [])
        if self._replicas is not None:
            self._replicas.start()
        tenant, key = principal.tenant, principal.key
        tag = f"rg:q:{{{tenant.id}}}"
        sets = [LeaseSet(f"{tag}:leases", tenant.limits.concurrent_requests)]
        if key is not None:
            sets.append(LeaseSet(f"{tag}:key:{key.name}:leases", key.limits.concurrent_requests))
        lease = Lease(uuid.uuid4().hex, principal, route_class, sets)
        charges = self._charges(principal, "req", 1)
        try:
            result = await self._admit(self._store, lease, charges, sets)
        except QuotaStoreUnavailable as exc:
            log.warning("quota store unavailable: %s", exc)
            await self._without_redis(lease, charges, admitting=True)
        else:
            self._decided(lease, charges, result, "admitted", sets)
        if lease.holds:
            self._renewals.keep(lease)
        return lease

    async def reserve(self, lease: Lease, tokens: int) -> None:
        """Take `tokens` from the tenant's and the key's token buckets for this admitted
        lease, from the store that admitted it; the lease's headers gain the
        x-ratelimit-*-tokens state. Raises as `admit` (the caller still settles the
        lease). A reservation whose round trip failed is not refunded (at most one
        request's tokens, over-charged while Redis fails)."""
        charges = self._charges(lease.principal, "tok", tokens)
        lease.reserved_tokens = tokens
        if not charges:
            return
        held = next((h for h in lease.holds if h.store is self._store), None)
        if held is not None:
            try:
                result = await self._admit(self._store, lease, charges, [])
            except QuotaStoreUnavailable as exc:
                log.warning("quota store unavailable: %s", exc)
            else:
                self._decided(lease, charges, result, None, [])
                return
        elif not lease.holds:  # admitted unmetered: its tokens are too
            return
        await self._without_redis(lease, charges, admitting=False)

    async def settle(self, lease: Lease, used_tokens: int) -> None:
        """Return the reserved tokens beyond `used_tokens` and the leases. Never raises: a
        settle that fails is retried in the background until the lease would expire."""
        self._renewals.forget(lease)
        unused = max(0, lease.reserved_tokens - used_tokens)
        for hold in lease.holds:
            refunds = hold.refunds(unused)
            try:
                await hold.store.settle(lease.id, hold.lease_keys, refunds)
            except QuotaStoreUnavailable as exc:
                log.warning("could not settle lease %s: %s", lease.id, exc)
                self._record(lease.principal.tenant.id, lease.route_class, "settle_failed")
                self._resettler.add(
                    hold.store, lease.route_class, lease.id, hold.lease_keys, refunds, self._ttl_ms
                )
        lease.holds = []

    @staticmethod
    def _charges(principal: Principal, kind: str, amount: int) -> list[BucketCharge]:
        tag = f"rg:q:{{{principal.tenant.id}}}"
        scopes: list[tuple[str, Limits]] = [(tag, principal.tenant.limits)]
        if principal.key is not None:
            scopes.append((f"{tag}:key:{principal.key.name}", principal.key.limits))
        charges = []
        for prefix, limits in scopes:
            bucket = limits.requests if kind == "req" else limits.tokens
            if bucket is not None:
                charges.append(BucketCharge(f"{prefix}:{kind}", _limit(bucket), amount))
        return charges

    async def _admit(
        self, store: QuotaStore, lease: Lease, charges: list[BucketCharge], sets: list[LeaseSet]
    ) -> AdmitResult:
        """One admit call (with `sets`: the lease's first in this store); records what the
        store now holds. An admission that failed may have run in Redis: its lease is
        settled again in the background."""
        try:
            result = await store.admit(lease.id, self._ttl_ms, sets, charges)
        except NotSent:
            raise
        except BaseException:
            if sets and store is self._store:
                keys = [s.key for s in sets]
                self._resettler.add(store, lease.route_class, lease.id, keys, [], self._ttl_ms)
            raise
        if result.decision.admitted:
            held = next((h for h in lease.holds if h.store is store), None)
            if held is None:
                lease.holds.append(Hold(store, [s.key for s in sets], list(charges)))
            else:
                held.charges += charges
        return result

    async def _without_redis(
        self, lease: Lease, charges: list[BucketCharge], admitting: bool
    ) -> None:
        """Admit (or reserve) as the route class does while Redis is down."""
        tenant = lease.principal.tenant.id
        mode = self._config.on_redis_error.get(lease.route_class, "local")
        if mode == "open":
            if admitting:
                self._record(tenant, lease.route_class, "admitted_without_redis")
            return
        if mode == "closed":
            self._record(tenant, lease.route_class, "rejected_without_redis")
            raise QuotaUnavailable()
        share = 1 if self._replicas is None else max(1, self._replicas.count())
        local = [replace(c, limit=_share(c.limit, c.amount, share)) for c in charges]
        sets: list[LeaseSet] = []
        if not any(h.store is self._local for h in lease.holds):  # the lease's first call here
            caps = [_share_cap(s.max, share) if admitting else None for s in lease.sets]
            sets = [replace(s, max=cap) for s, cap in zip(lease.sets, caps, strict=True)]
        result = await self._admit(self._local, lease, local, sets)
        self._decided(lease, local, result, "admitted_locally" if admitting else None, sets, True)

    def _decided(
        self,
        lease: Lease,
        charges: list[BucketCharge],
        result: AdmitResult,
        admitted: str | None,
        sets: list[LeaseSet],
        local: bool = False,
    ) -> None:
        """Headers from the decision; record an admission (`admitted`: its label, None for
        a reservation) or raise the refusal."""
        decision = result.decision
        lease.headers |= _headers(charges, decision.states)
        if decision.admitted:
            if admitted is not None:
                self._record(lease.principal.tenant.id, lease.route_class, admitted)
            return
        raise self._refusal(lease, charges, result, sets or lease.sets, local)

    def _refusal(
        self,
        lease: Lease,
        charges: list[BucketCharge],
        result: AdmitResult,
        sets: list[LeaseSet],
        local: bool,
    ) -> RateLimited:
        tenant = lease.principal.tenant
        headers = dict(lease.headers)
        decision = result.decision
        suffix = "_locally" if local else ""
        if decision.denied_index is None:
            scope = "tenant" if not result.denied_lease else "key"
            self._record(tenant.id, lease.route_class, f"limited_{scope}_concurrency{suffix}")
            cap = sets[result.denied_lease or 0].max
            message = f"Too many concurrent requests for {self._who(lease, scope)} (limit {cap})."
            kind = "requests"
        else:
            charge = charges[decision.denied_index]
            kind = "tokens" if charge.key.endswith(":tok") else "requests"
            scope = "key" if ":key:" in charge.key else "tenant"
            self._record(tenant.id, lease.route_class, f"limited_{scope}_{kind}{suffix}")
            limit = charge.limit
            if decision.retry_after_ms is None:
                if charge.amount > limit.burst:
                    message = (
                        f"Request too large for {kind} per min: limit {int(limit.burst)}, "
                        f"requested {int(charge.amount)}."
                    )
                else:
                    message = (
                        f"The {kind} quota of {self._who(lease, scope)} is used up and does "
                        f"not refill (limit {limit.burst:g}, refill 0/min)."
                    )
                return RateLimited(message, kind=kind, headers=headers)
            message = (
                f"Rate limit reached for {kind} per min on {self._who(lease, scope)}: "
                f"limit {limit.rate_per_min:g}/min, burst {limit.burst:g}."
            )
        wait = decision.retry_after_ms if decision.retry_after_ms is not None else 1000
        headers |= retry_after(wait / 1000)
        headers["retry-after-ms"] = str(wait)
        return RateLimited(
            f"{message} Please try again in {duration(wait)}.", kind=kind, headers=headers
        )

    @staticmethod
    def _who(lease: Lease, scope: str) -> str:
        who = f"tenant '{lease.principal.tenant.id}'"
        return f"key '{lease.principal.key_name}' of {who}" if scope == "key" else who


def _share(limit: Limit, cost: float, replicas: int) -> Limit:
    """This replica's share of a limit while Redis is down; never so small that a request
    the whole limit admits could not pass anywhere."""
    return Limit(limit.rate_per_min / replicas, max(limit.burst / replicas, min(limit.burst, cost)))


def _share_cap(cap: int | None, replicas: int) -> int | None:
    return None if cap is None else math.ceil(cap / replicas)


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
