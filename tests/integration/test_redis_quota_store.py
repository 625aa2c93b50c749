"""The quota store on a real Redis: the Lua scripts against the reference arithmetic, and
the client side under bursts, a busy event loop, a slow, a restarted and a missing Redis."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Iterator

import pytest

from gateway.auth import BucketLimit, Limits, Principal, TenantConfig
from gateway.quota.buckets import InMemoryBuckets, Limit
from gateway.quota.config import QuotaConfig
from gateway.quota.policy import QuotaPolicy
from gateway.quota.redis_store import (
    BucketCharge,
    LeaseSet,
    QuotaStoreUnavailable,
    RedisQuotaStore,
    open_quota_store,
)
from gateway.quota.replicas import ReplicaCount
from schemas.errors import QuotaUnavailable, RateLimited
from tests.fakes import Clock
from tests.integration.conftest import RedisServer
from tests.ports import free_port

pytestmark = pytest.mark.integration

LIMITS = [Limit(rate_per_min=90, burst=5), Limit(rate_per_min=1234.5, burst=700)]
PROFILE = QuotaConfig()  # the local profile's quota settings (timeout_s 0.1)


def store(redis: RedisServer | int, **config: object) -> RedisQuotaStore:
    port = redis if isinstance(redis, int) else redis.port
    return open_quota_store(
        PROFILE.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0", **config})
    )


def tenant(limits: Limits) -> Principal:
    return Principal(TenantConfig(id=f"t-{uuid.uuid4().hex[:8]}", limits=limits), None)


def test_lua_matches_the_reference_arithmetic(redis_server: RedisServer) -> None:
    async def run() -> None:
        lua, clock = store(redis_server, abandon_s=10, timeout_s=5), Clock()
        reference = InMemoryBuckets(clock)
        prefix = f"rg:q:{{t-{uuid.uuid4().hex}}}"
        keys = [f"{prefix}:req", f"{prefix}:tok"]
        sets = [LeaseSet(f"{prefix}:leases", None)]
        rng = random.Random(7)
        admitted = 0
        for step in range(400):
            clock.now_ms += rng.choice([0, 0, 1, 17, 250, 1000, 5000])
            costs = [1, rng.choice([0, 3, 40, 200, 650, 701])]
            charges = [
                BucketCharge(k, lim, c) for k, lim, c in zip(keys, LIMITS, costs, strict=True)
            ]
            got = await lua.admit(str(step), 60_000, sets, charges, now_ms=clock.now_ms)
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
                    assert await lua.settle(str(step), [sets[0].key], back, now_ms=clock.now_ms)
                    reference.refund(keys[1], LIMITS[1], refund)
        assert 50 < admitted < 400  # the sequence exercised both outcomes

    asyncio.run(run())


def test_leases_cap_concurrency_per_set_and_expire(redis_server: RedisServer) -> None:
    async def run() -> None:
        lua = store(redis_server)
        tag = f"rg:q:{{t-{uuid.uuid4().hex}}}"
        tenant_set, key_set = f"{tag}:leases", f"{tag}:key:k:leases"
        sets = [LeaseSet(tenant_set, 3), LeaseSet(key_set, 2)]
        first = await lua.admit("a", 1000, sets, [], now_ms=10_000)
        second = await lua.admit("b", 1000, sets, [], now_ms=10_000)
        third = await lua.admit("c", 1000, sets, [], now_ms=10_500)
        assert (first.decision.admitted, second.decision.admitted) == (True, True)
        assert not third.decision.admitted and third.denied_lease == 1  # the key's set
        other_key = await lua.admit("o", 1000, [LeaseSet(tenant_set, 3)], [], now_ms=10_500)
        assert other_key.decision.admitted  # the tenant's set had room
        assert await lua.settle("a", [tenant_set, key_set], [], now_ms=10_600)
        assert not await lua.settle("a", [tenant_set, key_set], [], now_ms=10_600)  # once only
        assert (await lua.admit("c", 1000, sets, [], now_ms=10_600)).decision.admitted
        # "b" was never settled (its gateway died): it expires after its ttl
        assert (await lua.admit("d", 1000, sets, [], now_ms=11_001)).decision.admitted

    asyncio.run(run())


def test_a_bucket_without_refill_never_expires(redis_server: RedisServer) -> None:
    async def run() -> None:
        lua = store(redis_server)
        key = f"rg:q:{{t-{uuid.uuid4().hex}}}:req"
        once = [BucketCharge(key, Limit(rate_per_min=0, burst=1), 1)]
        assert (await lua.admit("a", 1000, [], once)).decision.admitted
        assert redis_server.client().pttl(key) == -1  # expiring would refill it
        refused = await lua.admit("b", 1000, [], once)
        assert not refused.decision.admitted and refused.decision.retry_after_ms is None

    asyncio.run(run())


def test_a_burst_of_150_on_a_busy_gateway_is_admitted_exactly(redis_server: RedisServer) -> None:
    """At the profile's own 100 ms timeout, with the event loop held up for 300 ms while
    the calls are in flight (what a gateway parsing and tokenizing at full load does): a
    healthy Redis is never taken for a down one, and exactly the burst is admitted."""

    async def run() -> None:
        seen: list[str] = []
        policy = QuotaPolicy(
            store(redis_server),
            PROFILE.model_copy(update={"on_redis_error": {"embeddings": "closed"}}),
            lambda _t, _c, d: seen.append(d),
        )
        who = tenant(Limits(requests=BucketLimit(per_minute=1, burst=25)))
        await policy.settle(await policy.admit(tenant(Limits()), "embeddings"), 0)  # warm up

        async def one() -> str:
            try:
                await policy.admit(who, "embeddings")
            except RateLimited:
                return "429"
            except QuotaUnavailable:
                return "503"
            return "200"

        calls = [asyncio.create_task(one()) for _ in range(150)]
        await asyncio.sleep(0)  # the calls are queued and the first round trip is sent
        end = time.monotonic() + 0.3  # the gateway's event loop is busy: CPU work, in line
        while time.monotonic() < end:
            pass
        results = await asyncio.gather(*calls)
        assert (results.count("200"), results.count("429"), results.count("503")) == (25, 125, 0)
        assert "rejected_without_redis" not in seen

    asyncio.run(run())


@pytest.fixture
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("own-redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_a_slow_redis_is_judged_down_and_probed_back_up(own_redis: RedisServer) -> None:
    async def run() -> None:
        lua = store(own_redis)
        health = lua.round_trips.health
        sets = [LeaseSet(f"rg:q:{{t-{uuid.uuid4().hex}}}:leases", None)]
        await warm(lua)
        for i in range(PROFILE.down_after):  # slower than timeout_s, answered before abandon_s
            assert health.up
            own_redis.client().execute_command("CLIENT", "PAUSE", "300", "ALL")
            assert (await lua.admit(f"slow{i}", 1000, sets, [])).decision.admitted  # exact
        assert not health.up and "slower than" in health.reason
        started = time.monotonic()
        assert await _try(lua.admit("fast-fail", 1000, sets, [])) == "unavailable"
        assert time.monotonic() - started < 0.05  # judged down: no waiting on Redis
        await health.wait_up()  # the probe finds it answering in time again
        assert (await lua.admit("after", 1000, sets, [])).decision.admitted

    asyncio.run(run())


def test_a_restarted_redis_is_used_again_and_its_scripts_reloaded(own_redis: RedisServer) -> None:
    async def run() -> None:
        lua = store(own_redis)
        sets = [LeaseSet(f"rg:q:{{t-{uuid.uuid4().hex}}}:leases", None)]
        assert (await lua.admit("a", 1000, sets, [])).decision.admitted
        own_redis.stop()
        assert await _try(lua.admit("b", 1000, sets, [])) == "unavailable"
        own_redis.start()  # same port, empty script cache
        await lua.round_trips.health.wait_up()
        assert (await lua.admit("c", 1000, sets, [])).decision.admitted

    asyncio.run(run())


BUSY_LUA = """
local t = redis.call('TIME')
local start = t[1] * 1000000 + t[2]
repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start > tonumber(ARGV[1])
"""


def test_an_abandoned_admission_leaves_no_ghost_lease(own_redis: RedisServer) -> None:
    """Redis is busy past `abandon_s` (another client's long script): the admission is
    abandoned (closed: 503), but Redis runs it once it is free again. The lease it left
    is settled again in the background, so it does not hold the tenant's only
    concurrency slot for `lease_ttl_s`."""

    async def run() -> None:
        config = {"abandon_s": 0.3, "on_redis_error": {"generation": "closed"}}
        lua = store(own_redis, **config)
        seen: list[str] = []
        policy = QuotaPolicy(
            lua, PROFILE.model_copy(update=config), lambda _t, _c, d: seen.append(d)
        )
        who = tenant(Limits(concurrent_requests=1))
        await warm(lua)
        busy = asyncio.create_task(asyncio.to_thread(own_redis.client().eval, BUSY_LUA, 0, 800_000))
        await asyncio.sleep(0.1)  # the busy script has started (a margin, not a handshake)
        with pytest.raises(QuotaUnavailable):
            await policy.admit(who, "generation")
        await busy
        await lua.round_trips.health.wait_up()
        await policy._resettler.retry()
        assert "ghost_settled" in seen  # the abandoned admission had run, and was undone
        leases = f"rg:q:{{{who.tenant.id}}}:leases"
        assert own_redis.client().zcard(leases) == 0
        await policy.admit(who, "generation")  # the only slot is free

    asyncio.run(run())


def test_unreachable_redis_is_reported_as_unavailable_at_once() -> None:
    async def run() -> None:
        nobody = store(free_port())
        started = time.monotonic()
        assert (
            await _try(nobody.admit("a", 1000, [LeaseSet("rg:q:{x}:leases", None)], []))
            == "unavailable"
        )
        assert not nobody.round_trips.health.up
        assert time.monotonic() - started < PROFILE.abandon_s

    asyncio.run(run())


async def warm(lua: RedisQuotaStore) -> None:
    """Connect and load the scripts (on a loaded machine the first call may be abandoned)."""
    for _ in range(5):
        await lua.round_trips.health.wait_up()
        if await _try(lua.admit("warm", 1, [LeaseSet("rg:q:{warm}:leases", None)], [])) == "ok":
            return
    raise AssertionError("the quota Redis never answered")


async def _try(call: object) -> str:
    try:
        await call  # type: ignore[misc]
    except QuotaStoreUnavailable:
        return "unavailable"
    return "ok"


def test_gateway_replicas_count_each_other_by_heartbeat(own_redis: RedisServer) -> None:
    async def run() -> None:
        a, b = ReplicaCount(store(own_redis), 4, 5.0), ReplicaCount(store(own_redis), 4, 5.0)
        assert a.count() == 4  # the configured number, until a heartbeat says otherwise
        await a.beat()
        assert a.count() == 1
        await b.beat()
        await a.beat()
        assert (a.count(), b.count()) == (2, 2)
        own_redis.stop()
        await a.beat()
        assert a.count() == 2  # Redis gone: the last count stays

    asyncio.run(run())


def test_renewal_extends_a_live_lease_only(redis_server: RedisServer) -> None:
    async def run() -> None:
        lua = store(redis_server)
        await warm(lua)
        tag = f"rg:q:{{t-{uuid.uuid4().hex}}}"
        sets = [LeaseSet(f"{tag}:leases", 1), LeaseSet(f"{tag}:key:k:leases", None)]
        keys = [s.key for s in sets]
        assert (await lua.admit("a", 1000, sets, [])).decision.admitted
        assert await lua.renew("a", keys, 60_000)
        expiry = redis_server.client().zscore(keys[0], "a")
        assert expiry is not None and expiry > time.time() * 1000 + 50_000
        assert await lua.settle("a", keys, [])
        assert not await lua.renew("a", keys, 60_000)  # settled: it stays gone
        assert redis_server.client().zcard(keys[0]) == 0

    asyncio.run(run())
