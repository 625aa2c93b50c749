"""Is the quota Redis up? Judged from recent round trips, not from one call's deadline.

A busy gateway makes every call slow from the inside: its event loop runs late, so a reply
that arrived in time is read late. `LoopLag` measures how late the loop runs, and a round
trip counts as slow only by what is left after that lag: a gateway at full load never takes
a healthy Redis for a down one. Redis is judged down after `down_after` slow or failed round
trips in a row, or at once when it cannot be reached or a round trip is abandoned; it is up
again when a probe (PING) comes back in time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

log = logging.getLogger("raygate.quota")

Clock = Callable[[], float]


class LoopLag:
    """How late this event loop has run lately: the largest overshoot of a short sleep in
    the last `window_s`, or the current one if the sampler itself is overdue."""

    def __init__(
        self, interval_s: float = 0.01, window_s: float = 1.0, clock: Clock = time.monotonic
    ):
        self._interval_s = interval_s
        self._window_s = window_s
        self._clock = clock
        self._samples: deque[tuple[float, float]] = deque()  # (when, overshoot)
        self._last_wake: float | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start sampling on the running loop (idempotent)."""
        if self._task is None or self._task.done():
            self._last_wake = self._clock()
            self._task = asyncio.get_running_loop().create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            before = self._clock()
            await asyncio.sleep(self._interval_s)
            self.record(self._clock() - before - self._interval_s)

    def record(self, overshoot: float) -> None:
        now = self._clock()
        self._last_wake = now
        self._samples.append((now, max(0.0, overshoot)))
        while self._samples and self._samples[0][0] < now - self._window_s:
            self._samples.popleft()

    def recent(self) -> float:
        """Seconds the loop has lately run late (0 when it keeps time)."""
        now = self._clock()
        overdue = 0.0 if self._last_wake is None else now - self._last_wake - self._interval_s
        return max([overdue, 0.0, *(s for t, s in self._samples if t >= now - self._window_s)])


class RedisHealth:
    """Up or down, from the round trips reported to it; probes its way back up."""

    def __init__(
        self,
        slow_s: float,
        lag: LoopLag,
        down_after: int = 3,
        probe_every_s: float = 0.25,
        clock: Clock = time.monotonic,
    ):
        self._slow_s = slow_s
        self._lag = lag
        self._down_after = down_after
        self._probe_every_s = probe_every_s
        self._clock = clock
        self._failures = 0
        self._up = asyncio.Event()
        self._up.set()
        self._probe: Callable[[], Awaitable[object]] | None = None
        self._prober: asyncio.Task[None] | None = None
        self.reason = ""

    @property
    def up(self) -> bool:
        return self._up.is_set()

    def watch_lag(self) -> None:
        """Measure the event loop's lag from now on (idempotent; needs a running loop)."""
        self._lag.start()

    async def wait_up(self) -> None:
        await self._up.wait()

    def probe_with(self, probe: Callable[[], Awaitable[object]]) -> None:
        """How to probe Redis (a PING) while it is judged down."""
        self._probe = probe

    def slow(self, seconds: float) -> bool:
        """Whether a round trip of `seconds` was slow, net of the loop's lag."""
        return seconds - self._lag.recent() > self._slow_s

    def round_trip(self, seconds: float) -> None:
        """A round trip came back after `seconds`."""
        if not self.slow(seconds):
            self._failures = 0
            return
        self._failures += 1
        if self._failures >= self._down_after:
            self.down(f"{self._failures} round trips slower than {self._slow_s}s")

    def failed(self, reason: str, at_once: bool) -> None:
        """A round trip failed; `at_once`: unreachable or hung, not merely slow."""
        self._failures += 1
        if at_once or self._failures >= self._down_after:
            self.down(reason)

    def down(self, reason: str) -> None:
        if not self.up:
            return
        log.warning("quota Redis judged down: %s", reason)
        self.reason = reason
        self._up.clear()
        if self._probe is not None:
            self._prober = asyncio.get_running_loop().create_task(self._probe_until_up())

    async def _probe_until_up(self) -> None:
        assert self._probe is not None
        while not self.up:
            await asyncio.sleep(self._probe_every_s)  # the probing period itself
            started = self._clock()
            try:
                await asyncio.wait_for(self._probe(), self._slow_s + self._lag.recent() + 1.0)
            except Exception:  # still down, whatever the reason
                continue
            if not self.slow(self._clock() - started):
                log.warning("quota Redis is back")
                self._failures = 0
                self._up.set()
