"""The encoders benchmark's summary: a trial's runs become one row per route and level."""

from __future__ import annotations

from typing import Any

from loadtests.bench_encoders import medians


def row(concurrency: int, items_per_s: float, gateway_ms: float, **cpu: float) -> dict[str, Any]:
    return {
        "concurrency": concurrency,
        "per_request": 1,
        "requests": 10,
        "items_per_s": items_per_s,
        "p50_ms": items_per_s * 2,
        "p95_ms": items_per_s * 3,
        "cpu_ms_per_request": {"gateway": gateway_ms, **cpu},
    }


def run(items_per_s: float, gateway_ms: float, **cpu: float) -> dict[str, Any]:
    return {
        "trial": "profile",
        "embeddings": [row(1, items_per_s, gateway_ms, **cpu), row(8, 2 * items_per_s, 1.0)],
        "rerank": [row(1, 5.0, 1.0)],
    }


def test_each_figure_is_the_median_of_the_runs_row_by_row() -> None:
    summary = medians([run(10.0, 4.0), run(30.0, 2.0), run(20.0, 9.0)])
    first, second = summary["embeddings"]
    assert (first["items_per_s"], first["p95_ms"], first["requests"]) == (20.0, 60.0, 30)
    assert first["cpu_ms_per_request"]["gateway"] == 4.0  # CPU figures: medians too
    assert second["concurrency"] == 8 and second["items_per_s"] == 40.0
    assert summary["trial"] == "profile" and summary["runs"] == 3


def test_a_role_missing_from_a_run_counts_as_no_cpu_there() -> None:
    summary = medians([run(10.0, 1.0, embedder=6.0), run(10.0, 1.0)])
    assert summary["embeddings"][0]["cpu_ms_per_request"]["embedder"] == 3.0
