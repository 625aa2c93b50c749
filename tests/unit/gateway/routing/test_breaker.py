"""Circuit breaker state machine, on an injected clock."""

from gateway.routing.breaker import Breakers, CircuitBreaker, State
from gateway.routing.config import BreakerConfig


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, changes: list[State] | None = None) -> CircuitBreaker:
    config = BreakerConfig(failure_threshold=3, open_s=10)
    return CircuitBreaker(config, clock, (changes if changes is not None else []).append)


def test_opens_after_consecutive_failures_only() -> None:
    b = breaker(Clock())
    b.failure()
    b.failure()
    b.success()  # a success resets the count
    b.failure()
    b.failure()
    assert b.state is State.CLOSED and b.allow()
    b.failure()
    assert b.state is State.OPEN and not b.allow()


def test_half_open_lets_one_probe_through_and_its_success_closes() -> None:
    clock, changes = Clock(), list[State]()
    b = breaker(clock, changes)
    for _ in range(3):
        b.failure()
    clock.now += 9.9
    assert not b.allow() and 0 < b.retry_in_s() <= 0.1
    clock.now += 0.1
    assert b.allow()  # the probe
    assert b.state is State.HALF_OPEN and not b.allow()  # one probe at a time
    b.success()
    assert b.state is State.CLOSED and b.allow()
    assert changes == [State.OPEN, State.HALF_OPEN, State.CLOSED]


def test_failed_probe_reopens_for_a_full_period() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.failure()
    clock.now += 10
    probe = b.attempt()
    assert probe is not None
    probe.failure()
    assert b.state is State.OPEN and b.retry_in_s() == 10
    clock.now += 10
    assert b.allow()


def test_released_probe_frees_the_slot_without_deciding() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.failure()
    clock.now += 10
    assert b.allow()
    b.release()  # e.g. the client went away
    assert b.state is State.HALF_OPEN and b.allow()


def test_breakers_are_per_model_and_report_changes_with_the_model() -> None:
    seen: list[tuple[str, State]] = []
    board = Breakers(
        BreakerConfig(failure_threshold=1, open_s=5), Clock(), lambda m, s: seen.append((m, s))
    )
    board["a"].failure()
    assert board["a"].state is State.OPEN and board["b"].state is State.CLOSED
    assert board["a"] is board["a"]
    assert seen == [("a", State.OPEN)]


def test_only_the_probe_frees_the_probe_slot() -> None:
    """A call admitted while the circuit was closed ends (cancelled, a client error, or
    failing) while a probe is in flight: the probe keeps its slot, so no second probe."""
    clock = Clock()
    b = breaker(clock)
    early, failing = b.attempt(), b.attempt()
    assert early is not None and failing is not None
    for _ in range(3):
        b.failure()
    clock.now += 10
    probe = b.attempt()
    assert probe is not None and b.state is State.HALF_OPEN
    early.release()
    assert b.attempt() is None  # the slot is still the probe's
    failing.failure()  # reopens (the model still fails), yet frees no slot
    clock.now += 10
    assert b.attempt() is None
    probe.release()
    assert b.attempt() is not None
