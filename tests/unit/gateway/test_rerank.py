"""RerankService against a fake reranker that scores by shared words."""

from __future__ import annotations

from typing import Literal

import pytest

from gateway.rerank import CALLS_PER_REQUEST, RerankerTarget, RerankService
from gateway.routing.catalog import ModelCatalog
from schemas.errors import InvalidRequest, ModelNotFound
from schemas.rerank import RerankRequest, ScoreRequest
from tests.fakes import FakeReranker, TextWordCounter

Kind = Literal["cross-encoder", "bi-encoder"]


def service(
    fake: FakeReranker, kind: Kind = "cross-encoder", truncate: bool = True
) -> RerankService:
    target = RerankerTarget(fake, TextWordCounter(), kind, max_documents=3, truncate=truncate)
    return RerankService(ModelCatalog({"rr": target}, {"rerank-default": "rr"}))


DOCS = ["the cat sat", "dogs bark", "a cat and a dog"]


async def test_results_are_sorted_by_score_with_top_n_and_documents() -> None:
    svc = service(FakeReranker())
    req = RerankRequest.model_validate(
        {"model": "rerank-default", "query": "cat dog", "documents": DOCS, "top_n": 2}
    )
    prepared = await svc.prepare(req.model, [(req.query, d) for d in req.texts()])
    response = await svc.rerank(prepared, req.top_n, return_documents=True)
    assert response.model == "rr"
    assert [(r.index, r.relevance_score) for r in response.results] == [(2, 2.0), (0, 1.0)]
    assert response.results[0].document is not None
    assert response.results[0].document.text == "a cat and a dog"
    assert response.usage.total_tokens == sum(len(d.split()) + 2 for d in DOCS)
    bare = await svc.rerank(prepared, None, return_documents=False)
    assert len(bare.results) == 3
    assert "document" not in bare.results[0].model_dump()


async def test_score_pairs_one_to_many_and_many_to_many() -> None:
    fake = FakeReranker()
    svc = service(fake)
    one = ScoreRequest(model="rr", text_1="cat", text_2=DOCS)
    scores = await svc.score(await svc.prepare(one.model, one.pairs()))
    assert [d.score for d in scores.data] == [1.0, 0.0, 1.0]
    assert len(fake.calls) == 1  # one query: one call
    many = ScoreRequest(model="rr", text_1=["cat", "dogs", "cat"], text_2=DOCS)
    scores = await svc.score(await svc.prepare(many.model, many.pairs()))
    assert [(d.index, d.score) for d in scores.data] == [(0, 1.0), (1, 1.0), (2, 1.0)]


async def test_a_many_to_many_score_has_few_deployment_calls_in_flight() -> None:
    fake = FakeReranker()
    target = RerankerTarget(fake, TextWordCounter(), "cross-encoder", 100, truncate=True)
    svc = RerankService(ModelCatalog({"rr": target}, {}))
    pairs = [(f"query {i}", "doc") for i in range(100)]  # 100 distinct queries
    scores = await svc.score(await svc.prepare("rr", pairs))
    assert len(scores.data) == 100 and len(fake.calls) == 100
    assert fake.most_in_flight == CALLS_PER_REQUEST


async def test_limits_and_access() -> None:
    svc = service(FakeReranker())
    with pytest.raises(InvalidRequest, match="at most 3"):
        await svc.prepare("rr", [("q", d) for d in [*DOCS, "one more"]])
    with pytest.raises(ModelNotFound):
        await svc.prepare("rr", [("q", "d")], may_use=lambda _: False)
    long_doc = "w " * 5  # 5 words + 2 = 7 tokens
    await svc.prepare("rr", [("q", long_doc)])  # the model truncates: accepted
    strict = service(FakeReranker(), kind="bi-encoder", truncate=False)
    with pytest.raises(InvalidRequest, match=r"documents\[0\] has 7 tokens"):
        await strict.prepare("rr", [("q", long_doc)])
    pair_limit = service(FakeReranker(), truncate=False)  # cross-encoder: q + d together
    with pytest.raises(InvalidRequest, match="query and document together"):
        await pair_limit.prepare("rr", [("two words", "three more words")])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"query": "q", "documents": []}, "documents must not be empty"),
        ({"query": " ", "documents": ["d"]}, "query must not be empty"),
        ({"query": "q", "documents": ["d", ""]}, r"documents\[1\] is empty"),
        ({"query": "q", "documents": ["d"], "top_n": 2}, "top_n must be between"),
        ({"query": "q", "documents": ["d"], "top_n": 0}, "top_n must be between"),
        ({"query": "q", "documents": [{"txt": "d"}]}, "text"),
    ],
)
def test_bad_rerank_requests(body: dict[str, object], message: str) -> None:
    from pydantic import ValidationError

    with pytest.raises((InvalidRequest, ValidationError), match=message):
        RerankRequest.model_validate({"model": "rr", **body})


async def test_v2_ranks_without_documents_and_bills_search_units() -> None:
    svc = service(FakeReranker())
    prepared = await svc.prepare("rerank-default", [("cat dog", d) for d in DOCS])
    response = await svc.rerank_v2(prepared, top_n=2)
    assert [(r.index, r.relevance_score) for r in response.results] == [(2, 2.0), (0, 1.0)]
    assert response.meta.billed_units.search_units == 1
    assert response.meta.api_version.version == "2"
    assert response.meta.tokens.input_tokens == sum(len(d.split()) + 2 for d in DOCS)


async def test_max_tokens_per_doc_cuts_documents_before_they_are_scored() -> None:
    fake = FakeReranker()
    svc = service(fake)
    pairs = [("dog", "a cat and a dog"), ("dog", "dog")]
    prepared = await svc.prepare("rr", pairs, max_tokens_per_doc=3)
    assert [d for _, d in prepared.pairs] == ["a cat and", "dog"]
    response = await svc.rerank_v2(prepared, top_n=None)
    assert [(r.index, r.relevance_score) for r in response.results] == [(1, 1.0), (0, 0.0)]
    assert response.meta.tokens.input_tokens == (3 + 2) + (1 + 2)  # the cut texts' tokens
