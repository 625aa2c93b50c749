"""The HTTP API fuzzed in process: make_api over the local profile's services with fake
models, an in-memory quota store and no response cache, driven over ASGI. Every reply
must pass tests/fuzz.py's property (no 5xx, no hang, OpenAI error bodies, streams that
end). The requests are the same on every run (derandomized)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode
from schemathesis.schemas import BaseSchema

from gateway import build
from gateway.api import make_api
from gateway.auth import TenantsFile
from gateway.backends import Backends
from gateway.build import build_services, load_config
from gateway.metrics import GatewayMetrics
from tests import fuzz
from tests.fakes import Clock, FakeEmbedder, FakeReranker, InMemoryQuotaStore, ScriptedModel
from tests.paths import MODELS, ROOT

EXAMPLES = 50  # per route and mode: about 1,300 requests in all
TIMEOUT_S = 10.0  # the fakes answer at once; a reply not complete by then hangs


class Rig:
    """The app, the loop its requests run on, and the tally of what was sent."""

    def __init__(self) -> None:
        profile = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
        args: dict[str, Any] = profile["applications"][0]["args"]
        args.pop("cache")  # the response cache needs Redis
        config = load_config(args)
        tenants = TenantsFile.model_validate({"tenants": [{"id": "local"}]})  # no limits
        sources = {m.id: str(ROOT / m.model) for m in config.models}
        sources |= {e.id: str(ROOT / e.model) for e in [*config.embedders, *config.rerankers]}
        ids = [m.id for m in config.models] + [e.id for e in config.embedders]
        ids += [r.id for r in config.rerankers]

        async def healthy() -> None:
            return None

        backends = Backends(
            llms={m.id: ScriptedModel() for m in config.models},
            embedders={e.id: FakeEmbedder() for e in config.embedders},
            rerankers={r.id: FakeReranker() for r in config.rerankers},
            probes=dict.fromkeys(ids, healthy),
        )
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(build, "open_quota_store", lambda *_: InMemoryQuotaStore(Clock()))
            services = build_services(config, tenants, sources, backends, GatewayMetrics())
        self.app = make_api(services)
        self.models = fuzz.served_models(config)
        self.runner = asyncio.Runner()
        self.tally = fuzz.Tally()

    def send(self, request: fuzz.Request) -> None:
        self.runner.run(self._send(request))

    async def _send(self, request: fuzz.Request) -> None:
        # raise_app_exceptions=False: an unhandled error is the 500 a client would get.
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            await fuzz.exchange(client, request, TIMEOUT_S, self.tally)


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    if not (MODELS / "SmolLM2-135M-Instruct").exists():
        pytest.fail("models/ is not prepared: run scripts/setup.sh")
    rig = Rig()
    yield rig
    rig.runner.close()
    print(f"\nfuzzed in process: {rig.tally.summary()}")


def run(rig: Rig, requests: st.SearchStrategy[fuzz.Request], examples: int) -> int:
    """Send `examples` requests drawn from `requests`; how many were sent."""
    before = rig.tally.requests

    @fuzz.fuzz_settings(examples)
    @given(requests)
    def send(request: fuzz.Request) -> None:
        rig.send(request)

    send()
    return rig.tally.requests - before


@pytest.fixture(scope="module")
def app_schema(rig: Rig) -> BaseSchema:
    return fuzz.app_schema(rig.app.openapi())


@pytest.mark.parametrize("mode", fuzz.MODES, ids=str)
@pytest.mark.parametrize("path", fuzz.POST_PATHS)
def test_requests_from_the_apps_openapi_document(
    rig: Rig, app_schema: BaseSchema, path: str, mode: GenerationMode
) -> None:
    requests = fuzz.case_requests(app_schema, path, "POST", mode, rig.models)
    assert run(rig, requests, EXAMPLES) > EXAMPLES // 2


@pytest.mark.parametrize("path", fuzz.GET_PATHS)
def test_get_routes_from_the_apps_openapi_document(
    rig: Rig, app_schema: BaseSchema, path: str
) -> None:
    requests = fuzz.case_requests(app_schema, path, "GET", GenerationMode.POSITIVE, rig.models)
    assert run(rig, requests, 5) >= 1


@pytest.mark.parametrize("mode", fuzz.MODES, ids=str)
@pytest.mark.parametrize("path", list(fuzz.OPENAI_REQUESTS))
def test_requests_from_openais_request_schemas(rig: Rig, path: str, mode: GenerationMode) -> None:
    requests = fuzz.case_requests(fuzz.openai_schema(), path, "POST", mode, rig.models)
    assert run(rig, requests, EXAMPLES) > EXAMPLES // 2


@pytest.mark.parametrize("path", fuzz.POST_PATHS)
def test_good_bodies_with_fields_changed(rig: Rig, app_schema: BaseSchema, path: str) -> None:
    requests = fuzz.field_requests(app_schema, path, rig.models)
    assert run(rig, requests, EXAMPLES) > EXAMPLES // 2


@pytest.mark.parametrize("path", fuzz.POST_PATHS)
def test_raw_bodies(rig: Rig, path: str) -> None:
    assert run(rig, fuzz.raw_requests(path), EXAMPLES) > EXAMPLES // 2
