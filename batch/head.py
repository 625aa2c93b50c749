"""The trained head of the embedding classifier: softmax regression on embeddings.

An artifact is one .npz file named `<name>-<version>.npz`, where the version is a
digest of its weights and labels: the same training data gives the same version, and a
job's output names the version it used.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Head:
    weights: np.ndarray  # (dimensions, labels)
    bias: np.ndarray  # (labels,)
    labels: list[str]
    embedder: str

    @property
    def version(self) -> str:
        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(self.weights, dtype=np.float32).tobytes())
        digest.update(np.ascontiguousarray(self.bias, dtype=np.float32).tobytes())
        digest.update(json.dumps([self.labels, self.embedder]).encode())
        return digest.hexdigest()[:12]

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        return softmax(vectors @ self.weights + self.bias)

    def save(self, folder: Path, name: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}-{self.version}.npz"
        meta = json.dumps({"labels": self.labels, "embedder": self.embedder})
        np.savez(path, weights=self.weights, bias=self.bias, meta=np.array(meta))
        return path


def load_head(path: Path) -> Head:
    if not path.is_file():
        raise ValueError(f"head artifact '{path}' does not exist (train one with train-head)")
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        return Head(data["weights"], data["bias"], list(meta["labels"]), str(meta["embedder"]))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    out: np.ndarray = shifted / shifted.sum(axis=1, keepdims=True)
    return out


def train_head(
    vectors: np.ndarray,
    targets: list[int],
    labels: list[str],
    embedder: str,
    steps: int = 500,
    learning_rate: float = 2.0,
    l2: float = 1e-4,
) -> Head:
    """Full-batch gradient descent on the cross-entropy; deterministic (zero start)."""
    n, dims = vectors.shape
    onehot = np.zeros((n, len(labels)), dtype=np.float64)
    onehot[np.arange(n), targets] = 1.0
    x = vectors.astype(np.float64)
    weights = np.zeros((dims, len(labels)))
    bias = np.zeros(len(labels))
    for _ in range(steps):
        error = softmax(x @ weights + bias) - onehot
        weights -= learning_rate * (x.T @ error / n + l2 * weights)
        bias -= learning_rate * error.mean(axis=0)
    return Head(weights.astype(np.float32), bias.astype(np.float32), list(labels), embedder)
