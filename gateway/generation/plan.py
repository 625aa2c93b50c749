"""A generation request's plan and outcome, both values.

The plan is everything decided before the request is admitted: the route (model,
fallback chain, prompt as token ids, room for the answer), the quota charge, and how the
cache is to be asked. The outcome is what the request used and who answered, built once
it has ended.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.cache.service import CacheQuery, Lookup
from gateway.routing.planner import Routed
from gateway.targets import Served
from schemas.generation import GenerationRequest, SamplingOptions, Tools
from schemas.openai import ChatCompletionRequest, CompletionRequest
from schemas.tools import JSONObjectFormat, JSONSchemaResponseFormat

Body = ChatCompletionRequest | CompletionRequest


@dataclass(frozen=True)
class Plan:
    body: Body
    route: Routed  # the (first) prompt's
    cache: CacheQuery | None  # None: no cache is configured, or several prompts
    request_id: str  # the response's id (each prompt's engine request has its own)
    others: tuple[Routed, ...] = ()  # the other prompts of a completions request

    @property
    def routes(self) -> tuple[Routed, ...]:
        return (self.route, *self.others)

    @property
    def model_id(self) -> str:
        """The model routed to (the cache's partition); the outcome says who answered."""
        return self.route.model_id

    @property
    def prompt_tokens(self) -> int:
        return sum(r.prompt_tokens for r in self.routes)

    @property
    def reserved_tokens(self) -> int:
        """The quota charge at admission: the prompts and all the answers may use."""
        return sum(r.prompt_tokens + self.body.n * r.max_tokens for r in self.routes)


@dataclass(frozen=True)
class Outcome:
    """How a generation request ended."""

    plan: Plan
    lookup: Lookup | None  # the cache's answer to the plan's query (None: not asked)
    served: Served | None  # None: no model started (refused, failed before it)
    completion_tokens: int = 0

    @property
    def model_id(self) -> str:
        return self.served.model_id if self.served is not None else self.plan.model_id

    @property
    def prompt_tokens(self) -> int:
        return self.plan.prompt_tokens

    @property
    def used_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def sampling_options(req: Body) -> SamplingOptions:
    json_schema, json_object = None, False
    if req.response_format is not None:
        fmt = req.response_format
        if isinstance(fmt, JSONSchemaResponseFormat):
            json_schema = fmt.json_schema.schema_
            json_object = json_schema is None  # a format without a schema: any JSON object
        json_object = json_object or isinstance(fmt, JSONObjectFormat)
    return SamplingOptions(
        max_tokens=req.token_limit(),
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k,
        min_p=req.min_p,
        seed=req.seed,
        stop=req.stop_list(),
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        repetition_penalty=req.repetition_penalty,
        ignore_eos=req.ignore_eos,
        min_tokens=req.min_tokens,
        n=req.n,
        logprobs=req.top_logprob_count(),
        logit_bias=req.token_bias(),
        json_schema=json_schema,
        json_object=json_object,
    )


def generation_requests(req: Body, request_id: str) -> list[GenerationRequest]:
    """The streaming contract's requests for an OpenAI body, one per prompt (prompts not
    yet tokenized): a chat request's messages, or each prompt of a completions request
    (ids `request_id-i` when there are several)."""
    sampling, key = sampling_options(req), req.prompt_cache_key or req.user
    if isinstance(req, ChatCompletionRequest):
        messages = [m.for_template() for m in req.messages]
        tools = None
        if req.tools:
            tools = Tools(
                [t.model_dump(exclude_none=True) for t in req.tools],
                _choice(req),
                req.parallel_tool_calls,
            )
        return [
            GenerationRequest(
                request_id, sampling, messages=messages, affinity_key=key, tools=tools
            )
        ]
    prompts = req.prompts()
    requests = []
    for i, prompt in enumerate(prompts):
        rid = request_id if len(prompts) == 1 else f"{request_id}-{i}"
        if isinstance(prompt, str):
            requests.append(GenerationRequest(rid, sampling, prompt=prompt, affinity_key=key))
        else:
            requests.append(
                GenerationRequest(rid, sampling, prompt_token_ids=prompt, affinity_key=key)
            )
    return requests


def _choice(req: ChatCompletionRequest) -> str | dict[str, Any]:
    choice = req.tool_choice
    if choice is None:
        return "auto"  # OpenAI's default when tools are given
    return choice if isinstance(choice, str) else choice.model_dump()
