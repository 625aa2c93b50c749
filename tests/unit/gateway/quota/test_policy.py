"""QuotaPolicy over the in-memory store: costs, refusals, headers, settling, Redis down."""

from dataclasses import dataclass

import pytest

from gateway.auth import BucketLimit, KeyConfig, Limits, Principal, TenantConfig
from gateway.quota.config import QuotaConfig, RouteClass
from gateway.quota.policy import Lease, QuotaPolicy, duration
from schemas.errors import QuotaUnavailable, RateLimited
from tests.fakes import Clock, InMemoryQuotaStore

Decisions = list[tuple[str, str, str]]


@dataclass
class FixedReplicas:
    n: int

    def count(self) -> int:
        return self.n

    def start(self) -> None:
        pass


def principal(limits: Limits, key_limits: Limits | None = None, tenant: str = "acme") -> Principal:
    key = KeyConfig(name="k1", sha256="0" * 64, limits=key_limits or Limits())
    return Principal(TenantConfig(id=tenant, limits=limits, keys=[key]), key)


def policy(
    store: InMemoryQuotaStore, replicas: int = 1, **config: object
) -> tuple[QuotaPolicy, Decisions]:
    seen: Decisions = []
    quota = QuotaPolicy(
        store,
        QuotaConfig.model_validate(config),
        lambda *d: seen.append(d),
        FixedReplicas(replicas),
        InMemoryQuotaStore(store.clock),
    )
    return quota, seen


async def take(
    quota: QuotaPolicy, who: Principal, tokens: int, route: RouteClass = "generation"
) -> Lease:
    """Both steps, as a route does them: admit (a request), then reserve the tokens."""
    lease = await quota.admit(who, route)
    try:
        await quota.reserve(lease, tokens)
    except BaseException:
        await quota.settle(lease, 0)
        raise
    return lease


LIMITS = Limits(
    requests=BucketLimit(per_minute=60, burst=2),
    tokens=BucketLimit(per_minute=6000, burst=1000),
)


async def test_admits_within_limits_and_reports_openai_headers() -> None:
    quota, seen = policy(InMemoryQuotaStore(Clock()))
    lease = await take(quota, principal(LIMITS), 300)
    assert lease.headers == {
        "x-ratelimit-limit-requests": "2",
        "x-ratelimit-remaining-requests": "1",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "700",
        "x-ratelimit-reset-tokens": "3s",
    }
    assert seen == [("acme", "generation", "admitted")]


async def test_request_limit_gives_429_with_exact_retry_after() -> None:
    clock = Clock()
    quota, seen = policy(InMemoryQuotaStore(clock))
    who = principal(LIMITS)
    await take(quota, who, 1)
    clock.now_ms += 250
    await take(quota, who, 1)
    with pytest.raises(RateLimited) as err:
        await take(quota, who, 1)
    e = err.value
    assert (e.status, e.code, e.type) == (429, "rate_limit_exceeded", "requests")
    assert e.headers is not None
    assert e.headers["retry-after-ms"] == "750" and e.headers["Retry-After"] == "1"
    assert e.headers["x-ratelimit-remaining-requests"] == "0"
    assert seen[-1] == ("acme", "generation", "limited_tenant_requests")


async def test_the_request_is_refused_before_its_tokens_are_counted() -> None:
    quota, _ = policy(InMemoryQuotaStore(Clock()))
    who = principal(Limits(requests=BucketLimit(per_minute=60, burst=1)))
    await quota.admit(who, "generation")
    with pytest.raises(RateLimited):
        await quota.admit(who, "generation")  # no token count needed to refuse it


async def test_settle_refunds_unused_reserved_tokens() -> None:
    quota, _ = policy(InMemoryQuotaStore(Clock()))
    who = principal(Limits(tokens=LIMITS.tokens))
    lease = await take(quota, who, 900)  # prompt + max_tokens
    with pytest.raises(RateLimited) as err:
        await take(quota, who, 200)
    assert err.value.type == "tokens"
    await quota.settle(lease, used_tokens=150)  # the answer was short
    again = await take(quota, who, 200)
    assert again.headers["x-ratelimit-remaining-tokens"] == "650"


