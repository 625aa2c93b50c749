"""The request models know every field OpenAI's spec documents for their routes, and no
field it does not; what the spec allows for a field raygate ignores is accepted, and
what raygate cannot honour is a 400 naming the field, never a type error."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from gateway.body import parse_body
from gateway.cache.keys import cache_key
from gateway.generation.plan import generation_requests
from schemas.errors import InvalidRequest
from schemas.openai import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from schemas.openai_accepted import ChatAcceptedFields
from tests.openai_spec import examples, request_properties

VLLM_SAMPLING = {"top_k", "min_p", "repetition_penalty", "ignore_eos", "min_tokens"}

# route's request schema, our model, the fields a minimal body needs, and the fields we
# accept beyond the spec's (each an extension a client opts into)
ROUTES: list[tuple[str, type[BaseModel], dict[str, Any], set[str]]] = [
    (
        "CreateChatCompletionRequest",
        ChatCompletionRequest,
        {"messages": [{"role": "user", "content": "hi"}]},
        VLLM_SAMPLING,
    ),
    (
        "CreateCompletionRequest",
        CompletionRequest,
        {"prompt": "hi"},
        # the replica-affinity key, and structured outputs (vLLM's extension), as on chat
        VLLM_SAMPLING | {"prompt_cache_key", "response_format"},
    ),
    ("CreateEmbeddingRequest", EmbeddingRequest, {"input": "hi"}, set()),
]

# Spec fields we knowingly do not accept (a client sending one gets "Unrecognized
# request argument"): none.
NOT_ACCEPTED: dict[str, set[str]] = {name: set() for name, *_ in ROUTES}


def accepted(model: type[BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


def body(model: type[BaseModel], **fields: Any) -> bytes:
    minimal = next(needs for _, m, needs, _ in ROUTES if m is model)
    return json.dumps({"model": "m", **minimal, **fields}).encode()


@pytest.mark.parametrize(("schema", "model", "extensions"), [(s, m, e) for s, m, _, e in ROUTES])
def test_the_model_accepts_exactly_the_spec_fields(
    schema: str, model: type[BaseModel], extensions: set[str]
) -> None:
    spec = set(request_properties(schema))
    assert not extensions & spec, "an extension the spec now documents: type it as the spec"
    assert accepted(model) - extensions == spec - NOT_ACCEPTED[schema]


@settings(max_examples=200, derandomize=True)
@given(name=st.from_regex(r"\A[a-z][a-z0-9_]{0,24}\Z"), value=st.sampled_from([None, 1, "x"]))
def test_a_field_the_spec_does_not_know_is_refused(name: str, value: Any) -> None:
    for _, model, *_ in ROUTES:
        if name in accepted(model):
            continue
        with pytest.raises(InvalidRequest) as err:
            parse_body(body(model, **{name: value}), model)
        assert err.value.status == 400 and err.value.param == name
        assert err.value.message == f"Unrecognized request argument supplied: {name}"


# The values a REFUSED field is accepted with: null, and the neutral ones listed here.
NEUTRAL: dict[str, list[Any]] = {
    "modalities": [["text"]],
    "verbosity": ["medium"],
    "reasoning_effort": ["none"],
    "function_call": ["none"],
}
IGNORED = {"metadata", "store", "safety_identifier", "service_tier"}
IGNORED |= {"prompt_cache_retention", "prompt_cache_options", "prediction"}
REFUSED = {"modalities", "audio", "web_search_options", "moderation", "verbosity"}
REFUSED |= {"reasoning_effort", "functions", "function_call"}


def test_every_accepted_field_is_either_ignored_or_refused() -> None:
    assert set(ChatAcceptedFields.model_fields) == IGNORED | REFUSED
    assert not IGNORED & REFUSED


CHAT_FIELDS = request_properties("CreateChatCompletionRequest")
SPEC_VALUES = [
    (field, value) for field in sorted(IGNORED | REFUSED) for value in examples(CHAT_FIELDS[field])
]


@pytest.mark.parametrize(("field", "value"), SPEC_VALUES, ids=repr)
def test_every_spec_value_is_accepted_or_refused_by_name(field: str, value: Any) -> None:
    raw = body(ChatCompletionRequest, **{field: value})
    neutral = value is None or value in NEUTRAL.get(field, [])
    if field in IGNORED or neutral:
        req = parse_body(raw, ChatCompletionRequest)
        assert req.model_dump(include={field}, exclude_unset=True) == {field: value}
    else:
        with pytest.raises(InvalidRequest, match="not supported") as err:
            parse_body(raw, ChatCompletionRequest)
        assert err.value.status == 400 and err.value.param == field


def test_the_ignored_fields_change_neither_the_generation_nor_its_cache_key() -> None:
    every = {field: examples(CHAT_FIELDS[field])[-1] for field in sorted(IGNORED)}
    plain = parse_body(body(ChatCompletionRequest), ChatCompletionRequest)
    loaded = parse_body(body(ChatCompletionRequest, **every), ChatCompletionRequest)
    assert loaded.model_dump(include=IGNORED, exclude_unset=True) == every
    assert generation_requests(loaded, "r") == generation_requests(plain, "r")
    assert cache_key("t", "m", loaded, 16) == cache_key("t", "m", plain, 16)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k" * 65: "v"}}, "metadata." + "k" * 65),
        ({"metadata": {"k": "v" * 513}}, "metadata.k"),
        ({"safety_identifier": "s" * 65}, "safety_identifier"),
        ({"service_tier": "premium"}, "service_tier"),
        ({"modalities": ["video"]}, "modalities[0]"),
        ({"prediction": {"type": "content", "content": []}}, "prediction.content"),
        ({"functions": []}, "functions"),
    ],
)
def test_a_value_outside_the_spec_is_a_400_naming_it(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_body(body(ChatCompletionRequest, **fields), ChatCompletionRequest)
    assert err.value.status == 400 and err.value.param == param, err.value.message
