"""The chaos drill's arithmetic: what counts as lost, broken, and when a kind recovered."""

from __future__ import annotations

from loadtests.chaos.load import Attempt
from loadtests.chaos.report import recovery_s, summarize

FAULT = 100.0


def ok(kind: str, start: float, end: float, model: str = "m") -> Attempt:
    return Attempt(kind, "t", start, end, "ok", 200, model)  # type: ignore[arg-type]


def failed(kind: str, start: float, end: float, verdict: str, status: int | None) -> Attempt:
    return Attempt(kind, "t", start, end, verdict, status, None, "boom")  # type: ignore[arg-type]


def test_no_failure_from_the_fault_on_is_no_outage() -> None:
    attempts = [failed("chat", 90, 95, "http_error", 503), ok("chat", 99, 101)]
    assert recovery_s(attempts, "chat", FAULT) == 0.0


def test_recovery_ends_with_the_first_success_sent_after_the_last_failure() -> None:
    attempts = [
        ok("stream", 98, 102),  # in flight at the fault, but it ended well
        failed("stream", 101, 101.5, "http_error", 503),
        ok("stream", 103, 104),  # a success between failures is not yet recovery
        failed("stream", 105, 106, "lost", None),
        ok("stream", 105.5, 109),  # sent before the last failure was sent
        ok("stream", 106, 108),
    ]
    assert recovery_s(attempts, "stream", FAULT) == 8.0


def test_a_kind_that_never_succeeds_again_is_not_recovered() -> None:
    attempts = [ok("embed", 99, 100.5), failed("embed", 101, 102, "lost", None)]
    assert recovery_s(attempts, "embed", FAULT) is None


def test_summary_counts_lost_statuses_and_broken_streams_apart() -> None:
    attempts = [
        ok("stream", 99, 101, model="primary"),
        failed("stream", 100, 103, "broken", 200),
        failed("chat", 101, 101.1, "http_error", 503),
        failed("chat", 101, 101.1, "http_error", 503),
        failed("chat", 102, 102.1, "http_error", 429),
        failed("embed", 101, 111, "lost", None),
        ok("embed", 112, 113, model="emb"),
    ]
    s = summarize(attempts, FAULT)
    assert (s["sent"], s["ok"], s["lost"], s["broken"]) == (7, 2, 1, 1)
    assert s["5xx"] == {"503": 2} and s["4xx"] == {"429": 1}
    assert s["by_kind"]["stream"]["broken"] == 1 and s["by_kind"]["embed"]["lost"] == 1
    assert s["recovery_s"] == {"stream": None, "chat": None, "embed": 13.0}
    assert s["served_by"] == {"primary": 1, "emb": 1}
