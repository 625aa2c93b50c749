"""TokenizeService over the route planner: the tokens are those a generation request with
the same input is charged for, under whichever model the name picks."""

from __future__ import annotations

import pytest

from deployments.prompt import DEFAULT_PROMPT, PromptOptions
from gateway.generation.plan import generation_requests
from gateway.routing.config import RoutingConfig
from gateway.routing.planner import RoutePlanner
from gateway.targets import LLMTarget
from gateway.tokenize import TokenizeService
from schemas.errors import InvalidRequest, ModelNotFound
from schemas.generation import GenerationRequest
from schemas.openai import ChatCompletionRequest
from schemas.tokenize import DetokenizeRequest, TokenizeRequest
from tests.fakes import ScriptedModel, WordCounter


class CharCounter(WordCounter):
    """Another tokenizer: one token (1) per character."""

    def encode(
        self, request: GenerationRequest, options: PromptOptions = DEFAULT_PROMPT
    ) -> list[int]:
        assert request.messages is not None
        return [1] * sum(len(text) for _, text in request.messages)


def planner() -> RoutePlanner:
    targets = {
        "big": LLMTarget(ScriptedModel(context=4096), CharCounter()),
        "small": LLMTarget(ScriptedModel(context=128), WordCounter()),
    }
    auto = {
        "default": "big",
        "rules": [{"model": "small", "max_prompt_tokens": 40, "max_tokens": 64}],
    }
    return RoutePlanner(targets, {"default": "big"}, RoutingConfig.model_validate({"auto": auto}))


def everyone(_: str) -> bool:
    return True


@pytest.mark.parametrize("name", ["big", "default", "small", "auto"])
@pytest.mark.parametrize("words", [1, 30])
async def test_chat_tokens_are_what_routing_charges(name: str, words: int) -> None:
    # (a chat without max_tokens, as /tokenize has none: `auto` keeps its default tier)
    plans = planner()
    messages = [{"role": "user", "content": " ".join(["word"] * words)}]
    chat = ChatCompletionRequest.model_validate({"model": name, "messages": messages})
    (request,) = generation_requests(chat, "r")
    routed = await plans.route(name, request, everyone)
    service = TokenizeService(plans)
    body = TokenizeRequest.model_validate({"model": name, "messages": messages})
    prepared = await service.prepare_tokenize(body, everyone)
    response = await service.tokenize(body, prepared)
    assert prepared.model_id == routed.model_id
    assert response.tokens == routed.request.prompt_token_ids
    assert response.count == routed.prompt_tokens
    assert response.max_model_len == (4096 if routed.model_id == "big" else 128)
    assert prepared.reserved_tokens == 0  # admitted by the request bucket only


async def test_token_strings_and_detokenize_use_the_models_tokenizer() -> None:
    service = TokenizeService(planner())
    body = TokenizeRequest(model="small", prompt="to be or not", return_token_strs=True)
    response = await service.tokenize(body, await service.prepare_tokenize(body, everyone))
    assert response.tokens == [2, 2, 2, 3] and response.token_strs == ["xx", "xx", "xx", "xxx"]
    back = DetokenizeRequest(model="small", tokens=response.tokens)
    text = await service.detokenize(await service.prepare_detokenize(back, everyone))
    assert text.prompt == "xx xx xx xxx"


async def test_names_the_tenant_cannot_use_are_not_found() -> None:
    service = TokenizeService(planner())
    with pytest.raises(ModelNotFound):
        await service.prepare_tokenize(TokenizeRequest(model="nope", prompt="a"), everyone)
    with pytest.raises(ModelNotFound):  # auto resolves through its default
        await service.prepare_detokenize(
            DetokenizeRequest(model="auto", tokens=[1]), lambda m: m == "small"
        )


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "a", "messages": [{"role": "user", "content": "a"}]}, "prompt"),
        ({"prompt": "a", "continue_final_message": True}, "continue_final_message"),
        (
            {
                "messages": [{"role": "user", "content": "a"}],
                "continue_final_message": True,
                "add_generation_prompt": True,
            },
            "continue_final_message",
        ),
    ],
)
def test_bodies_vllm_refuses(body: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        TokenizeRequest.model_validate({"model": "big", **body})
    assert raised.value.param == param
