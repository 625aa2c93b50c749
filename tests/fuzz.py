"""Fuzzing the HTTP API: what is sent and what every reply must be.

Requests come from three sources: the gateway's own OpenAPI document and OpenAI's
request schemas (schemathesis, in its positive mode, valid by the schema, and its
negative mode, which breaks it), and raw bodies (random bytes, truncated JSON, deep
nesting, huge numbers, non-objects, bad Unicode). The property every reply must have:
no 5xx, a complete answer within the time limit (no hang), an OpenAI error body for
every refusal, and a stream that ends with `[DONE]`.

Shared by the in-process run over fakes (tests/unit/gateway/test_fuzz_api.py) and the
run against a real cluster (tests/integration/test_fuzz_api.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import Case
from schemathesis.core import NOT_SET
from schemathesis.generation import GenerationMode
from schemathesis.schemas import BaseSchema

from gateway.config import AppConfig
from tests.openai_spec import SPEC_PATH, validate

# The routes that read a JSON body, each with the kind of model its body names (None:
# it names none) and a body it accepts (mutations start from it).
BODIES: dict[str, tuple[str | None, dict[str, Any]]] = {
    "/v1/chat/completions": (
        "generation",
        {"model": "default", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
    ),
    "/v1/completions": ("generation", {"model": "default", "prompt": "hi", "max_tokens": 4}),
    "/v1/embeddings": ("embedding", {"model": "text-embedding-default", "input": "hi"}),
    "/v1/rerank": ("rerank", {"model": "rerank-default", "query": "q", "documents": ["a"]}),
    "/v2/rerank": ("rerank", {"model": "rerank-default", "query": "q", "documents": ["a"]}),
    "/tokenize": (
        "tokenizer",
        {"model": "default", "messages": [{"role": "user", "content": "hi"}]},
    ),
    "/detokenize": ("tokenizer", {"model": "default", "tokens": [1, 2]}),
    "/rerank": (None, {"query": "q", "texts": ["a", "b"]}),
    "/v1/score": ("rerank", {"model": "rerank-default", "text_1": "a", "text_2": ["b"]}),
}
POST_PATHS = list(BODIES)
GET_PATHS = ["/v1/models", "/v1/models/{model}", "/health", "/ready"]
# OpenAI's request schema of each route it defines.
OPENAI_REQUESTS = {
    "/v1/chat/completions": "CreateChatCompletionRequest",
    "/v1/completions": "CreateCompletionRequest",
    "/v1/embeddings": "CreateEmbeddingRequest",
}
MODES = list(GenerationMode)  # positive (valid by the schema) and negative (breaks it)


def fuzz_settings(max_examples: int) -> settings:
    """Deterministic (the same requests on every run), no example database, no deadline
    (each request has its own time limit) and no health check that slow generation of
    large schemas would trip."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )


@cache
def openai_schema() -> BaseSchema:
    """An OpenAPI document of OpenAI's request schemas, one POST operation per route."""
    spec = json.loads(SPEC_PATH.read_text())
    paths = {
        path: {
            "post": {
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}
                    },
                },
                "responses": {"200": {"description": "OK"}},
            }
        }
        for path, name in OPENAI_REQUESTS.items()
    }
    doc = {
        "openapi": "3.0.3",  # OpenAI's schemas use 3.0's `nullable`
        "info": {"title": "OpenAI requests", "version": spec["openapi_version"]},
        "paths": paths,
        "components": spec["components"],
    }
    return schemathesis.openapi.from_dict(doc)


def app_schema(document: Mapping[str, Any]) -> BaseSchema:
    """The gateway's own OpenAPI document (`app.openapi()` or GET /openapi.json)."""
    return schemathesis.openapi.from_dict(dict(document))


def served_models(config: AppConfig) -> dict[str, list[str]]:
    """The names a request may give, by kind: ids and aliases (and `auto`); the
    tokenizer routes (/tokenize, /detokenize) take the generation models' names."""
    generation = [name for m in config.models for name in (m.id, *m.aliases)]
    if config.routing.auto is not None:
        generation.append(config.routing.auto.name)
    return {
        "generation": generation,
        "tokenizer": generation,
        "embedding": [name for e in config.embedders for name in (e.id, *e.aliases)],
        "rerank": [name for r in config.rerankers for name in (r.id, *r.aliases)],
    }


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        body = b"" if self.content is None else self.content[:300]
        return f"{self.method} {self.path} {body!r}"


def overrides(
    path: str, models: Mapping[str, Sequence[str]], fixed: Mapping[str, Any] | None = None
) -> st.SearchStrategy[dict[str, Any]]:
    """Fields to set in a generated JSON object body: often a served model (generated
    names are almost never one, and would stop every request at model lookup), often
    `stream` on generation routes, and `fixed` always."""
    kind = BODIES[path][0] if path in BODIES else None
    names = list(models[kind]) if kind else []
    parts: dict[str, st.SearchStrategy[Any]] = {}
    if names:
        parts["model"] = st.sampled_from([None, *names])
    if kind == "generation":
        parts["stream"] = st.sampled_from([None, True])
    return st.fixed_dictionaries(parts).map(
        lambda drawn: {k: v for k, v in drawn.items() if v is not None} | dict(fixed or {})
    )


