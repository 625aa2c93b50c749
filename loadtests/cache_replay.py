"""A replayed request stream for verified semantic hits (gateway.cache.verified), judged by
the evaluation set's labels.

The stream visits the groups in a seeded random order, dev groups first (the warm-up),
then test groups, and asks each group's texts (members and near misses) in a shuffled
order. Every text looks up its nearest stored texts in the whole store (cosine, brute
force); the first text of a group therefore meets only other groups' texts. The
gateway's own `decide` picks the candidate (the most similar one at or above the floor
that passes the guards, the gateway's defaults); without one it is a miss; otherwise
`choose` decides with the threshold learned from the evidence so far: served (wrong when
the oracle says the cached answer does not fit) or verified (the oracle's outcome joins
the evidence). Misses and verified texts are stored,
as the cache stores the fresh answer; a served text is not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gateway.cache.config import CacheConfig, Guard
from gateway.cache.decision import Candidate, decide
from gateway.cache.verified import Evidence, choose, learned_threshold
from loadtests.cache_eval_set import Group, Oracle, Part

_GATEWAY = CacheConfig()  # the gateway's defaults


@dataclass(frozen=True)
class ReplayConfig:
    max_error_rate: float = 0.01
    confidence: float = 0.95
    verify_share: float = 0.05
    floor: float = _GATEWAY.similarity_threshold  # least similarity of a candidate
    guards: tuple[Guard, ...] = tuple(_GATEWAY.guards)  # the pre-filter
    candidates: int = _GATEWAY.candidates
    near_misses: bool = True  # False: a control stream of members only


@dataclass
class Tally:
    lookups: int = 0
    fitting: int = 0  # lookups whose nearest stored text had the right answer
    served: int = 0
    wrong: int = 0  # served with an answer that does not fit
    verified: int = 0
    disagreed: int = 0  # verifications the oracle judged a disagreement

    @property
    def hit_rate(self) -> float:
        """Served among the lookups that could have been served correctly."""
        return self.served / self.fitting if self.fitting else 0.0


@dataclass(frozen=True)
class Step:
    """The stream after one lookup, for curves."""

    part: Part
    served: int  # cumulative over the whole stream
    wrong: int
    fitting: int
    verified: int
    threshold: float | None  # the learned threshold this lookup was decided with


@dataclass
class Replay:
    seed: int
    config: ReplayConfig
    tallies: dict[Part, Tally] = field(default_factory=lambda: {"dev": Tally(), "test": Tally()})
    steps: list[Step] = field(default_factory=list)
    evidence: Evidence = field(default_factory=Evidence)  # every verification's outcome

    @property
    def final_threshold(self) -> float | None:
        return self.steps[-1].threshold if self.steps else None

    def first_served_at(self) -> int | None:
        """The 1-based lookup of the first served candidate, None if none was served."""
        return next((i + 1 for i, s in enumerate(self.steps) if s.served), None)


def stream(
    groups: Sequence[Group], parts: Mapping[str, Part], rng: np.random.Generator, near_misses: bool
) -> list[tuple[Part, str]]:
    """(part, text) in asking order: dev groups, then test groups, each in a random order;
    a group's texts (its near misses too if `near_misses`) in a random order."""
    asked: list[tuple[Part, str]] = []
    for part in ("dev", "test"):
        mine = [g for g in groups if parts[g.id] == part]
        for gi in rng.permutation(len(mine)):
            g = mine[gi]
            texts = [*g.members, *(n.text for n in g.near_misses if near_misses)]
            asked += [(part, texts[i]) for i in rng.permutation(len(texts))]
    return asked


def replay(
    groups: Sequence[Group],
    parts: Mapping[str, Part],
    vectors: Mapping[str, np.ndarray],
    config: ReplayConfig,
    seed: int,
) -> Replay:
    """Run one stream; `vectors` maps every text of `groups` to its unit embedding."""
    rng = np.random.default_rng(seed)
    oracle = Oracle(groups)
    asked = stream(groups, parts, rng, config.near_misses)
    texts = [t for _, t in asked]
    matrix = np.stack([vectors[t] for t in texts])
    stored: list[int] = []
    result = Replay(seed, config)
    evidence = result.evidence
    threshold: float | None = None
    served = wrong = fitting = verified = 0
    for i, (part, text) in enumerate(asked):
        tally = result.tallies[part]
        tally.lookups += 1
        decided_with = threshold
        choice = None
        if stored:
            sims = matrix[stored] @ matrix[i]
            nearest = np.argsort(-sims)[: config.candidates]
            candidates = [Candidate(int(j), float(sims[j]), texts[stored[j]]) for j in nearest]
            chosen = decide(text, candidates, config.floor, config.guards).chosen
            # Could the best candidate have been served rightly (for the hit rate)?
            fits = oracle.agrees(candidates[0].query, text)
            tally.fitting += fits
            fitting += fits
            if chosen is not None:
                similarity = chosen.similarity
                fits = oracle.agrees(chosen.query, text)
                choice = choose(similarity, threshold, config.verify_share, float(rng.random()))
        if choice == "serve":
            tally.served += 1
            tally.wrong += not fits
            served, wrong = served + 1, wrong + (not fits)
        else:
            if choice == "verify":
                tally.verified += 1
                tally.disagreed += not fits
                verified += 1
                evidence.add(similarity, fits)
                threshold = learned_threshold(evidence, config.max_error_rate, config.confidence)
            stored.append(i)
        result.steps.append(Step(part, served, wrong, fitting, verified, decided_with))
    return result


def plot(runs: Mapping[str, Sequence[Replay]], path: Path, title: str) -> None:
    """Per setting (a row): cumulative served error rate, hit rate and learned threshold
    against lookups, one line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(runs), 3, figsize=(15, 3.2 * len(runs)), squeeze=False)
    for row, ((label, replays), (err, hit, thr)) in enumerate(zip(runs.items(), axes, strict=True)):
        for r in replays:
            x = np.arange(1, len(r.steps) + 1)
            err.plot(x, [s.wrong / s.served if s.served else np.nan for s in r.steps], lw=1)
            hit.plot(x, [s.served / s.fitting if s.fitting else 0 for s in r.steps], lw=1)
            thr.plot(x, [np.nan if s.threshold is None else s.threshold for s in r.steps], lw=1)
        config = replays[0].config
        err.axhline(config.max_error_rate, color="k", ls=":", label="bound")
        err.set_ylim(-0.05 * config.max_error_rate, 2 * config.max_error_rate)
        err.set_ylabel(label.replace(", ", "\n"), fontsize=9)
        hit.set_ylim(-0.02, 1)
        thr.set_ylim(config.floor - 0.01, 1)
        start_test = next(i for i, s in enumerate(replays[0].steps) if s.part == "test") + 1
        for ax, name in (
            (err, "cumulative served error rate"),
            (hit, "cumulative hit rate (served / fitting lookups)"),
            (thr, "learned threshold (none: not drawn)"),
        ):
            ax.set_xlim(1, len(replays[0].steps))
            ax.axvline(start_test, color="grey", ls="--", lw=0.8)
            if row == 0:
                ax.set_title(name)
            if row == len(runs) - 1:
                ax.set_xlabel("lookups (dashed: test groups start)")
            ax.grid(alpha=0.3)
        err.legend(loc="upper right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
