"""Forward passes bounded by tokens as well as by count (pure).

A dynamic batch may hold many short texts or a few long ones. Padding makes a pass cost
about count x longest tokens, so items are sorted by length and cut into passes whose
padded size stays under a token budget: long inputs cannot form one pass that blows
memory or latency, and short ones are not padded to the longest.
"""

from __future__ import annotations

from collections.abc import Sequence


def token_batches(lengths: Sequence[int], max_tokens: int, max_count: int) -> list[list[int]]:
    """Indices of the items, grouped into passes of at most `max_count` items and at most
    `max_tokens` padded tokens (an item longer than that alone gets a pass of its own)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    passes: list[list[int]] = []
    current: list[int] = []
    for i in order:
        size = len(current) + 1
        if current and (size > max_count or size * lengths[i] > max_tokens):
            passes.append(current)
            current = []
        current.append(i)
    if current:
        passes.append(current)
    return passes
