"""The semantic cache's evaluation set: groups of questions that share one correct answer,
their near misses, the frozen dev/test split, and the labelled pairs derived from them.

A group (loadtests/data/cache_eval_groups.jsonl) is a question, 2-3 paraphrases with the
same correct answer (its *members*) and 2-4 near misses: same topic, mostly the same words,
a different correct answer, each of a `kind` (antonym, role_swap, unit, ...). The split is
by group, once: a group is in test when the first byte of sha256(id) is below 128; the
split file records the ids and the hash of the groups file it was made from.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Literal

from loadtests.harness import ROOT

DATA = ROOT / "loadtests" / "data"
GROUPS = DATA / "cache_eval_groups.jsonl"
SPLIT = DATA / "cache_eval_split.json"
OLD_PAIRS = DATA / "cache_eval_pairs.jsonl"  # the first, smaller set: one more dev source

Part = Literal["dev", "test"]


@dataclass(frozen=True)
class NearMiss:
    text: str
    kind: str


@dataclass(frozen=True)
class Group:
    id: str
    domain: str
    question: str
    paraphrases: tuple[str, ...]
    near_misses: tuple[NearMiss, ...]

    @property
    def members(self) -> tuple[str, ...]:
        """The texts that share the group's correct answer: the question and its paraphrases."""
        return (self.question, *self.paraphrases)


@dataclass(frozen=True)
class Pair:
    """A stored text and an asked one; `agree`: the stored answer is right for the asked."""

    stored: str
    asked: str
    agree: bool
    kind: str  # "paraphrase" for agree pairs, else the near miss's kind


def load_groups(path: Path = GROUPS) -> list[Group]:
    groups = []
    for line in path.read_text().splitlines():
        if line.strip():
            raw = json.loads(line)
            groups.append(
                Group(
                    raw["id"],
                    raw["domain"],
                    raw["question"],
                    tuple(raw["paraphrases"]),
                    tuple(NearMiss(n["text"], n["kind"]) for n in raw["near_misses"]),
                )
            )
    return groups


def part_of(group_id: str) -> Part:
    """The split a group id belongs to, from its hash alone."""
    return "test" if hashlib.sha256(group_id.encode()).digest()[0] < 128 else "dev"


def load_split(path: Path = SPLIT, groups_path: Path = GROUPS) -> dict[Part, list[str]]:
    """The recorded split. Raises ValueError when the groups file is not the one it was made
    from (edit the data, and the test part is no longer held out: make a new split)."""
    record = json.loads(path.read_text())
    digest = hashlib.sha256(groups_path.read_bytes()).hexdigest()
    if record["sha256_of_groups_file"] != digest:
        raise ValueError(f"{groups_path} changed since the split was recorded")
    return {"dev": record["dev"], "test": record["test"]}


def derive_pairs(groups: Iterable[Group]) -> list[Pair]:
    """Agree pairs: every 2-subset of a group's members. Disagree pairs: each near miss
    (asked) against each member (stored), with the near miss's kind."""
    pairs = []
    for g in groups:
        pairs += [Pair(a, b, True, "paraphrase") for a, b in combinations(g.members, 2)]
        pairs += [Pair(m, n.text, False, n.kind) for n in g.near_misses for m in g.members]
    return pairs


def load_old_pairs(path: Path = OLD_PAIRS) -> list[Pair]:
    """The first pair set: its "hit" pairs agree, the others disagree with their kind."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [Pair(r["stored"], r["asked"], r["expect"] == "hit", r["kind"]) for r in rows]


class Oracle:
    """The judge of a verification from the labels: a cached answer agrees with a fresh one
    iff their texts are the same, or both are members of one group."""

    def __init__(self, groups: Sequence[Group]) -> None:
        self._group_of = {m: g.id for g in groups for m in g.members}

    def agrees(self, cached: str, asked: str) -> bool:
        if cached == asked:
            return True
        group = self._group_of.get(cached)
        return group is not None and self._group_of.get(asked) == group
