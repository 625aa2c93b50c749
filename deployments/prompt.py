"""The served model's prompt side: chat template, tokenizer and context-length check.

Used by the LLM deployment and by the gateway, which counts prompt tokens with the
model's own tokenizer before admitting a request against its token quota. Loads only a
tokenizer (transformers), never an engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import TemplateError

from schemas.errors import ContextLengthExceeded, InvalidRequest
from schemas.generation import GenerationRequest


class PromptEncoder:
    """Chat template and tokenizer of the served model."""

    def __init__(self, tokenizer: Any, chat_template: str | None = None):
        self._tokenizer = tokenizer
        self._chat_template = chat_template  # None: the tokenizer's own

    def encode(self, request: GenerationRequest) -> list[int]:
        """The prompt's token ids under this model's chat template and tokenizer.

        Raises InvalidRequest for token ids outside the vocabulary and for text that the
        tokenizer or the chat template refuses (the client's input, never the model's
        failure)."""
        try:
            return self._encode(request)
        except (TemplateError, UnicodeError, TypeError, ValueError) as exc:
            param = "messages" if request.messages is not None else "prompt"
            raise InvalidRequest(
                f"The {param} could not be tokenized: {str(exc)[:200]}", param=param
            ) from None

    def _encode(self, request: GenerationRequest) -> list[int]:
        if request.prompt_token_ids is not None:
            vocab = len(self._tokenizer)
            if any(not 0 <= t < vocab for t in request.prompt_token_ids):
                raise InvalidRequest(f"prompt token ids must lie in [0, {vocab})", param="prompt")
            return list(request.prompt_token_ids)
        if request.messages is not None:
            tools = request.tools.tools if request.tools is not None else None
            ids = self._tokenizer.apply_chat_template(
                request.messages,
                tools=tools,
                chat_template=self._chat_template,
                add_generation_prompt=True,
                tokenize=True,
            )
            # transformers >= 5 returns a BatchEncoding here; older versions a list.
            return list(ids["input_ids"] if hasattr(ids, "keys") else ids)
        assert request.prompt is not None
        return list(self._tokenizer.encode(request.prompt))


def check_fits(
    prompt_tokens: int, max_tokens: int | None, max_model_len: int, min_tokens: int = 0
) -> int:
    """The max_tokens to generate with; raises ContextLengthExceeded if the prompt and
    the answer (at least `min_tokens` of it) cannot fit."""
    room = max_model_len - prompt_tokens
    if room < 1:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {max_model_len} tokens, but the "
            f"prompt has {prompt_tokens} tokens. Please shorten the prompt.",
            param="messages",
        )
    if min_tokens > (room if max_tokens is None else max_tokens):
        raise ContextLengthExceeded(
            f"min_tokens ({min_tokens}) exceeds the tokens the answer may have "
            f"({room if max_tokens is None else max_tokens}).",
            param="min_tokens",
        )
    if max_tokens is None:
        return room
    if max_tokens > room:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {max_model_len} tokens. You requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the prompt, {max_tokens} "
            "for the completion). Please reduce the prompt or max_tokens.",
            param="max_tokens",
        )
    return max_tokens


def load_prompt_encoder(model_source: str, chat_template: str | None = None) -> PromptEncoder:
    """The encoder of a model folder; `chat_template` a template file to use instead of
    the tokenizer's own."""
    from transformers import AutoTokenizer

    return PromptEncoder(AutoTokenizer.from_pretrained(model_source), read_template(chat_template))


def read_template(path: str | None) -> str | None:
    """The text of a chat template file (None: none configured)."""
    return None if path is None else Path(path).read_text()


class TextTokenCounter:
    """Tokens of plain texts (embedding inputs) under a model's tokenizer, untruncated."""

    def __init__(self, tokenizer: Any):
        self._tokenizer = tokenizer

    def counts(self, texts: list[str]) -> list[int]:
        encoded = self._tokenizer(texts, add_special_tokens=True, verbose=False)
        return [len(ids) for ids in encoded["input_ids"]]


def load_text_token_counter(model_source: str) -> TextTokenCounter:
    from transformers import AutoTokenizer

    return TextTokenCounter(AutoTokenizer.from_pretrained(model_source))
