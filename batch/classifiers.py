"""The classifier actors Ray Data's `map_batches` runs (one model copy per actor).

Each takes a batch of input rows and returns, per row, the label and its probability,
or an error that sends the row to the dead letters. A batch the model fails on is
retried row by row, so one bad row cannot take its neighbours down with it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from batch.config import EmbeddingHead, JobConfig, ZeroShotLLM
from batch.head import load_head

Batch = dict[str, np.ndarray]
Classify = Callable[[list[str]], list[tuple[str, float]]]


def row_problem(row_id: Any, text: Any) -> str | None:
    if row_id is None or (isinstance(row_id, float) and np.isnan(row_id)):
        return "missing id"
    if not isinstance(text, str):
        return "missing text" if text is None else f"text is {type(text).__name__}, not a string"
    if not text.strip():
        return "empty text"
    return None


def _json_row(batch: Batch, i: int) -> str:
    row = {k: v[i].item() if hasattr(v[i], "item") else v[i] for k, v in batch.items()}
    return json.dumps({k: v for k, v in row.items() if k != "_chunk"}, default=str)


def classify_batch(batch: Batch, config: JobConfig, model: str, classify: Classify) -> Batch:
    ids, texts = batch[config.id_field], batch[config.text_field]
    n = len(ids)
    labels, scores, errors = [""] * n, np.zeros(n, dtype=np.float32), [""] * n
    good = []
    for i in range(n):
        problem = row_problem(ids[i], texts[i])
        if problem is None:
            good.append(i)
        else:
            errors[i] = problem
    try:
        answers = classify([texts[i] for i in good]) if good else []
    except Exception:  # one row may be to blame: find it
        answers = []
        for i in list(good):
            try:
                answers.append(classify([texts[i]])[0])
            except Exception as exc:
                errors[i] = f"{type(exc).__name__}: {exc}"
                good.remove(i)
    for i, (label, score) in zip(good, answers, strict=True):
        labels[i], scores[i] = label, score
    return {
        "_chunk": batch["_chunk"],
        "id": np.array(["" if ids[i] is None else str(ids[i]) for i in range(n)], dtype=object),
        "label": np.array(labels, dtype=object),
        "score": scores,
        "model": np.array([model] * n, dtype=object),
        "error": np.array(errors, dtype=object),
        "row": np.array([_json_row(batch, i) if errors[i] else "" for i in range(n)], dtype=object),
    }


class EmbeddingHeadActor:
    def __init__(self, config: JobConfig):
        import torch

        from deployments.embedder import SentenceEmbedder

        assert isinstance(config.classifier, EmbeddingHead)
        torch.set_num_threads(config.classifier.torch_threads)
        self._config = config
        self._head = load_head(Path(config.classifier.head))
        if self._head.labels != config.labels:
            raise ValueError(
                f"head labels {self._head.labels} differ from the job's labels {config.labels}"
            )
        self._embedder = SentenceEmbedder(
            config.classifier.embedder,
            "cpu",
            normalize=True,
            batch_size=config.resources.batch_size,
        )
        self.model = f"{Path(config.classifier.embedder).name}+head-{self._head.version}"

    def _classify(self, texts: list[str]) -> list[tuple[str, float]]:
        probabilities = self._head.probabilities(self._embedder.encode(texts).vectors)
        best = probabilities.argmax(axis=1)
        return [
            (self._head.labels[b], float(p[b])) for b, p in zip(best, probabilities, strict=True)
        ]

    def __call__(self, batch: Batch) -> Batch:
        return classify_batch(batch, self._config, self.model, self._classify)


class ZeroShotActor:
    def __init__(self, config: JobConfig):
        from deployments.zero_shot import ZeroShotClassifier

        assert isinstance(config.classifier, ZeroShotLLM)
        self._config = config
        c = config.classifier
        self._classifier = ZeroShotClassifier(
            c.model, config.labels, c.instructions, c.engine_kwargs
        )
        self.model = f"{Path(c.model).name}+zero-shot"

    def __call__(self, batch: Batch) -> Batch:
        return classify_batch(batch, self._config, self.model, self._classifier.classify)


def actor_class(config: JobConfig) -> type[EmbeddingHeadActor] | type[ZeroShotActor]:
    return EmbeddingHeadActor if isinstance(config.classifier, EmbeddingHead) else ZeroShotActor
