"""Fault injection: an LLM "model" that wraps a real one and fails on purpose.

Configured under `fault_injection` (deployments.config.FaultConfig), it is routed to
like any model, so fallbacks, circuit breakers, timeouts and replica loss can be
exercised against a running cluster: the router's integration tests do exactly that.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

from ray import serve
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from deployments.config import FaultConfig
from schemas.errors import ServiceUnavailable
from schemas.generation import GenerationChunk, GenerationRequest


@serve.deployment
class FaultyLLMDeployment:
    def __init__(self, config: FaultConfig, inner: DeploymentHandle):
        self._config = config
        self._inner = inner
        self._stream = inner.options(stream=True)
        self._requests = 0

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        self._requests += 1
        config = self._config
        faulty = config.first_n is None or self._requests <= config.first_n
        if faulty and config.before_first_token == "error":
            raise ServiceUnavailable(f"injected fault: '{config.id}' fails before the first token")
        if faulty and config.before_first_token == "stall":
            await asyncio.sleep(config.stall_s)  # the injected stall itself
        response = cast(DeploymentResponseGenerator, self._stream.generate.remote(request))
        passed, done = 0, False
        try:
            async for chunk in response:
                if faulty and config.error_after_chunks is not None:
                    if passed >= config.error_after_chunks:
                        raise ServiceUnavailable(
                            f"injected fault: '{config.id}' fails after {passed} chunks"
                        )
                passed += 1
                yield chunk
            done = True
        finally:
            if not done:
                response.cancel()

    async def info(self) -> dict[str, Any]:
        info: dict[str, Any] = await self._inner.info.remote()
        return {**info, "id": self._config.id, "wraps": self._config.wraps}

    async def check_health(self) -> None:
        """Healthy as a process; its faults are per request."""
