"""Semantic cache precision on held-out questions: the static decision and the replayed
stream of verified hits.

Data: loadtests/cache_eval_set.py (groups, frozen dev/test split, derived pairs). Static
mode: the gateway's own `decide` on the embedder's cosine similarity, with and without
the lexical guards, over a threshold grid; a threshold is chosen on dev only (the lowest
whose dev false-hit rate's 95% Wilson upper bound is within --max-false-hit) and, with
the shipped default, reported on test: hit rate on agree pairs, false-hit rate on
disagree pairs (per kind), and the share of served pairs that are wrong. Online mode:
loadtests/cache_replay.py, several seeds, at --max-error-rate and at 0.05.

    python -m loadtests.eval_cache [--model models/all-MiniLM-L6-v2] [--seeds 5]
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import numpy as np
from scipy.stats import binomtest

from gateway.cache.config import CacheConfig, Guard
from gateway.cache.decision import Candidate, decide
from gateway.cache.verified import BIN_WIDTH, error_bound
from loadtests.cache_eval_set import (
    Pair,
    derive_pairs,
    load_groups,
    load_old_pairs,
    load_split,
    part_of,
)
from loadtests.cache_replay import Replay, ReplayConfig, plot, replay
from loadtests.harness import RESULTS, ROOT, machine, machine_line, write_result

ALL_GUARDS: tuple[Guard, ...] = get_args(Guard)
GRID = [round(0.70 + 0.01 * i, 2) for i in range(30)]  # 0.70 .. 0.99
COMMAND = "python -m loadtests.eval_cache"


@dataclass(frozen=True)
class Rate:
    """k of n, with its 95% Wilson interval."""

    k: int
    n: int

    @property
    def value(self) -> float:
        return self.k / self.n if self.n else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        if self.n == 0:
            return (0.0, 1.0)
        ci = binomtest(self.k, self.n).proportion_ci(0.95, method="wilson")
        return (float(ci.low), float(ci.high))

    def text(self) -> str:
        low, high = self.interval
        return f"{self.value:.1%} [{low:.1%}, {high:.1%}] ({self.k}/{self.n})"

    def record(self) -> dict[str, Any]:
        low, high = self.interval
        return {"k": self.k, "n": self.n, "rate": self.value, "ci95": [low, high]}


@dataclass(frozen=True)
class Score:
    threshold: float
    guards: tuple[Guard, ...]
    hits: Rate  # agree pairs served
    false_hits: Rate  # disagree pairs served
    wrong_served: Rate  # served pairs that disagree
    by_kind: dict[str, Rate]  # false hits per near-miss kind

    def record(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "guards": list(self.guards),
            "hit_rate": self.hits.record(),
            "false_hit_rate": self.false_hits.record(),
            "wrong_share_of_served": self.wrong_served.record(),
            "false_hit_rate_by_kind": {k: r.record() for k, r in self.by_kind.items()},
        }


def similarities(pairs: Sequence[Pair], vectors: Mapping[str, np.ndarray]) -> np.ndarray:
    """Cosine similarity of each pair, from unit vectors."""
    return np.array([float(vectors[p.stored] @ vectors[p.asked]) for p in pairs])


def score(
    pairs: Sequence[Pair], sims: np.ndarray, threshold: float, guards: Sequence[Guard]
) -> Score:
    served = [
        decide(p.asked, [Candidate(0, float(s), p.stored)], threshold, guards).chosen is not None
        for p, s in zip(pairs, sims, strict=True)
    ]
    agree = [ok for p, ok in zip(pairs, served, strict=True) if p.agree]
    disagree = [(p.kind, ok) for p, ok in zip(pairs, served, strict=True) if not p.agree]
    kinds: dict[str, list[bool]] = {}
    for kind, ok in disagree:
        kinds.setdefault(kind, []).append(ok)
    by_kind = {k: Rate(sum(v), len(v)) for k, v in sorted(kinds.items())}
    false = sum(ok for _, ok in disagree)
    return Score(
        threshold,
        tuple(guards),
        Rate(sum(agree), len(agree)),
        Rate(false, len(disagree)),
        Rate(false, sum(agree) + false),
        by_kind,
    )


def choose_threshold(
    pairs: Sequence[Pair], sims: np.ndarray, guards: Sequence[Guard], max_false_hit: float
) -> tuple[float, bool]:
    """The lowest grid threshold whose false-hit rate's upper bound is within
    `max_false_hit`, and True; if none is, the one with the least upper bound, and False."""
    scores = [score(pairs, sims, t, guards) for t in GRID]
    for s in scores:
        if s.false_hits.interval[1] <= max_false_hit:
            return s.threshold, True
    return min(scores, key=lambda s: s.false_hits.interval[1]).threshold, False


def replay_summary(replays: Sequence[Replay]) -> dict[str, Any]:
    """Test-part figures per seed and pooled over the seeds."""
    tests = [r.tallies["test"] for r in replays]
    per_seed = [
        {
            "seed": r.seed,
            "test_served_error": Rate(t.wrong, t.served).record(),
            "test_hit_rate": Rate(t.served, t.fitting).record(),
            "test_lookups": t.lookups,
            "test_verifications": t.verified,
            "verifications_total": r.steps[-1].verified,
            "first_served_at_lookup": r.first_served_at(),
            "final_threshold": r.final_threshold,
        }
        for r, t in zip(replays, tests, strict=True)
    ]
    return {
        "config": vars(replays[0].config),
        "lookups_per_stream": len(replays[0].steps),
        "per_seed": per_seed,
        "pooled_test_served_error": Rate(
            sum(t.wrong for t in tests), sum(t.served for t in tests)
        ).record(),
        "pooled_test_hit_rate": Rate(
            sum(t.served for t in tests), sum(t.fitting for t in tests)
        ).record(),
    }


def checkpoints(r: Replay, every: int = 100) -> list[str]:
    """Markdown rows of one stream's cumulative figures every `every` lookups."""
    rows = []
    for i in [*range(every, len(r.steps), every), len(r.steps)]:
        s = r.steps[i - 1]
        threshold = "none" if s.threshold is None else f"{s.threshold:.3f}"
        err = f"{s.wrong / s.served:.1%}" if s.served else "-"
        hit = f"{s.served / s.fitting:.1%}" if s.fitting else "-"
        rows.append(f"| {i} | {s.part} | {threshold} | {s.verified} | {s.served} | {err} | {hit} |")
    return rows


