"""Whole answers assembled from the streaming contract's chunks: one per choice, with its
text, its tool calls (pieces joined by call index) and its log probabilities. Used to
render a collected response and to record an answer for the cache."""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.generation import FinishReason, GenerationChunk, TokenLogprob, ToolCallPart


@dataclass
class Answer:
    """One choice, as far as its chunks have come."""

    index: int
    parts: list[str] = field(default_factory=list)
    calls: dict[int, ToolCallPart] = field(default_factory=dict)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: FinishReason | None = None

    def add(self, chunk: GenerationChunk) -> None:
        self.parts.append(chunk.text)
        for part in chunk.tool_calls:
            self.calls[part.index] = join(self.calls.get(part.index), part)
        self.logprobs.extend(chunk.logprobs)
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def tool_calls(self) -> tuple[ToolCallPart, ...]:
        """Complete calls in call order (each one piece: id, name, all its arguments)."""
        return tuple(self.calls[i] for i in sorted(self.calls))


def join(earlier: ToolCallPart | None, later: ToolCallPart) -> ToolCallPart:
    """Two pieces of one call as one: the first id and name, the arguments appended."""
    if earlier is None:
        return later
    return ToolCallPart(
        earlier.index,
        earlier.id or later.id,
        earlier.name or later.name,
        earlier.arguments + later.arguments,
    )


class Answers:
    """Every choice of one response, by index, and the last chunk seen (its usage)."""

    def __init__(self, first: GenerationChunk):
        self.by_index: dict[int, Answer] = {}
        self.last = first
        self.add(first)

    def add(self, chunk: GenerationChunk) -> None:
        self.by_index.setdefault(chunk.index, Answer(chunk.index)).add(chunk)
        self.last = chunk

    def in_order(self) -> list[Answer]:
        return [self.by_index[i] for i in sorted(self.by_index)]

    @property
    def complete(self) -> bool:
        """Every choice seen has finished."""
        return all(a.finish_reason is not None for a in self.by_index.values())
