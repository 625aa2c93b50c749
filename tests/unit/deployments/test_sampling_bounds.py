"""The wire schemas and the engine agree: whatever sampling options a request may carry,
vLLM accepts; what vLLM refuses, the LLM deployment refuses as the client's error."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from deployments.prompt import check_fits
from deployments.sampling import sampling_params
from gateway.generation.plan import sampling_options
from schemas.errors import ContextLengthExceeded, InvalidRequest
from schemas.generation import INT64_MAX, INT64_MIN, SamplingOptions
from schemas.openai import ChatCompletionRequest

CONTEXT, PROMPT_TOKENS = 2048, 12


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


floats = st.floats(min_value=-5, max_value=5, allow_nan=False)
sampling_fields = st.fixed_dictionaries(
    {},
    optional={
        "temperature": maybe(floats),
        "top_p": maybe(floats),
        "top_k": maybe(st.integers(-3, 100)),
        "min_p": maybe(floats),
        "seed": maybe(st.integers(INT64_MIN - 2, INT64_MAX + 2)),
        "stop": maybe(st.one_of(st.text(max_size=3), st.lists(st.text(max_size=3), max_size=5))),
        "presence_penalty": maybe(floats),
        "frequency_penalty": maybe(floats),
        "repetition_penalty": maybe(floats),
        "max_tokens": maybe(st.integers(-1, 3000)),
        "min_tokens": st.integers(-1, 3000),
        "ignore_eos": st.booleans(),
    },
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sampling_fields)
def test_every_request_the_schema_accepts_the_engine_accepts(fields: dict[str, Any]) -> None:
    try:
        req = ChatCompletionRequest.model_validate(
            {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
        )
    except (ValidationError, InvalidRequest):
        return  # refused at the wire: never reaches an engine
    options = sampling_options(req)
    try:
        max_tokens = check_fits(PROMPT_TOKENS, options.max_tokens, CONTEXT, options.min_tokens)
    except ContextLengthExceeded:
        return  # a 400 before the engine too
    sampling_params(options, max_tokens)  # must not raise


@pytest.mark.parametrize(
    ("options", "max_tokens", "param"),
    [
        (SamplingOptions(stop=[""]), 5, None),
        (SamplingOptions(min_tokens=50), 5, None),
        (SamplingOptions(seed=2**64), 5, "seed"),
        (SamplingOptions(seed=INT64_MIN - 1), 5, "seed"),
        (SamplingOptions(temperature=-1.0), 5, "temperature"),
        (SamplingOptions(top_p=0.0), 5, "top_p"),
        (SamplingOptions(top_k=-5), 5, None),
    ],
)
def test_options_the_engine_refuses_are_the_clients_error(
    options: SamplingOptions, max_tokens: int, param: str | None
) -> None:
    with pytest.raises(InvalidRequest) as err:
        sampling_params(options, max_tokens)
    assert err.value.status == 400 and err.value.param == param


def test_min_tokens_must_fit_the_room_left() -> None:
    with pytest.raises(ContextLengthExceeded) as err:
        check_fits(2000, None, 2048, min_tokens=100)  # 48 tokens of room
    assert err.value.param == "min_tokens"
    assert check_fits(2000, None, 2048, min_tokens=48) == 48
