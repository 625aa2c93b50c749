"""The OpenAI API of a real raygate, driven with the official `openai` client."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import numpy as np
import pytest
from transformers import AutoTokenizer

from gateway.timing import parse as parse_server_timing
from tests.integration.conftest import ROOT, Cluster
from tests.openai_spec import validate, validate_completion_chunk

pytestmark = pytest.mark.integration

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def post(cluster: Cluster, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{cluster.base_url}{path}", json=body, headers=cluster.auth, timeout=120)


def sse_payloads(text: str) -> list[Any]:
    import json

    events = [line[len("data: ") :] for line in text.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_health_and_ready(cluster: Cluster) -> None:
    assert httpx.get(f"{cluster.base_url}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{cluster.base_url}/ready", timeout=30)
    assert ready.status_code == 200
    assert set(ready.json()["deployments"]) == cluster.deployed_models()


def test_models_lists_every_served_model(cluster: Cluster, client: Any) -> None:
    raw = httpx.get(f"{cluster.base_url}/v1/models", headers=cluster.auth).json()
    validate(raw, "ListModelsResponse")
    listed = {m.id for m in client.models.list()}
    assert listed == cluster.deployed_models() | {"auto"}


def test_chat_answers_with_exact_usage(cluster: Cluster, client: Any) -> None:
    reply = client.chat.completions.create(
        model="default", messages=QUESTION, max_tokens=24, temperature=0, seed=1
    )
    validate(reply.model_dump(mode="json", exclude_unset=True), "CreateChatCompletionResponse")
    assert reply.model == cluster.llm_id  # alias resolved
    assert reply.choices[0].message.content
    tok = AutoTokenizer.from_pretrained(ROOT / "models" / "SmolLM2-135M-Instruct")
    encoded: Any = tok.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=True)
    prompt_ids = encoded["input_ids"] if hasattr(encoded, "keys") else encoded
    assert reply.usage.prompt_tokens == len(prompt_ids)
    assert 1 <= reply.usage.completion_tokens <= 24
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_completion_knows_paris(client: Any) -> None:
    reply = client.completions.create(
        model="default", prompt="The capital of France is", max_tokens=4, temperature=0
    )
    assert "Paris" in reply.choices[0].text


def test_fixed_length_generation_is_charged_exactly(client: Any) -> None:
    reply = client.chat.completions.create(
        model="default",
        messages=QUESTION,
        max_completion_tokens=17,
        extra_body={"ignore_eos": True},
    )
    assert reply.usage.completion_tokens == 17
    assert reply.choices[0].finish_reason == "length"


def test_streamed_chat_equals_non_streamed_and_validates(cluster: Cluster, client: Any) -> None:
    params = {"model": cluster.llm_id, "messages": QUESTION, "max_tokens": 20, "temperature": 0}
    answered = client.chat.completions.with_raw_response.create(**params)
    whole = answered.parse()
    raw = post(
        cluster,
        "/v1/chat/completions",
        {**params, "stream": True, "stream_options": {"include_usage": True}},
    )
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("text/event-stream")
    for headers in (answered.headers, raw.headers):  # through Serve's proxy, engine included
        stages = parse_server_timing(headers["server-timing"])
        assert {"admit", "tok", "ttft", "hop", "enc", "eq", "pf", "total"} <= set(stages)
    chunks = sse_payloads(raw.text)
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == whole.choices[0].message.content
    assert chunks[-1]["usage"] == whole.usage.model_dump(exclude_none=True)
    # and the same through the SDK's own stream parser
    streamed = client.chat.completions.create(**params, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == text


@pytest.mark.parametrize("stream", [False, True])
def test_completions_validate(cluster: Cluster, stream: bool) -> None:
    body = {
        "model": cluster.llm_id,
        "prompt": "Once upon a time",
        "max_tokens": 8,
        "stream": stream,
    }
    raw = post(cluster, "/v1/completions", body)
    assert raw.status_code == 200
    if stream:
        chunks = sse_payloads(raw.text)
        for chunk in chunks:
            validate_completion_chunk(chunk)
        assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    else:
        validate(raw.json(), "CreateCompletionResponse")
        assert raw.json()["usage"]["completion_tokens"] <= 8


def test_sampling_parameters_are_honoured(client: Any) -> None:
    common = {"model": "default", "messages": QUESTION, "max_tokens": 12}
    a = client.chat.completions.create(**common, temperature=1.0, seed=42, top_p=0.9)
    b = client.chat.completions.create(**common, temperature=1.0, seed=42, top_p=0.9)
    assert a.choices[0].message.content == b.choices[0].message.content  # seeded
    stopped = client.chat.completions.create(
        **common, temperature=0, stop=[" "], presence_penalty=0.5, frequency_penalty=0.5
    )
    assert " " not in stopped.choices[0].message.content
    assert stopped.choices[0].finish_reason == "stop"


def test_embeddings_single_list_and_base64(cluster: Cluster, client: Any) -> None:
    texts = [
        "The cat sat on the mat.",
        "Stock markets fell sharply today.",
        "A kitten rested on a rug.",
    ]
    raw = post(cluster, "/v1/embeddings", {"model": cluster.embedder_id, "input": texts})
    validate(raw.json(), "CreateEmbeddingResponse")
    batch = client.embeddings.create(model="text-embedding-default", input=texts)
    vectors = np.array([d.embedding for d in batch.data])
    assert vectors.shape == (3, 384) and [d.index for d in batch.data] == [0, 1, 2]
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    sims = vectors @ vectors.T
    assert sims[0, 2] > sims[0, 1]  # the cat is closer to the kitten than to stocks
    single = client.embeddings.create(model=cluster.embedder_id, input=texts[1])
    assert np.allclose(single.data[0].embedding, vectors[1], atol=1e-5)
    b64 = post(
        cluster,
        "/v1/embeddings",
        {"model": cluster.embedder_id, "input": texts[1], "encoding_format": "base64"},
    )
    decoded = np.frombuffer(base64.b64decode(b64.json()["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, vectors[1], atol=1e-5)
    assert batch.usage.prompt_tokens > single.usage.prompt_tokens > 2
