"""Token-bucket arithmetic with an injected clock."""

import pytest

from gateway.quota.buckets import BucketState, InMemoryBuckets, Limit, wait_ms
from tests.fakes import Clock

PER_SEC = Limit(rate_per_min=60, burst=3)  # one unit per second, three at most


def test_burst_then_refill_at_the_configured_rate() -> None:
    clock = Clock()
    buckets = InMemoryBuckets(clock)
    for _ in range(3):
        assert buckets.take(["k"], [PER_SEC], [1]).admitted
    refused = buckets.take(["k"], [PER_SEC], [1])
    assert not refused.admitted and refused.retry_after_ms == 1000
    clock.now_ms += 999
    assert not buckets.take(["k"], [PER_SEC], [1]).admitted
    clock.now_ms += 1
    assert buckets.take(["k"], [PER_SEC], [1]).admitted
    clock.now_ms += 60_000  # idle for a minute: full again, never more than the burst
    decision = buckets.take(["k"], [PER_SEC], [0])
    assert decision.states[0].remaining == 3


def test_several_buckets_are_taken_all_or_nothing() -> None:
    buckets = InMemoryBuckets(Clock())
    tokens = Limit(rate_per_min=600, burst=100)
    assert buckets.take(["req", "tok"], [PER_SEC, tokens], [1, 90]).admitted
    refused = buckets.take(["req", "tok"], [PER_SEC, tokens], [1, 20])
    assert not refused.admitted and refused.denied_index == 1
    assert refused.retry_after_ms == 1000  # 10 tokens missing at 10/s
    # the refused request took nothing from the request bucket
    assert buckets.take(["req"], [PER_SEC], [2]).admitted


def test_cost_above_burst_can_never_be_admitted() -> None:
    decision = InMemoryBuckets(Clock()).take(["tok"], [PER_SEC], [4])
    assert not decision.admitted and decision.retry_after_ms is None
    assert wait_ms(0, 4, PER_SEC) is None


def test_refund_never_overfills() -> None:
    clock = Clock()
    buckets = InMemoryBuckets(clock)
    buckets.take(["k"], [PER_SEC], [2])
    assert buckets.refund("k", PER_SEC, 1) == 2
    assert buckets.refund("k", PER_SEC, 5) == 3


@pytest.mark.parametrize(("remaining", "reset"), [(3, 0), (2.5, 500), (0, 3000)])
def test_reset_is_time_until_full(remaining: float, reset: int) -> None:
    assert BucketState(PER_SEC, remaining).reset_ms == reset