async def test_settling_twice_or_after_expiry_refunds_nothing() -> None:
    clock = Clock()
    store = InMemoryQuotaStore(clock)
    quota, _ = policy(store, lease_ttl_s=2)
    who = principal(Limits(tokens=LIMITS.tokens))
    lease = await take(quota, who, 500)
    await quota.settle(lease, used_tokens=0)
    await quota.settle(lease, used_tokens=0)
    left = (await take(quota, who, 0)).headers["x-ratelimit-remaining-tokens"]
    assert left == "1000"
    stale = await take(quota, who, 1000)
    clock.now_ms += 2_500  # the gateway that held it died; the lease expired
    await quota.settle(stale, used_tokens=0)
    left = (await take(quota, who, 0)).headers["x-ratelimit-remaining-tokens"]
    assert left == "250"  # refilled for 2.5 s at 100/s; no refund


async def test_concurrency_leases_are_returned_by_settle() -> None:
    quota, seen = policy(InMemoryQuotaStore(Clock()))
    who = principal(Limits(concurrent_requests=1))
    first = await take(quota, who, 5, "embeddings")
    with pytest.raises(RateLimited, match="concurrent"):
        await take(quota, who, 5, "embeddings")
    assert seen[-1][2] == "limited_tenant_concurrency"
    await quota.settle(first, 5)
    await take(quota, who, 5, "embeddings")


async def test_a_keys_concurrency_cap_is_enforced_under_the_tenants() -> None:
    quota, seen = policy(InMemoryQuotaStore(Clock()))
    who = principal(Limits(concurrent_requests=10), key_limits=Limits(concurrent_requests=2))
    held = [await take(quota, who, 1) for _ in range(2)]
    with pytest.raises(RateLimited, match=r"key 'k1'.*limit 2"):
        await take(quota, who, 1)
    assert seen[-1][2] == "limited_key_concurrency"
    await quota.settle(held[0], 1)
    await take(quota, who, 1)


async def test_key_limits_apply_on_top_of_tenant_limits() -> None:
    quota, seen = policy(InMemoryQuotaStore(Clock()))
    who = principal(LIMITS, key_limits=Limits(requests=BucketLimit(per_minute=1)))
    await take(quota, who, 1)
    with pytest.raises(RateLimited):
        await take(quota, who, 1)
    assert seen[-1][2] == "limited_key_requests"


async def test_too_large_for_the_burst_says_so_without_retry_after() -> None:
    quota, _ = policy(InMemoryQuotaStore(Clock()))
    with pytest.raises(RateLimited, match="Request too large") as err:
        await take(quota, principal(LIMITS), 5000)
    assert err.value.headers is not None and "Retry-After" not in err.value.headers


async def test_a_bucket_that_does_not_refill_stays_empty() -> None:
    clock = Clock()
    quota, _ = policy(InMemoryQuotaStore(clock))
    who = principal(Limits(requests=BucketLimit(per_minute=0, burst=2)))
    await take(quota, who, 1)
    await take(quota, who, 1)
    clock.now_ms += 3_600_000
    with pytest.raises(RateLimited, match="used up and does not refill") as err:
        await take(quota, who, 1)
    assert err.value.headers is not None and "Retry-After" not in err.value.headers


async def test_redis_down_follows_the_configured_mode_per_route_class() -> None:
    store = InMemoryQuotaStore(Clock(), down=True)
    modes = {"generation": "closed", "embeddings": "open", "rerank": "local"}
    quota, seen = policy(store, on_redis_error=modes)
    who = principal(LIMITS)
    with pytest.raises(QuotaUnavailable) as err:
        await take(quota, who, 10)
    assert err.value.status == 503 and err.value.headers == {"Retry-After": "1"}
    lease = await take(quota, who, 10, "embeddings")
    assert not lease.holds  # unmetered
    await quota.settle(lease, 10)  # nothing to settle, no error
    assert [d[2] for d in seen] == ["rejected_without_redis", "admitted_without_redis"]
    store.down = False  # Redis is back: no restart needed
    assert (await take(quota, who, 10)).holds[0].store is store


