"""QuotaPolicy over the in-memory store: costs, refusals, headers, settling, Redis down."""

import pytest

from gateway.auth import BucketLimit, KeyConfig, Limits, Principal, TenantConfig
from gateway.quota.config import QuotaConfig
from gateway.quota.policy import QuotaPolicy, duration
from schemas.errors import QuotaUnavailable, RateLimited
from tests.fakes import Clock, InMemoryQuotaStore

Decisions = list[tuple[str, str, str]]


def principal(limits: Limits, key_limits: Limits | None = None) -> Principal:
    key = KeyConfig(name="k1", sha256="0" * 64, limits=key_limits or Limits())
    return Principal(TenantConfig(id="acme", limits=limits, keys=[key]), key)


def policy(store: InMemoryQuotaStore, **config: object) -> tuple[QuotaPolicy, Decisions]:
    seen: Decisions = []
    quota = QuotaPolicy(store, QuotaConfig.model_validate(config), lambda *d: seen.append(d))
    return quota, seen


LIMITS = Limits(
    requests=BucketLimit(per_minute=60, burst=2),
    tokens=BucketLimit(per_minute=6000, burst=1000),
)


async def test_admits_within_limits_and_reports_openai_headers() -> None:
    quota, seen = policy(InMemoryQuotaStore(Clock()))
    lease = await quota.admit(principal(LIMITS), "generation", 300)
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
    await quota.admit(who, "generation", 1)
    clock.now_ms += 250
    await quota.admit(who, "generation", 1)
    with pytest.raises(RateLimited) as err:
        await quota.admit(who, "generation", 1)
    e = err.value
    assert (e.status, e.code, e.type) == (429, "rate_limit_exceeded", "requests")
    assert e.headers is not None
    assert e.headers["retry-after-ms"] == "750" and e.headers["Retry-After"] == "1"
    assert e.headers["x-ratelimit-remaining-requests"] == "0"
    assert seen[-1] == ("acme", "generation", "limited_tenant_requests")


async def test_settle_refunds_unused_reserved_tokens() -> None:
    quota, _ = policy(InMemoryQuotaStore(Clock()))
    who = principal(LIMITS)
    lease = await quota.admit(who, "generation", 900)  # prompt + max_tokens
    with pytest.raises(RateLimited) as err:
        await quota.admit(who, "generation", 200)
    assert err.value.type == "tokens"
    await quota.settle(lease, used_tokens=150)  # the answer was short
    again = await quota.admit(who, "generation", 200)
    assert again.headers["x-ratelimit-remaining-tokens"] == "650"


async def test_settling_twice_or_after_expiry_refunds_nothing() -> None:
    clock = Clock()
    store = InMemoryQuotaStore(clock)
    quota, _ = policy(store, lease_ttl_s=2)
    who = principal(Limits(tokens=LIMITS.tokens))
    lease = await quota.admit(who, "generation", 500)
    await quota.settle(lease, used_tokens=0)
    await quota.settle(lease, used_tokens=0)
    left = (await quota.admit(who, "generation", 0)).headers["x-ratelimit-remaining-tokens"]
    assert left == "1000"
    stale = await quota.admit(who, "generation", 1000)
    clock.now_ms += 2_500  # the gateway that held it died; the lease expired
    await quota.settle(stale, used_tokens=0)
    left = (await quota.admit(who, "generation", 0)).headers["x-ratelimit-remaining-tokens"]
    assert left == "250"  # refilled for 2.5 s at 100/s; no refund


async def test_concurrency_leases_are_returned_by_settle() -> None:
    quota, seen = policy(InMemoryQuotaStore(Clock()))
    who = principal(Limits(concurrent_requests=1))
    first = await quota.admit(who, "embeddings", 5)
    with pytest.raises(RateLimited, match="concurrent"):
        await quota.admit(who, "embeddings", 5)
    assert seen[-1][2] == "limited_concurrency"
    await quota.settle(first, 5)
    await quota.admit(who, "embeddings", 5)


async def test_key_limits_apply_on_top_of_tenant_limits() -> None:
    quota, seen = policy(InMemoryQuotaStore(Clock()))
    who = principal(LIMITS, key_limits=Limits(requests=BucketLimit(per_minute=1)))
    await quota.admit(who, "generation", 1)
    with pytest.raises(RateLimited):
        await quota.admit(who, "generation", 1)
    assert seen[-1][2] == "limited_key_requests"


async def test_too_large_for_the_burst_says_so_without_retry_after() -> None:
    quota, _ = policy(InMemoryQuotaStore(Clock()))
    with pytest.raises(RateLimited, match="Request too large") as err:
        await quota.admit(principal(LIMITS), "generation", 5000)
    assert err.value.headers is not None and "Retry-After" not in err.value.headers


async def test_redis_down_follows_the_configured_mode_per_route_class() -> None:
    store = InMemoryQuotaStore(Clock(), down=True)
    quota, seen = policy(store)
    who = principal(LIMITS)
    with pytest.raises(QuotaUnavailable) as err:
        await quota.admit(who, "generation", 10)
    assert err.value.status == 503 and err.value.headers == {"Retry-After": "1"}
    lease = await quota.admit(who, "embeddings", 10)
    assert not lease.metered
    await quota.settle(lease, 10)  # nothing to settle, no error
    assert [d[2] for d in seen] == ["rejected_without_redis", "admitted_without_redis"]
    store.down = False  # Redis is back: no restart needed
    assert (await quota.admit(who, "generation", 10)).metered


@pytest.mark.parametrize(
    ("ms", "text"), [(0, "0ms"), (17, "17ms"), (1000, "1s"), (1500, "1.5s"), (360_000, "6m0s")]
)
def test_duration_format(ms: int, text: str) -> None:
    assert duration(ms) == text
