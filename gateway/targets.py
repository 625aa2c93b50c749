"""What the gateway's generation path needs from an LLM deployment (Serve handles in the
app, fakes in unit tests)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Protocol

from schemas.generation import GenerationChunk, GenerationRequest


class GenerationBackend(Protocol):
    """A streaming call to a model; closing the iterator cancels the call."""

    def stream(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]: ...

    async def max_model_len(self) -> int: ...


class PromptCounter(Protocol):
    """The model's own chat template and tokenizer (deployments.prompt.PromptEncoder)."""

    def encode(self, request: GenerationRequest) -> list[int]: ...


@dataclass(frozen=True)
class LLMTarget:
    backend: GenerationBackend
    prompts: PromptCounter  # models with the same tokenizer share one object
