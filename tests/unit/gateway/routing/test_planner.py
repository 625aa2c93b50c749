"""RoutePlanner: explicit, alias and auto routing; chains with access and tokenizers."""

from __future__ import annotations

from dataclasses import replace

import pytest

from deployments.prompt import DEFAULT_PROMPT, PromptOptions
from gateway.routing.config import RoutingConfig
from gateway.routing.planner import RoutePlanner
from gateway.targets import LLMTarget
from schemas.errors import (
    ContextLengthExceeded,
    InvalidRequest,
    ModelNotFound,
    ServiceUnavailable,
)
from schemas.generation import GenerationRequest, SamplingOptions, Tools
from tests.fakes import ScriptedModel, WordCounter

AUTO = {
    "name": "auto",
    "default": "default",
    "rules": [{"model": "fast", "max_prompt_tokens": 20, "max_tokens": 64}],
}


class CharCounter(WordCounter):
    """A different tokenizer: one token (0) per character."""

    def encode(
        self, request: GenerationRequest, options: PromptOptions = DEFAULT_PROMPT
    ) -> list[int]:
        assert request.messages is not None
        return [0] * sum(len(m["content"]) for m in request.messages)


def request(words: int, max_tokens: int | None) -> GenerationRequest:
    text = " ".join(["w"] * words)
    return GenerationRequest(
        "r", SamplingOptions(max_tokens=max_tokens), [{"role": "user", "content": text}]
    )


def router(**routing: object) -> tuple[RoutePlanner, dict[str, ScriptedModel]]:
    shared = WordCounter()
    models = {
        "big": ScriptedModel(replica="big-1"),
        "small": ScriptedModel(context=128, replica="small-1"),
        "other": ScriptedModel(replica="other-1"),
    }
    targets = {
        "big": LLMTarget(models["big"], shared),
        "small": LLMTarget(models["small"], shared),
        "other": LLMTarget(models["other"], CharCounter()),  # its own tokenizer
    }
    aliases = {"default": "big", "fast": "small"}
    return RoutePlanner(targets, aliases, RoutingConfig.model_validate(routing)), models


async def test_explicit_and_alias_decisions() -> None:
    r, _ = router()
    routed = await r.route("big", request(3, 8), lambda _: True)
    assert (routed.model_id, routed.decision) == ("big", "explicit")
    routed = await r.route("fast", request(3, 8), lambda _: True)
    assert (routed.model_id, routed.decision) == ("small", "alias")
    assert routed.prompt_tokens == 4 and routed.max_tokens == 8


@pytest.mark.parametrize(
    ("words", "max_tokens", "model"),
    [(5, 32, "small"), (19, 64, "small"), (20, 64, "big"), (5, 65, "big"), (5, None, "big")],
)
async def test_auto_sends_small_requests_to_the_fast_tier(
    words: int, max_tokens: int | None, model: str
) -> None:
    r, _ = router(auto=AUTO)
    routed = await r.route("auto", request(words, max_tokens), lambda _: True)
    assert (routed.model_id, routed.decision) == (model, "auto")


async def test_auto_keeps_the_default_when_the_tenant_may_not_use_the_tier() -> None:
    r, _ = router(auto=AUTO)
    routed = await r.route("auto", request(3, 8), lambda m: m != "small")
    assert routed.model_id == "big"


async def test_a_model_the_tenant_may_not_use_does_not_exist_for_it() -> None:
    r, _ = router()
    with pytest.raises(ModelNotFound):
        await r.route("fast", request(3, 8), lambda m: m != "small")


async def test_the_chain_follows_the_config_and_skips_what_the_tenant_may_not_use() -> None:
    r, models = router(fallbacks={"big": ["fast", "other"]})
    models["big"].fail_before = ServiceUnavailable("down")
    models["small"].fail_before = ServiceUnavailable("down")
    routed = await r.route("big", request(3, 8), lambda m: m != "small")
    started = await routed.chain.start(routed.request)
    assert started.first.text and started.served.model_id == "other"
    assert models["small"].calls == []
    # "other" has its own tokenizer: it got the prompt tokenized again, as ids
    assert models["other"].calls[0].prompt_token_ids == [0] * len("w w w")


async def test_a_fallback_with_the_same_tokenizer_gets_the_same_ids() -> None:
    r, models = router(fallbacks={"big": ["small"]})
    models["big"].fail_before = ServiceUnavailable("down")
    routed = await r.route("big", request(3, 8), lambda _: True)
    await routed.chain.start(routed.request)
    assert models["small"].calls[0].prompt_token_ids == routed.request.prompt_token_ids


async def test_prompts_that_do_not_fit_are_refused_before_any_call() -> None:
    r, models = router()
    with pytest.raises(ContextLengthExceeded):
        await r.route("small", request(200, 8), lambda _: True)
    assert models["small"].calls == []


@pytest.mark.parametrize(
    "routing",
    [
        {"fallbacks": {"big": ["missing"]}},
        {"auto": {**AUTO, "default": "missing"}},
        {"auto": {**AUTO, "name": "big"}},
    ],
    ids=["unknown-fallback", "unknown-tier", "auto-shadows-a-model"],
)
def test_bad_routing_config_fails_at_start(routing: dict[str, object]) -> None:
    with pytest.raises((ValueError, ModelNotFound)):
        router(**routing)


def tool_router() -> RoutePlanner:
    shared = WordCounter()
    targets = {
        "big": LLMTarget(ScriptedModel(), shared, tools=True),
        "small": LLMTarget(ScriptedModel(), shared, tools=False),  # no tool parser
        "spare": LLMTarget(ScriptedModel(), shared, tools=True),
    }
    config = RoutingConfig.model_validate({"auto": AUTO, "fallbacks": {"big": ["small", "spare"]}})
    return RoutePlanner(targets, {"default": "big", "fast": "small"}, config)


def with_tools(choice: str) -> GenerationRequest:
    tool = {"type": "function", "function": {"name": "f"}}
    return replace(request(3, 8), tools=Tools([tool], choice))


async def test_a_model_without_a_tool_parser_is_passed_over_for_tool_requests() -> None:
    r = tool_router()
    routed = await r.route("big", with_tools("auto"), lambda _: True)
    assert routed.chain.model_ids == (
        "big",
        "spare",
    )  # the fallback that reads no calls is left out
    plain = await r.route("big", request(3, 8), lambda _: True)
    assert plain.chain.model_ids == ("big", "small", "spare")
    # auto keeps the default rather than pick a tier that cannot read the calls
    assert (await r.route("auto", with_tools("required"), lambda _: True)).model_id == "big"
    with pytest.raises(InvalidRequest) as err:
        await r.route("fast", with_tools("auto"), lambda _: True)
    assert err.value.param == "tools"
    shown_only = await r.route("fast", with_tools("none"), lambda _: True)  # tools only rendered
    assert shown_only.model_id == "small"
