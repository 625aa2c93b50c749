"""The relay benchmark's arithmetic."""

import pytest

from loadtests.relay_capacity import capacity, medians, replicas_needed, split_cpu


def level(tok_s: float, rate: float, p95: float) -> dict[str, float]:
    return {"tok_s": tok_s, "stream_rate": rate, "ttft_p95_s": p95}


def test_capacity_is_the_best_level_that_kept_pace() -> None:
    levels = [
        level(300, 20, 0.06),
        level(1200, 19.1, 0.12),
        level(2000, 18.9, 0.1),
        level(2500, 20, 0.2),
    ]
    assert capacity(levels, 20, 0.05) == levels[1]  # 18.9 < 95%; p95 0.2 >= 0.15
    assert capacity([level(10, 5, 0.05)], 20, 0.05) is None
    unmeasured = [{"tok_s": 900, "stream_rate": None, "ttft_p95_s": None}]
    assert capacity([*unmeasured, levels[0]], 20, 0.05) == levels[0]


def test_split_cpu_solves_per_request_and_per_chunk() -> None:
    a, b = 0.004, 0.0002  # 4 ms per request, 0.2 ms per chunk
    long = (a * 100 + b * 25600, 100, 25600)
    short = (a * 400 + b * 400, 400, 400)
    assert split_cpu(long, short) == pytest.approx((a, b))
    with pytest.raises(ValueError):
        split_cpu((1, 10, 10), (2, 20, 20))


def test_replicas_needed_keeps_headroom() -> None:
    assert replicas_needed(2500, 5000) == 1
    assert replicas_needed(10000, 5000) == 3  # 10000 / 3500
    assert replicas_needed(3500, 5000) == 1 and replicas_needed(3501, 5000) == 2


def test_the_measured_window_is_half_open() -> None:
    from loadtests.bench_relay import Window

    window = Window(10.0, 40.0)
    assert 10.0 in window and 39.999 in window
    assert 9.999 not in window and 40.0 not in window


def test_cpu_is_counted_per_process_between_snapshots_by_relay_role() -> None:
    """A replica that restarts mid-level counts from zero, not as a negative total; the
    roles outside the relay (Redis, Ray's own daemons) are left out."""
    from loadtests.bench_relay import relay_cpu
    from loadtests.harness import cpu_delta

    before = {1: ("serve-proxy", 5.0), 2: ("gateway", 9.0), 3: ("redis", 1.0)}
    after = {
        1: ("serve-proxy", 6.5),
        4: ("gateway", 0.75),  # the gateway replica that replaced pid 2
        3: ("redis", 3.0),
        5: ("load-client", 2.0),
    }
    assert relay_cpu(cpu_delta(before, after)) == {"proxy": 1.5, "gateway": 0.75, "client": 2.0}


def test_repeats_of_a_level_become_one_row_of_medians() -> None:
    def run(c: int, tok_s: float, gateway_s: float, **cpu: float) -> dict[str, object]:
        return {
            "model": "m",
            "concurrency": c,
            "max_tokens": 256,
            "tok_s": tok_s,
            "errors": 1 if tok_s == 900.0 else 0,
            "cpu_s": {"gateway": gateway_s, **cpu},
        }

    runs = [
        run(16, 300.0, 1.0),
        run(32, 600.0, 2.0, proxy=1.0),
        run(16, 320.0, 3.0),
        run(16, 900.0, 2.0),
        run(32, 500.0, 4.0),
    ]
    rows = medians(runs)
    assert [(r["concurrency"], r["repeats"]) for r in rows] == [(16, 3), (32, 2)]
    assert rows[0]["tok_s"] == 320.0  # the median, not the mean (506.7)
    assert rows[0]["cpu_s"] == {"gateway": 2.0}
    assert rows[0]["errors"] == 1  # summed: the one repeat that failed is not outvoted
    assert rows[1]["tok_s"] == 550.0
    assert rows[1]["cpu_s"] == {"gateway": 3.0, "proxy": 0.5}  # a role missing counts 0


def test_a_repeat_that_measured_nothing_is_left_out_of_the_median() -> None:
    def run(p95: float | None) -> dict[str, object]:
        return {"model": "m", "concurrency": 256, "max_tokens": 256, "ttft_p95_s": p95}

    assert medians([run(6.3), run(None)])[0]["ttft_p95_s"] == 6.3  # not (6.3 + 0) / 2
    assert medians([run(None), run(None)])[0]["ttft_p95_s"] is None


def test_the_report_takes_medians_and_shows_what_was_not_measured() -> None:
    from loadtests.bench_relay import INTERVALS, model_id, report

    def run(si: int, c: int, max_tokens: int, tok_s: float, p95: float | None) -> dict:
        return {
            "model": model_id(si),
            "concurrency": c,
            "max_tokens": max_tokens,
            "tok_s": tok_s,
            "chunks_s": tok_s / si,
            "requests_s": 1.0,
            "started": 10 * c,
            "chunks": 100 * c if max_tokens > 1 else 10 * c,
            "errors": 0,
            "stream_rate": None if p95 is None else 20.0,
            "ttft_p50_s": p95,
            "ttft_p95_s": p95,
            "cpu_s": {"gateway": 2.0 * c if max_tokens > 1 else 1.0 * c},
            "cpu_share": {"gateway": 0.1},
        }

    def sweep(slow: float | None) -> list[dict]:
        return [
            r
            for si in INTERVALS
            for r in (
                run(si, 16, 256, 320, 0.09),
                run(si, 256, 256, 1700, slow),
                run(si, 64, 1, 36, 1.0),
            )
        ]

    machine = {"cpu": "test", "cores": 2, "memory_gib": 8, "date": "today"}
    record, table = report([sweep(None), sweep(6.0)], machine, "cmd", "quota off")
    assert record["repeat"] == 2 and len(record["runs"]) == 2
    assert record["capacity"]["4"]["level"]["tok_s"] == 320  # 256 streams: p95 6 s
    slow = [row for row in record["levels"] if row["concurrency"] == 256]
    assert all(row["ttft_p95_s"] == 6.0 for row in slow)  # the unmeasured repeat left out
    record, table = report([sweep(None)], machine, "cmd", "quota off")
    assert "| 4 | 256 | 1700 | 425 | 1.0 | - | - / - |" in table
