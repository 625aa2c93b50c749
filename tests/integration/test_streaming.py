"""Streaming under concurrency, and aborting generations whose client went away."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from tests.integration.conftest import ONE_SLOT_KEY, Cluster, wait_until

pytestmark = pytest.mark.integration


def llm_stats(cluster: Cluster) -> dict[str, int]:
    stats: dict[str, int] = cluster.llm_handle().stats.remote().result(timeout_s=30)
    return stats


def test_client_disconnect_aborts_the_generation(cluster: Cluster) -> None:
    before = llm_stats(cluster)
    body = {
        "model": "default",
        "messages": [{"role": "user", "content": "Tell me a very long story."}],
        "max_tokens": 1800,
        "ignore_eos": True,  # would run for ~1800 tokens (~30 s) if not aborted
    }
    url = f"{cluster.base_url}/v1/chat/completions"
    stream_body = {**body, "stream": True}
    with httpx.stream("POST", url, json=stream_body, headers=cluster.auth, timeout=60) as response:
        assert response.status_code == 200
        seen = 0
        for line in response.iter_lines():
            if line.startswith("data: "):
                seen += 1
            if seen >= 5:
                break  # leave mid-stream: closing the response drops the connection
    wait_until(
        lambda: llm_stats(cluster)["aborted"] == before["aborted"] + 1,
        timeout_s=30,
        what="the engine never aborted the abandoned request",
    )
    after = llm_stats(cluster)
    assert after["finished"] == before["finished"]  # it did not run to completion
    wait_until(lambda: llm_stats(cluster)["running"] == 0, 30, "requests still running")


def ended(stats: dict[str, int]) -> int:
    return stats["finished"] + stats["aborted"] + stats["failed"]


def test_a_non_streamed_request_whose_client_left_holds_its_tenants_slot_while_it_runs(
    cluster: Cluster,
) -> None:
    """HTTP enters through HAProxy (configs/cluster.env), which does not always pass a
    client's hang-up on to a request in progress: a non-streamed generation whose client
    left is aborted or runs to its end. Either way the tenant gets no second slot while
    the engine still works on it: a request admitted (200) while the tenant's one slot was
    taken means the abandoned generation had already ended in the engine."""
    before = llm_stats(cluster)
    url = f"{cluster.base_url}/v1/completions"
    body = {"model": "default", "prompt": "Count:", "max_tokens": 300, "ignore_eos": True}
    one_slot = {"Authorization": f"Bearer {ONE_SLOT_KEY}"}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url, json=body, headers=one_slot, timeout=httpx.Timeout(60, read=1.5))
    wait_until(
        lambda: llm_stats(cluster)["started"] == before["started"] + 1,
        timeout_s=30,
        what="the abandoned request never reached the engine",
    )
    short = {**body, "max_tokens": 1}
    deadline = time.monotonic() + 120
    while True:
        reply = httpx.post(url, json=short, headers=one_slot, timeout=60)
        if reply.status_code == 200:
            break
        assert reply.status_code == 429, reply.text
        assert "concurrent" in reply.json()["error"]["message"]
        assert time.monotonic() < deadline, "the tenant's slot never came back"
        time.sleep(0.2)  # polling the slot with a deadline, not a fixed wait
    # the abandoned request and the admitted one have both ended (an abort reaches the
    # engine a moment after the gateway gave the slot back; 300 tokens take seconds)
    wait_until(
        lambda: ended(after := llm_stats(cluster)) == ended(before) + 2 and after["running"] == 0,
        timeout_s=3,
        what="a second request was admitted while the abandoned one still ran",
    )
    # other tenants were served meanwhile either way
    assert httpx.post(url, json=short, headers=cluster.auth, timeout=60).status_code == 200


async def _stream_chat(client: httpx.AsyncClient, i: int) -> dict[str, Any]:
    import json

    body = {
        "model": "default",
        "messages": [{"role": "user", "content": f"Write a sentence about the number {i}."}],
        "max_tokens": 32,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chunks = []
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                chunks.append(line[len("data: ") :])
    assert chunks[-1] == "[DONE]"
    parsed = [json.loads(c) for c in chunks[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in parsed if c["choices"])
    finish = [
        c["choices"][0]["finish_reason"]
        for c in parsed
        if c["choices"] and c["choices"][0]["finish_reason"]
    ]
    return {"id": parsed[0]["id"], "text": text, "finish": finish, "usage": parsed[-1]["usage"]}


def test_sixteen_concurrent_streams_all_complete(cluster: Cluster) -> None:
    async def run() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(
            base_url=cluster.base_url, headers=cluster.auth, timeout=120
        ) as client:
            return await asyncio.gather(*(_stream_chat(client, i) for i in range(16)))

    results = asyncio.run(run())
    assert len({r["id"] for r in results}) == 16
    for r in results:
        assert r["finish"] == ["length"]
        assert r["usage"]["completion_tokens"] == 32
        assert r["text"].strip()
