"""What a phase's attempts say: losses, statuses, broken streams, recovery; and the table."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from loadtests.chaos.load import KINDS, Attempt, Kind
from loadtests.harness import machine_line


def recovery_s(attempts: Sequence[Attempt], kind: Kind, fault_at: float) -> float | None:
    """Seconds from the fault to the end of the first success of `kind` sent after its last
    failure: 0.0 if no request of `kind` failed from the fault on, None if none succeeded
    after the last failure (not recovered within the phase)."""
    mine = [a for a in attempts if a.kind == kind and a.end >= fault_at]
    failed = [a.start for a in mine if not a.ok]
    if not failed:
        return 0.0
    last = max(failed)
    after = [a.end for a in mine if a.ok and a.start > last]
    return round(min(after) - fault_at, 1) if after else None


def _statuses(attempts: Sequence[Attempt], low: int, high: int) -> dict[str, int]:
    counts = Counter(a.status for a in attempts if a.status is not None and low <= a.status < high)
    return {str(status): n for status, n in sorted(counts.items())}


def summarize(attempts: Sequence[Attempt], fault_at: float) -> dict[str, Any]:
    """The phase's figures: per kind and in all. `lost` had no response at all; `5xx` and
    `4xx` are by status; `broken` are 200 streams without [DONE] or with an error event."""

    def figures(group: Sequence[Attempt]) -> dict[str, Any]:
        return {
            "sent": len(group),
            "ok": sum(a.ok for a in group),
            "lost": sum(a.verdict == "lost" for a in group),
            "5xx": _statuses(group, 500, 600),
            "4xx": _statuses(group, 400, 500),
            "broken": sum(a.verdict == "broken" for a in group),
        }

    samples: dict[tuple[str, str, int | None], str] = {}
    for a in attempts:
        if not a.ok:
            samples.setdefault((a.kind, a.verdict, a.status), (a.detail or "")[:160])
    return {
        **figures(attempts),
        "by_kind": {kind: figures([a for a in attempts if a.kind == kind]) for kind in KINDS},
        "recovery_s": {kind: recovery_s(attempts, kind, fault_at) for kind in KINDS},
        "served_by": dict(Counter(a.model or "-" for a in attempts if a.ok)),
        "failure_samples": [
            {"kind": k, "verdict": v, "status": s, "detail": d} for (k, v, s), d in samples.items()
        ],
    }


def _by_status(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} x {status}" for status, n in counts.items()) or "0"


def _seconds(value: float | None) -> str:
    return "not recovered" if value is None else f"{value:g}"


def markdown(record: dict[str, Any]) -> str:
    """The drill's table, one row per phase, for loadtests/results/chaos.md."""
    lines = [
        "# Chaos drill",
        "",
        machine_line(record["machine"]),
        f"Command: `{record['command']}`",
        "",
        record["setup"],
        "",
        "| phase | fault | held s | sent | ok | lost | 5xx | 4xx | broken streams "
        "| leaked leases | recovery s (stream / chat / embed) | whole again s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in record["phases"]:
        if "error" in p:
            lines.append(f"| {p['phase']} | could not run: {p['error'][:200]} |" + " |" * 10)
            continue
        r = p["recovery_s"]
        recovery = " / ".join(_seconds(r[k]) for k in KINDS)
        whole = (
            "-"
            if p["whole_again"] is None
            else f"{_seconds(p['whole_again_s'])} ({p['whole_again']})"
        )
        lines.append(
            f"| {p['phase']} | {p['fault']} | {p['held_s']:.1f} | {p['sent']} | {p['ok']} "
            f"| {p['lost']} | {_by_status(p['5xx'])} | {_by_status(p['4xx'])} | {p['broken']} "
            f"| {p['leaked_leases']} | {recovery} | {whole} |"
        )
    lines += [
        "",
        f"Live leases after the whole drill: {record['leases_after_drill']} "
        "(every request had ended: each one is a leak). Cluster healthy after the drill: "
        f"{'yes' if record['healthy_after_drill'] else 'no'}.",
        "",
        record["legend"],
    ]
    return "\n".join(lines) + "\n"
