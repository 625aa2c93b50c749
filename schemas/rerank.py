"""Rerank and score wire models.

- POST /v1/rerank: the Cohere v1 / Jina shape (`model`, `query`, `documents` as strings or
  objects with `text`, `top_n`, `return_documents`) -> `results` sorted by score.
- POST /v2/rerank: Cohere's v2 shape (`documents` as strings only, `max_tokens_per_doc`;
  no `return_documents`) -> `results` sorted by score and Cohere's `meta`.
- POST /rerank: Hugging Face text-embeddings-inference's shape (`query`, `texts`,
  `return_text`, `raw_scores`) -> a bare list sorted by score.
- POST /v1/score: vLLM's shape (`model`, `text_1`, `text_2`) -> one score per pair.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator
from pydantic import SerializerFunctionWrapHandler as Handler

from schemas.errors import InvalidRequest


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _non_empty(texts: list[str], param: str) -> None:
    for i, text in enumerate(texts):
        if not text.strip():
            raise InvalidRequest(f"{param}[{i}] is empty", param=param)


class RerankDocument(_Request):
    text: str


class _RerankFields(_Request):
    model: str = Field(min_length=1)
    query: str
    top_n: int | None = None

    @model_validator(mode="after")
    def _check(self) -> _RerankFields:
        texts = self.texts()
        if not self.query.strip():
            raise InvalidRequest("query must not be empty", param="query")
        if not texts:
            raise InvalidRequest("documents must not be empty", param="documents")
        _non_empty(texts, "documents")
        if self.top_n is not None and not 1 <= self.top_n <= len(texts):
            raise InvalidRequest(
                f"top_n must be between 1 and the number of documents ({len(texts)})",
                param="top_n",
            )
        return self

    def texts(self) -> list[str]:
        raise NotImplementedError


class RerankRequest(_RerankFields):
    documents: list[str | RerankDocument]
    return_documents: bool = False

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class RerankV2Request(_RerankFields):
    documents: list[str]
    max_tokens_per_doc: int | None = Field(
        default=None, ge=1, description="Each document is cut after this many tokens."
    )
    # Cohere orders queued work by it; it never changes an answer, and here every
    # request waits its turn alike.
    priority: int | None = Field(default=None, ge=0)

    def texts(self) -> list[str]:
        return self.documents


class TeiRerankRequest(_Request):
    query: str
    texts: list[str]
    return_text: bool = False
    raw_scores: bool = False
    truncate: bool | None = None
    truncation_direction: Literal["right", "Right"] | None = None

    @model_validator(mode="after")
    def _check(self) -> TeiRerankRequest:
        if not self.query.strip():
            raise InvalidRequest("query must not be empty", param="query")
        if not self.texts:
            raise InvalidRequest("texts must not be empty", param="texts")
        _non_empty(self.texts, "texts")
        if self.raw_scores:
            raise InvalidRequest("raw_scores is not supported", param="raw_scores")
        return self


class ScoreRequest(_Request):
    model: str = Field(min_length=1)
    text_1: str | list[str]
    text_2: str | list[str]

    @model_validator(mode="after")
    def _check(self) -> ScoreRequest:
        first, second = self.firsts(), self.seconds()
        if not first or not second:
            raise InvalidRequest("text_1 and text_2 must not be empty", param="text_1")
        _non_empty(first, "text_1")
        _non_empty(second, "text_2")
        if len(first) not in (1, len(second)):
            raise InvalidRequest(
                "text_1 must be one text or as many texts as text_2", param="text_1"
            )
        return self

    def firsts(self) -> list[str]:
        return [self.text_1] if isinstance(self.text_1, str) else list(self.text_1)

    def seconds(self) -> list[str]:
        return [self.text_2] if isinstance(self.text_2, str) else list(self.text_2)

    def pairs(self) -> list[tuple[str, str]]:
        first, second = self.firsts(), self.seconds()
        if len(first) == 1:
            first = first * len(second)
        return list(zip(first, second, strict=True))


# -------------------------------------------------------------------------- responses


class RerankUsage(_Response):
    prompt_tokens: int
    total_tokens: int


class _OmitNone(_Response):
    """Optional parts that were not asked for are left out, not sent as null."""

    @model_serializer(mode="wrap")
    def _omit_none(self, handler: Handler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if v is not None}


class RerankResult(_OmitNone):
    index: int
    relevance_score: float
    document: RerankDocument | None = None


class RerankResponse(_Response):
    id: str
    model: str
    results: list[RerankResult]
    usage: RerankUsage


class ApiVersion(_Response):
    version: str = "2"
    is_experimental: bool = False


class BilledUnits(_Response):
    search_units: int  # one per query and up to 100 documents, as Cohere bills


class MetaTokens(_Response):
    input_tokens: int
    output_tokens: int = 0


class RerankV2Meta(_Response):
    api_version: ApiVersion = ApiVersion()
    billed_units: BilledUnits
    tokens: MetaTokens


class RerankV2Result(_Response):
    index: int
    relevance_score: float


class RerankV2Response(_Response):
    id: str
    results: list[RerankV2Result]
    meta: RerankV2Meta


class TeiRank(_OmitNone):
    index: int
    score: float
    text: str | None = None


class ScoreData(_Response):
    index: int
    object: Literal["score"] = "score"
    score: float


class ScoreResponse(_Response):
    id: str
    object: Literal["list"] = "list"
    created: int
    model: str
    data: list[ScoreData]
    usage: RerankUsage
