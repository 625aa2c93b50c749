import base64

import numpy as np
import pytest

from deployments.router import ModelRouter
from gateway.embeddings import EmbeddingBackend, EmbeddingService
from schemas.embeddings import EmbeddingResult
from schemas.errors import InvalidRequest
from schemas.openai import EmbeddingRequest
from tests.openai_spec import validate


class FakeEmbedder:
    """Vector i of a call is [len(text), i, 0, ...]: lets tests see order and content."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def embed(self, texts: list[str]) -> EmbeddingResult:
        self.calls.append(texts)
        vectors = np.zeros((len(texts), 4), dtype=np.float32)
        for i, text in enumerate(texts):
            vectors[i, :2] = (len(text), i)
        return EmbeddingResult(vectors, [len(t.split()) for t in texts])


def service(fake: FakeEmbedder) -> EmbeddingService:
    router: ModelRouter[EmbeddingBackend] = ModelRouter({"mini": fake}, {"emb": "mini"})
    return EmbeddingService(router)


async def test_float_embeddings_keep_input_order_and_count_tokens() -> None:
    fake = FakeEmbedder()
    body = await service(fake).embed(EmbeddingRequest(model="emb", input=["a b", "ccc"]))
    dumped = body.model_dump(mode="json")
    validate(dumped, "CreateEmbeddingResponse")
    assert dumped["model"] == "mini"
    assert [d["index"] for d in dumped["data"]] == [0, 1]
    assert dumped["data"][1]["embedding"] == [3.0, 1.0, 0.0, 0.0]
    assert dumped["usage"] == {"prompt_tokens": 3, "total_tokens": 3}


async def test_base64_is_little_endian_float32_of_the_same_vector() -> None:
    fake = FakeEmbedder()
    svc = service(fake)
    floats = await svc.embed(EmbeddingRequest(model="mini", input="hello"))
    b64 = await svc.embed(EmbeddingRequest(model="mini", input="hello", encoding_format="base64"))
    raw = b64.data[0].embedding
    assert isinstance(raw, str)
    decoded = np.frombuffer(base64.b64decode(raw), dtype="<f4")
    assert decoded.tolist() == floats.data[0].embedding


async def test_empty_strings_and_foreign_dimensions_are_refused() -> None:
    fake = FakeEmbedder()
    with pytest.raises(InvalidRequest, match="empty"):
        await service(fake).embed(EmbeddingRequest(model="mini", input=["ok", ""]))
    assert fake.calls == []
    with pytest.raises(InvalidRequest, match="dimensions"):
        await service(fake).embed(EmbeddingRequest(model="mini", input="x", dimensions=2))
    same = await service(fake).embed(EmbeddingRequest(model="mini", input="x", dimensions=4))
    assert len(same.data[0].embedding) == 4
