"""What the embedder and reranker deployments return to the gateway."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    vectors: np.ndarray  # float32, shape (len(texts), dim)
    token_counts: list[int]  # tokens the model read per text (after truncation)

    def split(self, sizes: Sequence[int]) -> list[EmbeddingResult]:
        """The result of merged requests cut back into theirs: `sizes` texts each, in order."""
        results, start = [], 0
        for size in sizes:
            end = start + size
            results.append(EmbeddingResult(self.vectors[start:end], self.token_counts[start:end]))
            start = end
        return results


@dataclass(frozen=True, slots=True)
class ScoreResult:
    """What a reranker deployment returns: one relevance score per (query, document)."""

    scores: np.ndarray  # float32, shape (pairs,)
    token_counts: list[int]  # tokens the model read per pair (after truncation)
