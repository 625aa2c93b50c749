"""GenerationService with fakes of the same interfaces: plan -> admit -> cache -> run ->
settle, the rendered bodies and streams, and the outcome the quota is settled with."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.auth import BucketLimit, KeyConfig, Limits, Principal, TenantConfig
from gateway.cache.config import TenantCache
from gateway.cache.redis_store import CachedAnswer
from gateway.generation.plan import Body
from gateway.generation.service import Caller, GenerationService, Reply
from gateway.metrics import GatewayMetrics
from gateway.quota.buckets import Limit
from gateway.quota.config import QuotaConfig
from gateway.quota.policy import QuotaPolicy
from gateway.routing.config import RoutingConfig
from gateway.routing.planner import RoutePlanner
from gateway.targets import LLMTarget
from gateway.telemetry import RequestLabels
from schemas.errors import (
    ContextLengthExceeded,
    ModelNotFound,
    NotCached,
    RateLimited,
    ServiceUnavailable,
)
from schemas.openai import ChatCompletion, ChatCompletionRequest, Completion, CompletionRequest
from tests.fakes import Clock, InMemoryQuotaStore, Log, RecordingCache, ScriptedModel, WordCounter
from tests.openai_spec import validate, validate_completion_chunk

TOKENS = 10_000
LIMITS = Limits(tokens=BucketLimit(per_minute=60, burst=TOKENS))
TENANT = Principal(TenantConfig(id="acme", limits=LIMITS), None)


class Rig:
    """A GenerationService over one scripted model, a real QuotaPolicy on the in-memory
    store, and (optionally) the recording cache; every part logs into `log`."""

    def __init__(self, model: ScriptedModel, cache: bool = False, tools: bool = True):
        self.log: Log = model.log
        self.model = model
        self.store = InMemoryQuotaStore(Clock(), log=self.log)
        self.cache = RecordingCache(log=self.log) if cache else None
        self.tokenizer = WordCounter()
        planner = RoutePlanner(
            {"m1": LLMTarget(model, self.tokenizer, tools=tools)},
            {"default": "m1"},
            RoutingConfig(max_attempts=1),
        )
        quota = QuotaPolicy(self.store, QuotaConfig(), lambda *_: None)
        self.service = GenerationService(
            planner, quota, self.cache, GatewayMetrics(), clock=lambda: 1_700_000_000.0
        )
        self.labels = RequestLabels(tenant="acme")

    def tokens_left(self) -> float:
        """The tenant's token bucket now (the clock stands still: no refill)."""
        limit = Limit(rate_per_min=60, burst=TOKENS)
        return self.store.buckets.level("rg:q:{acme}:tok", limit, self.store.clock())

    async def run(self, body: Body, principal: Principal = TENANT) -> Reply:
        return await self.service.generate(body, Caller(principal, self.labels))


def chat_request(**fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {
            "model": "default",
            "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
            **fields,
        }
    )


async def events(reply: Reply) -> list[dict[str, Any]]:
    assert reply.events is not None, "expected a stream"
    raw = [e async for e in reply.events]
    assert raw[-1] == "data: [DONE]\n\n"
    assert all(e.startswith("data: ") and e.endswith("\n\n") for e in raw)
    return [json.loads(e[len("data: ") :]) for e in raw[:-1]]


# -------------------------------------------------------------------------- the order


async def test_a_chat_request_is_admitted_looked_up_run_and_settled_in_that_order() -> None:
    rig = Rig(ScriptedModel(("Par", "is", ".")), cache=True)
    reply = await rig.run(chat_request(max_tokens=9, temperature=0))
    assert rig.log == ["admit", "reserve", "cache", "model", "store:m1", "settle"]
    assert isinstance(reply.body, ChatCompletion)
    assert reply.headers["x-raygate-model"] == "m1"


async def test_a_streamed_request_settles_after_its_last_event() -> None:
    rig = Rig(ScriptedModel(("a", "b")), cache=True)
    reply = await rig.run(chat_request(stream=True, max_tokens=9))
    assert rig.log == ["admit", "reserve", "cache", "model"]  # headers are out, the body is not
    assert rig.labels.model == "m1"  # labelled before the body is sent
    assert reply.events is not None
    async for event in reply.events:
        if event == "data: [DONE]\n\n":
            assert "settle" not in rig.log  # [DONE] first: the client does not wait on it
    assert rig.log == ["admit", "reserve", "cache", "model", "store:m1", "settle"]


