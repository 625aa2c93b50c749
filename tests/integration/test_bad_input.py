"""Every bad input gets an OpenAI error body with the right status, and harms nothing."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.integration.conftest import Cluster
from tests.openai_spec import validate

pytestmark = pytest.mark.integration

MSG = [{"role": "user", "content": "hi"}]
LONG = "hello " * 3000  # ~3000 tokens > max_model_len 2048

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
        "n-greater-than-one",
        "/v1/chat/completions",
        {"model": "default", "messages": MSG, "n": 3},
        400,
        "n",
    ),
    (
        "tools-unsupported",
        "/v1/chat/completions",
        {
            "model": "default",
            "messages": MSG,
            "tools": [{"type": "function", "function": {"name": "f"}}],
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
        "completion-two-prompts",
        "/v1/completions",
        {"model": "default", "prompt": ["a", "b"]},
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


@pytest.mark.parametrize(
    ("path", "body", "status", "expect"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_gets_openai_error(
    cluster: Cluster, path: str, body: Any, status: int, expect: str | None
) -> None:
    url = f"{cluster.base_url}{path}"
    if isinstance(body, bytes):
        headers = {"content-type": "application/json", **cluster.auth}
        response = httpx.post(url, content=body, headers=headers, timeout=60)
    else:
        response = httpx.post(url, json=body, headers=cluster.auth, timeout=60)
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
