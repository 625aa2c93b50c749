"""The batch job end to end, as its CLI runs it: each run in its own process with its own
local Ray (started and stopped by the job; a killed one is stopped here by PID)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psutil
import pyarrow.parquet as pq
import pytest
import yaml

from batch.synthetic import LABELS, tickets
from tests.integration.conftest import wait_until
from tests.integration.monitoring import start_pushgateway

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"}


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batch", *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_parts(folder: Path) -> list[dict[str, Any]]:
    return [r for f in sorted(folder.glob("part-*.parquet")) for r in pq.read_table(f).to_pylist()]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained head and a job config that uses it (chunks of 100 rows)."""
    work = tmp_path_factory.mktemp("batch")
    config = yaml.safe_load((ROOT / "batch/jobs/tickets-embedding.yaml").read_text())
    config["resources"] |= {"chunk_rows": 100, "batch_size": 50}
    (work / "train.yaml").write_text(yaml.safe_dump(config))
    train = write_jsonl(work / "train.jsonl", tickets(400, seed=1))
    done = cli(
        "train-head", "--config", str(work / "train.yaml"), "--data", str(train),
        "--out", str(work / "heads"), "--name", "tickets",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    trained = json.loads(done.stdout.strip().splitlines()[-1])
    assert trained["train_accuracy"] >= 0.95
    config["classifier"]["head"] = trained["artifact"]
    (work / "job.yaml").write_text(yaml.safe_dump(config))
    return work


def test_embedding_head_job_classifies_and_dead_letters_bad_rows(workdir: Path) -> None:
    """... and pushes its numbers to a (real) Pushgateway."""
    pushgateway = start_pushgateway(workdir)
    rows = tickets(600, seed=2)
    truth = {r["id"]: r["label"] for r in rows}
    rows[3]["text"] = "   "
    del rows[10]["text"]
    rows[20]["id"] = None
    data = write_jsonl(workdir / "input.jsonl", [{"id": r["id"], **r} for r in rows])
    try:
        done = cli(
            "classify", "--config", str(workdir / "job.yaml"), "--input", str(data),
            "--output", str(workdir / "out"), "--job-id", "accuracy",
            "--pushgateway", pushgateway.url, "--pipeline", "tickets",
        )  # fmt: skip
        pushed = httpx.get(f"{pushgateway.url}/metrics", timeout=10).text
    finally:
        pushgateway.stop()
    assert done.returncode == 0, done.stderr
    assert "rows/s" in done.stdout and "ETA" in done.stdout  # progress is reported
    for series in (
        'raygate_batch_rows{instance="",job="raygate-batch",job_id="accuracy",'
        'pipeline="tickets",status="classified"} 597',
        'raygate_batch_rows{instance="",job="raygate-batch",job_id="accuracy",'
        'pipeline="tickets",status="dead_letter"} 3',
        'raygate_batch_last_success_timestamp_seconds{instance="",job="raygate-batch",'
        'pipeline="tickets"}',
    ):
        assert series in pushed, series
    out = read_parts(workdir / "out" / "accuracy")
    dead = read_parts(workdir / "out" / "accuracy" / "dead-letter")
    assert sorted(d["reason"] for d in dead) == ["empty text", "missing id", "missing text"]
    assert len(out) == 597 and {r["label"] for r in out} <= set(LABELS)
    accuracy = sum(truth[r["id"]] == r["label"] for r in out) / len(out)
    assert accuracy >= 0.95  # the stated accuracy on templated tickets
    assert all(0 < r["score"] <= 1 and r["job_id"] == "accuracy" for r in out)
    assert out[0]["model"].startswith("all-MiniLM-L6-v2+head-")


def test_a_killed_job_resumes_each_row_exactly_once(workdir: Path) -> None:
    rows = tickets(1500, seed=3)
    rows[700]["text"] = ""  # one dead letter, in a later chunk
    data = write_jsonl(workdir / "resume.jsonl", rows)
    job = workdir / "out" / "resume"
    args = [
        "classify", "--config", str(workdir / "job.yaml"), "--input", str(data),
        "--output", str(workdir / "out"), "--job-id", "resume",
    ]  # fmt: skip
    first = subprocess.Popen(
        [sys.executable, "-m", "batch", *args],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until(lambda: (job / "part-000001.parquet").exists(), 300, "no chunk was written")
    finally:
        tree = [first, *psutil.Process(first.pid).children(recursive=True)]
        for process in tree:  # the driver and the Ray it started, by PID
            try:
                os.kill(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        first.wait()
    written = len(list(job.glob("part-*.parquet")))
    assert 0 < written < 15, "the kill came after the job had finished"
    second = cli(*args)
    assert second.returncode == 0, second.stderr
    assert f"({written} done before)" in second.stdout
    ids = [r["id"] for r in read_parts(job)]
    dead = [r["id"] for r in read_parts(job / "dead-letter")]
    assert len(ids) == len(set(ids))  # no duplicates
    assert sorted(ids + dead) == sorted(r["id"] for r in rows)  # no gaps
    assert dead == ["t700"]


def test_zero_shot_llm_answers_only_with_labels_of_the_set(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "batch/jobs/tickets-zero-shot.yaml").read_text())
    config["resources"] |= {"chunk_rows": 16, "batch_size": 16}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(config))
    rows = tickets(32, seed=4)
    data = write_jsonl(tmp_path / "input.jsonl", [{"id": r["id"], "text": r["text"]} for r in rows])
    done = cli(
        "classify", "--config", str(tmp_path / "job.yaml"), "--input", str(data),
        "--output", str(tmp_path / "out"), "--job-id", "zero-shot",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = read_parts(tmp_path / "out" / "zero-shot")
    assert len(out) == 32 and {r["label"] for r in out} <= set(LABELS)
    assert all(0 < r["score"] <= 1 for r in out)
    truth = {r["id"]: r["label"] for r in rows}
    accuracy = sum(truth[r["id"]] == r["label"] for r in out) / len(out)
    assert accuracy > 0.25  # better than chance over 4 labels (a 135M model; see README)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: str(d / "nope.jsonl"), "does not exist"),
        (lambda d: str(write_jsonl(d / "empty.jsonl", [])), "is empty"),
    ],
    ids=["missing", "empty"],
)
def test_missing_or_empty_input_is_a_clear_error(workdir: Path, make: Any, message: str) -> None:
    done = cli(
        "classify", "--config", str(workdir / "job.yaml"), "--input", make(workdir),
        "--output", str(workdir / "out"), "--job-id", "bad",
    )  # fmt: skip
    assert done.returncode == 2 and message in done.stderr
