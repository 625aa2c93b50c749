"""Rerank and score through the gateway: the local profile's bi-encoder reranker."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.integration.conftest import MAIN_KEY, RESTRICTED_KEY, Cluster

QUERY = "How do I reset my password?"
DOCS = [
    "Bananas are yellow.",
    "To reset your password, click 'Forgot password' on the sign-in page.",
    "Our office is in Paris.",
    "Passwords must have twelve characters.",
]


def reranker(cluster: Cluster) -> str:
    return str(cluster.args["rerankers"][0]["id"])


def post(cluster: Cluster, path: str, body: Any, key: str = MAIN_KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(f"{cluster.base_url}{path}", json=body, headers=headers, timeout=60)


def test_rerank_orders_by_score_with_top_n_and_documents(cluster: Cluster) -> None:
    body = {"model": "rerank-default", "query": QUERY, "documents": DOCS}
    full = post(cluster, "/v1/rerank", body)
    assert full.status_code == 200, full.text
    results = full.json()["results"]
    assert results[0]["index"] == 1
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True) and len(results) == 4
    assert "document" not in results[0] and full.json()["model"] == reranker(cluster)
    assert full.json()["usage"]["total_tokens"] > 0
    objects = [{"text": d} for d in DOCS]
    top = post(cluster, "/v1/rerank", {**body, "documents": objects, "top_n": 2,
                                        "return_documents": True})  # fmt: skip
    assert [r["index"] for r in top.json()["results"]] == [r["index"] for r in results[:2]]
    assert top.json()["results"][0]["document"] == {"text": DOCS[1]}
    assert "x-ratelimit-remaining-tokens" in top.headers


def test_concurrent_requests_get_the_same_answers_as_sequential(cluster: Cluster) -> None:
    bodies = [
        {"model": reranker(cluster), "query": f"{QUERY} ({i})", "documents": DOCS[i % 4 :]}
        for i in range(16)
    ]
    sequential = [post(cluster, "/v1/rerank", b).json()["results"] for b in bodies]
    with ThreadPoolExecutor(16) as pool:
        concurrent = list(pool.map(lambda b: post(cluster, "/v1/rerank", b), bodies))
    for one, together in zip(sequential, concurrent, strict=True):
        assert together.status_code == 200
        got = together.json()["results"]
        assert [r["index"] for r in got] == [r["index"] for r in one]
        for a, b in zip(got, one, strict=True):
            assert a["relevance_score"] == pytest.approx(b["relevance_score"], abs=1e-4)


def test_tei_rerank_and_score_shapes(cluster: Cluster) -> None:
    tei = post(cluster, "/rerank", {"query": QUERY, "texts": DOCS, "return_text": True})
    assert tei.status_code == 200, tei.text
    ranks = tei.json()
    assert isinstance(ranks, list) and ranks[0]["index"] == 1 and ranks[0]["text"] == DOCS[1]
    assert set(ranks[1]) == {"index", "score", "text"}
    score = post(cluster, "/v1/score", {"model": reranker(cluster), "text_1": QUERY,
                                        "text_2": DOCS})  # fmt: skip
    assert score.status_code == 200, score.text
    data = score.json()["data"]
    assert [d["index"] for d in data] == [0, 1, 2, 3]
    by_rank = {r["index"]: r["score"] for r in ranks}
    assert all(d["score"] == pytest.approx(by_rank[d["index"]], abs=1e-4) for d in data)


def test_models_lists_the_reranker(cluster: Cluster) -> None:
    models = httpx.get(
        f"{cluster.base_url}/v1/models", headers={"Authorization": f"Bearer {MAIN_KEY}"}
    ).json()
    assert reranker(cluster) in {m["id"] for m in models["data"]}


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [
        ("/v1/rerank", {"query": QUERY, "documents": []}, 400, "documents must not be empty"),
        ("/v1/rerank", {"query": QUERY, "documents": DOCS, "top_n": 9}, 400, "top_n"),
        ("/v1/rerank", {"query": "", "documents": DOCS}, 400, "query"),
        ("/v1/rerank", {"query": QUERY, "documents": ["x"] * 1001}, 400, "at most 1000"),
        ("/v1/rerank", {"query": QUERY, "documents": [7]}, 400, "documents"),
        ("/v1/score", {"text_1": ["a", "b"], "text_2": DOCS}, 400, "text_1"),
        ("/rerank", {"query": QUERY, "texts": DOCS, "raw_scores": True}, 400, "raw_scores"),
    ],
)
def test_bad_input_is_a_400_with_a_clear_message(
    cluster: Cluster, path: str, body: dict[str, Any], status: int, fragment: str
) -> None:
    if path != "/rerank":
        body = {"model": reranker(cluster), **body}
    response = post(cluster, path, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert fragment in error["message"] and error["type"] == "invalid_request_error"


def test_unknown_or_forbidden_reranker_is_a_404(cluster: Cluster) -> None:
    body = {"model": "nope", "query": QUERY, "documents": DOCS}
    assert post(cluster, "/v1/rerank", body).status_code == 404
    forbidden = {**body, "model": reranker(cluster)}
    assert post(cluster, "/v1/rerank", forbidden, RESTRICTED_KEY).status_code == 404
