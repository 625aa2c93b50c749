"""The response cache through the whole gateway: real Serve, vLLM, embedder and Redis.

Only tenants cache-a, cache-b and cache-keys (partitioned per key) have the cache on.
Stores happen in the background after an answer completes; tests wait for them with
`Cache-Control: only-if-cached` probes, which never call the model (a miss is a 504).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from gateway.cache.config import CacheConfig
from gateway.cache.service import evidence_scope
from gateway.cache.verified import bin_of
from tests.integration.conftest import (
    CACHE_A_KEY,
    CACHE_B_KEY,
    CACHE_K1_KEY,
    CACHE_K2_KEY,
    Cluster,
    counter_totals,
    wait_until,
)
from tests.openai_spec import validate


def post(
    cluster: Cluster, body: dict[str, Any], key: str = CACHE_A_KEY, cache_control: str = ""
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    if cache_control:
        headers["Cache-Control"] = cache_control
    path = "/v1/completions" if "prompt" in body else "/v1/chat/completions"
    return httpx.post(f"{cluster.base_url}{path}", json=body, headers=headers, timeout=120)


def chat(cluster: Cluster, text: str, **fields: Any) -> dict[str, Any]:
    return {
        "model": cluster.llm_id,
        "messages": [{"role": "user", "content": text}],
        "temperature": 0,
        "max_tokens": 48,
        "stop": ["\n", "."],  # short answers that stop by themselves, so they are stored
        **fields,
    }


def answered(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["finish_reason"] == "stop"
    return str(body["choices"][0]["message"]["content"])


def cached(cluster: Cluster, body: dict[str, Any], key: str = CACHE_A_KEY) -> httpx.Response:
    """Wait until the cache answers `body` (stores are asynchronous); return that answer."""
    found: list[httpx.Response] = []

    def probe() -> bool:
        found[:] = [post(cluster, body, key, cache_control="only-if-cached")]
        return found[0].status_code == 200

    wait_until(probe, 10, "the answer to appear in the cache")
    return found[0]


def sse_chunks(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    events = [line for line in response.text.split("\n\n") if line.strip()]
    assert events[-1] == "data: [DONE]"
    return [json.loads(e.removeprefix("data: ")) for e in events[:-1]]


def counted(cluster: Cluster, metric: str, label: str, tenant: str, value: str) -> float:
    totals = counter_totals(cluster, f"raygate_gateway_{metric}", label, tenant=tenant)
    return totals.get(value, 0)


@contextmanager
def certified(cluster: Cluster, tenant: str) -> Iterator[None]:
    """Verification evidence in the cache's Redis that certifies every similarity from
    the floor up for `tenant`'s requests to the local model (what some 300 agreeing
    verifications per bin would leave), removed afterwards."""
    config = CacheConfig.model_validate(cluster.args["cache"])
    scope = evidence_scope(config.verification, tenant, cluster.llm_id)
    key = f"{config.key_prefix}:evidence:{scope}"
    floor = bin_of(config.similarity_threshold)
    redis = cluster.cache_redis.client()
    redis.hset(key, mapping={f"a:{b}": 300 for b in range(floor, bin_of(1.0) + 1)})
    try:
        yield
    finally:
        redis.delete(key)


def test_miss_then_exact_hit_then_verified_semantic_hits(cluster: Cluster) -> None:
    question = "What is the capital of France? Answer in one short sentence."
    first = post(cluster, chat(cluster, question))
    text = answered(first)
    assert first.headers["x-raygate-cache"] == "miss"
    exact = cached(cluster, chat(cluster, question))
    assert exact.headers["x-raygate-cache"] == "hit"
    assert exact.headers["x-raygate-cache-tier"] == "exact"
    assert answered(exact) == text and exact.json()["id"] != first.json()["id"]
    validate(exact.json(), "CreateChatCompletionResponse")
    # Reworded, with nothing learned yet: the model answers, and its answer is compared.
    paraphrase = "What's the capital city of France? Answer in one short sentence."
    verified = post(cluster, chat(cluster, paraphrase))
    assert verified.headers["x-raygate-cache"] == "verify", verified.headers
    assert float(verified.headers["x-raygate-cache-similarity"]) >= 0.88
    answered(verified)
    wait_until(
        lambda: (
            sum(
                counted(cluster, "cache_verifications_total", "outcome", "cache-a", o)
                for o in ("agree", "disagree")
            )
            >= 1
        ),
        60,
        "the verification counted in raygate_gateway_cache_verifications_total",
    )
    # Once the evidence certifies the similarity, every gateway replica serves it.
    reworded = "Tell me the capital city of France. Answer in one short sentence."
    with certified(cluster, "cache-a"):
        for _ in range(4):  # two replicas; each probe goes to either
            semantic = cached(cluster, chat(cluster, reworded))
            assert semantic.headers["x-raygate-cache-tier"] == "semantic"
            assert float(semantic.headers["x-raygate-cache-similarity"]) >= 0.88
    wait_until(
        lambda: counted(cluster, "cache_lookups_total", "result", "cache-a", "hit_semantic") >= 4,
        60,
        "semantic hits counted in raygate_gateway_cache_lookups_total",
    )


def test_a_near_miss_is_never_served_before_the_evidence_says_so(cluster: Cluster) -> None:
    """The inverted question (0.978 similar) after its partner was answered: no replica
    serves the cached answer; the model answers it, and the outcome is counted."""
    legal = "Is it legal to record a phone call? Answer yes or no."
    answered(post(cluster, chat(cluster, legal), CACHE_B_KEY))
    cached(cluster, chat(cluster, legal), CACHE_B_KEY)  # stored
    inverted = chat(cluster, "Is it illegal to record a phone call? Answer yes or no.")
    for _ in range(4):  # two replicas
        probe = post(cluster, inverted, CACHE_B_KEY, cache_control="only-if-cached")
        assert probe.status_code == 504, probe.text
    fresh = post(cluster, inverted, CACHE_B_KEY)
    assert fresh.headers["x-raygate-cache"] == "verify" and answered(fresh)


def test_a_streamed_answer_is_stored_and_replayed_as_valid_sse(cluster: Cluster) -> None:
    body = chat(
        cluster, "Name one primary colour.", stream=True, stream_options={"include_usage": True}
    )
    first = sse_chunks(post(cluster, body))
    assert first[-2]["choices"][0]["finish_reason"] == "stop"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in first if c["choices"])
    replay = cached(cluster, body)
    assert replay.headers["x-raygate-cache"] == "hit"
    assert replay.headers["content-type"].startswith("text/event-stream")
    chunks = sse_chunks(replay)
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == (
        text
    )
    assert chunks[-1]["usage"] == first[-1]["usage"]
    # A non-streaming request for the same question gets the same answer as JSON.
    assert answered(cached(cluster, {**body, "stream": False, "stream_options": None})) == text


def test_completions_are_cached_apart_from_chats(cluster: Cluster) -> None:
    prompt = "The capital of Italy is"
    body = {"model": cluster.llm_id, "prompt": prompt, "temperature": 0, "max_tokens": 16}
    body["stop"] = ["."]
    first = post(cluster, body)
    assert first.status_code == 200 and first.json()["choices"][0]["finish_reason"] == "stop"
    hit = cached(cluster, body)
    assert hit.json()["choices"][0]["text"] == first.json()["choices"][0]["text"]
    validate(hit.json(), "CreateCompletionResponse")
    # The same text as a chat message is another endpoint: another partition.
    chat_body = chat(cluster, prompt, stop=["."], max_tokens=16)
    assert post(cluster, chat_body, cache_control="only-if-cached").status_code == 504


def test_truncated_and_sampled_answers_are_not_cached(cluster: Cluster) -> None:
    truncated = chat(cluster, "Count from one to one hundred.", max_tokens=3, stop=None)
    response = post(cluster, truncated)
    assert response.json()["choices"][0]["finish_reason"] == "length"
    sampled = post(cluster, chat(cluster, "Say hi.", temperature=0.9))
    assert sampled.status_code == 200 and sampled.headers["x-raygate-cache"] == "uncacheable"
    # A later complete answer is stored; by then the truncated one would have been too.
    answered(post(cluster, chat(cluster, "Say hello.")))
    cached(cluster, chat(cluster, "Say hello."))
    refused = post(cluster, truncated, cache_control="only-if-cached")
    assert refused.status_code == 504
    assert refused.json()["error"]["code"] == "not_cached"


def test_tenants_never_see_each_others_answers(cluster: Cluster) -> None:
    body = chat(cluster, "Give me a one-word synonym for happy.")
    answered(post(cluster, body, CACHE_A_KEY))
    cached(cluster, body, CACHE_A_KEY)
    other = post(cluster, body, CACHE_B_KEY, cache_control="only-if-cached")
    assert other.status_code == 504


def test_keys_of_a_tenant_partitioned_per_key_never_see_each_others_answers(
    cluster: Cluster,
) -> None:
    body = chat(cluster, "Give me a one-word antonym for cold.")
    answered(post(cluster, body, CACHE_K1_KEY))
    cached(cluster, body, CACHE_K1_KEY)
    other = post(cluster, body, CACHE_K2_KEY, cache_control="only-if-cached")
    assert other.status_code == 504, other.text


def test_cache_control_bypass_and_refresh(cluster: Cluster) -> None:
    body = chat(cluster, "What colour is the sky on a clear day?")
    answered(post(cluster, body))
    cached(cluster, body)
    bypass = post(cluster, body, cache_control="no-store")
    assert bypass.headers["x-raygate-cache"] == "bypass"
    refresh = post(cluster, body, cache_control="no-cache")
    assert refresh.headers["x-raygate-cache"] == "refresh"
    answered(refresh)


def test_hits_cost_no_tokens(cluster: Cluster) -> None:
    body = chat(cluster, "What is two plus two?")
    answered(post(cluster, body))
    cached(cluster, body)

    # Identical hits reserve the same tokens; with hit_charge 0 all of them come back,
    # so the remaining tokens seen by the next hit are unchanged.
    def remaining(cache_control: str = "") -> int:
        response = post(cluster, body, cache_control=cache_control)
        return int(response.headers["x-ratelimit-remaining-tokens"])

    hits = [remaining() for _ in range(3)]
    assert hits[0] == hits[1] == hits[2]
    remaining("no-cache")  # generated again: charged in full
    assert remaining() < hits[2]


def test_cache_redis_down_steps_aside(cluster: Cluster) -> None:
    body = chat(cluster, "Name a large animal.")
    cluster.cache_redis.stop()
    try:
        response = post(cluster, body)
        assert response.headers["x-raygate-cache"] == "unavailable"
        answered(response)
    finally:
        cluster.cache_redis.start()
    # Back: the cache works again once Redis is (stores resume after the pause).
    wait_until(
        lambda: post(cluster, body).headers["x-raygate-cache"] in ("miss", "verify", "hit"),
        10,
        "the cache to be used again",
    )
