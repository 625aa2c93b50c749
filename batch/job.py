"""The classification job: input chunks -> Ray Data actor pool -> Parquet parts.

Ray Data runs the classifier actors (`map_batches` with `concurrency` actors, each
reserving `cpus_per_actor`) over the chunks not yet done, in order; the driver gathers
each chunk's rows as they come back and commits the chunk (batch.io.JobFolder) when it
is complete, reporting rows done, rows/s and an ETA after each.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from batch.classifiers import actor_class
from batch.config import JobConfig
from batch.io import DEAD_LETTER_SCHEMA, OUTPUT_SCHEMA, JobFolder, input_digest, read_input
from batch.metrics import JobMetrics


@dataclass(frozen=True)
class Summary:
    rows: int
    chunks: int
    skipped_chunks: int  # done by an earlier run of the same job
    classified: int  # by this run
    dead_letters: int  # by this run
    seconds: float


def run_job(
    config: JobConfig,
    input_uri: str,
    output: Path,
    job_id: str,
    address: str | None = None,
    report: Callable[[str], None] = print,
    metrics: JobMetrics | None = None,
) -> Summary:
    table = read_input(input_uri)
    missing = [f for f in (config.id_field, config.text_field) if f not in table.column_names]
    if missing:
        raise ValueError(
            f"input '{input_uri}' has no column {missing} (columns: {table.column_names})"
        )
    folder = JobFolder(output / job_id)
    folder.start(
        {
            "job_id": job_id,
            "input": input_uri,
            "input_digest": input_digest(table),
            "rows": table.num_rows,
            "config": config.model_dump(mode="json"),
        }
    )
    size = config.resources.chunk_rows
    chunks = math.ceil(table.num_rows / size)
    pending = [c for c in range(chunks) if not folder.done(c)]
    started = time.monotonic()
    classified = dead = 0
    if pending:
        try:
            classified, dead = _classify(
                config, table, folder, pending, job_id, address, report, metrics
            )
        except BaseException:
            if metrics is not None:
                metrics.ended(ok=False)
            raise
    seconds = time.monotonic() - started
    if metrics is not None:
        metrics.progress(classified, dead, 0, seconds)
        metrics.ended(ok=True)
    summary = Summary(table.num_rows, chunks, chunks - len(pending), classified, dead, seconds)
    report(
        f"job {job_id}: {summary.rows} rows in {chunks} chunks ({summary.skipped_chunks} done "
        f"before); this run classified {classified}, dead-lettered {dead} in {seconds:.1f} s"
    )
    return summary


def _classify(
    config: JobConfig,
    table: pa.Table,
    folder: JobFolder,
    pending: list[int],
    job_id: str,
    address: str | None,
    report: Callable[[str], None],
    metrics: JobMetrics | None,
) -> tuple[int, int]:
    import ray

    if not ray.is_initialized():
        # "local": a fresh Ray of its own unless told where the cluster is (never a
        # Ray that happens to run on this machine).
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False)
    dataset, expected = _dataset(config, table, pending)
    gathered: dict[int, list[pa.Table]] = {}
    total_rows = sum(expected.values())
    done_rows = classified = dead = 0
    started = time.monotonic()
    for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
        assert isinstance(batch, pa.Table)
        for chunk in pc.unique(batch["_chunk"]).to_pylist():
            rows = batch.filter(pc.equal(batch["_chunk"], chunk))
            gathered.setdefault(chunk, []).append(rows)
            if sum(t.num_rows for t in gathered[chunk]) < expected[chunk]:
                continue
            ok, failed = _commit(folder, chunk, pa.concat_tables(gathered.pop(chunk)), job_id)
            classified, dead, done_rows = classified + ok, dead + failed, done_rows + ok + failed
            elapsed = time.monotonic() - started
            rate = done_rows / elapsed if elapsed > 0 else 0.0
            eta = (total_rows - done_rows) / rate if rate > 0 else float("nan")
            record = {
                "rows_done": done_rows,
                "rows_total": total_rows,
                "rows_per_s": round(rate, 1),
            }
            folder.progress({**record, "eta_s": round(eta, 1), "chunk": chunk})
            if metrics is not None:
                metrics.progress(classified, dead, total_rows - done_rows, elapsed)
            report(
                f"chunk {chunk}: {done_rows}/{total_rows} rows, {rate:.1f} rows/s, ETA {eta:.0f} s"
            )
    return classified, dead


def _dataset(config: JobConfig, table: pa.Table, pending: list[int]) -> tuple[Any, dict[int, int]]:
    """The pending chunks as a Ray dataset through the classifier actors, and each
    chunk's row count (a chunk is committed once all its rows are back)."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    size = config.resources.chunk_rows
    parts = []
    for c in pending:
        part = table.slice(c * size, size)
        parts.append(part.append_column("_chunk", pa.array([c] * part.num_rows, pa.int64())))
    expected = {c: p.num_rows for c, p in zip(pending, parts, strict=True)}
    resources = config.resources
    dataset = ray.data.from_arrow(parts).map_batches(
        actor_class(config),
        fn_constructor_kwargs={"config": config},
        concurrency=resources.actors,
        num_cpus=resources.cpus_per_actor,
        batch_size=resources.batch_size,
        batch_format="numpy",
        runtime_env={"env_vars": dict(resources.env)} if resources.env else None,
    )
    return dataset, expected


def _commit(folder: JobFolder, chunk: int, rows: pa.Table, job_id: str) -> tuple[int, int]:
    failed_mask = pc.not_equal(rows["error"], "")
    ok, failed = rows.filter(pc.invert(failed_mask)), rows.filter(failed_mask)
    job = pa.array([job_id] * ok.num_rows, pa.string())
    output = pa.table([ok["id"], ok["label"], ok["score"], ok["model"], job], schema=OUTPUT_SCHEMA)
    job = pa.array([job_id] * failed.num_rows, pa.string())
    letters = pa.table(
        [failed["id"], failed["error"], failed["row"], job], schema=DEAD_LETTER_SCHEMA
    )
    folder.write_chunk(chunk, output, letters)
    return ok.num_rows, failed.num_rows
