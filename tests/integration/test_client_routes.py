"""GET /v1/models/{model}, POST /tokenize and /detokenize, and both Cohere rerank
clients against a real raygate: the openai SDK, httpx and the `cohere` package."""

from __future__ import annotations

from typing import Any

import cohere
import httpx
import openai
import pytest
from transformers import AutoTokenizer

from tests.integration.conftest import MAIN_KEY, RESTRICTED_KEY, ROOT, Cluster
from tests.openai_spec import validate

pytestmark = pytest.mark.integration

CHAT = [
    {"role": "system", "content": "Answer in one word."},
    {"role": "user", "content": "What is the capital of France?"},
]
QUERY = "How do I reset my password?"
DOCS = [
    "Bananas are yellow.",
    "To reset your password, click 'Forgot password' on the sign-in page.",
    "Our office is in Paris.",
    "Passwords must have twelve characters.",
]


def post(cluster: Cluster, path: str, body: Any, key: str = MAIN_KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(f"{cluster.base_url}{path}", json=body, headers=headers, timeout=120)


def refused(reply: httpx.Response, status: int, param: str) -> None:
    assert reply.status_code == status, reply.text
    validate(reply.json(), "ErrorResponse")
    assert reply.json()["error"]["param"] == param


# ------------------------------------------------------------------ /v1/models/{model}


def test_retrieve_gives_the_card_the_list_shows(cluster: Cluster, client: Any) -> None:
    listed = {m.id: m for m in client.models.list()}
    for name in listed:
        raw = httpx.get(f"{cluster.base_url}/v1/models/{name}", headers=cluster.auth)
        validate(raw.json(), "Model")
        assert client.models.retrieve(name) == listed[name]
    assert client.models.retrieve("default").id == cluster.llm_id  # an alias: its model
    assert client.models.retrieve("rerank-default").id in listed


def test_retrieve_refuses_unknown_and_forbidden_models(cluster: Cluster, client: Any) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        client.models.retrieve("no-such-model")
    body: Any = raised.value.body  # the SDK hands over the `error` object
    assert body["code"] == "model_not_found" and body["param"] == "model"
    restricted = httpx.get(
        f"{cluster.base_url}/v1/models/default",
        headers={"Authorization": f"Bearer {RESTRICTED_KEY}"},
    )
    refused(restricted, 404, "model")  # exists, but not for this tenant: alike


# ------------------------------------------------------------------ /tokenize, /detokenize


def test_chat_token_count_is_the_prompt_tokens_a_chat_is_charged(
    cluster: Cluster, client: Any
) -> None:
    counted = post(cluster, "/tokenize", {"model": "default", "messages": CHAT})
    assert counted.status_code == 200, counted.text
    body = counted.json()
    assert set(body) == {"count", "max_model_len", "tokens", "token_strs"}
    assert body["count"] == len(body["tokens"]) and body["max_model_len"] == 2048
    reply = client.chat.completions.create(model="default", messages=CHAT, max_tokens=1)
    assert body["count"] == reply.usage.prompt_tokens  # counted by the engine's tokenizer


WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_tokens_of_a_chat_with_tools_are_its_prompt_tokens(cluster: Cluster, client: Any) -> None:
    counted = post(cluster, "/tokenize", {"model": "default", "messages": CHAT, "tools": [WEATHER]})
    assert counted.status_code == 200, counted.text
    reply = client.chat.completions.create(
        model="default", messages=CHAT, tools=[WEATHER], max_tokens=1
    )
    assert counted.json()["count"] == reply.usage.prompt_tokens


def test_detokenize_round_trips_tokenize(cluster: Cluster) -> None:
    tok = AutoTokenizer.from_pretrained(ROOT / "models" / "SmolLM2-135M-Instruct")
    text = tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    ids = post(cluster, "/tokenize", {"model": cluster.llm_id, "messages": CHAT}).json()["tokens"]
    back = post(cluster, "/detokenize", {"model": "default", "tokens": ids})
    assert back.status_code == 200 and back.json() == {"prompt": text}
    strings = post(
        cluster, "/tokenize", {"model": "default", "prompt": text, "return_token_strs": True}
    )
    assert strings.json()["tokens"] == ids  # the rendered text tokenizes to the same ids
    assert strings.json()["token_strs"] == tok.convert_ids_to_tokens(ids)


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/tokenize", {"model": "no-such-model", "prompt": "hi"}, 404, "model"),
        ("/detokenize", {"model": "no-such-model", "tokens": [1]}, 404, "model"),
        ("/tokenize", {"model": "default"}, 400, "prompt"),
        ("/detokenize", {"model": "default", "tokens": []}, 400, "tokens"),
        ("/detokenize", {"model": "default", "tokens": [10**7]}, 400, "tokens"),
        ("/tokenize", {"model": "rerank-default", "prompt": "hi"}, 404, "model"),
    ],
)
def test_bad_input_is_refused_with_param(
    cluster: Cluster, path: str, body: dict[str, Any], status: int, param: str
) -> None:
    refused(post(cluster, path, body), status, param)