def evidence_rows(r: Replay, width: float = 0.02) -> list[str]:
    """Markdown rows of one stream's verification outcomes by similarity band, with the
    Clopper-Pearson bound on the error rate of serving at or above the band."""
    bands: dict[int, tuple[int, int]] = {}
    for b, (a, d) in r.evidence.bins.items():
        band = int(b * BIN_WIDTH / width + 1e-9)
        agree, disagree = bands.get(band, (0, 0))
        bands[band] = (agree + a, disagree + d)
    rows, agree, disagree = [], 0, 0
    for band in sorted(bands, reverse=True):
        a, d = bands[band]
        agree, disagree = agree + a, disagree + d
        bound = error_bound(disagree, agree + disagree, r.config.confidence)
        rows.append(f"| >= {band * width:.2f} | {a} | {d} | {agree} / {disagree} | {bound:.3f} |")
    return rows


def never_served_note(r: Replay) -> str:
    """Why a stream served nothing, from its evidence: too short, or contradicted."""
    agree = sum(a for a, _ in r.evidence.bins.values())
    disagree = r.evidence.verifications - agree
    bound, confidence = r.config.max_error_rate, r.config.confidence
    if disagree == 0:
        needed = next(n for n in range(1, 100_000) if error_bound(0, n, confidence) <= bound)
        return (
            f"Never served: {agree} agreements with none against certify no threshold at "
            f"{bound:.0%} ({needed} are needed at {confidence}); the stream is too short."
        )
    shares, a_sum, d_sum = [], 0, 0
    for b in sorted(r.evidence.bins, reverse=True):
        a_sum, d_sum = a_sum + r.evidence.bins[b][0], d_sum + r.evidence.bins[b][1]
        shares.append(d_sum / (a_sum + d_sum))
    return (
        f"Never served: {disagree} of {agree + disagree} verified candidates disagreed; the "
        f"least disagreement share of the candidates at or above any similarity is "
        f"{min(shares):.0%}, far from {bound:.0%}: a longer stream of this mix would not "
        f"certify a threshold either (bands below)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "all-MiniLM-L6-v2"))
    parser.add_argument("--max-false-hit", type=float, default=0.01)
    parser.add_argument("--max-error-rate", type=float, default=0.01)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()

    groups = load_groups()
    split = load_split()
    parts = {g.id: part_of(g.id) for g in groups}
    assert {i: p for p, ids in split.items() for i in ids} == parts, "split file != hash rule"
    dev_pairs = derive_pairs(g for g in groups if parts[g.id] == "dev") + load_old_pairs()
    test_pairs = derive_pairs(g for g in groups if parts[g.id] == "test")

    from deployments.embedder import SentenceEmbedder

    embedder = SentenceEmbedder(args.model, "cpu", normalize=True, batch_size=64)
    texts = sorted({t for p in dev_pairs + test_pairs for t in (p.stored, p.asked)})
    vectors = dict(zip(texts, embedder.encode(texts).vectors, strict=True))
    dev_sims, test_sims = similarities(dev_pairs, vectors), similarities(test_pairs, vectors)

    default = CacheConfig().similarity_threshold
    dev_rows = [score(dev_pairs, dev_sims, t, g) for t in GRID for g in (ALL_GUARDS, ())]
    chosen = {
        name: choose_threshold(dev_pairs, dev_sims, g, args.max_false_hit)
        for name, g in (("guards", ALL_GUARDS), ("no guards", ()))
    }
    settings = {
        f"default {default} + guards": score(test_pairs, test_sims, default, ALL_GUARDS),
        f"default {default}, no guards": score(test_pairs, test_sims, default, ()),
        **{
            f"dev-chosen {t} {'+ guards' if name == 'guards' else 'no guards'}": score(
                test_pairs, test_sims, t, ALL_GUARDS if name == "guards" else ()
            )
            for name, (t, _) in chosen.items()
        },
    }

    bounds = [args.max_error_rate, *([0.05] if args.max_error_rate != 0.05 else [])]
    runs = {
        f"{'mixed' if mixed else 'control: members only'}, max_error_rate {b}": [
            replay(groups, parts, vectors, ReplayConfig(b, near_misses=mixed), seed)
            for seed in range(args.seeds)
        ]
        for mixed in (True, False)
        for b in bounds
    }
    summaries = {label: replay_summary(rs) for label, rs in runs.items()}
    m = machine()
    plot(
        runs,
        RESULTS / "cache_replay.png",
        f"Replayed stream, {Path(args.model).name}, "
        f"{args.seeds} seeds; {m['cores']}-core {m['cpu']}",
    )

    n_agree = sum(p.agree for p in test_pairs)
    lines = [
        "# Semantic cache evaluation",
        "",
        f"{len(groups)} groups ({len(split['dev'])} dev, {len(split['test'])} test, split by "
        f"sha256 of the id). Test: {len(test_pairs)} pairs ({n_agree} agree, "
        f"{len(test_pairs) - n_agree} near misses); dev: {len(dev_pairs)} pairs (with the "
        f"first 98-pair set). Embedder `{Path(args.model).name}`. Command: `{COMMAND}`.",
        machine_line(m),
        "",
        "## Static decision, test split (95% Wilson intervals)",
        "",
        f"Dev-chosen thresholds: the lowest whose dev false-hit upper bound is within "
        f"{args.max_false_hit:.0%}: "
        + "; ".join(
            f"{name}: {t}" + ("" if met else " (none meets it on dev: least upper bound)")
            for name, (t, met) in chosen.items()
        ),
        "",
        "| setting | hit rate (agree pairs) | false-hit rate (near misses) | wrong among served |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {s.hits.text()} | {s.false_hits.text()} | {s.wrong_served.text()} |"
        for name, s in settings.items()
    ]
    names = list(settings)
    lines += ["", "False-hit rate per kind, test split:", ""]
    lines += ["| kind | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for kind in sorted(settings[names[0]].by_kind):
        cells = " | ".join(settings[n].by_kind[kind].text() for n in names)
        lines.append(f"| {kind} | {cells} |")

    lines += ["", "## Replayed stream of verified hits (gateway.cache.verified)", ""]
    for label, summary in summaries.items():
        c = summary["config"]
        lines += [
            f"### {label} (confidence {c['confidence']}, verify_share {c['verify_share']}, "
            f"floor {c['floor']}; {summary['lookups_per_stream']} lookups per stream)",
            "",
            "| seed | test served error | test hit rate | test verifications | "
            "verifications (all) | first served at lookup | final threshold |",
            "|---|---|---|---|---|---|---|",
        ]
        for s in summary["per_seed"]:
            err, hit = (
                Rate(s["test_served_error"]["k"], s["test_served_error"]["n"]),
                Rate(s["test_hit_rate"]["k"], s["test_hit_rate"]["n"]),
            )
            lines.append(
                f"| {s['seed']} | {err.text()} | {hit.text()} | {s['test_verifications']} | "
                f"{s['verifications_total']} | {s['first_served_at_lookup'] or 'never'} | "
                f"{s['final_threshold'] or 'none'} |"
            )
        pe, ph = summary["pooled_test_served_error"], summary["pooled_test_hit_rate"]
        lines += [
            "",
            f"Pooled over seeds, test: served error {Rate(pe['k'], pe['n']).text()}, "
            f"hit rate {Rate(ph['k'], ph['n']).text()}.",
            "",
            *(
                [never_served_note(runs[label][0]), ""]
                if all(s["first_served_at_lookup"] is None for s in summary["per_seed"])
                else []
            ),
            "Seed 0, verification outcomes by similarity band (agree, disagree; cumulative "
            "from the top; upper bound on the error of serving from the band up):",
            "",
            "| band | agree | disagree | cumulative a / d | bound |",
            "|---|---|---|---|---|",
            *evidence_rows(runs[label][0]),
            "",
            "Seed 0, cumulative over the stream:",
            "",
            "| lookups | part | threshold | verifications | served | served error | hit rate |",
            "|---|---|---|---|---|---|---|",
            *checkpoints(runs[label][0]),
            "",
        ]
    lines.append("Curves: [cache_replay.png](cache_replay.png).")

    record = {
        "machine": m,
        "command": COMMAND,
        "model": Path(args.model).name,
        "groups": {"dev": len(split["dev"]), "test": len(split["test"])},
        "pairs": {"dev": len(dev_pairs), "test": len(test_pairs)},
        "dev_chosen": {name: {"threshold": t, "met": met} for name, (t, met) in chosen.items()},
        "dev_grid": [
            {
                "threshold": r.threshold,
                "guards": list(r.guards),
                "hit_rate": r.hits.value,
                "false_hit_rate": r.false_hits.value,
            }
            for r in dev_rows
        ],
        "test": {name: s.record() for name, s in settings.items()},
        "replay": summaries,
    }
    write_result("cache_eval", record, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
