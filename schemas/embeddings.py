"""What the embedder and reranker deployments return to the gateway."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    vectors: np.ndarray  # float32, shape (len(texts), dim)
    token_counts: list[int]  # tokens the model read per text (after truncation)


@dataclass(frozen=True, slots=True)
class ScoreResult:
    """What a reranker deployment returns: one relevance score per (query, document)."""

    scores: np.ndarray  # float32, shape (pairs,)
    token_counts: list[int]  # tokens the model read per pair (after truncation)
