"""The cache evaluation set: pairs derived from groups, the frozen split, the oracle that
judges verifications, and the replayed stream's bookkeeping."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from math import comb
from pathlib import Path

import numpy as np
import pytest

from loadtests.cache_eval_set import (
    GROUPS,
    SPLIT,
    Group,
    NearMiss,
    Oracle,
    derive_pairs,
    load_groups,
    load_split,
    part_of,
)
from loadtests.cache_replay import ReplayConfig, replay

REFUND = Group(
    "g1",
    "support",
    "How do I get a refund?",
    ("how can i get my money back", "What is the refund process?"),
    (NearMiss("How do I avoid a refund?", "antonym"), NearMiss("How do I get a loan?", "topic")),
)
SHIPPING = Group(
    "g2",
    "support",
    "How long does shipping take?",
    ("shipping time?",),
    (NearMiss("How long does shipping take from Canada?", "order"),),
)
ISSUE_KINDS = {
    "antonym", "comparative", "role_swap", "lowercase_entity", "time", "modifier", "ordinal",
    "unit", "negation", "number", "entity", "order", "quantifier", "tense", "scope",
    "topic_shift",
}  # fmt: skip


def test_agree_pairs_are_the_two_subsets_of_members_and_near_misses_meet_every_member() -> None:
    pairs = derive_pairs([REFUND])
    agree = [p for p in pairs if p.agree]
    disagree = [p for p in pairs if not p.agree]
    assert {frozenset((p.stored, p.asked)) for p in agree} == {
        frozenset(pair)
        for pair in [
            (REFUND.question, REFUND.paraphrases[0]),
            (REFUND.question, REFUND.paraphrases[1]),
            REFUND.paraphrases,
        ]
    }
    assert {p.kind for p in agree} == {"paraphrase"}
    assert Counter((p.asked, p.kind) for p in disagree) == {
        ("How do I avoid a refund?", "antonym"): 3,
        ("How do I get a loan?", "topic"): 3,
    }
    assert {p.stored for p in disagree} == set(REFUND.members)


def test_the_data_set_has_the_size_and_kinds_it_claims() -> None:
    groups = load_groups()
    pairs = derive_pairs(groups)
    m = [len(g.members) for g in groups]
    assert len(pairs) == sum(
        comb(k, 2) + k * len(g.near_misses) for k, g in zip(m, groups, strict=True)
    )
    assert len(groups) >= 140 and len(pairs) >= 400
    kinds = Counter(n.kind for g in groups for n in g.near_misses)
    assert set(kinds) == ISSUE_KINDS
    assert min(kinds.values()) >= 12
    texts = [t for g in groups for t in (*g.members, *(n.text for n in g.near_misses))]
    assert len(set(texts)) == len(texts)  # so the oracle's "same text" is never ambiguous


def test_the_split_is_by_group_and_matches_the_hash_rule_and_the_recorded_file() -> None:
    split = load_split()
    ids = [g.id for g in load_groups()]
    assert not set(split["dev"]) & set(split["test"])
    assert sorted(split["dev"] + split["test"]) == sorted(ids)
    assert all(part_of(i) == "test" for i in split["test"])
    assert all(part_of(i) == "dev" for i in split["dev"])


def test_the_split_refuses_a_changed_groups_file(tmp_path: Path) -> None:
    changed = tmp_path / "groups.jsonl"
    shutil.copy(GROUPS, changed)
    with changed.open("a") as f:
        f.write(json.dumps({"id": "g999"}) + "\n")
    with pytest.raises(ValueError, match="changed"):
        load_split(SPLIT, changed)


def test_the_oracle_agrees_within_a_groups_members_only() -> None:
    oracle = Oracle([REFUND, SHIPPING])
    assert oracle.agrees(REFUND.question, REFUND.paraphrases[1])
    assert oracle.agrees(REFUND.paraphrases[1], REFUND.paraphrases[0])
    assert not oracle.agrees(REFUND.question, REFUND.near_misses[0].text)
    assert not oracle.agrees(REFUND.near_misses[0].text, REFUND.question)
    assert not oracle.agrees(REFUND.near_misses[0].text, REFUND.near_misses[1].text)
    assert not oracle.agrees(REFUND.question, SHIPPING.question)
    assert oracle.agrees(REFUND.near_misses[0].text, REFUND.near_misses[0].text)


def synthetic(n: int) -> tuple[list[Group], dict[str, np.ndarray]]:
    """Groups whose members share one direction and whose near misses are orthogonal."""
    groups, vectors = [], {}
    dim = 2 * n
    for i in range(n):
        g = Group(f"g{i}", "x", f"q{i}", (f"p{i}a", f"p{i}b"), (NearMiss(f"n{i}", "antonym"),))
        groups.append(g)
        for t in g.members:
            vectors[t] = np.eye(dim)[2 * i]
        vectors[f"n{i}"] = np.eye(dim)[2 * i + 1]
    return groups, vectors


def test_the_replay_serves_only_after_verified_agreements_certify_a_threshold() -> None:
    groups, vectors = synthetic(60)
    parts = {g.id: part_of(g.id) for g in groups}
    config = ReplayConfig(max_error_rate=0.05)
    r = replay(groups, parts, vectors, config, seed=0)
    first = r.first_served_at()
    assert first is not None
    # 0.05 at 95% needs 59 agreements with none against: all verified before the first hit
    assert r.steps[first - 1].verified >= 59
    assert r.steps[-1].wrong == 0
    assert r.evidence.verifications == r.steps[-1].verified
    assert sum(t.lookups for t in r.tallies.values()) == 4 * len(groups)
    # each group's two later members fit (the first meets only orthogonal texts)
    assert sum(t.fitting for t in r.tallies.values()) == 2 * len(groups)


def test_the_replay_never_serves_a_near_miss_that_looks_like_its_partner() -> None:
    groups, vectors = synthetic(60)
    for g in groups:
        vectors[g.near_misses[0].text] = vectors[g.question]  # an inverted twin
    parts = {g.id: part_of(g.id) for g in groups}
    r = replay(groups, parts, vectors, ReplayConfig(max_error_rate=0.05), seed=1)
    assert r.steps[-1].served == 0
    assert r.evidence.bins and all(d > 0 for _, d in r.evidence.bins.values())
