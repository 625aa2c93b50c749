"""The streaming contract between the gateway and an LLM deployment.

The gateway sends one `GenerationRequest` and iterates the deployment's stream of
`GenerationChunk`s:

* Errors found before generation starts (prompt too long, engine dead) are raised
  before the first chunk, so the gateway can still answer with a real HTTP status.
* Every chunk carries the text generated since the previous one (possibly empty) and
  the ids of the tokens generated since then, so the gateway can hand a stream whose
  engine died to another engine with the same weights (gateway.routing.continuation).
* The last chunk, and only the last, has `finish_reason` set ("stop" or "length").
* `prompt_tokens` is set on every chunk; `completion_tokens` is the running total, so
  the last chunk holds the exact usage counted by the engine's tokenizer.
* Cancelling the iteration (client gone, timeout) aborts the request in the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

FinishReason = Literal["stop", "length"]

# Bounds of the sampling options that the engine accepts, checked by the wire schemas
# before a request is built and again by the LLM deployment before the engine sees it.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # seeds: the engine's transport is 64-bit
MAX_STOP_CHARS = 1024  # per stop string


@dataclass(frozen=True, slots=True)
class SamplingOptions:
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    ignore_eos: bool = False
    min_tokens: int = 0


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    request_id: str
    sampling: SamplingOptions
    # Exactly one of these is set: chat messages (role, content) to run through the
    # model's chat template, a raw text prompt, or prompt token ids.
    messages: list[tuple[str, str]] | None = None
    prompt: str | None = None
    prompt_token_ids: list[int] | None = None
    affinity_key: str | None = None  # requests with one key prefer one replica

    def __post_init__(self) -> None:
        given = sum(x is not None for x in (self.messages, self.prompt, self.prompt_token_ids))
        if given != 1:
            raise ValueError("set exactly one of messages, prompt, prompt_token_ids")


@dataclass(frozen=True, slots=True)
class GenerationChunk:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason | None = None
    replica: str | None = None  # the model replica that generated it (first chunk only)
    token_ids: tuple[int, ...] = ()  # generated since the previous chunk (empty: not known)
