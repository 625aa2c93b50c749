"""Batch classification throughput vs the embedder in one process.

Generates `--rows` synthetic tickets per size, trains the embedding head, and runs the
job (its own local Ray, `--actors` actors of 1 CPU and 1 torch thread each) for the
embedding-head classifier and, with `--zero-shot-rows`, for the zero-shot LLM. Rows/s
count the whole run, actor start included; "after start-up" counts the rows of all but
the first finished output part over the time from that part to the last (parts are
written when their chunk is done). The baseline is SentenceEmbedder.encode in this
process at batch 128 with all threads.
Writes loadtests/results/<--out>.{json,md} (default batch).

    .venv/bin/python -m loadtests.bench_batch [--rows 10000 100000] [--zero-shot-rows 1000]
    .venv/bin/python -m loadtests.bench_batch --rows 10000 100000 --zero-shot-rows 10000 100000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from batch.config import JobConfig
from batch.head import Head
from batch.job import run_job
from batch.synthetic import tickets
from batch.train import train_from_table
from deployments.embedder import SentenceEmbedder
from loadtests.harness import ROOT, machine, machine_line, write_result


def baseline(seconds: float) -> float:
    embedder = SentenceEmbedder(str(ROOT / "models/all-MiniLM-L6-v2"), "cpu", True, 128)
    texts = [r["text"] for r in tickets(1024, seed=9)]
    embedder.encode(texts[:128])
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        embedder.encode(texts[done % 896 : done % 896 + 128])
        done += 128
    return round(done / (time.perf_counter() - start), 1)


def job_config(kind: str, actors: int, head: str) -> JobConfig:
    config = yaml.safe_load((ROOT / f"batch/jobs/tickets-{kind}.yaml").read_text())
    config["resources"] |= {"actors": actors, "cpus_per_actor": 1}
    if kind == "embedding":
        config["classifier"]["head"] = head
        config["classifier"]["embedder"] = str(ROOT / "models/all-MiniLM-L6-v2")
    else:
        config["classifier"]["model"] = str(ROOT / "models/SmolLM2-135M-Instruct")
    return JobConfig.model_validate(config)


def run(kind: str, rows: int, actors: int, head: str, work: Path) -> dict[str, Any]:
    data = work / f"{kind}-{rows}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in tickets(rows, seed=rows)))
    truth = {r["id"]: r["label"] for r in tickets(rows, seed=rows)}
    summary = run_job(job_config(kind, actors, head), str(data), work / "out", f"{kind}-{rows}")
    import pyarrow.parquet as pq

    parts = sorted(
        (work / "out" / f"{kind}-{rows}").glob("part-*.parquet"), key=lambda p: p.stat().st_mtime
    )
    tables = [pq.read_table(part).to_pylist() for part in parts]
    out = [r for table in tables for r in table]
    correct = sum(truth[r["id"]] == r["label"] for r in out)
    steady_s = parts[-1].stat().st_mtime - parts[0].stat().st_mtime
    steady_rows = len(out) - len(tables[0])
    return {
        "kind": kind,
        "rows": rows,
        "seconds": round(summary.seconds, 1),
        "rows_per_s": round(rows / summary.seconds, 1),
        "steady_rows_per_s": round(steady_rows / steady_s, 1) if steady_s > 0 else None,
        "accuracy": round(correct / len(out), 3),
    }


def markdown(record: dict[str, Any]) -> str:
    lines = [
        "# Batch classification",
        "",
        f"{machine_line(record['machine'])} Command: `{record['command']}`.",
        "",
        f"Embedder in one process (batch 128, all threads): {record['baseline']} texts/s. "
        f"Jobs: {record['actors']} actors x 1 CPU, actor start included.",
        "",
        "| classifier | rows | seconds | rows/s | vs in-process embedder "
        "| rows/s after start-up | vs in-process | accuracy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in record["runs"]:
        steady = r.get("steady_rows_per_s")
        steady_ratio = f"{steady / record['baseline']:.2f}x" if steady else "-"
        lines.append(
            f"| {r['kind']} | {r['rows']} | {r['seconds']} | {r['rows_per_s']} "
            f"| {r['rows_per_s'] / record['baseline']:.2f}x "
            f"| {steady or '-'} | {steady_ratio} "
            f"| {r['accuracy']:.1%} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--zero-shot-rows", type=int, nargs="*", default=[1000])
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--out", default="batch", help="results file name")
    args = parser.parse_args(argv)
    record: dict[str, Any] = {
        "machine": machine(),
        "command": "python -m loadtests.bench_batch " + " ".join(argv or sys.argv[1:]),
        "baseline": baseline(15),
        "actors": args.actors,
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        import pyarrow as pa

        train = pa.Table.from_pylist(tickets(400, seed=1))
        head: Head
        head, _ = train_from_table(job_config("embedding", 1, "unused"), train, "label")
        path = str(head.save(work / "heads", "tickets"))
        for rows in args.rows:
            record["runs"].append(run("embedding", rows, args.actors, path, work))
        for rows in args.zero_shot_rows:
            record["runs"].append(run("zero-shot", rows, args.actors, path, work))
    write_result(args.out, record, markdown(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
