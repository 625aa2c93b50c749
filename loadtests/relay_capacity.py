"""Arithmetic of the relay benchmark: capacity under the pacing criteria, the split of
CPU into per-request and per-chunk costs, and the gateway replicas an engine needs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def capacity(
    levels: Sequence[Mapping[str, Any]], tokens_per_s: float, first_token_s: float
) -> Mapping[str, Any] | None:
    """The level with the highest delivered tok/s among those that kept pace: per-stream
    rate >= 95% of `tokens_per_s` and TTFT p95 < first_token_s + 100 ms; None if none."""
    kept = [
        level
        for level in levels
        if level["stream_rate"] >= 0.95 * tokens_per_s and level["ttft_p95_s"] < first_token_s + 0.1
    ]
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
