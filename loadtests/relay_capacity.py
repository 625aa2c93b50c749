"""Arithmetic of the relay benchmark: the median of a level's repeats, capacity under
the pacing criteria, the split of CPU into per-request and per-chunk costs, and the
gateway replicas an engine needs."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from loadtests.harness import median_per_key

LEVEL_KEY = ("model", "concurrency", "max_tokens")


def medians(
    runs: Sequence[Mapping[str, Any]], summed: tuple[str, ...] = ("errors",)
) -> list[dict[str, Any]]:
    """One row per level (model, concurrency, max_tokens), in first-seen order: each
    number the median of that level's repeats, except the `summed` ones (an error in
    any repeat shows); each dict of numbers (CPU by role) medianed per key, a missing
    key counting 0; a None (nothing measured) is left out of its median, and stays None
    if no repeat measured it; other fields from the first repeat; `repeats` counts them."""
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for run in runs:
        groups.setdefault(tuple(run[k] for k in LEVEL_KEY), []).append(run)
    rows = []
    for group in groups.values():
        row: dict[str, Any] = {"repeats": len(group)}
        for field, first in group[0].items():
            measured = [run[field] for run in group if run[field] is not None]
            sample = measured[0] if measured else None
            if field in LEVEL_KEY or isinstance(sample, str | bool):
                row[field] = first
            elif field in summed:
                row[field] = sum(measured)
            elif sample is None:
                row[field] = None
            elif isinstance(sample, Mapping):
                row[field] = median_per_key(measured)
            elif isinstance(sample, int | float):
                row[field] = statistics.median(measured)
            else:
                row[field] = first
        rows.append(row)
    return rows


def capacity(
    levels: Sequence[Mapping[str, Any]], tokens_per_s: float, first_token_s: float
) -> Mapping[str, Any] | None:
    """The level with the highest delivered tok/s among those that kept pace: per-stream
    rate >= 95% of `tokens_per_s` and TTFT p95 < first_token_s + 100 ms (a level where
    either was not measured did not keep pace); None if none."""

    def kept_pace(level: Mapping[str, Any]) -> bool:
        rate, p95 = level["stream_rate"], level["ttft_p95_s"]
        return (
            rate is not None
            and p95 is not None
            and rate >= 0.95 * tokens_per_s
            and p95 < first_token_s + 0.1
        )

    kept = [level for level in levels if kept_pace(level)]
    return max(kept, key=lambda level: level["tok_s"], default=None)


def split_cpu(
    long: tuple[float, float, float], short: tuple[float, float, float]
) -> tuple[float, float]:
    """(a, b) with cpu = a*requests + b*chunks, from two runs given as (cpu_s, requests,
    chunks): one with many chunks per request and one with one chunk each."""
    (c1, r1, k1), (c2, r2, k2) = long, short
    det = r1 * k2 - r2 * k1
    if det == 0:
        raise ValueError("the two runs must differ in chunks per request")
    return (c1 * k2 - c2 * k1) / det, (r1 * c2 - r2 * c1) / det


def replicas_needed(engine_tok_s: float, capacity_tok_s: float, headroom: float = 0.3) -> int:
    """Gateway replicas to relay `engine_tok_s` with `headroom` spare on each."""
    return math.ceil(engine_tok_s / ((1 - headroom) * capacity_tok_s))
