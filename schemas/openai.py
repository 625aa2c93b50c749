"""OpenAI wire models: requests the gateway accepts and the bodies it returns.

Requests forbid unknown fields, as OpenAI does ("Unrecognized request argument"), and
accept a few vLLM sampling extensions (top_k, min_p, repetition_penalty, ignore_eos,
min_tokens). Options that raygate does not implement are accepted at their neutral value
and rejected otherwise, so a client never silently gets something it did not ask for.
Response models follow OpenAI's schemas (schemas/spec/openai-schemas.json).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from schemas.errors import InvalidRequest
from schemas.generation import INT64_MAX, INT64_MIN, MAX_STOP_CHARS, FinishReason
from schemas.openai_accepted import ChatAcceptedFields
from schemas.tools import (
    FunctionTool,
    NamedToolChoice,
    ResponseFormat,
    Sparse,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- requests


class TextContentPart(_Request):
    type: Literal["text"]
    text: str


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None  # assistant turns of the history
    tool_call_id: str | None = None  # tool turns: the call they answer
    refusal: str | None = None  # an assistant turn that refused

    @model_validator(mode="after")
    def _shape(self) -> ChatMessage:
        if self.content is None and self.role != "assistant":
            raise ValueError(f"a '{self.role}' message needs content")
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        if (self.tool_call_id is None) != (self.role != "tool"):
            raise ValueError("a 'tool' message, and only one, needs tool_call_id")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    def for_template(self) -> dict[str, Any]:
        """The message as chat templates read it (Hugging Face's convention): text
        content, and tool-call arguments as objects where they parse as JSON objects."""
        message: dict[str, Any] = {"role": self.role, "content": self.text()}
        if self.name is not None:
            message["name"] = self.name
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {
                        "name": call.function.name,
                        "arguments": _arguments(call.function.arguments),
                    },
                }
                for call in self.tool_calls
            ]
        return message


def _arguments(text: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, dict) else text


class StreamOptions(_Request):
    include_usage: bool = False


# vLLM refuses an empty stop string; a long one only holds back streamed text.
StopString = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]
Stop = StopString | Annotated[list[StopString], Field(max_length=4)] | None


class _SamplingFields(_Request):
    """Fields shared by chat completions and completions."""

    model: str = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    stop: Stop = None
    # The engine's transport carries 64-bit integers only (vLLM's server bounds it too).
    seed: int | None = Field(default=None, ge=INT64_MIN, le=INT64_MAX)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    n: int = Field(default=1, ge=1, le=128)
    user: str | None = None
    # Requests with one key (a conversation, a shared document) go to one model replica,
    # whose prefix cache then holds their common start; `user` is the older spelling.
    prompt_cache_key: str | None = Field(default=None, max_length=1024)
    # structured outputs; on completions an extension (vLLM's), OpenAI's spec has none there
    response_format: ResponseFormat | None = Field(default=None, discriminator="type")
    # token id (as a string, as JSON keys are) -> bias added to its logit
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    # vLLM sampling extensions.
    top_k: int | None = Field(default=None, ge=-1)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=2.0)
    ignore_eos: bool = False
    min_tokens: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _supported(self) -> _SamplingFields:
        for token in self.logit_bias or {}:
            if not token.isdigit():
                raise InvalidRequest(
                    f"logit_bias keys are token ids; '{token[:40]}' is not", param="logit_bias"
                )
        if self.stream_options is not None and not self.stream:
            raise InvalidRequest(
                "stream_options is only allowed when stream is true", param="stream_options"
            )
        limit = self.token_limit()
        if limit is not None and self.min_tokens > limit:
            raise InvalidRequest(
                f"min_tokens ({self.min_tokens}) must not exceed max_tokens ({limit})",
                param="min_tokens",
            )
        return self

    def token_limit(self) -> int | None:
        """The most tokens the answer may have, if the client said."""
        return self.max_tokens

    def top_logprob_count(self) -> int | None:
        """Alternatives to report per token (0: the chosen token only); None: none."""
        return None

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def token_bias(self) -> dict[int, float]:
        return {int(token): bias for token, bias in (self.logit_bias or {}).items()}


class ChatCompletionRequest(ChatAcceptedFields, _SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[FunctionTool] | None = Field(default=None, max_length=128)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None

    @model_validator(mode="after")
    def _chat_supported(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise InvalidRequest("top_logprobs needs logprobs set to true", param="top_logprobs")
        if self.tool_choice not in (None, "none") and not self.tools:
            raise InvalidRequest(
                "tool_choice is only allowed when tools are specified", param="tool_choice"
            )
        named = self.named_tool()
        if named is not None and named not in {t.function.name for t in self.tools or []}:
            raise InvalidRequest(
                f"tool_choice names the function '{named}', which is not in tools",
                param="tool_choice",
            )
        names = [t.function.name for t in self.tools or []]
        if len(set(names)) != len(names):
            raise InvalidRequest("tools have two functions of one name", param="tools")
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            if self.max_tokens != self.max_completion_tokens:
                raise InvalidRequest(
                    "max_tokens and max_completion_tokens disagree; send one of them",
                    param="max_completion_tokens",
                )
        return self

    def named_tool(self) -> str | None:
        """The function `tool_choice` forces, if it names one."""
        choice = self.tool_choice
        return choice.function.name if isinstance(choice, NamedToolChoice) else None

    def calls_tools(self) -> bool:
        """Tools are offered and the model may (or must) call them."""
        return bool(self.tools) and self.tool_choice != "none"

    def top_logprob_count(self) -> int | None:
        """Alternatives to report per token (0: the chosen token only); None: none."""
        return (self.top_logprobs or 0) if self.logprobs else None

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


Prompt = str | list[str] | list[int] | list[list[int]]


class CompletionRequest(_SamplingFields):
    prompt: Prompt
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=5)
    best_of: int | None = Field(default=None, ge=1, le=128)
    suffix: str | None = None
    max_tokens: int | None = Field(default=16, ge=1)

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, v: Prompt) -> Prompt:
        if isinstance(v, list):
            if not v:
                raise ValueError("prompt must not be empty")
            if not isinstance(v[0], int) and not all(v):
                raise ValueError("no prompt of the list may be empty")
        elif not v:
            raise ValueError("prompt must not be empty")
        return v

    def prompts(self) -> list[str | list[int]]:
        """Each prompt of the request: a text or a list of token ids."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if isinstance(prompt[0], int):
            return [[int(t) for t in prompt]]  # type: ignore[arg-type]
        return [p if isinstance(p, str) else [int(t) for t in p] for p in prompt]  # type: ignore[union-attr]

    @model_validator(mode="after")
    def _completion_supported(self) -> CompletionRequest:
        if self.best_of is not None and self.best_of < self.n:
            raise InvalidRequest("best_of must be at least n", param="best_of")
        unsupported = {  # vLLM's v1 engine has no best_of; suffix needs infilling
            "echo": (self.echo, "echo is not supported"),
            "best_of": (
                self.best_of not in (None, self.n),
                "best_of other than n is not supported (the engine returns every sample)",
            ),
            "suffix": (self.suffix is not None, "suffix is not supported (no infilling)"),
        }
        for name, (used, message) in unsupported.items():
            if used:
                raise InvalidRequest(message, param=name)
        return self

    def top_logprob_count(self) -> int | None:
        return self.logprobs


class EmbeddingRequest(_Request):
    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _text_input(
        cls, v: str | list[str] | list[int] | list[list[int]]
    ) -> str | list[str] | list[int] | list[list[int]]:
        if isinstance(v, list):
            if not v:
                raise ValueError("input must not be empty")
            if len(v) > 2048:
                raise ValueError("input may hold at most 2048 items")
            if not all(isinstance(item, str) for item in v):
                raise InvalidRequest("token-id input is not supported; send text", param="input")
        return v

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else [str(t) for t in self.input]


# -------------------------------------------------------------------------- responses


class CompletionUsage(_Response):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TopLogprob(_Response):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(_Response):
    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(_Response):
    content: list[TokenLogprob] | None
    refusal: list[TokenLogprob] | None = None


class ChatResponseMessage(_Response):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None

    @model_serializer(mode="wrap")
    def _calls_when_made(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        body: dict[str, Any] = handler(self)
        if not body.get("tool_calls"):
            body.pop("tool_calls", None)  # OpenAI leaves it out when no tool was called
        return body


class ChatChoice(_Response):
    index: int = 0
    message: ChatResponseMessage
    finish_reason: FinishReason
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(_Response):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: CompletionUsage


class ChatDelta(Sparse):
    """A stream delta; absent fields are left out, as OpenAI does (`{}` at the end)."""

    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatChunkChoice(_Response):
    index: int = 0
    delta: ChatDelta
    finish_reason: FinishReason | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(_Response):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: CompletionUsage | None = None


class CompletionLogprobs(_Response):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class CompletionChoice(_Response):
    index: int = 0
    text: str
    finish_reason: FinishReason | None
    logprobs: CompletionLogprobs | None = None


class Completion(_Response):
    """Both the body and each stream chunk of /v1/completions (OpenAI uses one shape)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage | None = None

    @model_serializer(mode="wrap")
    def _usage_only_when_known(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        body: dict[str, Any] = handler(self)
        if body.get("usage") is None:
            body.pop("usage", None)  # the spec's `usage` here is an object, never null
        return body


class Embedding(_Response):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(_Response):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(_Response):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class ModelCard(_Response):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "raygate"


class ModelList(_Response):
    object: Literal["list"] = "list"
    data: list[ModelCard]
