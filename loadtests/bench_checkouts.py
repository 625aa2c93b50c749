"""raygate's streaming benchmark on two checkouts, interleaved: is a change a regression?

Runs `loadtests.bench_llm --systems raygate` in a baseline checkout and in a checkout of
the change, alternately, `--repeat` times each (the machine drifts: only side-by-side
ratios mean anything), both with this project's venv (same dependencies). Each checkout
needs `models/` (a link to this one's is enough); their own results files are
throwaway. Writes loadtests/results/checkouts.{json,md} here.

    git worktree add /tmp/base BASE_COMMIT && git worktree add /tmp/head HEAD
    ln -s $PWD/models /tmp/base/models && ln -s $PWD/models /tmp/head/models
    .venv/bin/python -m loadtests.bench_checkouts /tmp/base /tmp/head --repeat 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from loadtests.harness import ENV, PY, machine, machine_line, write_result

FIGURES = ("output_tok_s", "ttft_p50_ms", "ttft_p95_ms")


def run_in(checkout: Path, concurrency: list[int]) -> list[dict[str, Any]]:
    """One bench_llm run of raygate in `checkout`; its levels."""
    argv = [PY, "-m", "loadtests.bench_llm", "--systems", "raygate", "--concurrency"]
    argv += [str(c) for c in concurrency]
    subprocess.run(argv, cwd=checkout, env={**os.environ, **ENV}, check=True)
    record = json.loads((checkout / "loadtests" / "results" / "llm_streaming.json").read_text())
    levels: list[dict[str, Any]] = record["systems"]["raygate"]
    return levels


def summary(runs: dict[str, list[list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Per concurrency level: each checkout's medians and the change's ratio to the base."""
    rows = []
    by_level = {name: list(zip(*reps, strict=True)) for name, reps in runs.items()}
    for base_levels, head_levels in zip(by_level["base"], by_level["head"], strict=True):
        row: dict[str, Any] = {"concurrency": base_levels[0]["concurrency"]}
        for key in FIGURES:
            base = statistics.median(level[key] for level in base_levels)
            head = statistics.median(level[key] for level in head_levels)
            row[f"base_{key}"], row[f"head_{key}"] = round(base, 1), round(head, 1)
            row[f"ratio_{key}"] = round(head / base, 3) if base else None
        rows.append(row)
    return rows


def markdown(record: dict[str, Any]) -> str:
    lines = [
        "# Streaming benchmark: a baseline checkout vs the change, interleaved",
        "",
        machine_line(record["machine"]),
        f"Command: `{record['command']}`",
        f"Baseline: {record['base_commit']}; the change: {record['head_commit']}. "
        f"Medians of {record['repeat']} interleaved runs each (raygate only, 64 tokens, "
        "local profile).",
        "",
        "| concurrency | tok/s base | tok/s change | ratio | TTFT p50 base | change | "
        "TTFT p95 base | change |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in record["summary"]:
        lines.append(
            f"| {r['concurrency']} | {r['base_output_tok_s']} | {r['head_output_tok_s']} | "
            f"{r['ratio_output_tok_s']} | {r['base_ttft_p50_ms']} | {r['head_ttft_p50_ms']} | "
            f"{r['base_ttft_p95_ms']} | {r['head_ttft_p95_ms']} |"
        )
    return "\n".join(lines) + "\n"


def commit_of(checkout: Path) -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True
    )
    return out.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("base", type=Path, help="the baseline checkout")
    parser.add_argument("head", type=Path, help="the checkout of the change")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 4, 16])
    args = parser.parse_args(argv)
    checkouts = {"base": args.base.resolve(), "head": args.head.resolve()}
    runs: dict[str, list[list[dict[str, Any]]]] = {"base": [], "head": []}
    for rep in range(args.repeat):
        for name, checkout in checkouts.items():
            print(f"== {name} run {rep + 1}: {checkout}", flush=True)
            runs[name].append(run_in(checkout, args.concurrency))
    record = {
        "machine": machine(),
        "command": "python -m loadtests.bench_checkouts " + " ".join(argv or sys.argv[1:]),
        "base_commit": commit_of(checkouts["base"]),
        "head_commit": commit_of(checkouts["head"]),
        "repeat": args.repeat,
        "summary": summary(runs),
        "runs": runs,
    }
    write_result("checkouts", record, markdown(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