def from_case(case: Case, override: Mapping[str, Any]) -> Request:
    """The request schemathesis generated, with `override` set in an object body."""
    body = case.body
    headers = {k: str(v) for k, v in (case.headers or {}).items()}
    if body is NOT_SET:
        return Request(case.method, case.formatted_path, None, headers)
    if isinstance(body, dict):
        body = {**body, **override}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers.setdefault("content-type", case.media_type or "application/json")
    return Request(case.method, case.formatted_path, content, headers)


def case_requests(
    schema: BaseSchema,
    path: str,
    method: str,
    mode: GenerationMode,
    models: Mapping[str, Sequence[str]],
    fixed: Mapping[str, Any] | None = None,
) -> st.SearchStrategy[Request]:
    """Requests to one operation of `schema` in `mode`, with `overrides`."""
    cases = schema[path][method].as_strategy(generation_mode=mode)
    return st.builds(from_case, cases, overrides(path, models, fixed))


# ------------------------------------------------------------ one field of a good body

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=32),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)


def field_requests(
    schema: BaseSchema,
    path: str,
    models: Mapping[str, Sequence[str]],
    fixed: Mapping[str, Any] | None = None,
) -> st.SearchStrategy[Request]:
    """A body the route accepts with up to three of its fields taken from a body that is
    valid by `schema` and up to one field (known or not) set to any JSON value: most
    requests pass the other checks and reach the model."""
    cases = schema[path]["POST"].as_strategy(generation_mode=GenerationMode.POSITIVE)

    @st.composite
    def requests(draw: st.DrawFn) -> Request:
        valid = draw(cases).body
        valid = valid if isinstance(valid, dict) else {}
        taken = draw(st.sets(st.sampled_from(sorted(valid) or [""]), max_size=3))
        known = sorted({*valid, *BODIES[path][1], "unknown_field"})
        anything = draw(st.dictionaries(st.sampled_from(known), JSON, max_size=1))
        body = {
            **BODIES[path][1],
            **draw(overrides(path, models, fixed)),
            **{k: valid[k] for k in taken if k in valid},
            **anything,
            **(fixed or {}),
        }
        return Request(
            "POST", path, json.dumps(body).encode(), {"content-type": "application/json"}
        )

    return requests()


# ------------------------------------------------------------------------ raw bodies

HUGE_NUMBERS = [
    b"1e999",
    b"-1e999",
    b"1" * 5000,  # past Python's int-string conversion limit
    b"9" * 400,
    b"0." + b"0" * 5000 + b"1",
    b"1e-99999",
    b"123456789012345678901234567890",
    b"-9223372036854775809",
    b"18446744073709551616",
]
NUMERIC_FIELDS = [
    "max_tokens",
    "max_completion_tokens",
    "n",
    "seed",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "min_tokens",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "dimensions",
    "top_n",
    "max_tokens_per_doc",
    "tokens",
    "model",
    "messages",
    "prompt",
    "input",
    "query",
    "documents",
    "texts",
    "text_1",
    "text_2",
]
MALFORMED = [
    b"",
    b"{",
    b"}",
    b"[]",
    b"null",
    b"0",
    b'"text"',
    b"{'model': 'default'}",
    b'{"model": NaN}',
    b'{"temperature": Infinity}',
    b'{"model": "default", "model": "default"}',
    b'{"model": "\\ud800"}',
    b'{"\\udfff": 1}',
    b'{"model": "\xed\xa0\x80"}',  # a surrogate, UTF-8 encoded
    b'{"model": "\xff\xfe"}',
    b"\xef\xbb\xbf{}",  # a byte-order mark
    b'{"model": "default"} trailing',
    b'{"model": "default",}',
]


def _with_field(base: dict[str, Any], name: str, literal: bytes) -> bytes:
    """`base` as JSON with `name` set to the raw JSON text `literal`."""
    rest = {k: v for k, v in base.items() if k != name}
    head = json.dumps(rest).encode()[:-1]
    sep = b", " if rest else b""
    return head + sep + json.dumps(name).encode() + b": " + literal + b"}"


