"""Tokenize and detokenize wire models, in vLLM's server shapes.

- POST /tokenize: `model` and either `prompt` (text) or `messages` (chat, run through the
  model's chat template), with vLLM's options -> {count, max_model_len, tokens, token_strs}.
- POST /detokenize: `model`, `tokens` -> {prompt}.

Unlike vLLM's server (one model), `model` is required: the gateway serves many.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.errors import InvalidRequest
from schemas.generation import INT64_MAX
from schemas.openai import ChatMessage
from schemas.tools import FunctionTool


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


CHAT_ONLY = ("add_generation_prompt", "continue_final_message", "tools")


class TokenizeRequest(_Request):
    model: str = Field(min_length=1)
    prompt: str | None = None
    messages: list[ChatMessage] | None = Field(default=None, min_length=1)
    add_special_tokens: bool | None = Field(
        default=None,
        description="Add the tokenizer's special tokens (BOS, ...): by default for a "
        "prompt, not on top of a chat template for messages.",
    )
    add_generation_prompt: bool = Field(
        default=True, description="Messages: open the assistant's turn after them."
    )
    continue_final_message: bool = Field(
        default=False,
        description="Messages: leave the last one open (a prefilled answer); no "
        "generation prompt then.",
    )
    return_token_strs: bool | None = Field(
        default=False, description="Also return each token as the vocabulary spells it."
    )
    tools: list[FunctionTool] | None = Field(
        default=None,
        max_length=128,
        description="Messages: the tools the chat template renders, as a chat request's.",
    )

    @model_validator(mode="after")
    def _check(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise InvalidRequest("send exactly one of prompt and messages", param="prompt")
        if self.prompt is not None:
            for name in CHAT_ONLY:
                if name in self.model_fields_set:
                    raise InvalidRequest(f"{name} applies to messages only", param=name)
        explicit = "add_generation_prompt" in self.model_fields_set
        if self.continue_final_message and self.add_generation_prompt and explicit:
            raise InvalidRequest(
                "continue_final_message and add_generation_prompt cannot both be true",
                param="continue_final_message",
            )
        return self


TokenId = Annotated[int, Field(ge=0, le=INT64_MAX)]


class DetokenizeRequest(_Request):
    model: str = Field(min_length=1)
    tokens: list[TokenId]

    @model_validator(mode="after")
    def _check(self) -> DetokenizeRequest:
        if not self.tokens:
            raise InvalidRequest("tokens must not be empty", param="tokens")
        return self


class TokenizeResponse(_Response):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None  # sent as null unless asked for, as vLLM does


class DetokenizeResponse(_Response):
    prompt: str
