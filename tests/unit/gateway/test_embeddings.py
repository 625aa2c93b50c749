import base64

import numpy as np
import pytest

from gateway.embeddings import EmbedderTarget, EmbeddingService
from gateway.routing.catalog import ModelCatalog
from schemas.errors import InvalidRequest, ModelNotFound
from schemas.openai import EmbeddingRequest, EmbeddingResponse
from tests.fakes import FakeEmbedder, TextWordCounter
from tests.openai_spec import validate


def service(fake: FakeEmbedder, truncate: bool = True) -> EmbeddingService:
    target = EmbedderTarget(fake, TextWordCounter(), truncate)
    router: ModelCatalog[EmbedderTarget] = ModelCatalog({"mini": target}, {"emb": "mini"})
    return EmbeddingService(router)


async def embed(svc: EmbeddingService, req: EmbeddingRequest) -> EmbeddingResponse:
    return await svc.embed(req, await svc.prepare(req))


async def test_float_embeddings_keep_input_order_and_count_tokens() -> None:
    fake = FakeEmbedder()
    svc = service(fake)
    prepared = await svc.prepare(EmbeddingRequest(model="emb", input=["a b", "ccc"]))
    assert prepared.reserved_tokens == 7 and prepared.model_id == "mini"
    body = await embed(svc, EmbeddingRequest(model="emb", input=["a b", "ccc"]))
    dumped = body.model_dump(mode="json")
    validate(dumped, "CreateEmbeddingResponse")
    assert dumped["model"] == "mini"
    assert [d["index"] for d in dumped["data"]] == [0, 1]
    assert dumped["data"][1]["embedding"] == [3.0, 1.0, 0.0, 0.0]
    assert dumped["usage"] == {"prompt_tokens": 3, "total_tokens": 3}


async def test_base64_is_little_endian_float32_of_the_same_vector() -> None:
    fake = FakeEmbedder()
    svc = service(fake)
    floats = await embed(svc, EmbeddingRequest(model="mini", input="hello"))
    b64 = await embed(svc, EmbeddingRequest(model="mini", input="hello", encoding_format="base64"))
    raw = b64.data[0].embedding
    assert isinstance(raw, str)
    decoded = np.frombuffer(base64.b64decode(raw), dtype="<f4")
    assert decoded.tolist() == floats.data[0].embedding


async def test_empty_strings_and_foreign_dimensions_are_refused() -> None:
    fake = FakeEmbedder()
    with pytest.raises(InvalidRequest, match="empty"):
        await embed(service(fake), EmbeddingRequest(model="mini", input=["ok", ""]))
    assert fake.calls == []
    with pytest.raises(InvalidRequest, match="dimensions"):
        await embed(service(fake), EmbeddingRequest(model="mini", input="x", dimensions=2))
    same = await embed(service(fake), EmbeddingRequest(model="mini", input="x", dimensions=4))
    with pytest.raises(ModelNotFound):
        await service(fake).prepare(EmbeddingRequest(model="mini", input="x"), lambda _: False)
    assert len(same.data[0].embedding) == 4


async def test_over_long_inputs_are_refused_unless_truncation_is_on() -> None:
    long_text = "one two three four five six seven"  # 7 words + 2 = 9 tokens > 8
    req = EmbeddingRequest(model="mini", input=["short", long_text])
    await service(FakeEmbedder()).prepare(req)  # truncated by the model: accepted
    with pytest.raises(
        InvalidRequest, match=r"input\[1\] has 9 tokens; this model reads at most 8"
    ):
        await service(FakeEmbedder(), truncate=False).prepare(req)
