"""POST /v1/rerank (Cohere v1/Jina), /v2/rerank (Cohere v2), /rerank
(text-embeddings-inference) and /v1/score (vLLM)."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from fastapi import Request
from fastapi.responses import Response

from gateway.api.common import RouteTable, body_of, json_reply, metered, principal_of
from schemas.errors import NotFound
from schemas.rerank import RerankRequest, RerankV2Request, ScoreRequest, TeiRerankRequest

if TYPE_CHECKING:
    from gateway.build import Services


class RerankRoutes:
    def __init__(self, services: Services):
        self._services = services

    def table(self) -> RouteTable:
        return [
            ("POST", "/v1/rerank", self.rerank, RerankRequest),
            ("POST", "/v2/rerank", self.rerank_v2, RerankV2Request),
            ("POST", "/rerank", self.tei_rerank, TeiRerankRequest),
            ("POST", "/v1/score", self.score, ScoreRequest),
        ]

    async def rerank(self, request: Request) -> Response:
        services = self._services
        principal = principal_of(services, request)
        body = await body_of(services, request, RerankRequest)
        pairs = [(body.query, doc) for doc in body.texts()]
        response, lease = await metered(
            services,
            request,
            principal,
            "rerank",
            partial(services.rerank.prepare, body.model, pairs, principal.may_use),
            lambda p: services.rerank.rerank(p, body.top_n, body.return_documents),
            lambda r: r.usage.total_tokens,
        )
        return json_reply(response, lease.headers)

    async def rerank_v2(self, request: Request) -> Response:
        services = self._services
        principal = principal_of(services, request)
        body = await body_of(services, request, RerankV2Request)
        pairs = [(body.query, doc) for doc in body.documents]
        prepare = partial(
            services.rerank.prepare,
            body.model,
            pairs,
            principal.may_use,
            max_tokens_per_doc=body.max_tokens_per_doc,
        )
        response, lease = await metered(
            services,
            request,
            principal,
            "rerank",
            prepare,
            lambda p: services.rerank.rerank_v2(p, body.top_n),
            lambda r: r.meta.tokens.input_tokens,
        )
        return json_reply(response, lease.headers)

    async def tei_rerank(self, request: Request) -> Response:
        """Hugging Face text-embeddings-inference's rerank route, on the first reranker."""
        services = self._services
        principal = principal_of(services, request)
        body = await body_of(services, request, TeiRerankRequest)
        model = services.rerank.default_model
        if model is None:
            raise NotFound("No reranker is deployed.")
        pairs = [(body.query, text) for text in body.texts]
        (ranks, _), lease = await metered(
            services,
            request,
            principal,
            "rerank",
            partial(services.rerank.prepare, model, pairs, principal.may_use, "texts"),
            lambda p: services.rerank.tei_rerank(p, body.return_text),
            lambda r: r[1],
        )
        payload = "[" + ",".join(r.model_dump_json() for r in ranks) + "]"
        return Response(payload, media_type="application/json", headers=lease.headers)

    async def score(self, request: Request) -> Response:
        services = self._services
        principal = principal_of(services, request)
        body = await body_of(services, request, ScoreRequest)
        response, lease = await metered(
            services,
            request,
            principal,
            "rerank",
            partial(services.rerank.prepare, body.model, body.pairs(), principal.may_use, "text_2"),
            services.rerank.score,
            lambda r: r.usage.total_tokens,
        )
        return json_reply(response, lease.headers)
