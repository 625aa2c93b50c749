"""GET /v1/models/{model}, POST /tokenize, /detokenize and /v2/rerank over HTTP in
process: the local profile's services with the real tokenizers, fake models, an in-memory
quota store and a tenant that may use some models only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import yaml
from transformers import AutoTokenizer

from gateway import build
from gateway.api import make_api, route_labels
from gateway.auth import TenantsFile
from gateway.backends import Backends
from gateway.build import build_services, load_config
from gateway.metrics import GatewayMetrics
from gateway.timing import parse as parse_server_timing
from schemas.generation import GenerationChunk, ReplicaTimings
from tests.fakes import Clock, FakeEmbedder, FakeReranker, InMemoryQuotaStore, ScriptedModel
from tests.openai_spec import validate
from tests.paths import MODELS, ROOT

LLM, FAST, EMBEDDER = "smollm2-135m-instruct", "smollm2-135m-fast", "all-minilm-l6-v2"
RERANKER = "minilm-bi-encoder-rerank"
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]


class Rig:
    def __init__(self, models: list[str], requests_per_minute: float | None = None):
        profile = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
        args: dict[str, Any] = profile["applications"][0]["args"]
        args.pop("cache")  # the response cache needs Redis
        config = load_config(args)
        limits = (
            {} if requests_per_minute is None else {"requests": {"per_minute": requests_per_minute}}
        )
        tenants = TenantsFile.model_validate(
            {"tenants": [{"id": "local", "models": models, "limits": limits}]}
        )
        sources = {m.id: str(ROOT / m.model) for m in config.models}
        sources |= {e.id: str(ROOT / e.model) for e in [*config.embedders, *config.rerankers]}
        self.llms = {m.id: ScriptedModel() for m in config.models}

        async def healthy() -> None:
            return None

        encoders = [*config.embedders, *config.rerankers]
        backends = Backends(
            llms=self.llms,
            embedders={e.id: FakeEmbedder() for e in config.embedders},
            rerankers={r.id: FakeReranker() for r in config.rerankers},
            probes=dict.fromkeys([*self.llms, *(e.id for e in encoders)], healthy),
        )
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(build, "open_quota_store", lambda *_: InMemoryQuotaStore(Clock()))
            services = build_services(config, tenants, sources, backends, GatewayMetrics())
        self.app = make_api(services)

    def client(self) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app)
        return httpx.AsyncClient(transport=transport, base_url="http://gateway")


@pytest.fixture(scope="module")
def rig() -> Rig:
    if not (MODELS / "SmolLM2-135M-Instruct").exists():
        pytest.fail("models/ is not prepared: run scripts/setup.sh")
    return Rig(models=[LLM, EMBEDDER])  # not the fast tier, not the reranker


@pytest.fixture
async def client(rig: Rig) -> AsyncIterator[httpx.AsyncClient]:
    async with rig.client() as client:
        yield client


def not_found(reply: httpx.Response, param: str = "model") -> None:
    assert reply.status_code == 404, reply.text
    validate(reply.json(), "ErrorResponse")
    assert reply.json()["error"]["code"] == "model_not_found"
    assert reply.json()["error"]["param"] == param


def bad(reply: httpx.Response, param: str) -> None:
    assert reply.status_code == 400, reply.text
    validate(reply.json(), "ErrorResponse")
    assert reply.json()["error"]["param"] == param


# ------------------------------------------------------------------ /v1/models/{model}


async def test_every_listed_model_retrieves_the_card_the_list_shows(
    client: httpx.AsyncClient,
) -> None:
    listed = (await client.get("/v1/models")).json()["data"]
    assert [card["id"] for card in listed] == [LLM, EMBEDDER, "auto"]
    for card in listed:
        reply = await client.get(f"/v1/models/{card['id']}")
        assert reply.status_code == 200
        validate(reply.json(), "Model")
        assert reply.json() == card


@pytest.mark.parametrize(
    ("alias", "model"), [("default", LLM), ("text-embedding-default", EMBEDDER)]
)
async def test_an_alias_retrieves_its_models_card(
    client: httpx.AsyncClient, alias: str, model: str
) -> None:
    reply = await client.get(f"/v1/models/{alias}")
    assert reply.status_code == 200 and reply.json()["id"] == model


@pytest.mark.parametrize("name", ["nope", FAST, "fast", RERANKER, "rerank-default"])
async def test_unknown_and_forbidden_models_are_alike_not_found(
    client: httpx.AsyncClient, name: str
) -> None:
    not_found(await client.get(f"/v1/models/{name}"))


def test_a_retrieve_is_labelled_by_its_route_template() -> None:
    label = route_labels(["/v1/models", "/v1/models/{model:path}", "/tokenize"])
    assert label("/v1/models/default") == label("/v1/models/org/x") == "/v1/models/{model}"
    assert (label("/v1/models"), label("/tokenize"), label("/v2/nothing")) == (
        "/v1/models",
        "/tokenize",
        "other",
    )


async def test_auto_is_shown_only_to_tenants_that_may_use_its_default_model() -> None:
    async with Rig(models=[FAST]).client() as client:  # auto's default is the big tier
        listed = [card["id"] for card in (await client.get("/v1/models")).json()["data"]]
        assert listed == [FAST]
        not_found(await client.get("/v1/models/auto"))
        post = await client.post("/tokenize", json={"model": "auto", "prompt": "hi"})
        not_found(post)  # what the list hides, the routes refuse


# ------------------------------------------------------------------ /tokenize, /detokenize


def reference_ids(messages: list[dict[str, str]], **template: Any) -> list[int]:
    tok = AutoTokenizer.from_pretrained(MODELS / "SmolLM2-135M-Instruct")
    ids: Any = tok.apply_chat_template(messages, tokenize=True, **template)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


async def test_chat_tokens_are_the_prompt_a_chat_completion_sends_the_model(
    rig: Rig, client: httpx.AsyncClient
) -> None:
    chat = await client.post(
        "/v1/chat/completions", json={"model": "default", "messages": CHAT, "max_tokens": 4}
    )
    assert chat.status_code == 200, chat.text
    sent = rig.llms[LLM].calls[-1].prompt_token_ids  # what the quota charged for
    reply = await client.post("/tokenize", json={"model": "default", "messages": CHAT})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["tokens"] == sent == reference_ids(CHAT, add_generation_prompt=True)
    assert body == {"count": len(sent), "max_model_len": 2048, "tokens": sent, "token_strs": None}


WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


async def test_tools_are_counted_as_a_chat_with_tools_is_charged(
    rig: Rig, client: httpx.AsyncClient
) -> None:
    chat = await client.post(
        "/v1/chat/completions",
        json={"model": LLM, "messages": CHAT, "tools": [WEATHER], "max_tokens": 4},
    )
    assert chat.status_code == 200, chat.text
    sent = rig.llms[LLM].calls[-1].prompt_token_ids
    reply = await client.post(
        "/tokenize", json={"model": LLM, "messages": CHAT, "tools": [WEATHER]}
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["tokens"] == sent
    plain = await client.post("/tokenize", json={"model": LLM, "messages": CHAT})
    assert plain.json()["count"] < reply.json()["count"]  # the template rendered the tool


async def test_tokenize_options_as_vllm_has_them(client: httpx.AsyncClient) -> None:
    async def tokens(**body: Any) -> dict[str, Any]:
        reply = await client.post("/tokenize", json={"model": LLM, **body})
        assert reply.status_code == 200, reply.text
        return dict(reply.json())

    bare = await tokens(messages=CHAT, add_generation_prompt=False)
    assert bare["tokens"] == reference_ids(CHAT, add_generation_prompt=False)
    prefilled = [*CHAT, {"role": "assistant", "content": "Blue"}]
    open_turn = await tokens(messages=prefilled, continue_final_message=True)
    assert open_turn["tokens"] == reference_ids(prefilled, continue_final_message=True)
    text = await tokens(prompt="Name a colour.", return_token_strs=True)
    assert text["token_strs"] == ["Name", "Ġa", "Ġcolour", "."]
    assert text["count"] == len(text["tokens"]) == 4


async def test_detokenize_round_trips_the_tokens(client: httpx.AsyncClient) -> None:
    ids = (await client.post("/tokenize", json={"model": LLM, "messages": CHAT})).json()["tokens"]
    reply = await client.post("/detokenize", json={"model": "default", "tokens": ids})
    assert reply.status_code == 200
    text = reply.json()["prompt"]
    tok = AutoTokenizer.from_pretrained(MODELS / "SmolLM2-135M-Instruct")
    assert text == tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/tokenize", {"model": LLM}, "prompt"),
        ("/tokenize", {"model": LLM, "prompt": "a", "messages": CHAT}, "prompt"),
        ("/tokenize", {"model": LLM, "messages": []}, "messages"),
        (
            "/tokenize",
            {"model": LLM, "prompt": "a", "add_generation_prompt": False},
            "add_generation_prompt",
        ),
        (
            "/tokenize",
            {
                "model": LLM,
                "messages": CHAT,
                "continue_final_message": True,
                "add_generation_prompt": True,
            },
            "continue_final_message",
        ),
        ("/tokenize", {"model": LLM, "prompt": "a", "chat_template": "{{ 1 }}"}, "chat_template"),
        ("/tokenize", {"model": LLM, "prompt": "a", "tools": [WEATHER]}, "tools"),
        ("/detokenize", {"model": LLM, "tokens": []}, "tokens"),
        ("/detokenize", {"model": LLM, "tokens": [49152]}, "tokens"),
        ("/detokenize", {"model": LLM, "tokens": [-1]}, "tokens[0]"),
        ("/detokenize", {"model": LLM, "tokens": "1 2"}, "tokens"),
    ],
)
async def test_bad_input_is_a_400_naming_the_field(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], param: str
) -> None:
    bad(await client.post(path, json=body), param)


@pytest.mark.parametrize("path", ["/tokenize", "/detokenize"])
@pytest.mark.parametrize("model", ["nope", FAST, EMBEDDER])
async def test_a_model_the_tenant_cannot_use_is_not_found(
    client: httpx.AsyncClient, path: str, model: str
) -> None:
    body: dict[str, Any] = {"model": model, "prompt": "hi", "tokens": [1]}
    body.pop("tokens" if path == "/tokenize" else "prompt")
    not_found(await client.post(path, json=body))


async def test_each_call_takes_one_request_from_the_bucket_and_no_tokens() -> None:
    async with Rig(models=["*"], requests_per_minute=2).client() as client:
        first = await client.post("/tokenize", json={"model": LLM, "prompt": "a long prompt"})
        assert first.status_code == 200
        assert first.headers["x-ratelimit-remaining-requests"] == "1"
        second = await client.post("/detokenize", json={"model": LLM, "tokens": [1, 2]})
        assert second.status_code == 200
        third = await client.post("/tokenize", json={"model": LLM, "prompt": "a"})
        assert third.status_code == 429 and third.json()["error"]["type"] == "requests"


# ------------------------------------------------------------------------- /v2/rerank


async def test_v2_rerank_answers_in_coheres_v2_shape() -> None:
    docs = ["dogs bark at night", "a cat sat on a mat", "cat food and cat toys"]
    async with Rig(models=["*"]).client() as client:
        reply = await client.post(
            "/v2/rerank",
            json={"model": "rerank-default", "query": "cat", "documents": docs, "top_n": 2},
        )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert set(body) == {"id", "results", "meta"}
    assert [r["index"] for r in body["results"]] == [1, 2]  # the fake: shared words
    assert all(set(r) == {"index", "relevance_score"} for r in body["results"])
    assert body["meta"]["api_version"]["version"] == "2"
    assert body["meta"]["billed_units"] == {"search_units": 1}
    assert body["meta"]["tokens"]["input_tokens"] > 0


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"documents": [{"text": "a"}]}, "documents[0]"),
        ({"documents": ["a"], "return_documents": True}, "return_documents"),
        ({"documents": ["a"], "max_tokens_per_doc": 0}, "max_tokens_per_doc"),
        ({"documents": []}, "documents"),
        ({"documents": ["a", "b"], "top_n": 3}, "top_n"),
    ],
)
async def test_v2_rerank_refuses_what_v2_does_not_take(body: dict[str, Any], param: str) -> None:
    async with Rig(models=["*"]).client() as client:
        reply = await client.post(
            "/v2/rerank", json={"model": "rerank-default", "query": "q", **body}
        )
    bad(reply, param)


# Server-Timing: every stage the request went through, sent with the first byte


REPLICA = ReplicaTimings(replica_s=0.004, encode_s=0.001, queued_s=0.002, prefill_s=0.0005)


def first_chunk_with_timings(rig: Rig) -> None:
    model = rig.llms[LLM]
    model.delay_s = 0.02
    model.chunks = (
        GenerationChunk("Red", 5, 1, None, "r1", (1,), timings=REPLICA),
        GenerationChunk(".", 5, 2, "stop", None, (2,)),
    )


@pytest.mark.parametrize("stream", [False, True])
async def test_a_chat_reports_every_stage_and_the_replicas_share_of_ttft(
    rig: Rig, client: httpx.AsyncClient, stream: bool
) -> None:
    first_chunk_with_timings(rig)
    try:
        body = {"model": LLM, "messages": CHAT, "max_tokens": 4, "stream": stream}
        reply = await client.post("/v1/chat/completions", json=body)
    finally:
        rig.llms[LLM].chunks, rig.llms[LLM].delay_s = None, 0.0
    assert reply.status_code == 200, reply.text
    stages = parse_server_timing(reply.headers["server-timing"])
    before = ["auth", "parse", "admit", "route", "tok", "reserve", "ttft", "hop", "enc", "eq", "pf"]
    assert set(stages) == {*before, "total"}
    assert stages["ttft"] >= 20.0  # the model's delay
    assert stages["hop"] == pytest.approx(stages["ttft"] - 4.0, abs=0.02)
    assert (stages["enc"], stages["eq"], stages["pf"]) == (1.0, 2.0, 0.5)
    assert stages["total"] >= stages["ttft"] + stages["tok"]


async def test_a_refused_request_reports_the_stages_it_went_through(
    client: httpx.AsyncClient,
) -> None:
    body = {"model": "no-such-model", "messages": CHAT}
    reply = await client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 404
    assert set(parse_server_timing(reply.headers["server-timing"])) == {
        "auth",
        "parse",
        "admit",
        "total",
    }


async def test_a_model_without_timings_reports_ttft_alone(client: httpx.AsyncClient) -> None:
    body = {"model": LLM, "messages": CHAT, "max_tokens": 4}
    reply = await client.post("/v1/chat/completions", json=body)
    stages = parse_server_timing(reply.headers["server-timing"])
    assert "ttft" in stages and not {"hop", "enc", "eq", "pf"} & set(stages)


async def test_embeddings_report_their_stages(client: httpx.AsyncClient) -> None:
    body = {"model": "all-minilm-l6-v2", "input": "hello"}
    reply = await client.post("/v1/embeddings", json=body)
    assert reply.status_code == 200, reply.text
    stages = parse_server_timing(reply.headers["server-timing"])
    assert set(stages) == {"auth", "parse", "admit", "tok", "reserve", "model", "total"}
