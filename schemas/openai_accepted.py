"""Chat completion fields of OpenAI's spec that raygate accepts without acting on them.

A client written for OpenAI may send any field OpenAI documents
(schemas/spec/openai-schemas.json), so each one here is accepted with its spec type: a
value of the wrong type is a 400 like any other. A field is ignored only where ignoring
it leaves the answer what the client asked for: bookkeeping on OpenAI's side, how OpenAI
serves and bills a request, a latency hint. A field that asks for something raygate
cannot do (audio output, web search, moderation, another verbosity, reasoning, the
deprecated `functions`) is accepted at its neutral value only and is a 400 naming it
otherwise, so a client never silently gets something it did not ask for.

The completions and embeddings request models already carry every field the spec
documents for them. tests/unit/schemas/test_spec_fields.py checks all three against the
spec, so a field OpenAI adds fails a test instead of a client.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.errors import InvalidRequest


class _Fields(BaseModel):
    model_config = ConfigDict(extra="forbid")


# OpenAI's Metadata: at most 16 pairs, keys of up to 64 characters, values of up to 512.
Metadata = Annotated[
    dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]],
    Field(max_length=16),
]


ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]


class PromptCacheBreakpoint(_Fields):
    mode: Literal["explicit"] = "explicit"


class PromptCacheOptions(_Fields):
    ttl: Literal["30m"] = "30m"
    mode: Literal["implicit", "explicit"] = "implicit"


class PredictionTextPart(_Fields):
    type: Literal["text"]
    text: str
    prompt_cache_breakpoint: PromptCacheBreakpoint | None = None


class Prediction(_Fields):
    """A Predicted Output: text the answer is expected to repeat, to answer sooner."""

    type: Literal["content"]
    content: str | Annotated[list[PredictionTextPart], Field(min_length=1)]


class CustomVoice(_Fields):
    id: str


class AudioOutput(_Fields):
    voice: str | CustomVoice
    format: Literal["wav", "aac", "mp3", "flac", "opus", "pcm16"]


class WebSearchLocation(_Fields):
    country: str | None = None
    region: str | None = None
    city: str | None = None
    timezone: str | None = None


class WebSearchUserLocation(_Fields):
    type: Literal["approximate"]
    approximate: WebSearchLocation


class WebSearchOptions(_Fields):
    user_location: WebSearchUserLocation | None = None
    search_context_size: Literal["low", "medium", "high"] = "medium"


class ModerationConfig(_Fields):
    mode: Literal["score", "block"]


class ModerationPolicy(_Fields):
    input: ModerationConfig | None = None
    output: ModerationConfig | None = None


class Moderation(_Fields):
    model: str
    policy: ModerationPolicy | None = None


class LegacyFunction(_Fields):
    """An item of the deprecated `functions` list (OpenAI's ChatCompletionFunctions)."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class LegacyFunctionCall(_Fields):
    name: str


class ChatAcceptedFields(_Fields):
    """The chat completion fields raygate ignores, or accepts at their neutral value only.

    Raises InvalidRequest (400, `param` the field) when a field asks for an output or a
    behaviour raygate does not have; see the comment on each field."""

    # Ignored: bookkeeping that OpenAI keeps and raygate does not.
    metadata: Metadata | None = None  # tags on OpenAI's stored completions; none are stored
    store: bool | None = None  # keep the answer for OpenAI's evals and distillation
    # For OpenAI's abuse monitoring; here a tenant is known by its key.
    safety_identifier: str | None = Field(default=None, max_length=64)
    # Ignored: how OpenAI serves and bills a request, never what it answers.
    # One tier here; the response leaves out `service_tier`, which the spec makes optional.
    service_tier: Literal["auto", "default", "flex", "scale", "priority", "fast"] | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None  # vLLM evicts by LRU
    prompt_cache_options: PromptCacheOptions | None = None  # vLLM caches prefixes itself
    prediction: Prediction | None = None  # a latency hint: the answer is the same without it
    # Neutral value only: anything else asks for what raygate cannot do.
    modalities: list[Literal["text", "audio"]] | None = None  # text; no audio output
    audio: AudioOutput | None = None  # the voice and format of audio output: none
    web_search_options: WebSearchOptions | None = None  # its presence turns web search on
    moderation: Moderation | None = None  # moderated input and output: no moderation here
    verbosity: Literal["low", "medium", "high"] | None = None  # "medium", the spec's default
    reasoning_effort: ReasoningEffort | None = None  # "none": the served models do not reason
    # Deprecated for `tools` and `tool_choice`: "none" (no function calls) only.
    functions: Annotated[list[LegacyFunction], Field(min_length=1, max_length=128)] | None = None
    function_call: Literal["none", "auto"] | LegacyFunctionCall | None = None

    @model_validator(mode="after")
    def _only_what_raygate_does(self) -> ChatAcceptedFields:
        refused = {
            "modalities": (
                "audio" in (self.modalities or ()),
                "modalities 'audio' is not supported; the answer is text",
            ),
            "audio": (self.audio is not None, "audio output is not supported"),
            "web_search_options": (
                self.web_search_options is not None,
                "web search is not supported",
            ),
            "moderation": (self.moderation is not None, "moderation is not supported"),
            "verbosity": (
                self.verbosity not in (None, "medium"),
                f"verbosity '{self.verbosity}' is not supported; send 'medium' or leave it out",
            ),
            "reasoning_effort": (
                self.reasoning_effort not in (None, "none"),
                f"reasoning_effort '{self.reasoning_effort}' is not supported; "
                "send 'none' or leave it out",
            ),
            "functions": (
                self.functions is not None,
                "functions is deprecated and not supported; use tools",
            ),
            "function_call": (
                self.function_call not in (None, "none"),
                "function_call is deprecated and not supported; use tool_choice",
            ),
        }
        for param, (used, message) in refused.items():
            if used:
                raise InvalidRequest(message, param=param)
        return self
