"""The route planner: which LLM answers a request, and which ones stand in for it.

A name is a model id, an alias, or the `auto` policy's name. The answer is a chain:
the chosen model, then its configured fallbacks that the tenant may use, each with the
request tokenized for it (models with one tokenizer share the token ids) and the weights
it serves (a stream continues only on the same weights).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from deployments.prompt import DEFAULT_PROMPT, PromptOptions, check_fits
from gateway.routing.breaker import Breakers, State
from gateway.routing.catalog import MayUse, ModelCatalog, Route
from gateway.routing.config import RoutingConfig
from gateway.routing.fallback import Adapt, ChainBackend, ChainEvents, Link
from gateway.routing.policy import TierPolicy
from gateway.targets import LLMTarget
from schemas.errors import InvalidRequest
from schemas.generation import GenerationRequest


@dataclass(frozen=True)
class Encoded:
    """The model a name means for a request, and the request's prompt as its token ids."""

    route: Route[LLMTarget]
    ids: list[int]
    decision: str  # explicit, alias or auto
    tokenize_s: float = 0.0  # seconds spent in chat templates and tokenizers


@dataclass(frozen=True)
class Routed:
    """A request routed to its first model and tokenized for it."""

    model_id: str
    request: GenerationRequest  # the prompt as token ids
    prompt_tokens: int
    max_tokens: int  # what the answer may use (requested, or all the room left)
    chain: ChainBackend
    decision: str  # explicit, alias or auto
    tokenize_s: float = 0.0  # seconds spent in chat templates and tokenizers


class RoutePlanner:
    def __init__(
        self,
        targets: Mapping[str, LLMTarget],
        aliases: Mapping[str, str],
        config: RoutingConfig,
        events: ChainEvents | None = None,
        on_breaker: Callable[[str, State], None] = lambda _m, _s: None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._models = ModelCatalog(targets, aliases)
        self._config = config
        self._policy = TierPolicy(config.auto) if config.auto is not None else None
        self._events = events or ChainEvents()
        self._breakers = Breakers(config.breaker, clock, on_breaker)
        self._clock = clock
        for name in [*config.fallbacks, *(n for c in config.fallbacks.values() for n in c)]:
            self._models.resolve(name)  # unknown names fail at start, not per request
        if self._policy is not None:
            if self._policy.name in targets or self._policy.name in aliases:
                raise ValueError(f"auto.name '{self._policy.name}' is also a model name")
            for name in self._policy.models():
                self._models.resolve(name)

    async def encode(
        self,
        name: str,
        request: GenerationRequest,
        may_use: MayUse,
        options: PromptOptions = DEFAULT_PROMPT,
    ) -> Encoded:
        """Pick the model `name` means for `request` and tokenize the prompt for it: under
        the default `options`, the prompt tokens the request is charged for. Raises
        ModelNotFound (404) for a name the caller cannot use, InvalidRequest (400) for a
        prompt the model's tokenizer or chat template refuses."""
        route = self.target(name, may_use)
        began = time.perf_counter()
        ids = await _encode(route.target, request, options)
        tokenize_s = time.perf_counter() - began
        policy = self._policy
        if policy is None or name != policy.name:
            decision = "explicit" if name == route.model_id else "alias"
            return Encoded(route, ids, decision, tokenize_s)
        pick = self._models.resolve(policy.choose(len(ids), request.sampling.max_tokens))
        if (
            pick.model_id != route.model_id
            and may_use(pick.model_id)
            and _serves(pick.target, request)
        ):
            if pick.target.prompts is not route.target.prompts:
                began = time.perf_counter()
                ids = await _encode(pick.target, request, options)
                tokenize_s += time.perf_counter() - began
            route = pick
        return Encoded(route, ids, "auto", tokenize_s)

    def target(self, name: str, may_use: MayUse) -> Route[LLMTarget]:
        """The model `name` means before any prompt is seen: an id's, an alias's, or for
        `auto` its default model. Raises ModelNotFound (404) for a name the caller
        cannot use."""
        policy = self._policy
        if policy is not None and name == policy.name:
            return self._models.resolve(policy.default, may_use, shown_as=name)
        return self._models.resolve(name, may_use)

    async def route(self, name: str, request: GenerationRequest, may_use: MayUse) -> Routed:
        """Pick the model, tokenize for it, check the context, and build the chain."""
        encoded = await self.encode(name, request, may_use)
        route, ids = encoded.route, encoded.ids
        if not _serves(route.target, request):
            raise InvalidRequest(
                f"The model '{route.model_id}' does not support tools.", param="tools"
            )
        max_tokens = await _fit(route.target, len(ids), request)
        tokenized = replace(request, messages=None, prompt=None, prompt_token_ids=ids)
        chain = ChainBackend(
            self._links(route, request, may_use),
            self._config,
            self._breakers,
            self._events,
            self._clock,
        )
        return Routed(
            route.model_id,
            tokenized,
            len(ids),
            max_tokens,
            chain,
            encoded.decision,
            encoded.tokenize_s,
        )

    def _links(
        self, first: Route[LLMTarget], original: GenerationRequest, may_use: MayUse
    ) -> list[Link]:
        first_link = Link(
            first.model_id,
            first.target.backend,
            _refit(first.target, original),
            first.target.weights,
        )
        links = [first_link]
        seen = {first.model_id}
        for name in self._config.fallbacks.get(first.model_id, []):
            route = self._models.resolve(name)
            if route.model_id in seen or not may_use(route.model_id):
                continue
            if not _serves(route.target, original):  # e.g. no tool parser: passed over
                continue
            seen.add(route.model_id)
            shared = route.target.prompts is first.target.prompts
            links.append(
                Link(
                    route.model_id,
                    route.target.backend,
                    _refit(route.target, None if shared else original),
                    route.target.weights,
                )
            )
        return links


def _serves(target: LLMTarget, request: GenerationRequest) -> bool:
    """The model can answer the request: it reads tool calls, if the request has tools
    to call."""
    return target.tools or request.tools is None or not request.tools.parsed


async def _encode(
    target: LLMTarget, request: GenerationRequest, options: PromptOptions = DEFAULT_PROMPT
) -> list[int]:
    # Tokenizing takes milliseconds for long prompts: off the event loop.
    return await asyncio.to_thread(target.prompts.encode, request, options)


async def _fit(target: LLMTarget, prompt_tokens: int, request: GenerationRequest) -> int:
    """check_fits against the target's context: the max_tokens to generate with."""
    sampling = request.sampling
    context = await target.backend.max_model_len()
    return check_fits(prompt_tokens, sampling.max_tokens, context, sampling.min_tokens)


def _refit(target: LLMTarget, original: GenerationRequest | None) -> Adapt:
    """For a fallback: the request as token ids of its tokenizer (`original` None: the
    ids already given are its own), refused with a 400 if it does not fit its context."""

    async def adapt(tokenized: GenerationRequest) -> GenerationRequest:
        ids = tokenized.prompt_token_ids or []
        if original is not None:
            ids = await _encode(target, original)
        await _fit(target, len(ids), tokenized)
        return replace(tokenized, prompt_token_ids=ids)

    return adapt
