"""Fallback chains: a request keeps going when a model fails before its first token.

`ChainBackend` is a generation backend over a chain of models (the one asked for, then
its configured fallbacks). Before the first token, an error, a time-to-first-token
timeout, a full queue or an open circuit moves the request to the next model, after a
jittered backoff, within the request's overall deadline and at most `max_attempts`
calls. Once a token has been streamed there is no silent retry: a later failure ends
the stream (the SSE layer turns it into an error event). Client errors (4xx) are never
retried: the next model would refuse them too.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field

from ray.serve.exceptions import BackPressureError

from gateway.routing.breaker import Breakers
from gateway.routing.config import RoutingConfig
from gateway.targets import GenerationBackend
from schemas.errors import APIError, GatewayTimeout, Overloaded, ServiceUnavailable
from schemas.generation import GenerationChunk, GenerationRequest

Adapt = Callable[[GenerationRequest], Awaitable[GenerationRequest]]


@dataclass(frozen=True)
class Link:
    """One model of a chain; `adapt` re-tokenizes the request for it (may raise a 4xx)."""

    model_id: str
    backend: GenerationBackend
    adapt: Adapt


@dataclass
class Served:
    """What happened to one request: filled in as the chain runs."""

    model_id: str | None = None  # the model whose answer is streamed
    replica: str | None = None  # its replica, as the first chunk tells
    calls: int = 0  # model calls made
    passed_over: list[str] = field(default_factory=list)  # models failed or skipped


@dataclass(frozen=True)
class RouterEvents:
    """Callbacks for metrics; the defaults do nothing."""

    failed: Callable[[str, str], None] = lambda _model, _reason: None
    fallback: Callable[[str, str], None] = lambda _from, _to: None


class ChainBackend:
    def __init__(
        self,
        links: list[Link],
        config: RoutingConfig,
        breakers: Breakers,
        events: RouterEvents | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ):
        if not links:
            raise ValueError("a chain needs at least one model")
        self._links = links
        self._config = config
        self._breakers = breakers
        self._events = events or RouterEvents()
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self.served = Served()

    async def max_model_len(self) -> int:
        return await self._links[0].backend.max_model_len()

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        deadline = self._clock() + self._config.timeout_s
        started = await self._start(request, deadline)
        link, first, chunks = started
        try:
            yield first
            while True:
                remaining = deadline - self._clock()
                try:
                    async with asyncio.timeout(max(remaining, 0.0)):
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise GatewayTimeout(
                        f"The request exceeded its time limit ({self._config.timeout_s:g} s)."
                    ) from None
                except (asyncio.CancelledError, GeneratorExit):
                    raise
                except APIError as exc:
                    if exc.status >= 500:
                        self._breakers[link.model_id].failure()
                    raise
                except Exception:
                    self._breakers[link.model_id].failure()
                    raise
                yield chunk
        finally:
            await _close(chunks)

    async def _start(
        self, request: GenerationRequest, deadline: float
    ) -> tuple[Link, GenerationChunk, AsyncIterator[GenerationChunk]]:
        """Walk the chain until a model sends its first chunk."""
        error: BaseException | None = None
        previous: str | None = None
        for index, link in enumerate(self._links):
            if self.served.calls >= self._config.max_attempts:
                break
            if previous is not None:
                self._events.fallback(previous, link.model_id)
            previous = link.model_id
            breaker = self._breakers[link.model_id]
            if not breaker.allow():
                self._passed_over(link, "circuit_open")
                error = Overloaded(
                    f"Model '{link.model_id}' is failing; its circuit is open.",
                    retry_after_s=max(breaker.retry_in_s(), self._config.retry_after_s),
                )
                continue
            try:
                tailored = request if index == 0 else await link.adapt(request)
            except APIError as exc:  # e.g. the prompt does not fit this model's context
                breaker.release()
                self._passed_over(link, "does_not_fit")
                error = exc
                continue
            if self.served.calls > 0:
                await self._backoff(deadline)
            remaining = deadline - self._clock()
            if remaining <= 0:
                breaker.release()
                error = GatewayTimeout(
                    f"The request exceeded its time limit ({self._config.timeout_s:g} s)."
                )
                break
            self.served.calls += 1
            chunks = link.backend.stream(tailored)
            timeout = min(self._config.first_token_timeout(link.model_id), remaining)
            try:
                async with asyncio.timeout(timeout):
                    first = await anext(chunks)
            except (asyncio.CancelledError, GeneratorExit):
                breaker.release()
                await _close(chunks)
                raise
            except StopAsyncIteration:
                breaker.failure()
                self._passed_over(link, "empty")
                error = ServiceUnavailable(f"Model '{link.model_id}' returned nothing.")
                continue
            except TimeoutError:
                await _close(chunks)
                breaker.failure()
                self._passed_over(link, "first_token_timeout")
                error = GatewayTimeout(
                    f"Model '{link.model_id}' sent no first token within {timeout:g} s."
                )
                continue
            except BackPressureError:
                await _close(chunks)
                breaker.release()
                self._passed_over(link, "overloaded")
                error = Overloaded(
                    f"Model '{link.model_id}' is at capacity; try again shortly.",
                    retry_after_s=self._config.retry_after_s,
                )
                continue
            except APIError as exc:
                await _close(chunks)
                if exc.status < 500:
                    breaker.release()
                    raise
                breaker.failure()
                self._passed_over(link, "error")
                error = exc
                continue
            except Exception as exc:  # a dead replica, an engine crash: try the next model
                await _close(chunks)
                breaker.failure()
                self._passed_over(link, "error")
                error = exc
                continue
            breaker.success()
            self.served.model_id = link.model_id
            self.served.replica = first.replica
            return link, first, chunks
        raise self._exhausted(error)

    def _passed_over(self, link: Link, reason: str) -> None:
        self.served.passed_over.append(link.model_id)
        self._events.failed(link.model_id, reason)

    async def _backoff(self, deadline: float) -> None:
        bound = min(
            self._config.backoff_max_s,
            self._config.backoff_s * 2 ** (self.served.calls - 1),
        )
        wait = min(self._jitter() * bound, max(deadline - self._clock(), 0.0))
        if wait > 0:
            await self._sleep(wait)

    def _exhausted(self, error: BaseException | None) -> APIError:
        if isinstance(error, APIError):
            if error.status >= 500 and error.headers is None:
                error.headers = {"Retry-After": str(max(1, round(self._config.retry_after_s)))}
            return error
        models = ", ".join(f"'{link.model_id}'" for link in self._links)
        unavailable = ServiceUnavailable(f"No model could answer (tried {models}).")
        unavailable.headers = {"Retry-After": str(max(1, round(self._config.retry_after_s)))}
        return unavailable


async def _close(chunks: AsyncIterator[GenerationChunk]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        with suppress(Exception):
            await aclose()
