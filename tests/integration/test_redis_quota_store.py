"""The Lua scripts against the reference bucket arithmetic, on a real Redis."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest
from redis.asyncio import Redis

from gateway.quota.buckets import InMemoryBuckets, Limit
from gateway.quota.redis_store import BucketCharge, QuotaStoreUnavailable, RedisQuotaStore
from tests.fakes import Clock
from tests.integration.conftest import RedisServer
from tests.ports import free_port

pytestmark = pytest.mark.integration

LIMITS = [Limit(rate_per_min=90, burst=5), Limit(rate_per_min=1234.5, burst=700)]


def store(redis_server: RedisServer) -> RedisQuotaStore:
    return RedisQuotaStore(Redis(host="127.0.0.1", port=redis_server.port), timeout_s=2)


def test_lua_matches_the_reference_arithmetic(redis_server: RedisServer) -> None:
    async def run() -> None:
        lua, reference, clock = store(redis_server), InMemoryBuckets(Clock()), Clock()
        reference.clock_ms = clock
        prefix = f"rg:q:{{t-{uuid.uuid4().hex}}}"
        keys = [f"{prefix}:req", f"{prefix}:tok"]
        rng = random.Random(7)
        admitted = 0
        for step in range(400):
            clock.now_ms += rng.choice([0, 0, 1, 17, 250, 1000, 5000])
            costs = [1, rng.choice([0, 3, 40, 200, 650, 701])]
            charges = [
                BucketCharge(k, lim, c) for k, lim, c in zip(keys, LIMITS, costs, strict=True)
            ]
            got = await lua.admit(
                f"{prefix}:leases", str(step), 60_000, None, charges, now_ms=clock.now_ms
            )
            want = reference.take(keys, LIMITS, costs)
            assert got.decision.admitted == want.admitted, step
            assert got.decision.denied_index == want.denied_index, step
            assert got.decision.retry_after_ms == want.retry_after_ms, step
            for g, w in zip(got.decision.states, want.states, strict=True):
                assert g.remaining == pytest.approx(w.remaining, abs=1e-6), step
            if got.decision.admitted:
                admitted += 1
                if rng.random() < 0.5:  # settle some with a refund of unused tokens
                    refund = rng.choice([0, costs[1] // 2, costs[1]])
                    back = [BucketCharge(keys[1], LIMITS[1], refund)]
                    assert await lua.settle(
                        f"{prefix}:leases", str(step), back, now_ms=clock.now_ms
                    )
                    reference.refund(keys[1], LIMITS[1], refund)
        assert 50 < admitted < 400  # the sequence exercised both outcomes

    asyncio.run(run())


def test_leases_cap_concurrency_and_expire(redis_server: RedisServer) -> None:
    async def run() -> None:
        lua = store(redis_server)
        leases = f"rg:q:{{t-{uuid.uuid4().hex}}}:leases"
        first = await lua.admit(leases, "a", 1000, 2, [], now_ms=10_000)
        second = await lua.admit(leases, "b", 1000, 2, [], now_ms=10_000)
        third = await lua.admit(leases, "c", 1000, 2, [], now_ms=10_500)
        assert (first.decision.admitted, second.decision.admitted) == (True, True)
        assert not third.decision.admitted and third.decision.denied_index is None
        assert await lua.settle(leases, "a", [], now_ms=10_600)
        assert not await lua.settle(leases, "a", [], now_ms=10_600)  # once only
        assert (await lua.admit(leases, "c", 1000, 2, [], now_ms=10_600)).decision.admitted
        # "b" was never settled (its gateway died): it expires after its ttl
        late = await lua.admit(leases, "d", 1000, 2, [], now_ms=11_001)
        assert late.decision.admitted and late.in_flight == 2

    asyncio.run(run())


def test_unreachable_redis_is_reported_as_unavailable_within_the_timeout() -> None:
    async def run() -> None:
        nobody = RedisQuotaStore(Redis(host="127.0.0.1", port=free_port()), timeout_s=0.2)
        with pytest.raises(QuotaStoreUnavailable):
            await nobody.admit("rg:q:{x}:leases", "a", 1000, None, [])

    asyncio.run(run())