async def test_a_cancelled_stream_settles_and_stores_nothing() -> None:
    rig = Rig(ScriptedModel(("a", "b", "c")), cache=True)
    reply = await rig.run(chat_request(stream=True, max_tokens=9))
    assert reply.events is not None
    await anext(aiter(reply.events))
    await reply.events.aclose()  # the client went away
    assert rig.log == ["admit", "reserve", "cache", "model", "settle"]
    assert rig.model.closed == 1 and rig.cache is not None and rig.cache.answers == {}


async def test_a_stream_never_iterated_still_settles_when_closed() -> None:
    """The client left before the first byte: nothing ever asked for an event."""
    rig = Rig(ScriptedModel(("a", "b", "c")), cache=True)
    reply = await rig.run(chat_request(stream=True, max_tokens=9))
    assert reply.events is not None
    await reply.events.aclose()
    await reply.events.aclose()  # closing twice settles once
    assert rig.log == ["admit", "reserve", "cache", "model", "settle"]
    assert rig.model.closed == 1
    assert rig.tokens_left() == TOKENS - (4 + 1)  # the prompt and the first token, no more


async def test_a_cache_hit_replays_without_calling_the_model() -> None:
    rig = Rig(ScriptedModel(("never",)), cache=True)
    assert rig.cache is not None
    rig.cache.answers["q"] = CachedAnswer("Paris.", completion_tokens=3)
    reply = await rig.run(chat_request(max_tokens=9))
    assert rig.log == ["admit", "reserve", "cache", "settle"] and rig.model.calls == []
    assert isinstance(reply.body, ChatCompletion)
    assert reply.body.choices[0].message.content == "Paris."
    assert reply.headers["x-raygate-model"] == "m1"
    assert rig.tokens_left() == TOKENS  # hit_charge 0: the hit cost nothing


async def test_an_only_if_cached_miss_is_a_504_charged_its_prompt() -> None:
    rig = Rig(ScriptedModel(), cache=True)
    caller = Caller(TENANT, rig.labels, cache_control="only-if-cached")
    with pytest.raises(NotCached):
        await rig.service.generate(chat_request(max_tokens=9), caller)
    assert rig.log == ["admit", "reserve", "cache", "settle"] and rig.model.calls == []
    assert rig.tokens_left() == TOKENS - 4  # the prompt's tokens (probe_charge 1), no answer


async def test_a_refused_admission_calls_neither_cache_nor_model() -> None:
    rig = Rig(ScriptedModel(context=2 * TOKENS), cache=True)
    with pytest.raises(RateLimited):
        await rig.run(chat_request(max_tokens=TOKENS))  # reserves more than the burst
    assert rig.log == ["admit", "reserve", "settle"]  # the lease is given back


async def test_a_tenant_without_requests_left_costs_no_tokenizing() -> None:
    rig = Rig(ScriptedModel(("a",)))
    once = Principal(
        TenantConfig(id="acme", limits=Limits(requests=BucketLimit(per_minute=0, burst=1))), None
    )
    await rig.run(chat_request(max_tokens=9), once)
    for _ in range(3):
        with pytest.raises(RateLimited):
            await rig.run(chat_request(max_tokens=9), once)
    assert rig.tokenizer.encoded == 1


async def test_a_failure_before_the_first_chunk_settles_and_raises() -> None:
    rig = Rig(ScriptedModel(fail_before=ServiceUnavailable("down")), cache=True)
    with pytest.raises(ServiceUnavailable):
        await rig.run(chat_request(stream=True, max_tokens=9))
    assert rig.log == ["admit", "reserve", "cache", "model", "settle"]


async def test_the_quota_is_settled_with_what_the_answer_used() -> None:
    rig = Rig(ScriptedModel(("a", "b", "c", "d")))
    reply = await rig.run(chat_request(stream=True, max_tokens=100))
    mid_stream = rig.tokens_left()
    assert mid_stream == TOKENS - (4 + 100)  # the prompt and all it may use, reserved
    await events(reply)
    assert rig.tokens_left() == TOKENS - (4 + 4)  # refunded down to the 4 it used
    assert rig.labels.model == "m1"


# ------------------------------------------------------------------- what clients see


