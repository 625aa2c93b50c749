"""Strict JSON bodies: every malformed shape is a 400 with OpenAI's error body."""

from __future__ import annotations

import json

import pytest

from gateway.body import MAX_DEPTH, parse_body, parse_json
from schemas.errors import InvalidRequest
from schemas.openai import ChatCompletionRequest


def nested(depth: int) -> bytes:
    return b'{"model": "m", "messages": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize(
    "raw",
    [
        nested(50_000),  # beyond the decoder's recursion limit
        nested(MAX_DEPTH + 1),  # within it, beyond ours
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'{"a": -Infinity}',
        b'{"a": 1e999}',  # overflows to inf without being a constant
        b'{"a": 1, "a": 2}',
        b'{"x": {"b": 1, "b": 1}}',
        b'{"a": ' + b"1" * 5000 + b"}",  # past Python's int digit limit (ValueError)
        b'{"a": "\xed\xa0\x80"}',  # a surrogate encoded as UTF-8 bytes
        b'{"a": "\xff"}',
    ],
    ids=[
        "depth-50000",
        "depth-limit",
        "nan",
        "infinity",
        "minus-infinity",
        "overflowing-float",
        "duplicate-key",
        "nested-duplicate-key",
        "huge-integer",
        "utf8-surrogate",
        "invalid-utf8",
    ],
)
def test_malformed_json_is_a_400(raw: bytes) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_json(raw)
    assert err.value.status == 400 and err.value.type == "invalid_request_error"


def test_lone_surrogate_escape_names_the_field() -> None:
    raw = b'{"model": "m", "messages": [{"role": "user", "content": "hi \\ud800 there"}]}'
    with pytest.raises(InvalidRequest, match="surrogate") as err:
        parse_body(raw, ChatCompletionRequest)
    assert err.value.param == "messages[0].content"


def test_lone_surrogate_in_a_key_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="surrogate"):
        parse_json(b'{"\\udc00": 1}')


def test_paired_surrogates_are_the_character_they_encode() -> None:
    # json.dumps escapes non-ASCII as UTF-16 pairs by default: clients send these.
    raw = json.dumps({"model": "m", "messages": [{"role": "user", "content": "smile \U0001f600"}]})
    assert "\\ud83d\\ude00" in raw
    req = parse_body(raw.encode(), ChatCompletionRequest)
    assert req.messages[0].text() == "smile \U0001f600"


def test_depth_up_to_the_limit_is_accepted() -> None:
    data = parse_json(b'{"a": ' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}")
    assert isinstance(data["a"], list)


def test_the_depth_error_names_the_top_level_field() -> None:
    with pytest.raises(InvalidRequest, match="nested") as err:
        parse_json(nested(MAX_DEPTH + 1))
    assert err.value.param == "messages"


def test_a_string_past_the_character_cap_is_refused_before_any_tokenizer() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x" * 101}]}
    with pytest.raises(InvalidRequest, match="101 characters") as err:
        parse_body(json.dumps(body).encode(), ChatCompletionRequest, max_text_chars=100)
    assert err.value.param == "messages[0].content"
    body["messages"][0]["content"] = "x" * 100  # type: ignore[index]
    parse_body(json.dumps(body).encode(), ChatCompletionRequest, max_text_chars=100)


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"stream": 5}, "stream"),  # field names that look like a union's branch names
        ({"stream": True, "stream_options": 5}, "stream_options"),
        ({"stop": 5}, "stop"),  # not `stop.constrained-str`
        ({"stop": ["a", 5]}, "stop"),  # the first branch's error: not a string
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"metadata": {"k": 5}}, "metadata.k"),
    ],
)
def test_a_validation_error_names_the_place_in_the_body(
    fields: dict[str, object], param: str
) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_body(json.dumps({**CHAT, **fields}).encode(), ChatCompletionRequest)
    assert err.value.param == param, err.value.message


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b'{"": null}', "model"),
        (b'{"model": "m", "messages": [{"content": "x"}]}', "messages[0].role"),
    ],
)
def test_a_missing_field_is_named(raw: bytes, param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_body(raw, ChatCompletionRequest)
    assert err.value.param == param
