"""The streaming contract between the gateway and an LLM deployment.

The gateway sends one `GenerationRequest` and iterates the deployment's stream of
`GenerationChunk`s:

* Errors found before generation starts (prompt too long, engine dead) are raised
  before the first chunk, so the gateway can still answer with a real HTTP status.
* A request asks for `sampling.n` answers (choices); every chunk belongs to one, its
  `index`. Each carries that choice's text generated since its previous chunk (possibly
  empty; with tools, only the text that is not a tool call), the tool-call pieces read
  out of it (`tool_calls`, by vLLM's tool parser for the model), the log probabilities
  of its new tokens when asked, and the ids of those tokens, so the gateway can hand a
  stream whose engine died to another engine with the same weights
  (gateway.routing.continuation).
* A choice's last chunk, and only that one, has `finish_reason` set ("stop", "length"
  or "tool_calls"); the stream ends after the last choice's.
* `prompt_tokens` is set on every chunk; `completion_tokens` is the running total over
  all choices, so the last chunk holds the exact usage counted by the engine's
  tokenizer (the prompt once, as OpenAI counts it).
* The replica's first chunk may carry `timings` (where its time to that chunk went), which
  the gateway reports per stage (gateway.timing).
* Cancelling the iteration (client gone, timeout) aborts the request in the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "length", "tool_calls"]

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
    n: int = 1  # answers to sample from the one prompt
    logprobs: int | None = None  # report each token's log probability and this many others
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id -> added logit
    # Structured outputs (vLLM's grammar backend): the answer is JSON valid against
    # `json_schema`, or any JSON object. Tools forced by `tool_choice` add their own.
    json_schema: dict[str, Any] | None = None
    json_object: bool = False


@dataclass(frozen=True, slots=True)
class Tools:
    """Function tools offered to a chat model, as OpenAI sends them (already checked).

    The chat template renders `tools`; unless `choice` is "none", the deployment reads
    the calls out of the answer with the model's tool parser, and constrains the answer
    to the tools' schemas when `choice` is "required" or names a function."""

    tools: list[dict[str, Any]]
    choice: str | dict[str, Any] = "auto"  # none | auto | required | {"type", "function"}
    parallel: bool | None = None  # False: at most one call

    @property
    def parsed(self) -> bool:
        return self.choice != "none"

    @property
    def forced(self) -> bool:
        """The model must call a tool ("required" or a named function)."""
        return self.choice not in ("none", "auto")


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    request_id: str
    sampling: SamplingOptions
    # Exactly one of these is set: chat messages (OpenAI's, as chat templates read them:
    # role, content text, tool_calls, tool_call_id) to run through the model's chat
    # template, a raw text prompt, or prompt token ids.
    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    prompt_token_ids: list[int] | None = None
    affinity_key: str | None = None  # requests with one key prefer one replica
    tools: Tools | None = None

    @property
    def resumable(self) -> bool:
        """Another engine can carry the stream on from its tokens so far: one answer, no
        grammar and no tool parser (their state would start over mid-answer)."""
        return (
            self.sampling.n == 1
            and not self.constrained
            and not (self.tools is not None and self.tools.parsed)
        )

    @property
    def constrained(self) -> bool:
        """The answer is decoded under a grammar (a schema, JSON, forced tools)."""
        s = self.sampling
        return s.json_schema is not None or s.json_object or bool(self.tools and self.tools.forced)

    def __post_init__(self) -> None:
        given = sum(x is not None for x in (self.messages, self.prompt, self.prompt_token_ids))
        if given != 1:
            raise ValueError("set exactly one of messages, prompt, prompt_token_ids")


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One generated token's log probability and the most likely alternatives."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()  # (token, logprob), most likely first


@dataclass(frozen=True, slots=True)
class ToolCallPart:
    """A piece of a tool call: its first piece has `id` and `name`, later ones only
    more `arguments` text (OpenAI's streamed tool-call delta)."""

    index: int  # which call of the choice
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class ReplicaTimings:
    """How the model replica spent a request's time to its first chunk, in seconds."""

    replica_s: float  # from the call reaching the replica to its first chunk leaving it
    encode_s: float  # the prompt's range check (or tokenizing) and the context check
    queued_s: float | None = None  # in the engine's waiting queue (None: not known)
    prefill_s: float | None = None  # scheduled to first token (None: not known)


@dataclass(frozen=True, slots=True)
class GenerationChunk:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason | None = None
    replica: str | None = None  # the model replica that generated it (first chunk only)
    token_ids: tuple[int, ...] = ()  # generated since the previous chunk (empty: not known)
    index: int = 0  # the choice it belongs to
    tool_calls: tuple[ToolCallPart, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()  # of its new tokens, when asked
    timings: ReplicaTimings | None = None  # the first chunk of a model replica's stream
