"""Stream continuation: the arithmetic of handing a stream on to another engine.

When the model of a started stream fails, the fallback chain (gateway.routing.fallback)
can go on with the same stream on a model that serves the same weights. The continuation
is the request the failed model was sent, with the tokens it generated appended to the
prompt token ids (no re-tokenizing, so nothing drifts) and max_tokens / min_tokens
reduced by them; the sampling options are otherwise the same. With greedy decoding the
new engine then writes what the failed one would have written.

`Progress` keeps what the client has been sent and turns the new engine's chunks into
the chunks of the one stream: prompt tokens counted once (the original prompt), completion
tokens across both engines.

What token ids cannot carry: a stop string that straddles the hand-over (an engine
matches stop strings in its own output only), and a character whose first bytes the
failed engine had generated but not yet sent as text (the new engine may take them as
prompt and never send them).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from schemas.generation import GenerationChunk, GenerationRequest


@dataclass
class Progress:
    """What one stream has generated so far, across the engines that generated it."""

    sent: GenerationRequest  # what its first engine was sent (the prompt as token ids)
    prompt_tokens: int  # the original prompt, as its first engine counted it
    completion_tokens: int = 0  # across the engines
    token_ids: list[int] = field(default_factory=list)
    finished: bool = False
    _before: int = 0  # completion tokens of the engines before the current one

    @classmethod
    def of(cls, sent: GenerationRequest, first: GenerationChunk) -> Progress:
        progress = cls(sent, first.prompt_tokens)
        progress.seen(first)
        return progress

    def seen(self, chunk: GenerationChunk) -> GenerationChunk:
        """`chunk` of the current engine as the client sees it: usage of the whole stream."""
        self.token_ids += chunk.token_ids
        self.finished = chunk.finish_reason is not None
        self.completion_tokens = self._before + chunk.completion_tokens
        if self._before == 0:
            return chunk
        return replace(
            chunk,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            replica=None,  # the stream's replica is the one of its first chunk
        )

    def continuation(self) -> GenerationRequest | None:
        """The request that carries on from here; None when nothing is left to generate
        (finished, max_tokens reached) or the tokens are not known (chunks without ids)."""
        generated, sampling = len(self.token_ids), self.sent.sampling
        room = None if sampling.max_tokens is None else sampling.max_tokens - generated
        known = generated == self.completion_tokens > 0
        if self.finished or not known or self.sent.prompt_token_ids is None:
            return None
        if room is not None and room < 1:
            return None
        return replace(
            self.sent,
            prompt_token_ids=[*self.sent.prompt_token_ids, *self.token_ids],
            sampling=replace(
                sampling, max_tokens=room, min_tokens=max(sampling.min_tokens - generated, 0)
            ),
        )

    def hand_over(self) -> None:
        """The next chunks come from a new engine, which counts from zero."""
        self._before = self.completion_tokens
