"""build_services + make_api without Ray: the local profile's services over fake backends,
driven over HTTP in process."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import yaml

from gateway.api import make_api
from gateway.auth import load_tenants
from gateway.backends import Backends
from gateway.build import Services, build_services, load_config
from gateway.metrics import GatewayMetrics
from tests.fakes import FakeEmbedder, FakeReranker, ScriptedModel
from tests.paths import MODELS, ROOT


class Unhealthy(Exception):
    pass


def local_services(broken: str | None = None) -> Services:
    """The local profile's services; every deployment a fake, `broken` failing its probe."""
    args: dict[str, Any] = yaml.safe_load((ROOT / "serve_config.yaml").read_text())["applications"][
        0
    ]["args"]
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
    assert report["all-minilm-l6-v2"] == "unhealthy (Unhealthy)"
    assert {state for name, state in report.items() if name != "all-minilm-l6-v2"} == {"ok"}


async def test_unknown_routes_get_openai_error_bodies(services: Services) -> None:
    reply = await get(services, "/v1/nothing-here")
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "not_found"
    assert (await get(services, "/health")).json() == {"status": "ok"}
