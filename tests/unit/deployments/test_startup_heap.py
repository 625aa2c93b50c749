"""Freezing a replica's startup heap: what survives set-up leaves the collector's reach,
garbage from set-up does not, and the switch turns it off."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from deployments.startup_heap import FREEZE_ENV, freeze_startup_heap


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_objects_kept_from_set_up_are_frozen_and_set_up_garbage_is_collected_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(FREEZE_ENV, raising=False)
    kept = Node()
    garbage_a, garbage_b = Node(), Node()
    garbage_a.other, garbage_b.other = garbage_b, garbage_a  # a cycle only the collector frees
    gone = weakref.ref(garbage_a)
    del garbage_a, garbage_b

    frozen = freeze_startup_heap("test")

    assert gone() is None  # collected before the freeze, not frozen for good
    assert frozen is not None and frozen == gc.get_freeze_count() > 0
    assert not any(obj is kept for obj in gc.get_objects())  # out of the collector's walk


def test_cycles_made_after_the_freeze_are_still_collected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FREEZE_ENV, raising=False)
    freeze_startup_heap("test")
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None


def test_zero_leaves_the_heap_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FREEZE_ENV, "0")
    assert freeze_startup_heap("test") is None
    assert gc.get_freeze_count() == 0
