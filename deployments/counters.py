"""Lifetime request counts of one model replica, by how each request ended."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass


@dataclass
class RequestCounters:
    """How many requests this replica started, and how many of them finished, were
    aborted (the caller left: cancelled or closed) or failed; the rest are running."""

    started: int = 0
    finished: int = 0
    aborted: int = 0
    failed: int = 0

    @property
    def running(self) -> int:
        return self.started - self.finished - self.aborted - self.failed

    @contextmanager
    def counting(self) -> Iterator[None]:
        """Count one request over the block: started on entry; finished if the block
        ends normally, aborted on cancellation or a closed generator, failed on any
        other exception (which goes on)."""
        self.started += 1
        outcome = "failed"
        try:
            yield
            outcome = "finished"
        except (asyncio.CancelledError, GeneratorExit):
            outcome = "aborted"
            raise
        finally:
            setattr(self, outcome, getattr(self, outcome) + 1)

    def snapshot(self) -> dict[str, int]:
        """The counts, `running` included (what a replica's `stats()` returns)."""
        return {**asdict(self), "running": self.running}