async def test_non_streamed_chat_joins_the_text_and_reports_engine_usage() -> None:
    rig = Rig(ScriptedModel(("Par", "is", "."), prompt_tokens=7))
    reply = await rig.run(chat_request(max_tokens=9, temperature=0, stop=["\n"]))
    assert isinstance(reply.body, ChatCompletion)
    dumped = json.loads(reply.body.model_dump_json())
    validate(dumped, "CreateChatCompletionResponse")
    assert dumped["model"] == "m1"
    assert dumped["choices"][0]["message"]["content"] == "Paris."
    assert dumped["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    sent = rig.model.calls[0]
    assert sent.prompt_token_ids == [1] * 4  # tokenized by the gateway, sent as ids
    assert sent.sampling.max_tokens == 9 and sent.sampling.stop == ["\n"]


@pytest.mark.parametrize("include_usage", [False, True])
async def test_streamed_chat_chunks_match_openai(include_usage: bool) -> None:
    rig = Rig(ScriptedModel(("Hel", "lo"), finish="length"))
    opts = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = await events(await rig.run(chat_request(stream=True, **opts)))
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Hello"
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finals) == 1 and finals[0]["choices"][0]["finish_reason"] == "length"
    if include_usage:
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 2
        assert all(c["usage"] is None for c in chunks[:-1])
    else:
        assert all(c["usage"] is None for c in chunks)
    assert len({c["id"] for c in chunks}) == 1


async def test_error_before_first_chunk_is_raised_not_streamed() -> None:
    failing = ScriptedModel(fail_before=ContextLengthExceeded("too long", param="messages"))
    with pytest.raises(ContextLengthExceeded):
        await Rig(failing).run(chat_request(stream=True))


async def test_error_after_first_chunk_ends_stream_with_error_event_then_done() -> None:
    rig = Rig(ScriptedModel(("a", "b", "c"), fail_after=1))
    chunks = await events(await rig.run(chat_request(stream=True)))
    assert chunks[-1]["error"]["type"] == "internal_error"  # a RuntimeError in the fake
    validate(chunks[-1], "ErrorResponse")
    assert rig.model.closed == 1
    assert rig.log[-1] == "settle"


async def test_unknown_or_forbidden_model_fails_before_any_tokenizing_or_model() -> None:
    rig = Rig(ScriptedModel(("x",)))
    with pytest.raises(ModelNotFound):
        await rig.run(chat_request(model="nope"))
    forbidden = Principal(TenantConfig(id="acme", models=["other"], limits=LIMITS), None)
    with pytest.raises(ModelNotFound):
        await rig.run(chat_request(), forbidden)
    assert rig.log == ["admit", "settle"] * 2  # the lease given back at once
    assert rig.tokenizer.encoded == 0


async def test_the_plan_checks_the_context_before_any_model_call() -> None:
    model = ScriptedModel(("x",), context=6)
    rig = Rig(model)
    with pytest.raises(ContextLengthExceeded):
        await rig.service.plan(chat_request(max_tokens=3), TENANT, None)  # 4 prompt + 3 > 6
    plan = await rig.service.plan(chat_request(), TENANT, None)  # the rest of the context
    assert (plan.route.prompt_tokens, plan.route.max_tokens, plan.reserved_tokens) == (4, 2, 6)
    assert plan.cache is None and model.calls == []


async def test_a_tenant_partitioned_per_key_asks_the_cache_as_that_key() -> None:
    rig = Rig(ScriptedModel(("x",)), cache=True)
    key = KeyConfig(name="ci", env="UNUSED")
    per_key = TenantCache(partition="key")
    for cache, expected in ((TenantCache(), None), (per_key, "ci")):
        tenant = TenantConfig(id="acme", limits=LIMITS, keys=[key], cache=cache)
        plan = await rig.service.plan(chat_request(), Principal(tenant, key), None)
        assert plan.cache is not None and plan.cache.key_name == expected


async def test_completions_non_stream_and_stream() -> None:
    rig = Rig(ScriptedModel((" Paris", "."), prompt_tokens=7))
    reply = await rig.run(CompletionRequest(model="m1", prompt="Capital:"))
    assert isinstance(reply.body, Completion)
    validate(json.loads(reply.body.model_dump_json()), "CreateCompletionResponse")
    assert reply.body.choices[0].text == " Paris." and rig.model.calls[0].prompt_token_ids == [8]
    streamed = CompletionRequest.model_validate(
        {"model": "m1", "prompt": [1, 2], "stream": True, "stream_options": {"include_usage": True}}
    )
    chunks = await events(await rig.run(streamed))
    for chunk in chunks:
        validate_completion_chunk(chunk)
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == " Paris."
    assert chunks[-1]["usage"]["total_tokens"] == 9
    assert rig.model.calls[1].prompt_token_ids == [1, 2]
