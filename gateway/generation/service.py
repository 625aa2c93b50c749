"""Chat completions and completions without HTTP, in one visible order.

    admit  one request and a concurrency lease from the tenant's and key's quota,
           before any tokenizing                                      -> Lease
    plan   route (alias, `auto`, access), tokenize, check the context, price the quota
           charge, decide how the cache is asked                      -> Plan (a value)
    reserve the plan's tokens from the tenant's and key's token buckets
    cache  look the request up                                        -> Lookup
    run    the backend stack, outermost first: cache (replay or record) -> timing ->
           fallback chain -> Serve handles; wait for the first chunk  -> Started
    settle however it ends, with what it used and who answered        -> Outcome (a value)

The route module (gateway.api.generation) only parses the body and sends the Reply as
JSON or SSE.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel

from gateway.auth import Principal
from gateway.cache.service import CacheQuery, Lookup
from gateway.generation.plan import Body, Outcome, Plan, generation_requests
from gateway.generation.prompts import start_all
from gateway.generation.render import Ended, EventStream, Frame, collect, renderer
from gateway.metrics import GatewayMetrics
from gateway.quota.policy import Lease, QuotaPolicy
from gateway.routing.planner import RoutePlanner
from gateway.targets import GenerationBackend, Started
from gateway.telemetry import RequestLabels, TimedBackend
from schemas.errors import InvalidRequest
from schemas.generation import GenerationChunk
from schemas.openai import ChatCompletionRequest


class Cache(Protocol):
    """What the generation path needs of the response cache (gateway.cache.ResponseCache)."""

    async def lookup(self, query: CacheQuery, req: Body) -> Lookup: ...

    def wrap(
        self, backend: GenerationBackend, lookup: Lookup, model_id: str, prompt_tokens: int
    ) -> GenerationBackend: ...

    def charge(self, lookup: Lookup, tokens: int) -> int: ...


@dataclass(frozen=True)
class Caller:
    """Who asks, as the HTTP layer knows it."""

    principal: Principal
    labels: RequestLabels  # the request's metrics labels (the middleware reads them)
    cache_control: str | None = None  # the Cache-Control request header


@dataclass(frozen=True)
class Reply:
    """What to send: `body` as JSON, or `events` as SSE; `headers` either way."""

    headers: dict[str, str]
    body: BaseModel | None = None
    events: EventStream | None = None  # close it when the response ends, sent or not


class GenerationService:
    def __init__(
        self,
        planner: RoutePlanner,
        quota: QuotaPolicy,
        cache: Cache | None,
        metrics: GatewayMetrics,
        clock: Callable[[], float] = time.time,
        max_choices: int = 8,
    ):
        self._planner = planner
        self._quota = quota
        self._cache = cache
        self._metrics = metrics
        self._clock = clock
        self._max_choices = max_choices

    async def plan(self, body: Body, principal: Principal, cache_control: str | None) -> Plan:
        """Everything decided before admission; calls no model.

        Raises ModelNotFound (unknown model, or one the tenant may not use),
        ContextLengthExceeded and InvalidRequest (the prompt or its options)."""
        prefix = "chatcmpl" if isinstance(body, ChatCompletionRequest) else "cmpl"
        request_id = f"{prefix}-{uuid.uuid4().hex}"
        requests = generation_requests(body, request_id)
        if (choices := len(requests) * body.n) > self._max_choices:
            counted = (
                f"n is {body.n}"
                if len(requests) == 1
                else (f"{len(requests)} prompts x n={body.n} is {choices} choices")
            )
            raise InvalidRequest(
                f"{counted}; this gateway answers at most {self._max_choices} choices",
                param="n" if len(requests) == 1 else "prompt",
            )
        route, *others = await asyncio.gather(
            *(self._planner.route(body.model, r, principal.may_use) for r in requests)
        )
        query = None
        if self._cache is not None and not others:  # one stored answer per question
            tenant = principal.tenant
            query = CacheQuery.of(
                tenant.id,
                tenant.cache,
                route.model_id,
                route.max_tokens,
                cache_control,
                principal.key_name,
            )
        return Plan(body, route, query, request_id, tuple(others))

    async def generate(self, body: Body, caller: Caller) -> Reply:
        """Admit, plan, reserve, look up, run; the reply once the first chunk is in.

        Raises before the first chunk, as a typed error with its HTTP status: the
        plan's errors, RateLimited / QuotaUnavailable (admission), NotCached
        (`only-if-cached` and no answer), the chain's Overloaded / ServiceUnavailable /
        GatewayTimeout, or a model's client error. After it, a failure ends the SSE
        stream with an error event (a non-streamed request raises it). The quota is
        settled on every way out, the client leaving included."""
        stages = caller.labels.stages
        stages.mark()
        lease = await self._quota.admit(caller.principal, "generation")  # before tokenizing
        stages.lap("admit")
        plan: Plan | None = None
        lookup: Lookup | None = None
        try:
            plan = await self.plan(body, caller.principal, caller.cache_control)
            tokenizing = max(r.tokenize_s for r in plan.routes)  # prompts run at once
            stages.lap("route", less=tokenizing)
            stages.add("tok", tokenizing)
            # labelled now (a stream the client leaves before its body keeps it), and again
            # with who answered when it is settled
            caller.labels.model = plan.model_id
            self._metrics.record_route(plan.route.decision, plan.model_id)
            tenant = caller.labels.tenant
            self._metrics.record_features(tenant, plan.model_id, plan.route.request)
            await self._quota.reserve(lease, plan.reserved_tokens)
            stages.lap("reserve")
            lookup = await self._lookup(plan)
            if lookup is not None:
                stages.lap("cache")
            if lookup is not None and (refusal := lookup.refusal()) is not None:
                raise refusal  # only-if-cached and no answer (settled with the lookup)
            started = await self._start(plan, lookup, caller.labels)
        except BaseException:
            if plan is None:
                await asyncio.shield(self._quota.settle(lease, 0))
            else:
                await self._settle(lease, Outcome(plan, lookup, None), caller.labels)
            raise

        async def ended(last: GenerationChunk) -> None:
            outcome = Outcome(plan, lookup, started.served, last.completion_tokens)
            await self._settle(lease, outcome, caller.labels)

        return await self._reply(plan, lease, lookup, started, ended)

    async def _lookup(self, plan: Plan) -> Lookup | None:
        if self._cache is None or plan.cache is None:
            return None
        return await self._cache.lookup(plan.cache, plan.body)

    async def _start(self, plan: Plan, lookup: Lookup | None, labels: RequestLabels) -> Started:
        """The backend stack, composed here and only here: cache -> timing -> fallback
        chain -> Serve handles. Timing sits below the cache: a replay is no model latency.
        Several prompts: one timed chain per prompt, started together and merged."""
        if plan.others:
            stacks = [
                (TimedBackend(r.chain, self._metrics.requests, labels), r.request)
                for r in plan.routes
            ]
            return await start_all(stacks, plan.body.n)
        backend: GenerationBackend = TimedBackend(plan.route.chain, self._metrics.requests, labels)
        if self._cache is not None and lookup is not None:
            backend = self._cache.wrap(backend, lookup, plan.model_id, plan.route.prompt_tokens)
        return await backend.start(plan.route.request)

    async def _reply(
        self,
        plan: Plan,
        lease: Lease,
        lookup: Lookup | None,
        started: Started,
        ended: Ended,
    ) -> Reply:
        headers = {
            **lease.headers,
            **(lookup.headers() if lookup else {}),
            **started.served.headers(),
        }
        frame = Frame(plan.request_id, int(self._clock()), started.served.model_id)
        render = renderer(plan.body, frame)
        if plan.body.stream:
            return Reply(headers, events=EventStream(started, render, ended))
        answers = await collect(started, ended)
        return Reply(headers, body=render.whole(answers))

    async def _settle(self, lease: Lease, outcome: Outcome, labels: RequestLabels) -> None:
        """Label the request with who answered; count tokens and settle the quota lease
        (shielded: a cancelled request still returns its unused tokens)."""
        labels.model = outcome.model_id
        self._metrics.requests.count_tokens(
            labels.tenant, outcome.model_id, outcome.prompt_tokens, outcome.completion_tokens
        )
        charge = outcome.used_tokens
        if self._cache is not None and outcome.lookup is not None:
            charge = self._cache.charge(outcome.lookup, charge)
        await asyncio.shield(self._quota.settle(lease, charge))
