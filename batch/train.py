"""Training the embedding classifier's head from a labelled table."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from batch.config import EmbeddingHead, JobConfig
from batch.head import Head, train_head


def train_from_table(config: JobConfig, table: pa.Table, label_field: str) -> tuple[Head, float]:
    """The head and its accuracy on the training rows."""
    from deployments.embedder import SentenceEmbedder

    assert isinstance(config.classifier, EmbeddingHead)
    texts = table[config.text_field].to_pylist()
    names = table[label_field].to_pylist()
    unknown = sorted({str(n) for n in names} - set(config.labels))
    if unknown:
        raise ValueError(f"labelled data has labels outside the job's label set: {unknown}")
    targets = [config.labels.index(n) for n in names]
    embedder = SentenceEmbedder(config.classifier.embedder, "cpu", normalize=True, batch_size=64)
    vectors = embedder.encode(texts).vectors
    head = train_head(vectors, targets, config.labels, config.classifier.embedder)
    accuracy = float(np.mean(head.probabilities(vectors).argmax(axis=1) == np.array(targets)))
    return head, accuracy
