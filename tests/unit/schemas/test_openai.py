import pickle

import pytest
from pydantic import ValidationError

from gateway.body import parse_body
from schemas.errors import ContextLengthExceeded, InvalidRequest, ModelNotFound, retry_after
from schemas.openai import ChatCompletionRequest, CompletionRequest, EmbeddingRequest

USER = [{"role": "user", "content": "hi"}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def chat(**fields: object) -> bytes:
    import json

    return json.dumps({"model": "m", "messages": USER, **fields}).encode()


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 0}, "n"),
        ({"n": 129}, "n"),
        ({"top_logprobs": 3}, "top_logprobs"),  # needs logprobs: true
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "a b"}}},
            "response_format.json_schema.name",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "frob"}},
                }
            },
            "response_format.json_schema.schema",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 3}}}]},
            "tools[0].function.parameters",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "bad name"}}]},
            "tools[0].function.name",
        ),
        ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
        ({"tools": [TOOL, TOOL]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),  # no tools
        ({"tools": [TOOL], "tool_choice": "sometimes"}, "tool_choice"),
        (
            {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "g"}}},
            "tool_choice",
        ),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0]"),  # no tool_call_id
        ({"messages": [{"role": "user", "content": "x", "tool_call_id": "c"}]}, "messages[0]"),
        ({"logit_bias": {"dog": 5}}, "logit_bias"),
        ({"logit_bias": {"1": 101}}, "logit_bias.1"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"presence_penalty": -3}, "presence_penalty"),
        ({"max_tokens": 5, "max_completion_tokens": 6}, "max_completion_tokens"),
        ({"frobnicate": 1}, "frobnicate"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user"}]}, "messages[0]"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        # what the engine would refuse is refused here, before any engine is called
        ({"stop": [""]}, "stop"),
        ({"stop": ""}, "stop"),
        ({"stop": ["x" * 1025]}, "stop"),
        ({"min_tokens": 50, "max_tokens": 5}, "min_tokens"),
        ({"min_tokens": 50, "max_completion_tokens": 5}, "min_tokens"),
        ({"seed": 2**64}, "seed"),
        ({"seed": -(2**63) - 1}, "seed"),
        ({"top_k": -2}, "top_k"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"min_p": 1.5}, "min_p"),
    ],
)
def test_bad_chat_requests_name_the_offending_param(fields: dict, param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_body(chat(**fields), ChatCompletionRequest)
    assert err.value.status == 400
    assert err.value.param is not None and err.value.param.startswith(param)


def test_unknown_field_is_reported_like_openai() -> None:
    with pytest.raises(InvalidRequest, match="Unrecognized request argument supplied: frobnicate"):
        parse_body(chat(frobnicate=1), ChatCompletionRequest)


@pytest.mark.parametrize("raw", [b"{bad", b"[1, 2]", b"", b"\xff\xfe"])
def test_body_must_be_a_json_object(raw: bytes) -> None:
    with pytest.raises(InvalidRequest):
        parse_body(raw, ChatCompletionRequest)


def test_valid_chat_request_keeps_what_the_client_sent() -> None:
    req = parse_body(
        chat(
            stream=True,
            stream_options={"include_usage": True},
            max_completion_tokens=7,
            stop="END",
            seed=3,
            messages=[
                {"role": "system", "content": "be brief"},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                },
                {"role": "assistant", "content": None},
            ],
        ),
        ChatCompletionRequest,
    )
    assert req.include_usage() and req.token_limit() == 7 and req.stop_list() == ["END"]
    assert [m.text() for m in req.messages] == ["be brief", "ab", ""]


@pytest.mark.parametrize(
    ("prompt", "ok"),
    [
        ("hello", True),
        (["hello"], True),
        ([1, 2, 3], True),
        (["a", "b"], True),
        ([[1, 2], [3]], True),
        (["a", ""], False),
        ([[1], []], False),
        ([], False),
        ("", False),
    ],
)
def test_completion_prompt_forms(prompt: object, ok: bool) -> None:
    if ok:
        assert CompletionRequest(model="m", prompt=prompt).prompt == prompt  # type: ignore[arg-type]
    else:
        with pytest.raises((ValidationError, InvalidRequest)):
            CompletionRequest(model="m", prompt=prompt)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "field", [{"echo": True}, {"best_of": 3}, {"suffix": "x"}, {"n": 2, "best_of": 3}]
)
def test_unsupported_completion_options_are_refused(field: dict) -> None:
    with pytest.raises(InvalidRequest, match="not supported"):
        CompletionRequest(model="m", prompt="p", **field)


def test_completion_max_tokens_defaults_to_openai_16() -> None:
    assert CompletionRequest(model="m", prompt="p").max_tokens == 16


@pytest.mark.parametrize("inp", [[], [[1, 2]], [1, 2], [""] * 2049])
def test_embedding_input_must_be_text(inp: object) -> None:
    with pytest.raises((ValidationError, InvalidRequest)):
        EmbeddingRequest(model="m", input=inp)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "err",
    [
        InvalidRequest("bad", param="x"),
        ContextLengthExceeded("too long", param="messages"),
        ModelNotFound("gpt-9"),
    ],
)
def test_errors_survive_pickling_as_ray_sends_them(err: InvalidRequest) -> None:
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err)
    assert back.body() == err.body() and back.status == err.status


@pytest.mark.parametrize(
    ("seconds", "header"), [(0, "1"), (0.2, "1"), (1.0, "1"), (1.2, "2"), (4.5, "5")]
)
def test_retry_after_rounds_up_to_whole_seconds(seconds: float, header: str) -> None:
    assert retry_after(seconds) == {"Retry-After": header}


def test_tool_loop_messages_render_as_templates_read_them() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
    req = parse_body(
        chat(
            tools=[TOOL],
            tool_choice={"type": "function", "function": {"name": "f"}},
            parallel_tool_calls=False,
            messages=[
                *USER,
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": "42"},
            ],
        ),
        ChatCompletionRequest,
    )
    assert req.named_tool() == "f" and req.calls_tools()
    assistant, tool = (m.for_template() for m in req.messages[1:])
    # arguments as an object, as Hugging Face chat templates expect them
    assert assistant["tool_calls"][0]["function"] == {"name": "f", "arguments": {"x": 1}}
    assert tool == {"role": "tool", "content": "42", "tool_call_id": "c1"}


def test_logprob_counts_follow_each_endpoint() -> None:
    assert parse_body(chat(logprobs=True), ChatCompletionRequest).top_logprob_count() == 0
    both = parse_body(chat(logprobs=True, top_logprobs=4), ChatCompletionRequest)
    assert both.top_logprob_count() == 4
    assert parse_body(chat(), ChatCompletionRequest).top_logprob_count() is None
    assert CompletionRequest(model="m", prompt="p", logprobs=2).top_logprob_count() == 2