def _nested(depth: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    if kind == "object":
        return b'{"a": ' * depth + b"1" + b"}" * depth
    return b"[" * depth  # never closed


def raw_bodies(path: str) -> st.SearchStrategy[bytes]:
    """Bodies for a POST route that are not what a schema would generate."""
    base = BODIES[path][1]
    valid = json.dumps(base).encode()
    nesting = st.builds(
        _nested, st.integers(1, 200_000), st.sampled_from(["array", "object", "open"])
    )
    deep_field = st.builds(
        lambda name, depth: _with_field(base, name, _nested(depth, "array")),
        st.sampled_from(sorted(base)),
        st.integers(1, 5000),
    )
    numbers = st.one_of(
        st.sampled_from(HUGE_NUMBERS),
        st.integers(-(2**256), 2**256).map(lambda n: str(n).encode()),
        st.floats(allow_nan=False, allow_infinity=False).map(lambda f: repr(f).encode()),
    )
    return st.one_of(
        st.binary(max_size=512),
        st.integers(0, len(valid) - 1).map(lambda cut: valid[:cut]),  # truncated JSON
        nesting,
        deep_field,
        st.builds(_with_field, st.just(base), st.sampled_from(NUMERIC_FIELDS), numbers),
        st.sampled_from(MALFORMED),
        st.binary(min_size=1, max_size=64).map(lambda junk: valid[:-1] + junk),
    )


def raw_requests(path: str) -> st.SearchStrategy[Request]:
    return st.builds(
        lambda body: Request("POST", path, body, {"content-type": "application/json"}),
        raw_bodies(path),
    )


# ---------------------------------------------------------------------- the property


@dataclass
class Tally:
    """What a fuzz run sent and got, for its report."""

    requests: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    streams: int = 0
    error_events: int = 0

    def summary(self) -> str:
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(self.by_status.items()))
        return (
            f"{self.requests} requests ({statuses}); {self.streams} streams, "
            f"{self.error_events} ended by an error event"
        )


def check_error_body(body: Any, where: str) -> None:
    """`body` is OpenAI's error body: {"error": {message, type, param, code}}."""
    assert isinstance(body, dict) and set(body) == {"error"}, f"{where}: not an error body"
    error = body["error"]
    assert isinstance(error, dict), f"{where}: error is not an object"
    assert isinstance(error.get("message"), str), f"{where}: error.message"
    assert isinstance(error.get("type"), str), f"{where}: error.type"
    assert "param" in error and isinstance(error["param"], str | None), f"{where}: error.param"
    assert "code" in error and isinstance(error["code"], str | None), f"{where}: error.code"
    validate(body, "ErrorResponse")


def _params(body: Any) -> dict[str, Any]:
    """Every place in `body` as a `param` names it (`messages[0].content`), and its value."""
    places: dict[str, Any] = {}
    pending: list[tuple[str, Any]] = [("", body)]
    while pending and len(places) < 10_000:
        at, node = pending.pop()
        if isinstance(node, dict):
            children = [(f"{at}.{key}" if at else key, value) for key, value in node.items()]
        elif isinstance(node, list):
            children = [(f"{at}[{i}]", value) for i, value in enumerate(node)]
        else:
            continue
        places.update(children)
        pending.extend(children)
    return places


def check_param(param: str | None, content: bytes | None, where: str) -> None:
    """A refusal's `param` names a place in the body, or a field missing from an object."""
    try:
        body = json.loads(content or b"")
    except (ValueError, RecursionError):
        return  # not JSON: nothing to name
    if param is None or not isinstance(body, dict):
        return
    places = _params(body)
    parent = param.rpartition(".")[0]
    missing = not param.endswith("]") and isinstance(places.get(parent) if parent else body, dict)
    assert param in places or missing, f"{where}: param {param!r} is not in the body"


def check_stream(text: str, where: str) -> int:
    """A finished SSE stream: JSON events, at most one error event (an OpenAI error body,
    not an internal error), then `[DONE]`. Returns how many error events it had (0 or 1)."""
    events = [e for e in text.split("\n\n") if e]
    assert events and events[-1] == "data: [DONE]", (
        f"{where}: the stream did not end: {text[-300:]}"
    )
    errors = 0
    for i, event in enumerate(events[:-1]):
        assert event.startswith("data: "), f"{where}: not an SSE data event: {event[:200]}"
        payload = json.loads(event.removeprefix("data: "))
        if "error" in payload:
            check_error_body(payload, where)
            assert payload["error"]["type"] != "internal_error", f"{where}: {payload}"
            assert i == len(events) - 2, f"{where}: events after an error event"
            errors += 1
    return errors


def check_reply(request: Request, response: httpx.Response, tally: Tally) -> None:
    """No 5xx; a refusal has OpenAI's error body; a stream ends with [DONE]."""
    where = f"{request} -> {response.status_code}"
    tally.requests += 1
    tally.by_status[response.status_code] = tally.by_status.get(response.status_code, 0) + 1
    assert response.status_code < 500, f"{where}: {response.text[:500]}"
    if not response.is_success:
        try:
            body = response.json()
        except ValueError:
            raise AssertionError(f"{where}: the body is not JSON: {response.text[:300]}") from None
        check_error_body(body, where)
        check_param(body["error"]["param"], request.content, where)
    elif response.headers.get("content-type", "").startswith("text/event-stream"):
        tally.streams += 1
        tally.error_events += check_stream(response.text, where)


async def exchange(
    client: httpx.AsyncClient, request: Request, timeout_s: float, tally: Tally
) -> None:
    """Send `request`, read its whole reply within `timeout_s` (else it hangs: fail) and
    check it."""
    try:
        async with asyncio.timeout(timeout_s):
            response = await client.request(
                request.method, request.path, content=request.content, headers=request.headers
            )
    except TimeoutError:
        raise AssertionError(f"{request}: no complete reply within {timeout_s} s") from None
    check_reply(request, response, tally)
