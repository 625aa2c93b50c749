"""Stages: laps, marks, a stage recorded twice, the Server-Timing value. (The header on
real responses: tests/unit/gateway/test_client_routes.py.)"""

from __future__ import annotations

import pytest

from gateway import timing
from gateway.timing import Stages, parse


def test_laps_measure_from_the_last_mark_and_keep_the_longer_of_two(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])
    stages = Stages()
    now[0] += 0.010  # before the mark: no stage's
    stages.mark()
    now[0] += 0.002
    stages.lap("a")
    now[0] += 0.010
    stages.lap("b", less=0.004)  # 4 ms of it recorded apart
    stages.add("c", 0.003)
    stages.add("c", 0.001)
    assert dict(stages) == pytest.approx({"a": 0.002, "b": 0.006, "c": 0.003})
    assert stages.header() == "a;dur=2.00, b;dur=6.00, c;dur=3.00, total;dur=22.00"
    assert parse(stages.header())["total"] == 22.0


def test_parse_reads_the_w3c_form_with_params_and_spaces() -> None:
    header = 'auth;dur=0.02, cache;desc="hit";dur=1.5,db;dur=53 , miss, total;dur=9'
    assert parse(header) == {"auth": 0.02, "cache": 1.5, "db": 53.0, "total": 9.0}
