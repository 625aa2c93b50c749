"""Fallback chains: a request keeps going when a model fails.

`ChainBackend` is a generation backend over a chain of models (the one asked for, then
its configured fallbacks). Before the first token, an error, a time-to-first-token
timeout, a full queue or an open circuit moves the request to the next model, after a
jittered backoff, within the request's overall deadline and at most `max_attempts`
calls. After the first token, the model's own failure hands the stream on to the next
model of the chain that serves the same weights (`ChainBackend._continued`, with the
arithmetic in gateway.routing.continuation), so the client sees one stream; where none
can (`continue_streams` off, other weights, none left), the failure ends the stream
(the SSE layer turns it into an error event). Client errors (4xx) are never retried:
the next model would refuse them too. How each failure is judged is one table,
`VERDICTS`; a first-token timeout is the model's failure only if the model sent this
gateway replica nothing at all while the call waited, or the call was the half-open
probe (`BUSY` otherwise: load, such as one tenant's burst queued behind calls the model
is answering, must not open a circuit for every tenant); a wait the request's own
deadline cut shorter than the model's first-token timeout is never the model's
(`DEADLINE`: the time went to earlier models of the chain).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field

from ray.serve.exceptions import BackPressureError

from deployments.prompt import check_fits
from gateway.errors import typed_error
from gateway.routing.breaker import Attempt, Breakers, CircuitBreaker
from gateway.routing.config import RoutingConfig
from gateway.routing.continuation import Progress
from gateway.targets import ModelBackend, Served, Started
from schemas.errors import APIError, GatewayTimeout, Overloaded, ServiceUnavailable, retry_after
from schemas.generation import GenerationChunk, GenerationRequest

Adapt = Callable[[GenerationRequest], Awaitable[GenerationRequest]]


@dataclass(frozen=True)
class Link:
    """One model of a chain; `adapt` re-tokenizes the request for it (may raise a 4xx)."""

    model_id: str
    backend: ModelBackend
    adapt: Adapt
    weights: str | None = None  # what it serves (its model folder); None: its streams end


@dataclass(frozen=True)
class _Running:
    """A call whose first chunk is in: the model, what it was sent, and its chunks."""

    link: Link
    sent: GenerationRequest
    first: GenerationChunk
    chunks: AsyncIterator[GenerationChunk]


@dataclass(frozen=True)
class ChainEvents:
    """Callbacks for metrics; the defaults do nothing."""

    failed: Callable[[str, str], None] = lambda _model, _reason: None
    fallback: Callable[[str, str], None] = lambda _from, _to: None
    continued: Callable[[str, str], None] = lambda _from, _to: None  # a stream handed on


@dataclass
class _Walk:
    """One request's way along the chain (local to one `start`)."""

    deadline: float
    calls: int = 0
    passed_over: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Verdict:
    """What a failed call before the first token means for the chain."""

    reason: str  # the metrics label of the model passed over
    model_failed: bool  # counts against the model's circuit breaker
    try_next: bool  # the next model of the chain may answer (False: raise to the client)


CLIENT_ERROR = Verdict("client_error", model_failed=False, try_next=False)
BUSY = Verdict("busy", model_failed=False, try_next=True)  # timed out behind other calls
DEADLINE = Verdict("deadline", model_failed=False, try_next=True)  # the request's time ran out
MODEL_ERROR = Verdict("error", model_failed=True, try_next=True)
# Foreign exceptions by kind, in the spirit of httpx's map_exceptions; typed errors go by
# status (a 4xx is the client's, anything else the model's); unknown kinds (a dead replica,
# an engine crash) are the model's.
VERDICTS: tuple[tuple[type[BaseException], Verdict], ...] = (
    (TimeoutError, Verdict("first_token_timeout", model_failed=True, try_next=True)),
    (BackPressureError, Verdict("overloaded", model_failed=False, try_next=True)),
    (StopAsyncIteration, Verdict("empty", model_failed=True, try_next=True)),
)


def verdict(exc: BaseException) -> Verdict:
    typed = typed_error(exc)
    if typed is not None:
        return CLIENT_ERROR if typed.status < 500 else MODEL_ERROR
    return next((v for kind, v in VERDICTS if isinstance(exc, kind)), MODEL_ERROR)


