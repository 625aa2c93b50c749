"""Per-request stage timing: what the `Server-Timing` header and the stage histogram report.

One `Stages` per HTTP request (made by the metrics middleware, kept on its
RequestLabels). Each step of the request path `lap`s its stage when it is done; the
stages before the first byte of the response go out in the `Server-Timing` header
(W3C Server Timing: `name;dur=<ms>`), and all are observed in
`raygate_gateway_stage_seconds{stage,model}` when the response has ended.

Stages of a generation request, in order: auth (API key), parse (read and validate the
body), admit (request bucket and concurrency lease), tok (chat template and tokenizer),
route (model choice and context check, without tok), reserve (token buckets), cache
(lookup), then the model call: ttft (the handle call to the first chunk), split by the
model replica into hop (Serve's router, Ray's transport and the replica's queue: ttft
minus the replica's own time), enc (the replica's range check or tokenizing), eq (the
engine's waiting queue) and pf (prefill to the first token); `total` is the request's
time in the gateway until its response starts.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

_DUR = re.compile(r"(?:^|;)\s*dur\s*=\s*([0-9.]+)")


class Stages:
    __slots__ = ("_mark", "_seconds", "_start")

    def __init__(self) -> None:
        self._start = self._mark = time.perf_counter()
        self._seconds: dict[str, float] = {}

    def mark(self) -> None:
        """The next stage begins now (what ran since the last lap belongs to none)."""
        self._mark = time.perf_counter()

    def lap(self, name: str, less: float = 0.0) -> None:
        """Stage `name` ran from the last mark or lap until now (`less` the seconds of
        a stage inside it, recorded apart)."""
        now = time.perf_counter()
        self.add(name, max(0.0, now - self._mark - less))
        self._mark = now

    def add(self, name: str, seconds: float) -> None:
        """Record `seconds` for `name`; a stage recorded twice (several prompts run at
        once) keeps the longer, the one the response waited for."""
        if seconds > self._seconds.get(name, -1.0):
            self._seconds[name] = seconds

    def __iter__(self) -> Iterator[tuple[str, float]]:
        return iter(self._seconds.items())

    def __bool__(self) -> bool:
        return bool(self._seconds)

    def header(self) -> str:
        """The `Server-Timing` value: every stage so far and `total` since the request
        came in, in milliseconds."""
        total = time.perf_counter() - self._start
        parts = [f"{name};dur={s * 1000:.2f}" for name, s in self._seconds.items()]
        parts.append(f"total;dur={total * 1000:.2f}")
        return ", ".join(parts)


def parse(header: str) -> dict[str, float]:
    """A `Server-Timing` value (W3C: `name[;param=value]*`, comma-separated) as
    {name: milliseconds}, for the metrics that carry a `dur`."""
    stages = {}
    for entry in header.split(","):
        name, _, params = entry.strip().partition(";")
        if name and (m := _DUR.search(";" + params)):
            stages[name.strip()] = float(m.group(1))
    return stages
