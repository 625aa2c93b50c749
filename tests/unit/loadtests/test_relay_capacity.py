"""The relay benchmark's arithmetic."""

import pytest

from loadtests.relay_capacity import capacity, replicas_needed, split_cpu


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