class ChainBackend:
    """A `GenerationBackend` over a chain of models; holds no per-request state."""

    def __init__(
        self,
        links: Sequence[Link],
        config: RoutingConfig,
        breakers: Breakers,
        events: ChainEvents | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ):
        if not links:
            raise ValueError("a chain needs at least one model")
        self._links = tuple(links)
        self._config = config
        self._breakers = breakers
        self._events = events or ChainEvents()
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter

    @property
    def model_ids(self) -> tuple[str, ...]:
        return tuple(link.model_id for link in self._links)

    async def start(self, request: GenerationRequest) -> Started:
        """The first model that starts, with who it is and who was passed over; raises the
        last error if none does (a client error at once, without trying the next).

        After the first chunk, a failure of the model is counted against its breaker if
        it is the model's own (`verdict`), and the stream goes on on the next model with
        the same weights where one answers (`_continued`); otherwise `rest` raises it."""
        walk = _Walk(self._clock() + self._config.timeout_s)
        running = await self._walk(request, self._links, walk, self._as_routed)
        first = running.first
        served = Served(running.link.model_id, first.replica, walk.calls, tuple(walk.passed_over))
        return Started(served, first, self._rest(running, walk))

    async def _rest(self, running: _Running, walk: _Walk) -> AsyncGenerator[GenerationChunk, None]:
        """The chunks after the first, of one stream however many models write it."""
        progress = Progress.of(running.sent, running.first)
        try:
            while True:
                try:
                    chunk = await self._next(running, walk.deadline)
                except Exception as exc:
                    await _close(running.chunks)
                    running = await self._continued(running.link, progress, walk, exc)
                    progress.hand_over()
                    chunk = running.first
                if chunk is None:
                    return
                yield progress.seen(chunk)
        finally:
            await _close(running.chunks)

    async def _next(self, running: _Running, deadline: float) -> GenerationChunk | None:
        """The call's next chunk (None: it has ended). Raises GatewayTimeout past the
        deadline, and the call's failure, counted against the model's breaker if it is
        the model's own."""
        try:
            async with asyncio.timeout(max(deadline - self._clock(), 0.0)):
                chunk = await anext(running.chunks)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise self._timed_out() from None
        except Exception as exc:
            if verdict(exc).model_failed:
                self._breakers[running.link.model_id].failure()
            raise
        self._breakers[running.link.model_id].alive()
        return chunk

    async def _continued(
        self, failed: Link, progress: Progress, walk: _Walk, failure: Exception
    ) -> _Running:
        """The stream carried on from where `failed` left it, by the next model of the
        chain with the same weights (the prompt and the tokens so far as token ids, the
        rest of max_tokens). Raises `failure` where it cannot be: `continue_streams` off,
        a failure that is not the model's, the deadline passed, nothing left to
        generate, a request that cannot resume (several choices, a grammar, tool
        parsing), or no such model answers."""
        continuation = progress.continuation()
        heirs = self._heirs(failed) if progress.sent.resumable else ()
        if (
            continuation is None
            or not heirs
            or not verdict(failure).try_next
            or self._clock() >= walk.deadline
        ):
            raise failure
        try:
            running = await self._walk(continuation, heirs, walk, self._fitted, failed)
        except Exception:
            raise failure from None
        self._events.continued(failed.model_id, running.link.model_id)
        return running

    def _heirs(self, failed: Link) -> tuple[Link, ...]:
        """The models after `failed` in the chain that may carry on its stream."""
        if not self._config.continue_streams or failed.weights is None:
            return ()
        later = self._links[self._links.index(failed) + 1 :]
        return tuple(link for link in later if link.weights == failed.weights)

    async def _as_routed(self, link: Link, request: GenerationRequest) -> GenerationRequest:
        """The request for a model of the chain: as routed for the first, adapted to a
        fallback (its tokenizer, its context)."""
        return request if link is self._links[0] else await link.adapt(request)

    async def _fitted(self, link: Link, continuation: GenerationRequest) -> GenerationRequest:
        """A continuation for a model with the same weights (so the same token ids), if it
        fits its context; raises ContextLengthExceeded otherwise."""
        sampling, ids = continuation.sampling, continuation.prompt_token_ids or []
        context = await link.backend.max_model_len()
        check_fits(len(ids), sampling.max_tokens, context, sampling.min_tokens)
        return continuation

    async def _walk(
        self,
        request: GenerationRequest,
        links: Sequence[Link],
        walk: _Walk,
        tailor: Callable[[Link, GenerationRequest], Awaitable[GenerationRequest]],
        previous: Link | None = None,
    ) -> _Running:
        """Walk `links` until a model sends its first chunk; raises the last error."""
        error: BaseException | None = None
        for link in links:
            if walk.calls >= self._config.max_attempts:
                break
            if previous is not None:
                self._events.fallback(previous.model_id, link.model_id)
            previous = link
            breaker = self._breakers[link.model_id]
            attempt = breaker.attempt()
            if attempt is None:
                self._passed_over(walk, link, "circuit_open")
                error = Overloaded(
                    f"Model '{link.model_id}' is failing; its circuit is open.",
                    retry_after_s=max(breaker.retry_in_s(), self._config.retry_after_s),
                )
                continue
            try:  # every way out of here, cancellation included, settles the attempt
                outcome = await self._call(link, breaker, attempt, request, tailor, walk)
            finally:
                attempt.release()
            if isinstance(outcome, _Running):
                return outcome
            error = outcome
            if isinstance(error, GatewayTimeout) and walk.deadline <= self._clock():
                break
        raise self._exhausted(error)

    async def _call(
        self,
        link: Link,
        breaker: CircuitBreaker,
        attempt: Attempt,
        request: GenerationRequest,
        tailor: Callable[[Link, GenerationRequest], Awaitable[GenerationRequest]],
        walk: _Walk,
    ) -> _Running | BaseException:
        """One model's try: its first chunk, or the error to move on with.

        A first-token timeout counts against the model's breaker only if the model had
        its whole first-token timeout (`DEADLINE` when the request's deadline cut the
        wait shorter) and sent nothing to anyone here meanwhile (`BUSY` otherwise), or if
        the call is the half-open probe (whose outcome must close or reopen the circuit;
        a probe the deadline cut short settles nothing and frees its slot). Raises a client
        error (4xx) from the model, which no other model would accept either, and
        cancellation."""
        try:
            tailored = await tailor(link, request)
        except APIError as exc:  # e.g. the prompt does not fit this model's context
            self._passed_over(walk, link, "does_not_fit")
            return exc
        if walk.calls > 0:
            await self._backoff(walk)
        remaining = walk.deadline - self._clock()
        if remaining <= 0:
            return self._timed_out()
        walk.calls += 1
        chunks = link.backend.stream(tailored)
        allowed = self._config.first_token_timeout(link.model_id)
        timeout = min(allowed, remaining)
        heard = breaker.heard
        try:
            async with asyncio.timeout(timeout):
                first = await anext(chunks)
        except Exception as exc:
            await _close(chunks)
            judged = verdict(exc)
            if isinstance(exc, TimeoutError) and timeout < allowed:
                judged = DEADLINE
            elif isinstance(exc, TimeoutError) and breaker.heard > heard and not attempt.probe:
                judged = BUSY  # a probe's timeout always counts: its outcome must settle
            if judged.model_failed:
                attempt.failure()
            if not judged.try_next:
                raise
            self._passed_over(walk, link, judged.reason)
            return self._timed_out() if judged is DEADLINE else self._reported(link, exc, timeout)
        except BaseException:  # cancelled: the client left or the request timed out
            await _close(chunks)
            raise
        attempt.success()
        return _Running(link, tailored, first, chunks)

    def _reported(self, link: Link, exc: Exception, timeout: float) -> BaseException:
        """The error a client sees if no later model answers."""
        if isinstance(exc, TimeoutError):
            return GatewayTimeout(
                f"Model '{link.model_id}' sent no first token within {timeout:g} s."
            )
        if isinstance(exc, BackPressureError):
            return Overloaded(
                f"Model '{link.model_id}' is at capacity; try again shortly.",
                retry_after_s=self._config.retry_after_s,
            )
        if isinstance(exc, StopAsyncIteration):
            return ServiceUnavailable(f"Model '{link.model_id}' returned nothing.")
        return exc

    def _timed_out(self) -> GatewayTimeout:
        return GatewayTimeout(
            f"The request exceeded its time limit ({self._config.timeout_s:g} s)."
        )

    def _passed_over(self, walk: _Walk, link: Link, reason: str) -> None:
        walk.passed_over.append(link.model_id)
        self._events.failed(link.model_id, reason)

    async def _backoff(self, walk: _Walk) -> None:
        bound = min(self._config.backoff_max_s, self._config.backoff_s * 2 ** (walk.calls - 1))
        wait = min(self._jitter() * bound, max(walk.deadline - self._clock(), 0.0))
        if wait > 0:
            await self._sleep(wait)

    def _exhausted(self, error: BaseException | None) -> APIError:
        if isinstance(error, APIError):
            if error.status >= 500 and error.headers is None:
                error.headers = retry_after(self._config.retry_after_s)
            return error
        models = ", ".join(f"'{link.model_id}'" for link in self._links)
        unavailable = ServiceUnavailable(f"No model could answer (tried {models}).")
        unavailable.headers = retry_after(self._config.retry_after_s)
        return unavailable


async def _close(chunks: AsyncIterator[GenerationChunk]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        with suppress(Exception):
            await aclose()
