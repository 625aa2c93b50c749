"""The fuzz property of tests/fuzz.py against the real cluster, on a small budget (about
160 requests, streams included): no 5xx, no hang, OpenAI error bodies, streams that end.
Requests come from the cluster's own /openapi.json, OpenAI's request schemas and raw
bodies; answers are held to 8 tokens so that the CPU engine answers each in a moment."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode
from schemathesis.schemas import BaseSchema

from gateway.build import load_config
from tests import fuzz
from tests.integration.conftest import Cluster

pytestmark = pytest.mark.integration

EXAMPLES = 6  # per route and mode
TIMEOUT_S = 60.0  # a CPU engine under a loaded CI machine; 8 tokens take about a second


class Rig:
    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.models = fuzz.served_models(load_config(cluster.args))
        self.schema = fuzz.app_schema(httpx.get(f"{cluster.base_url}/openapi.json").json())
        self.runner = asyncio.Runner()
        self.tally = fuzz.Tally()

    def run(self, requests: st.SearchStrategy[fuzz.Request], examples: int) -> int:
        before = self.tally.requests

        @fuzz.fuzz_settings(examples)
        @given(requests)
        def send(request: fuzz.Request) -> None:
            self.runner.run(self._send(request))

        send()
        return self.tally.requests - before

    async def _send(self, request: fuzz.Request) -> None:
        async with httpx.AsyncClient(
            base_url=self.cluster.base_url, headers=self.cluster.auth, timeout=None
        ) as client:
            await fuzz.exchange(client, request, TIMEOUT_S, self.tally)


@pytest.fixture(scope="module")
def rig(cluster: Cluster) -> Iterator[Rig]:
    rig = Rig(cluster)
    yield rig
    rig.runner.close()
    print(f"\nfuzzed the cluster: {rig.tally.summary()}")


def short(path: str) -> dict[str, Any] | None:
    """Answers of 8 tokens at most on generation routes."""
    return {"max_tokens": 8} if fuzz.BODIES[path][0] == "generation" else None


@pytest.mark.parametrize("mode", fuzz.MODES, ids=str)
@pytest.mark.parametrize("path", fuzz.POST_PATHS)
def test_requests_from_the_clusters_openapi_document(
    rig: Rig, path: str, mode: GenerationMode
) -> None:
    requests = fuzz.case_requests(rig.schema, path, "POST", mode, rig.models, short(path))
    assert rig.run(requests, EXAMPLES) >= EXAMPLES // 2


@pytest.mark.parametrize("mode", fuzz.MODES, ids=str)
@pytest.mark.parametrize("path", list(fuzz.OPENAI_REQUESTS))
def test_requests_from_openais_request_schemas(rig: Rig, path: str, mode: GenerationMode) -> None:
    schema: BaseSchema = fuzz.openai_schema()
    requests = fuzz.case_requests(schema, path, "POST", mode, rig.models, short(path))
    assert rig.run(requests, EXAMPLES) >= EXAMPLES // 2


@pytest.mark.parametrize("path", fuzz.POST_PATHS)
def test_good_bodies_with_fields_changed(rig: Rig, path: str) -> None:
    requests = fuzz.field_requests(rig.schema, path, rig.models, short(path))
    assert rig.run(requests, EXAMPLES) >= EXAMPLES // 2


@pytest.mark.parametrize("path", fuzz.POST_PATHS)
def test_raw_bodies(rig: Rig, path: str) -> None:
    assert rig.run(fuzz.raw_requests(path), 3) >= 1
