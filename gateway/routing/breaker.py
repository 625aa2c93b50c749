"""Circuit breakers, one per model deployment in each gateway replica.

closed -> (failure_threshold consecutive failures) -> open -> (open_s later) half-open:
one probe call goes through; its success closes the circuit, its failure reopens it.
Failures are the model's own (errors, timeouts, a dead replica), never the client's
(4xx) or a full queue (that is load, handled by backpressure). Each breaker also counts
the model's signs of life (`heard`: every chunk it sent to this gateway replica), so a
first-token timeout can be told apart: a model that kept answering other calls while
this one waited is busy, not broken (see gateway.routing.fallback).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

from gateway.routing.config import BreakerConfig


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


STATE_VALUE = {State.CLOSED: 0, State.HALF_OPEN: 1, State.OPEN: 2}  # for a gauge


class CircuitBreaker:
    def __init__(
        self,
        config: BreakerConfig,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[State], None] = lambda _: None,
    ):
        self._config = config
        self._clock = clock
        self._on_change = on_change
        self._state = State.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self._heard = 0

    @property
    def heard(self) -> int:
        """How many chunks the model has sent through this breaker's replica so far."""
        return self._heard

    def alive(self) -> None:
        """The model sent a chunk (to any call): a sign of life, not an outcome."""
        self._heard += 1

    @property
    def state(self) -> State:
        return self._state

    def retry_in_s(self) -> float:
        """Seconds until an open circuit lets a probe through (0 when it would now)."""
        if self._state is not State.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self._config.open_s - self._clock())

    def allow(self) -> bool:
        """May a call go to the model now? In half-open, only one probe at a time."""
        if self._state is State.OPEN and self.retry_in_s() == 0.0:
            self._set(State.HALF_OPEN)
        if self._state is State.HALF_OPEN:
            if self._probing:
                return False
            self._probing = True
            return True
        return self._state is State.CLOSED

    def success(self, probe: bool = False) -> None:
        """A call reached its first token; `probe`: it held the half-open probe slot."""
        self.alive()
        self._failures = 0
        if probe:
            self._probing = False
        if self._state is not State.CLOSED:
            self._set(State.CLOSED)

    def failure(self, probe: bool = False) -> None:
        """A call failed as the model's fault; `probe`: it held the probe slot."""
        if probe:
            self._probing = False
        self._failures += 1
        if self._state is State.HALF_OPEN or self._failures >= self._config.failure_threshold:
            self._opened_at = self._clock()
            if self._state is not State.OPEN:
                self._set(State.OPEN)

    def release(self) -> None:
        """A call that ended neither way (cancelled, client error): free the probe slot."""
        self._probing = False

    def attempt(self) -> Attempt | None:
        """A hold on the breaker for one call, or None when the circuit refuses it."""
        if not self.allow():
            return None
        return Attempt(self, probe=self._state is State.HALF_OPEN)

    def _set(self, state: State) -> None:
        self._state = state
        self._on_change(state)


class Attempt:
    """One call's hold on a breaker; settles it exactly once.

    `success()` or `failure()` records the call's outcome; `release()`, meant for a
    `finally:`, frees the probe slot of a call that ended neither way (cancelled, a
    client error, passed over) and does nothing once the outcome is recorded. Only the
    attempt that took the half-open probe slot (`probe`) frees it: every path out of a
    probe frees the slot, and no other call, late or early, can free a slot a probe holds.
    """

    def __init__(self, breaker: CircuitBreaker, probe: bool):
        self._breaker: CircuitBreaker | None = breaker
        self._probe = probe

    @property
    def probe(self) -> bool:
        """This call holds the half-open probe slot."""
        return self._probe

    def success(self) -> None:
        if (breaker := self._settle()) is not None:
            breaker.success(self._probe)

    def failure(self) -> None:
        if (breaker := self._settle()) is not None:
            breaker.failure(self._probe)

    def release(self) -> None:
        if (breaker := self._settle()) is not None and self._probe:
            breaker.release()

    def _settle(self) -> CircuitBreaker | None:
        breaker, self._breaker = self._breaker, None
        return breaker


class Breakers:
    """The breakers of one gateway replica, created on first use."""

    def __init__(
        self,
        config: BreakerConfig,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, State], None] = lambda _m, _s: None,
    ):
        self._config = config
        self._clock = clock
        self._on_change = on_change
        self._by_model: dict[str, CircuitBreaker] = {}

    def __getitem__(self, model_id: str) -> CircuitBreaker:
        breaker = self._by_model.get(model_id)
        if breaker is None:
            breaker = CircuitBreaker(
                self._config, self._clock, lambda state: self._on_change(model_id, state)
            )
            self._by_model[model_id] = breaker
        return breaker
