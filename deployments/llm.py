"""LLM deployment: one vLLM `AsyncLLM` engine (continuous batching) per replica.

The replica speaks the streaming contract of `schemas.generation`. It applies the
model's chat template and tokenizes itself (in a worker thread), so it can refuse a
prompt that does not fit the context before generation starts and report exact usage.
When the caller goes away, Ray Serve cancels the generator and vLLM aborts the request.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from ray import serve

from deployments.config import LLMModelConfig
from deployments.counters import RequestCounters
from deployments.metrics import engine_stat_loggers
from deployments.prompt import PromptEncoder, check_fits, read_template
from deployments.sampling import sampling_params, token_logprobs
from deployments.tool_calls import ToolCallReader, ToolParsing, ToolRequest
from schemas.errors import InvalidRequest, ServiceUnavailable
from schemas.generation import (
    FinishReason,
    GenerationChunk,
    GenerationRequest,
    ReplicaTimings,
    ToolCallPart,
)

log = logging.getLogger("raygate.llm")


def _param(exc: Exception, request: GenerationRequest) -> str | None:
    """The request field an engine refusal is about: vLLM's own, or the grammar's source
    (a schema it cannot compile)."""
    param = getattr(exc, "parameter", None)
    if param is None and request.constrained:
        return "tools" if request.tools is not None and request.tools.forced else "response_format"
    return param


def _timings(began: float, encode_s: float, stats: Any) -> ReplicaTimings:
    """The replica's time to its first chunk; the engine's queue and prefill from vLLM's
    per-request stats (engine-core monotonic timestamps, 0 while unset; None when the
    engine keeps no stats)."""
    queued_ts, scheduled_ts, first_ts = (
        (0.0, 0.0, 0.0)
        if stats is None
        else (stats.queued_ts, stats.scheduled_ts, stats.first_token_ts)
    )
    return ReplicaTimings(
        time.perf_counter() - began,
        encode_s,
        scheduled_ts - queued_ts if queued_ts and scheduled_ts else None,
        first_ts - scheduled_ts if scheduled_ts and first_ts else None,
    )


IDLE_REPORT_S = 2.0  # Ray keeps a gauge for two export intervals (>= 1 s each)


@serve.deployment
class LLMDeployment:
    def __init__(self, config: LLMModelConfig, model_source: str):
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        args = AsyncEngineArgs(
            model=model_source, served_model_name=[config.id], **config.engine_kwargs
        )
        self._engine = AsyncLLM.from_engine_args(args, stat_loggers=engine_stat_loggers())
        self._max_model_len: int = self._engine.model_config.max_model_len
        tokenizer = self._engine.get_tokenizer()
        self._encoder = PromptEncoder(tokenizer, read_template(config.chat_template))
        self._tools = (
            None
            if config.tool_parser is None
            else ToolParsing(config.tool_parser, tokenizer, config.id, config.tool_strict_level)
        )
        self._model_id = config.id
        self._replica = serve.get_replica_context().replica_id.unique_id
        self._counters = RequestCounters()
        # Serve runs constructors on the replica's event loop
        self._idle_reports = asyncio.get_running_loop().create_task(self._report_when_idle())

    async def _report_when_idle(self) -> None:
        """vLLM sets its gauges (running and waiting requests, KV cache usage) only while
        it steps, and Ray drops a gauge that is not refreshed: an idle engine would
        vanish from the dashboards. While idle, report it idle."""
        from vllm.v1.metrics.stats import SchedulerStats

        stat_loggers = self._engine.logger_manager
        if stat_loggers is None:  # engine_kwargs disable_log_stats: no metrics at all
            return
        while True:
            await asyncio.sleep(IDLE_REPORT_S)
            if self._counters.running == 0:
                stat_loggers.record(SchedulerStats(), None)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """The streaming contract of `schemas.generation`.

        Before the first chunk, raises InvalidRequest / ContextLengthExceeded (4xx: the
        request's fault, never counted against the model) for a prompt or options the
        engine would refuse, and ServiceUnavailable while the engine is down. The first
        chunk carries the replica's timings."""
        began = time.perf_counter()
        if self._engine.errored:
            raise ServiceUnavailable(f"model '{self._model_id}' is restarting; try again")
        prompt_ids = await self._encoder.encode_off_loop(request)
        sampling = request.sampling
        max_tokens = check_fits(
            len(prompt_ids), sampling.max_tokens, self._max_model_len, sampling.min_tokens
        )
        tools = self._tool_request(request)
        if tools is None:
            params = sampling_params(sampling, max_tokens)
        else:
            params = sampling_params(
                sampling, max_tokens, tools.structured, tools.skip_special_tokens
            )
        readers = None if tools is None else [tools.reader(prompt_ids) for _ in range(sampling.n)]
        async for chunk in self._run(prompt_ids, params, request, readers, began):
            yield chunk

    def _tool_request(self, request: GenerationRequest) -> ToolRequest | None:
        """The request's tools as the parser reads them; None if they are not parsed.
        Raises InvalidRequest if this model has no tool parser."""
        if request.tools is None or not request.tools.parsed:
            return None
        if self._tools is None:
            raise InvalidRequest(f"model '{self._model_id}' does not support tools", param="tools")
        return self._tools.request(request.tools, request.sampling)

    async def _run(
        self,
        prompt_ids: list[int],
        params: Any,
        request: GenerationRequest,
        readers: list[ToolCallReader] | None,
        began: float,
    ) -> AsyncIterator[GenerationChunk]:
        from vllm.exceptions import VLLMClientError, VLLMServerError
        from vllm.inputs import TokensPrompt

        prompt_tokens, completion_tokens = len(prompt_ids), 0
        encode_s = time.perf_counter() - began
        top = request.sampling.logprobs or 0
        with self._counters.counting():
            try:
                stream = self._engine.generate(
                    TokensPrompt(prompt_token_ids=prompt_ids), params, request.request_id
                )
                replica: str | None = self._replica  # said once, with the first chunk
                async for output in stream:
                    for completion in output.outputs:
                        ids = list(completion.token_ids)
                        completion_tokens += len(ids)
                        finish: FinishReason | None = None
                        if completion.finish_reason is not None:
                            finish = "length" if completion.finish_reason == "length" else "stop"
                        text, calls = completion.text, tuple[ToolCallPart, ...]()
                        if readers is not None:
                            reader = readers[completion.index]
                            text, calls = reader.read(text, ids, finished=finish is not None)
                            if finish is not None:
                                finish = reader.finish_reason(finish)
                        yield GenerationChunk(
                            text,
                            prompt_tokens,
                            completion_tokens,
                            finish,
                            replica,
                            tuple(ids),
                            completion.index,
                            calls,
                            token_logprobs(ids, completion.logprobs, top),
                            None if replica is None else _timings(began, encode_s, output.metrics),
                        )
                        replica = None
            except VLLMClientError as exc:  # refused by the engine: the request's fault
                raise InvalidRequest(str(exc), param=_param(exc, request)) from None
            except VLLMServerError:
                log.exception("engine failed on request %s", request.request_id)
                raise ServiceUnavailable(f"model '{self._model_id}' failed; try again") from None

    def stats(self) -> dict[str, int]:
        """Request counters of this replica (used by tests and the metrics exporter)."""
        return self._counters.snapshot()

    def info(self) -> dict[str, Any]:
        return {"id": self._model_id, "max_model_len": self._max_model_len, "pid": os.getpid()}

    async def check_health(self) -> None:
        """Serve restarts the replica when this raises (the engine process died)."""
        await self._engine.check_health()
