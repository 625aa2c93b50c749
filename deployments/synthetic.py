"""Synthetic LLM deployment: streams tokens on a schedule and computes nothing.

Configured by a model's `synthetic` settings (deployments.config.SyntheticEngine), it
takes the place of the vLLM deployment so the serving path in front of it (proxy,
gateway, handle calls) can be measured at a token rate no CPU engine reaches. It keeps
the streaming contract of `schemas.generation` and counts prompts with the model's own
tokenizer and chat template, so the gateway plans, admits and routes as for the real
engine. Every answer repeats one token until its max_tokens (finish_reason "length").
For capacity measurement only, never for real traffic.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from ray import serve

from deployments.config import LLMModelConfig, SyntheticEngine
from deployments.counters import RequestCounters
from deployments.prompt import PromptEncoder, PromptOptions, check_fits, load_prompt_encoder
from schemas.errors import InvalidRequest
from schemas.generation import (
    GenerationChunk,
    GenerationRequest,
    ReplicaTimings,
    SamplingOptions,
)

FILLER = " the"  # the text of the token every answer repeats


def chunk_sizes(total: int, stream_interval: int) -> list[int]:
    """Tokens per chunk of a `total`-token answer: the first token alone, then
    `stream_interval` at a time (the last chunk may hold fewer), as vLLM streams."""
    sizes = [1] if total else []
    sent = len(sizes)
    while sent < total:
        sizes.append(min(stream_interval, total - sent))
        sent += sizes[-1]
    return sizes


@serve.deployment
class SyntheticLLMDeployment:
    def __init__(self, config: LLMModelConfig, model_source: str):
        if config.synthetic is None:
            raise ValueError(f"model '{config.id}' has no `synthetic` settings")
        self._engine: SyntheticEngine = config.synthetic
        self._model_id = config.id
        self._encoder: PromptEncoder = load_prompt_encoder(model_source, config.chat_template)
        self._token_ids = self._encoder.encode(
            GenerationRequest("filler", SamplingOptions(), prompt=FILLER),
            PromptOptions(add_special_tokens=False),
        )[:1]
        self._text = self._encoder.decode(self._token_ids)
        self._replica = serve.get_replica_context().replica_id.unique_id
        self._counters = RequestCounters()

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """The streaming contract of `schemas.generation`, on the configured schedule:
        the first token `first_token_s` after the call, then `stream_interval` tokens per
        chunk at `tokens_per_s`, timed from the call (no drift); usage exact.

        Before the first chunk, raises InvalidRequest for what it cannot imitate (n > 1,
        logprobs, a grammar, parsed tools) or a prompt the tokenizer refuses, and
        ContextLengthExceeded for one that does not fit `max_model_len`."""
        began = time.perf_counter()
        self._refuse_unsupported(request)
        prompt_ids = await self._encoder.encode_off_loop(request)
        engine, sampling = self._engine, request.sampling
        total = check_fits(
            len(prompt_ids), sampling.max_tokens, engine.max_model_len, sampling.min_tokens
        )
        if sampling.max_tokens is None:
            total = min(total, max(engine.output_tokens, sampling.min_tokens))
        encode_s = time.perf_counter() - began
        async for chunk in self._stream(len(prompt_ids), total, began, encode_s):
            yield chunk

    def _refuse_unsupported(self, request: GenerationRequest) -> None:
        sampling, name = request.sampling, f"model '{self._model_id}' (a synthetic engine)"
        if sampling.n != 1:
            raise InvalidRequest(f"{name} answers with one choice only", param="n")
        if sampling.logprobs is not None:
            raise InvalidRequest(f"{name} reports no logprobs", param="logprobs")
        if request.tools is not None and request.tools.parsed:
            raise InvalidRequest(f"{name} does not call tools", param="tools")
        if request.constrained:
            raise InvalidRequest(f"{name} cannot follow a grammar", param="response_format")

    async def _stream(
        self, prompt_tokens: int, total: int, began: float, encode_s: float
    ) -> AsyncIterator[GenerationChunk]:
        engine, loop = self._engine, asyncio.get_running_loop()
        start = loop.time() + engine.first_token_s  # when the first token is due
        replica: str | None = self._replica  # said once, with the first chunk
        sent = 0
        with self._counters.counting():
            for size in chunk_sizes(total, engine.stream_interval):
                due = start + (sent + size - 1) / engine.tokens_per_s  # its last token's time
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                sent += size
                yield GenerationChunk(
                    self._text * size,
                    prompt_tokens,
                    sent,
                    "length" if sent == total else None,
                    replica,
                    tuple(self._token_ids * size),
                    timings=None
                    if replica is None
                    else ReplicaTimings(time.perf_counter() - began, encode_s),
                )
                replica = None

    def stats(self) -> dict[str, int]:
        """Request counters of this replica (used by tests and benchmarks)."""
        return self._counters.snapshot()

    def info(self) -> dict[str, Any]:
        return {
            "id": self._model_id,
            "max_model_len": self._engine.max_model_len,
            "pid": os.getpid(),
        }

    async def check_health(self) -> None:
        """Healthy as a process: there is no engine to fail."""
