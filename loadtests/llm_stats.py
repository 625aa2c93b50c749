"""Pure statistics of the streaming benchmark: run order, pooled percentiles, ratios to
raw vLLM, per-stage summaries."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from loadtests.harness import median_per_key, percentile


def latin_order(systems: Sequence[str], repeat: int) -> list[str]:
    """The run order of repeat `repeat` (0-based): the list rotated by `repeat`, so over
    len(systems) repeats each system runs once in each position (a cyclic Latin square)."""
    n = len(systems)
    return [systems[(i + repeat) % n] for i in range(n)] if n else []


def _r(value: float) -> float:
    return round(value, 1)


def pool_level(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One concurrency level of one system over its repeats: TTFT percentiles of every
    request of every run pooled; throughput the median of the runs' tok/s, with the runs'
    spread (min, max) beside it.

    Raises ValueError when `runs` is empty or mixes concurrency levels.
    """
    if not runs:
        raise ValueError("no runs to pool")
    levels = {run["concurrency"] for run in runs}
    if len(levels) != 1:
        raise ValueError(f"runs of different levels pooled: {sorted(levels)}")
    ttfts = [t for run in runs for t in run["ttft_ms"]]
    rates = [run["output_tok_s"] for run in runs]
    return {
        "concurrency": runs[0]["concurrency"],
        "runs": len(runs),
        "requests": len(ttfts),
        "output_tok_s": _r(statistics.median(rates)),
        "output_tok_s_runs": rates,
        "ttft_p50_ms": _r(percentile(ttfts, 0.5)),
        "ttft_p95_ms": _r(percentile(ttfts, 0.95)),
        "ttft_p99_ms": _r(percentile(ttfts, 0.99)),
        "ttft_p95_ms_runs": [_r(percentile(run["ttft_ms"], 0.95)) for run in runs],
    }


def ratios(pooled: dict[str, list[dict[str, Any]]], base: str = "vllm") -> dict[str, list[dict]]:
    """Per system but `base`, per level that `base` has: throughput ratio, TTFT p95 ratio
    and TTFT p50 added ms against `base`. Empty when `base` did not run."""
    ref = {row["concurrency"]: row for row in pooled.get(base, [])}
    out: dict[str, list[dict]] = {}
    for name, rows in pooled.items():
        if name == base or not ref:
            continue
        out[name] = [
            {
                "concurrency": row["concurrency"],
                "throughput_ratio": round(
                    row["output_tok_s"] / ref[row["concurrency"]]["output_tok_s"], 3
                ),
                "ttft_p95_ratio": round(
                    row["ttft_p95_ms"] / ref[row["concurrency"]]["ttft_p95_ms"], 3
                ),
                "ttft_p50_added_ms": _r(
                    row["ttft_p50_ms"] - ref[row["concurrency"]]["ttft_p50_ms"]
                ),
            }
            for row in rows
            if row["concurrency"] in ref
        ]
    return out


def stage_summary(requests: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per stage seen in any request's `stages` (ms), median and p95 over the requests that
    carry it, and how many do. With a server-side first-token time (`ttft`, else `total`),
    also `client-remainder`: client TTFT minus it (Serve proxy, transport, client)."""
    values: dict[str, list[float]] = {}
    for request in requests:
        stages = request.get("stages") or {}
        for name, ms in stages.items():
            values.setdefault(name, []).append(ms)
        server = stages.get("ttft", stages.get("total"))
        if server is not None:
            values.setdefault("client-remainder", []).append(request["ttft_ms"] - server)
    return {
        name: {"n": len(v), "p50_ms": _r(percentile(v, 0.5)), "p95_ms": _r(percentile(v, 0.95))}
        for name, v in values.items()
    }


def cpu_per_request(cpu_s: dict[str, float], requests: int) -> dict[str, float]:
    """CPU seconds by role over a level, as ms per request (0 requests count as 1)."""
    n = max(requests, 1)
    return {role: round(seconds * 1000 / n, 2) for role, seconds in sorted(cpu_s.items())}


def pool_cpu(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    """Median over runs of each role's CPU ms per request (a role absent in a run counts 0)."""
    return {role: round(ms, 2) for role, ms in median_per_key(runs).items()}
