"""Batch job logic without Ray: the head, row validation, dead letters, the job folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from batch.classifiers import classify_batch
from batch.config import JobConfig
from batch.head import load_head, train_head
from batch.io import JobFolder, read_input

CONFIG = JobConfig.model_validate(
    {
        "labels": ["a", "b"],
        "classifier": {"kind": "embedding-head", "embedder": "e", "head": "h.npz"},
    }
)


def test_head_learns_separable_classes_and_its_version_is_its_content(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = np.concatenate([rng.normal(1, 0.3, (50, 8)), rng.normal(-1, 0.3, (50, 8))])
    targets = [0] * 50 + [1] * 50
    head = train_head(vectors, targets, ["a", "b"], "e")
    assert (head.probabilities(vectors).argmax(axis=1) == np.array(targets)).mean() == 1.0
    again = train_head(vectors, targets, ["a", "b"], "e")
    assert again.version == head.version  # deterministic training
    other = train_head(vectors, targets[::-1], ["a", "b"], "e")
    assert other.version != head.version
    loaded = load_head(head.save(tmp_path, "t"))
    assert loaded.version == head.version and loaded.labels == ["a", "b"]
    assert (tmp_path / f"t-{head.version}.npz").exists()


def batch(ids: list[object], texts: list[object]) -> dict[str, np.ndarray]:
    return {
        "_chunk": np.zeros(len(ids), dtype=np.int64),
        "id": np.array(ids, dtype=object),
        "text": np.array(texts, dtype=object),
    }


def test_bad_rows_get_a_reason_and_good_rows_a_label() -> None:
    out = classify_batch(
        batch(["1", None, "3", "4", "5"], ["hi", "x", "", None, 7]),
        CONFIG,
        "m",
        lambda texts: [("a", 0.9)] * len(texts),
    )
    assert list(out["error"]) == [
        "",
        "missing id",
        "empty text",
        "missing text",
        "text is int, not a string",
    ]
    assert list(out["label"]) == ["a", "", "", "", ""]
    assert json.loads(out["row"][3]) == {"id": "4", "text": None}


def test_a_row_the_model_fails_on_does_not_take_its_batch_down() -> None:
    def model(texts: list[str]) -> list[tuple[str, float]]:
        if "poison" in texts:
            raise RuntimeError("tokenizer exploded")
        return [("b", 0.7)] * len(texts)

    out = classify_batch(batch(["1", "2", "3"], ["ok", "poison", "fine"]), CONFIG, "m", model)
    assert list(out["label"]) == ["b", "", "b"]
    assert out["error"][1] == "RuntimeError: tokenizer exploded"


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        (None, "missing.jsonl", "does not exist"),
        ("", "empty.jsonl", "is empty"),
        ('{"id": 1, "text": "a"}\n{"id": 2, "text": \n', "broken.jsonl", "is malformed"),
        ("id,text\n1,a\n", "data.csv", "expected .jsonl or .parquet"),
    ],
)
def test_bad_inputs_are_clear_errors(
    tmp_path: Path, content: str | None, name: str, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_input(str(path))


def test_a_job_id_is_not_resumed_on_other_input(tmp_path: Path) -> None:
    folder = JobFolder(tmp_path / "job")
    folder.start({"input_digest": "one"})
    folder.start({"input_digest": "one"})  # the same job: resumes
    with pytest.raises(ValueError, match="different input or config"):
        folder.start({"input_digest": "two"})


def test_a_chunk_is_done_only_once_its_part_is_complete(tmp_path: Path) -> None:
    folder = JobFolder(tmp_path / "job")
    folder.start({})
    assert not folder.done(0)
    folder.write_chunk(0, pa.table({"id": ["1"]}), pa.table({"id": ["2"]}))
    assert folder.done(0) and folder.dead_letter(0).exists()
    assert not list((tmp_path / "job").glob(".*.tmp"))  # no temporary left behind


def test_job_metrics_push_at_most_every_interval_and_once_more_at_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prometheus_client import CollectorRegistry

    from batch import metrics

    pushed: list[set[str]] = []

    def push(
        url: str, job: str, registry: CollectorRegistry, grouping: object, timeout: float
    ) -> None:
        pushed.append({m.name for m in registry.collect()})

    monkeypatch.setattr(metrics, "pushadd_to_gateway", push)
    now = [0.0]
    job = metrics.JobMetrics("http://pg", "tickets", "run-1", interval_s=10, clock=lambda: now[0])
    job.progress(1, 0, 9, 1.0)  # the first progress is pushed at once
    now[0] = 5.0
    job.progress(2, 0, 8, 5.0)  # within the interval: kept
    assert len(pushed) == 1
    job.ended(ok=True)  # the kept progress, then the success time
    assert pushed[1] >= {"raygate_batch_rows", "raygate_batch_rows_per_second"}
    assert pushed[2] == {"raygate_batch_last_success_timestamp_seconds"}
    now[0] = 20.0
    job.progress(3, 0, 7, 20.0)  # pushed: the interval has passed
    job.ended(ok=False)  # nothing new to push but the failure time
    assert len(pushed) == 5 and pushed[4] == {"raygate_batch_last_failure_timestamp_seconds"}


def test_a_job_metrics_push_that_fails_does_not_fail_the_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from batch import metrics

    def refuse(*args: object, **kwargs: object) -> None:
        raise ConnectionRefusedError("no pushgateway")

    monkeypatch.setattr(metrics, "pushadd_to_gateway", refuse)
    job = metrics.JobMetrics("http://pg", "tickets", "run-1")
    job.progress(1, 0, 0, 1.0)
    job.ended(ok=True)