@pytest.mark.parametrize("path", ["/tokenize", "/detokenize"])
def test_the_tokenizer_routes_need_a_key(cluster: Cluster, path: str) -> None:
    reply = httpx.post(f"{cluster.base_url}{path}", json={"model": "default", "prompt": "a"})
    assert reply.status_code == 401 and reply.json()["error"]["code"] == "invalid_api_key"


# ------------------------------------------------------------------------ Cohere clients


def assert_ranked(results: list[Any]) -> None:
    scores = [r.relevance_score for r in results]
    assert scores == sorted(scores, reverse=True)
    assert results[0].index == 1  # the password reset answer


def test_cohere_v1_client_reranks(cluster: Cluster) -> None:
    co = cohere.Client(api_key=MAIN_KEY, base_url=cluster.base_url, timeout=60, max_retries=0)
    full = co.rerank(model="rerank-default", query=QUERY, documents=DOCS)
    assert sorted(r.index for r in full.results) == [0, 1, 2, 3]
    assert_ranked(full.results)
    top = co.rerank(
        model="rerank-default", query=QUERY, documents=DOCS, top_n=2, return_documents=True
    )
    assert [r.index for r in top.results] == [r.index for r in full.results[:2]]
    assert top.results[0].document is not None and top.results[0].document.text == DOCS[1]


def test_cohere_v2_client_reranks(cluster: Cluster) -> None:
    co = cohere.ClientV2(api_key=MAIN_KEY, base_url=cluster.base_url, timeout=60, max_retries=0)
    full = co.rerank(model="rerank-default", query=QUERY, documents=DOCS)
    assert sorted(r.index for r in full.results) == [0, 1, 2, 3]
    assert_ranked(full.results)
    assert full.meta is not None and full.meta.api_version is not None
    assert full.meta.api_version.version == "2"
    assert full.meta.billed_units is not None and full.meta.billed_units.search_units == 1
    top = co.rerank(model="rerank-default", query=QUERY, documents=DOCS, top_n=1)
    assert [(r.index, r.relevance_score) for r in top.results] == [
        (full.results[0].index, pytest.approx(full.results[0].relevance_score, abs=1e-4))
    ]
    cut = co.rerank(model="rerank-default", query=QUERY, documents=DOCS, max_tokens_per_doc=2)
    assert input_tokens(cut) < input_tokens(full)  # the documents were cut


def input_tokens(response: Any) -> float:
    assert response.meta is not None and response.meta.tokens is not None
    return float(response.meta.tokens.input_tokens)


def test_cohere_v2_client_gets_the_error_of_a_bad_request(cluster: Cluster) -> None:
    co = cohere.ClientV2(api_key=MAIN_KEY, base_url=cluster.base_url, timeout=60, max_retries=0)
    with pytest.raises(cohere.BadRequestError):
        co.rerank(model="rerank-default", query=QUERY, documents=[])
    with pytest.raises(cohere.NotFoundError):
        co.rerank(model="no-such-reranker", query=QUERY, documents=DOCS)
