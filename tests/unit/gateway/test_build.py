"""build_services + make_api without Ray: the local profile's services over fake backends,
driven over HTTP in process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import yaml

from gateway.api import make_api
from gateway.api.models import Readiness
from gateway.auth import load_tenants
from gateway.backends import Backends
from gateway.build import Services, build_services, load_config
from gateway.metrics import GatewayMetrics
from tests.fakes import FakeEmbedder, FakeReranker, ScriptedModel
from tests.paths import MODELS, ROOT


class Unhealthy(Exception):
    pass


def local_services(broken: str | None = None, **gateway: Any) -> Services:
    """The local profile's services (`gateway` options changed); every deployment a fake,
    `broken` failing its probe."""
    profile = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    args: dict[str, Any] = profile["applications"][0]["args"]
    args["gateway"] = {**args.get("gateway", {}), **gateway}
    config = load_config(args)
    tenants = load_tenants(ROOT / config.auth.tenants_file)
    sources = {m.id: str(ROOT / m.model) for m in config.models}
    sources |= {e.id: str(ROOT / e.model) for e in [*config.embedders, *config.rerankers]}
    ids = [m.id for m in config.models] + [e.id for e in [*config.embedders, *config.rerankers]]

    def probe(name: str) -> Any:
        async def check() -> None:
            if name == broken:
                raise Unhealthy(name)

        return check

    backends = Backends(
        llms={m.id: ScriptedModel() for m in config.models},
        embedders={e.id: FakeEmbedder() for e in config.embedders},
        rerankers={r.id: FakeReranker() for r in config.rerankers},
        probes={name: probe(name) for name in ids},
    )
    return build_services(config, tenants, sources, backends, GatewayMetrics())


@pytest.fixture(scope="module")
def services() -> Services:
    if not (MODELS / "SmolLM2-135M-Instruct").exists():
        pytest.fail("models/ is not prepared: run scripts/setup.sh")
    return local_services()


async def get(services: Services, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=make_api(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        return await client.get(path)


async def test_models_lists_every_deployment_and_auto(services: Services) -> None:
    reply = await get(services, "/v1/models")
    assert reply.status_code == 200
    ids = [card["id"] for card in reply.json()["data"]]
    assert ids == [*services.probes, "auto"]


async def test_ready_names_the_deployment_that_fails_its_probe() -> None:
    broken = local_services(broken="all-minilm-l6-v2")
    reply = await get(broken, "/ready")
    assert reply.status_code == 503
    report = reply.json()["deployments"]
    assert report["all-minilm-l6-v2"] == "unhealthy"  # no internals in the body
    assert {state for name, state in report.items() if name != "all-minilm-l6-v2"} == {"ok"}


async def test_unknown_routes_get_openai_error_bodies(services: Services) -> None:
    reply = await get(services, "/v1/nothing-here")
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "not_found"
    assert (await get(services, "/health")).json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("path", "model"),
    [
        ("/v1/chat/completions", "ChatCompletionRequest"),
        ("/v1/completions", "CompletionRequest"),
        ("/v1/embeddings", "EmbeddingRequest"),
        ("/v1/rerank", "RerankRequest"),
        ("/v2/rerank", "RerankV2Request"),
        ("/rerank", "TeiRerankRequest"),
        ("/v1/score", "ScoreRequest"),
        ("/tokenize", "TokenizeRequest"),
        ("/detokenize", "DetokenizeRequest"),
    ],
)
async def test_the_openapi_document_describes_each_body_the_routes_read(
    services: Services, path: str, model: str
) -> None:
    doc = (await get(services, "/openapi.json")).json()
    body = doc["paths"][path]["post"]["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["schema"] == {
        "$ref": f"#/components/schemas/{model}"
    }
    assert doc["components"]["schemas"][model]["additionalProperties"] is False
    assert "requestBody" not in doc["paths"]["/v1/models"]["get"]
    (param,) = doc["paths"]["/v1/models/{model}"]["get"]["parameters"]
    assert param["in"] == "path" and param["required"] is True


LIMIT = 2048


async def post(services: Services, path: str, content: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=make_api(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        return await client.post(
            path, content=content, headers={"content-type": "application/json"}
        )


def chat_body(text_bytes: int) -> bytes:
    return json.dumps(
        {"model": "default", "messages": [{"role": "user", "content": "x" * text_bytes}]}
    ).encode()


async def chunked(body: bytes, size: int = 512) -> AsyncIterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings", "/v1/rerank"])
async def test_a_body_over_the_limit_is_a_413_before_it_is_parsed(path: str) -> None:
    limited = local_services(max_body_bytes=LIMIT)
    reply = await post(limited, path, chat_body(2 * LIMIT))  # Content-Length says it
    assert reply.status_code == 413, reply.text
    assert reply.json()["error"]["code"] == "request_too_large"
    streamed = await post(limited, path, chunked(chat_body(2 * LIMIT)))  # no Content-Length
    assert (
        streamed.status_code == 413 and streamed.json()["error"]["type"] == "invalid_request_error"
    )


async def test_a_body_within_the_limit_is_read_and_validated() -> None:
    limited = local_services(max_body_bytes=LIMIT)
    reply = await post(limited, "/v1/chat/completions", chunked(b'{"model": "default"}'))
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "messages"


class Probes:
    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()

    async def probe(self) -> None:
        self.calls += 1
        await self.release.wait()


async def test_ready_reports_are_shared_for_a_second_and_by_concurrent_callers() -> None:
    now = [100.0]
    probes = Probes()
    readiness = Readiness({"m": probes.probe}, ttl_s=1.0, clock=lambda: now[0])
    waiting = [asyncio.create_task(readiness.report()) for _ in range(5)]
    await asyncio.sleep(0)
    probes.release.set()
    assert [await t for t in waiting] == [{"m": "ok"}] * 5 and probes.calls == 1
    now[0] += 0.5
    assert await readiness.report() == {"m": "ok"} and probes.calls == 1  # still fresh
    now[0] += 0.6
    assert await readiness.report() == {"m": "ok"} and probes.calls == 2  # probed again
