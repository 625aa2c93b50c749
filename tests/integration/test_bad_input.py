"""Every bad input gets an OpenAI error body with the right status, and harms nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from schemas.errors import InvalidRequest
from schemas.generation import GenerationRequest, SamplingOptions
from tests.integration.conftest import TOKENS_KEY, Cluster
from tests.openai_spec import validate

pytestmark = pytest.mark.integration

MSG = [{"role": "user", "content": "hi"}]
LONG = "hello " * 3000  # ~3000 tokens > max_model_len 2048
CHAT_HEAD = b'{"model": "default", "messages": [{"role": "user", "content": '


def chat_raw(content: bytes, extra: bytes = b"") -> bytes:
    """A chat body as raw bytes, for what a JSON encoder would not write."""
    return CHAT_HEAD + content + b"}]" + extra + b"}"


# Requests the engine would refuse for their parameters or text: each a 400 before any
# engine is called (they once reached it and counted against the model's breaker).
ENGINE_REFUSALS: list[tuple[str, str, Any, int, str | None]] = [
    (
        "stop-empty-string",
        "/v1/chat/completions",
        {"model": "default", "messages": MSG, "stop": ""},
        400,
        "stop",
    ),
    (
        "stop-empty-in-list",
        "/v1/chat/completions",
        {"model": "fast", "messages": MSG, "stop": ["x", ""]},
        400,
        "stop",
    ),
    (
        "stop-oversized",
        "/v1/chat/completions",
        {"model": "default", "messages": MSG, "stop": "s" * 5000},
        400,
        "stop",
    ),
    (
        "min-tokens-above-max",
        "/v1/chat/completions",
        {"model": "default", "messages": MSG, "min_tokens": 50, "max_tokens": 5},
        400,
        "min_tokens",
    ),
    (
        "min-tokens-beyond-context",
        "/v1/chat/completions",
        {"model": "default", "messages": MSG, "min_tokens": 5000},
        400,
        "min_tokens",
    ),
    (
        "seed-beyond-64-bits",
        "/v1/chat/completions",
        {"model": "default", "messages": MSG, "seed": 2**64},
        400,
        "seed",
    ),
    (
        "seed-below-64-bits",
        "/v1/chat/completions",
        {"model": "fast", "messages": MSG, "seed": -(2**63) - 1},
        400,
        "seed",
    ),
    (
        "lone-surrogate",
        "/v1/chat/completions",
        chat_raw(b'"hi \\ud800"'),
        400,
        "messages[0].content",
    ),
    (
        "completion-stop-empty",
        "/v1/completions",
        {"model": "default", "prompt": "x", "stop": [""]},
        400,
        "stop",
    ),
    (
        "completion-min-tokens",
        "/v1/completions",
        {"model": "default", "prompt": "x", "min_tokens": 50},
        400,
        "min_tokens",
    ),
    (
        "completion-lone-surrogate",
        "/v1/completions",
        b'{"model": "default", "prompt": "\\udfff"}',
        400,
        "prompt",
    ),
]
MALFORMED_JSON: list[tuple[str, str, Any, int, str | None]] = [
    (
        "nested-50000",
        "/v1/chat/completions",
        b'{"model": "default", "messages": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        400,
        None,
    ),
    ("nan", "/v1/chat/completions", chat_raw(b'"hi"', b', "temperature": NaN'), 400, None),
    ("infinity", "/v1/chat/completions", chat_raw(b'"hi"', b', "top_p": Infinity'), 400, None),
    (
        "overflowing-number",
        "/v1/chat/completions",
        chat_raw(b'"hi"', b', "temperature": 1e999'),
        400,
        None,
    ),
    ("duplicate-keys", "/v1/chat/completions", chat_raw(b'"hi"', b', "model": "fast"'), 400, None),
    (
        "embedding-lone-surrogate",
        "/v1/embeddings",
        b'{"model": "all-minilm-l6-v2", "input": "\\ud800"}',
        400,
        "input",
    ),
]

CASES: list[tuple[str, str, Any, int, str | None]] = [
    # (id, path, body, status, param or code expected in the error)
    ("malformed-json", "/v1/chat/completions", b'{"model": "default", "messages": [', 400, None),
    ("not-an-object", "/v1/chat/completions", b"[1, 2, 3]", 400, None),
    ("missing-model", "/v1/chat/completions", {"messages": MSG}, 400, "model"),
    ("missing-messages", "/v1/chat/completions", {"model": "default"}, 400, "messages"),
    (
        "empty-messages",
        "/v1/chat/completions",
        {"model": "default", "messages": []},
        400,
        "messages",
    ),
    (
        "mistyped-temperature",
        "/v1/chat/completions",
        {"model": "default", "messages": MSG, "temperature": "hot"},
        400,
        "temperature",
    ),
    (
        "temperature-out-of-range",
        "/v1/chat/completions",
        {"model": "default", "messages": MSG, "temperature": 5},
        400,
        "temperature",
    ),
    (
        "max-tokens-zero",
        "/v1/chat/completions",
        {"model": "default", "messages": MSG, "max_tokens": 0},
        400,
        "max_tokens",
    ),
    (
        "n-over-max-choices",
        "/v1/chat/completions",
        {"model": "default", "messages": MSG, "n": 9},
        400,
        "n",
    ),
    (
        "tool-schema-invalid",
        "/v1/chat/completions",
        {
            "model": "default",
            "messages": MSG,
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 1}}}],
        },
        400,
        "tools",
    ),
    (
        "unknown-argument",
        "/v1/chat/completions",
        {"model": "default", "messages": MSG, "temprature": 1},
        400,
        "temprature",
    ),
    (
        "bad-role",
        "/v1/chat/completions",
        {"model": "default", "messages": [{"role": "robot", "content": "x"}]},
        400,
        "messages",
    ),
    (
        "unknown-model",
        "/v1/chat/completions",
        {"model": "gpt-17", "messages": MSG},
        404,
        "model_not_found",
    ),
    (
        "prompt-too-long",
        "/v1/chat/completions",
        {"model": "default", "messages": [{"role": "user", "content": LONG}]},
        400,
        "context_length_exceeded",
    ),
    (
        "prompt-too-long-stream",
        "/v1/chat/completions",
        {"model": "default", "stream": True, "messages": [{"role": "user", "content": LONG}]},
        400,
        "context_length_exceeded",
    ),
    (
        "max-tokens-beyond-context",
        "/v1/chat/completions",
        {"model": "default", "messages": MSG, "max_tokens": 5000},
        400,
        "context_length_exceeded",
    ),
    (
        "completion-echo",
        "/v1/completions",
        {"model": "default", "prompt": "x", "echo": True},
        400,
        "echo",
    ),
    (
        "completion-empty-prompt-in-list",
        "/v1/completions",
        {"model": "default", "prompt": ["a", ""]},
        400,
        "prompt",
    ),
    (
        "completion-prompts-times-n-over-max-choices",
        "/v1/completions",
        {"model": "default", "prompt": ["a", "b", "c"], "n": 3},
        400,
        "prompt",
    ),
    (
        "completion-bad-token-id",
        "/v1/completions",
        {"model": "default", "prompt": [999999999]},
        400,
        "prompt",
    ),
    (
        "embedding-empty-list",
        "/v1/embeddings",
        {"model": "all-minilm-l6-v2", "input": []},
        400,
        "input",
    ),
    (
        "embedding-empty-string",
        "/v1/embeddings",
        {"model": "all-minilm-l6-v2", "input": ""},
        400,
        "input",
    ),
    (
        "embedding-bad-format",
        "/v1/embeddings",
        {"model": "all-minilm-l6-v2", "input": "x", "encoding_format": "hex"},
        400,
        "encoding_format",
    ),
    (
        "embedding-unknown-model",
        "/v1/embeddings",
        {"model": "ada-002", "input": "x"},
        404,
        "model_not_found",
    ),
    (
        "embedding-with-llm",
        "/v1/embeddings",
        {"model": "default", "input": "x"},
        404,
        "model_not_found",
    ),
    (
        "chat-with-embedder",
        "/v1/chat/completions",
        {"model": "all-minilm-l6-v2", "messages": MSG},
        404,
        "model_not_found",
    ),
]


CASES += ENGINE_REFUSALS + MALFORMED_JSON


def post(cluster: Cluster, path: str, body: Any, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else cluster.auth
    url = f"{cluster.base_url}{path}"
    if isinstance(body, bytes):
        headers = {"content-type": "application/json", **headers}
        return httpx.post(url, content=body, headers=headers, timeout=60)
    return httpx.post(url, json=body, headers=headers, timeout=60)


@pytest.mark.parametrize(
    ("path", "body", "status", "expect"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_gets_openai_error(
    cluster: Cluster, path: str, body: Any, status: int, expect: str | None
) -> None:
    response = post(cluster, path, body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    payload = response.json()
    validate(payload, "ErrorResponse")
    error = payload["error"]
    assert error["message"] and "Traceback" not in error["message"]
    if expect is not None:
        assert any(expect in (s or "") for s in (error["param"], error["code"])), error


def test_unknown_route_and_method(cluster: Cluster) -> None:
    missing = httpx.get(f"{cluster.base_url}/v1/nothing-here", headers=cluster.auth)
    assert missing.status_code == 404
    validate(missing.json(), "ErrorResponse")
    wrong_method = httpx.get(f"{cluster.base_url}/v1/chat/completions", headers=cluster.auth)
    assert wrong_method.status_code == 405
    validate(wrong_method.json(), "ErrorResponse")


def test_service_still_answers_after_bad_inputs(client: Any) -> None:
    reply = client.chat.completions.create(model="default", messages=MSG, max_tokens=4)
    assert reply.usage.completion_tokens >= 1


def test_refused_requests_from_one_tenant_leave_every_model_to_the_others(cluster: Cluster) -> None:
    """50 requests the engine would refuse, from one tenant, open no circuit: another
    tenant is then served by the model it asked for, with no fallback."""
    for i in range(50):
        _, path, body, status, _ = ENGINE_REFUSALS[i % len(ENGINE_REFUSALS)]
        assert post(cluster, path, body).status_code == status
    for model in ("default", "fast"):
        body = {"model": model, "messages": MSG, "max_tokens": 4}
        reply = post(cluster, "/v1/chat/completions", body, key=TOKENS_KEY)
        assert reply.status_code == 200, reply.text
        asked = next(m["id"] for m in cluster.args["models"] if model in m["aliases"])
        assert reply.headers["x-raygate-model"] == asked
        assert "x-raygate-passed-over" not in reply.headers


@pytest.mark.parametrize(
    ("sampling", "param"),
    [
        (SamplingOptions(max_tokens=4, stop=[""]), None),
        (SamplingOptions(max_tokens=4, min_tokens=50), "min_tokens"),
        (SamplingOptions(max_tokens=4, seed=2**64), "seed"),
        (SamplingOptions(max_tokens=4, temperature=-1.0), "temperature"),
    ],
)
def test_the_deployment_refuses_what_the_engine_would_as_a_client_error(
    cluster: Cluster, sampling: SamplingOptions, param: str | None
) -> None:
    """Behind the gateway's checks, the LLM deployment itself answers a 4xx (not a
    failure of the model) for options its engine refuses."""
    request = GenerationRequest("direct-1", sampling, messages=[{"role": "user", "content": "hi"}])
    stream = cluster.llm_handle().options(stream=True).generate.remote(request)
    with pytest.raises(InvalidRequest) as err:
        list(stream)
    assert err.value.status == 400 and err.value.param == param
