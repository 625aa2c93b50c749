"""Verified semantic hits: a similarity threshold learned from the model's own answers,
kept under a stated error bound (pure).

Embedding similarity alone cannot tell "Is it legal to record a call?" from "Is it
illegal to record a call?" (0.978), and no fixed threshold or word list holds on
questions nobody wrote it for. So the semantic tier serves a candidate only where the
model itself has been seen to agree: a *verification* asks the model anyway, serves its
fresh answer, and compares it with the candidate's cached one (agree or disagree).
Outcomes are counted per similarity bin (in Redis, shared by every gateway replica), and
the threshold served from is the lowest bin edge `t` such that the one-sided
Clopper-Pearson upper bound (at `confidence`) on the share of disagreements among the
verified candidates with similarity >= `t` is at most `max_error_rate`.

A candidate at or above the learned threshold is served, except a share `verify_share`
that is still verified so that the estimate follows the traffic; one below it (and above
the configured floor) is verified. Until enough agreements are seen there is no
threshold and every candidate is verified: the cache starts exact-only and earns its
semantic hits. Certifying 1% at 95% takes about 300 agreements with no disagreement.

What the bound assumes: verified candidates are like served ones (a verification is
chosen by similarity and chance, never by the answer), the traffic does not change
faster than the evidence, and the judge is right. The edge is picked after looking at
the evidence, so the 95% holds per edge rather than for all edges at once; the share
still verified above the edge corrects an edge that looked better than it is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from scipy.stats import beta

BIN_WIDTH = 0.005  # similarity bins; the learned threshold is one of their lower edges
_BINS = round(1 / BIN_WIDTH)

Choice = Literal["serve", "verify"]


def bin_of(similarity: float) -> int:
    """The bin of a cosine similarity (clipped to [0, 1])."""
    return min(_BINS - 1, max(0, math.floor(similarity / BIN_WIDTH + 1e-9)))


@lru_cache(maxsize=65_536)  # scipy's ppf costs ~0.2 ms; counts repeat between lookups
def error_bound(errors: int, trials: int, confidence: float) -> float:
    """One-sided Clopper-Pearson upper bound on an error rate seen as `errors` in
    `trials` (1.0 when there are no trials)."""
    if trials <= 0 or errors >= trials:
        return 1.0
    return float(beta.ppf(confidence, errors + 1, trials - errors))


@dataclass
class Evidence:
    """Verification outcomes by similarity bin: (agreements, disagreements)."""

    bins: dict[int, tuple[int, int]] = field(default_factory=dict)

    def add(self, similarity: float, agreed: bool) -> None:
        b = bin_of(similarity)
        agree, disagree = self.bins.get(b, (0, 0))
        self.bins[b] = (agree + agreed, disagree + (not agreed))

    @classmethod
    def from_counts(cls, counts: Mapping[str, int | str]) -> Evidence:
        """From Redis hash fields `a:<bin>` / `d:<bin>` (see `fields`)."""
        evidence = cls()
        for name, value in counts.items():
            kind, _, b = name.partition(":")
            agree, disagree = evidence.bins.get(int(b), (0, 0))
            if kind == "a":
                agree += int(value)
            else:
                disagree += int(value)
            evidence.bins[int(b)] = (agree, disagree)
        return evidence

    @staticmethod
    def field(similarity: float, agreed: bool) -> str:
        """The Redis hash field one outcome increments."""
        return f"{'a' if agreed else 'd'}:{bin_of(similarity)}"

    @property
    def verifications(self) -> int:
        return sum(a + d for a, d in self.bins.values())


def learned_threshold(evidence: Evidence, max_error_rate: float, confidence: float) -> float | None:
    """The lowest bin edge whose candidates at or above it are, by the evidence, wrong at
    most `max_error_rate` of the time (upper bound at `confidence`); None when no edge is."""
    agree = disagree = 0
    best: float | None = None
    for b in sorted(evidence.bins, reverse=True):
        a, d = evidence.bins[b]
        agree, disagree = agree + a, disagree + d
        if error_bound(disagree, agree + disagree, confidence) <= max_error_rate:
            best = round(b * BIN_WIDTH, 6)
    return best


def choose(similarity: float, threshold: float | None, verify_share: float, draw: float) -> Choice:
    """Serve a candidate of `similarity` or verify it; `draw` is uniform in [0, 1)."""
    if threshold is None or similarity < threshold - 1e-9 or draw < verify_share:
        return "verify"
    return "serve"
