"""Semantic cache precision: hit rate on paraphrases, false hits on near misses.

Each pair of loadtests/data/cache_eval_pairs.jsonl has a stored prompt and an asked one
that should hit (paraphrase) or must not (negation, numbers, entities, order, contrast,
topic). The decision is the gateway's own (gateway.cache.decision.decide) on the
embedder's cosine similarity, with and without the lexical guards, over a threshold grid.

    python -m loadtests.eval_cache [--model models/all-MiniLM-L6-v2] [--threshold 0.9]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import numpy as np

from gateway.cache.config import CacheConfig, Guard
from gateway.cache.decision import Candidate, decide
from loadtests.harness import ROOT, machine, write_result

PAIRS = ROOT / "loadtests" / "data" / "cache_eval_pairs.jsonl"
ALL_GUARDS: list[Guard] = list(get_args(Guard))


@dataclass(frozen=True)
class Pair:
    stored: str
    asked: str
    expect: str  # "hit" or "miss"
    kind: str


@dataclass(frozen=True)
class Score:
    threshold: float
    guards: tuple[Guard, ...]
    hit_rate: float  # paraphrases served from the cache
    false_hit_rate: float  # near misses served from the cache
    false_hits: list[Pair]
    missed: list[Pair]


def load_pairs(path: Path = PAIRS) -> list[Pair]:
    return [Pair(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def similarities(pairs: Sequence[Pair], embed: Any) -> np.ndarray:
    """Cosine similarity of each pair; `embed` maps texts to unit vectors."""
    stored = embed([p.stored for p in pairs])
    asked = embed([p.asked for p in pairs])
    return np.einsum("ij,ij->i", stored, asked)


def score(
    pairs: Sequence[Pair], sims: np.ndarray, threshold: float, guards: Sequence[Guard]
) -> Score:
    served = [
        decide(p.asked, [Candidate(0, float(s), p.stored)], threshold, guards).chosen is not None
        for p, s in zip(pairs, sims, strict=True)
    ]
    hits = [p for p, ok in zip(pairs, served, strict=True) if p.expect == "hit" and ok]
    false = [p for p, ok in zip(pairs, served, strict=True) if p.expect == "miss" and ok]
    n_hit = sum(p.expect == "hit" for p in pairs)
    n_miss = len(pairs) - n_hit
    missed = [p for p, ok in zip(pairs, served, strict=True) if p.expect == "hit" and not ok]
    return Score(threshold, tuple(guards), len(hits) / n_hit, len(false) / n_miss, false, missed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "all-MiniLM-L6-v2"))
    parser.add_argument("--threshold", type=float, default=CacheConfig().similarity_threshold)
    args = parser.parse_args()

    from deployments.embedder import SentenceEmbedder

    embedder = SentenceEmbedder(args.model, "cpu", normalize=True, batch_size=64)
    pairs = load_pairs()
    sims = similarities(pairs, lambda texts: embedder.encode(texts).vectors)
    grid = [0.75, 0.8, 0.85, 0.88, 0.9, 0.92, 0.95]
    rows = [score(pairs, sims, t, g) for t in grid for g in (ALL_GUARDS, [])]
    chosen = score(pairs, sims, args.threshold, ALL_GUARDS)
    by_kind: dict[str, list[float]] = {}
    for p, s in zip(pairs, sims, strict=True):
        by_kind.setdefault(p.kind, []).append(float(s))

    lines = [
        "# Semantic cache evaluation",
        "",
        f"{len(pairs)} pairs ({sum(p.expect == 'hit' for p in pairs)} paraphrases, "
        f"{sum(p.expect == 'miss' for p in pairs)} near misses), embedder "
        f"`{Path(args.model).name}`. Command: `python -m loadtests.eval_cache`.",
        "",
        "| threshold | guards | paraphrase hit rate | near-miss false-hit rate |",
        "|---|---|---|---|",
    ]
    for r in rows:
        guards = "all" if r.guards else "none"
        lines.append(
            f"| {r.threshold:.2f} | {guards} | {r.hit_rate:.0%} | {r.false_hit_rate:.0%} |"
        )
    lines += ["", "Similarity by kind (min / median / max):", ""]
    for kind, values in sorted(by_kind.items()):
        v = np.array(values)
        lines.append(f"- {kind}: {v.min():.3f} / {np.median(v):.3f} / {v.max():.3f}")
    lines += ["", f"At the default threshold {args.threshold} with all guards:"]
    lines += [f"- false hit: {p.stored!r} -> {p.asked!r} ({p.kind})" for p in chosen.false_hits]
    lines += [f"- paraphrase missed: {p.stored!r} -> {p.asked!r}" for p in chosen.missed]
    record = {
        "machine": machine(),
        "command": "python -m loadtests.eval_cache",
        "model": Path(args.model).name,
        "pairs": len(pairs),
        "rows": [
            {
                "threshold": r.threshold,
                "guards": list(r.guards),
                "hit_rate": r.hit_rate,
                "false_hit_rate": r.false_hit_rate,
            }
            for r in rows
        ],
    }
    write_result("cache_eval", record, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