async def test_local_mode_enforces_this_replicas_share_until_redis_is_back() -> None:
    clock = Clock()
    store = InMemoryQuotaStore(clock, down=True)
    quota, seen = policy(store, replicas=3)
    who = principal(Limits(requests=BucketLimit(per_minute=60, burst=9)))
    for _ in range(3):  # 9 / 3 replicas
        await take(quota, who, 1)
    with pytest.raises(RateLimited) as err:
        await take(quota, who, 1)
    assert err.value.headers is not None and err.value.headers["retry-after-ms"] == "3000"
    assert [d[2] for d in seen] == ["admitted_locally"] * 3 + ["limited_tenant_requests_locally"]
    store.down = False
    lease = await take(quota, who, 1)  # the shared state again, untouched by the outage
    assert lease.headers["x-ratelimit-remaining-requests"] == "8"


async def test_local_mode_shares_concurrency_caps_and_returns_leases() -> None:
    store = InMemoryQuotaStore(Clock(), down=True)
    quota, _ = policy(store, replicas=2)
    who = principal(Limits(concurrent_requests=3))
    held = [await take(quota, who, 1) for _ in range(2)]  # ceil(3 / 2)
    with pytest.raises(RateLimited, match="concurrent"):
        await take(quota, who, 1)
    await quota.settle(held[0], 1)
    await take(quota, who, 1)


async def test_an_admission_that_failed_is_settled_again_when_redis_answers() -> None:
    store = InMemoryQuotaStore(Clock())
    quota, seen = policy(store, on_redis_error={"generation": "closed"})
    who = principal(Limits(concurrent_requests=1))
    ghost = await take(quota, who, 1)  # its settle does not come back
    store.down = True
    await quota.settle(ghost, 1)
    assert seen[-1][2] == "settle_failed"
    store.down = False
    with pytest.raises(RateLimited, match="concurrent"):
        await take(quota, who, 1)  # the ghost holds the only slot...
    await quota._resettler.retry()
    await take(quota, who, 1)  # ...until it is settled in the background
    assert ("acme", "generation", "ghost_settled") in seen


@pytest.mark.parametrize(
    ("ms", "text"), [(0, "0ms"), (17, "17ms"), (1000, "1s"), (1500, "1.5s"), (360_000, "6m0s")]
)
def test_duration_format(ms: int, text: str) -> None:
    assert duration(ms) == text


async def test_a_renewed_lease_outlives_its_ttl_and_a_dead_replicas_does_not() -> None:
    clock = Clock()
    store = InMemoryQuotaStore(clock)
    alive, _ = policy(store, lease_ttl_s=3)
    dead, _ = policy(store, lease_ttl_s=3)  # a replica that stops renewing (it died)
    who = principal(Limits(concurrent_requests=2))
    kept = await take(alive, who, 1)
    await take(dead, who, 1)
    for _ in range(3):  # 6 s: twice the TTL
        clock.now_ms += 2_000
        await alive._renewals.renew()
    assert store.in_flight("rg:q:{acme}:leases") == 1  # only the renewed lease is live
    await take(alive, who, 1)  # the dead replica's slot came back
    await alive.settle(kept, 1)
    assert alive._renewals.live == 1


async def test_a_disabled_quota_admits_everything_without_asking_the_store() -> None:
    store = InMemoryQuotaStore(Clock())
    quota, seen = policy(store, enabled=False)
    tight = Limits(requests=BucketLimit(per_minute=60, burst=1), concurrent_requests=1)
    leases = [await take(quota, principal(tight), 10**6) for _ in range(3)]
    for lease in leases:
        assert lease.holds == [] and lease.headers == {}
        await quota.settle(lease, 5)
    assert store.log == [] and seen == []
