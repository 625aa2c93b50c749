"""The router against real deployments with injected faults (conftest.FAULTS): fallback
before the first token, a stream continued on the same weights after it, breakers,
timeouts, a killed replica, backpressure, `auto` tiers and prefix affinity on the fast
tier's two replicas."""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import psutil

from tests.integration.conftest import FIRST_TOKEN_TIMEOUT_S, Cluster, counter_totals, wait_until
from tests.openai_spec import validate

HELLO = [{"role": "user", "content": "Say hello."}]
# A prompt whose greedy answer wins every one of its first 32 steps by >= 1.25 nats in
# bfloat16 (SmolLM2-135M, measured): a hand-over replaces a decode step by a prefill,
# whose float rounding differs, and "Say hello." has an exact tie at its second token.
COUNT = [{"role": "user", "content": "Count from 1 to 10."}]


def chat(cluster: Cluster, model: str, **fields: Any) -> httpx.Response:
    body = {"model": model, "messages": HELLO, "max_tokens": 4, "temperature": 0, **fields}
    return httpx.post(
        f"{cluster.base_url}/v1/chat/completions", json=body, headers=cluster.auth, timeout=120
    )


def sse_events(reply: httpx.Response) -> list[str]:
    return [e for e in reply.text.split("\n\n") if e.startswith("data: ")]


def failures(cluster: Cluster, model: str) -> dict[str, float]:
    return counter_totals(cluster, "raygate_gateway_router_failures_total", "reason", model=model)


def fast_id(cluster: Cluster) -> str:
    return str(cluster.args["models"][1]["id"])


def test_an_error_before_the_first_token_falls_back_and_says_who_answered(
    cluster: Cluster,
) -> None:
    reply = chat(cluster, "broken")
    assert reply.status_code == 200, reply.text
    assert reply.json()["model"] == fast_id(cluster)
    assert reply.headers["x-raygate-model"] == fast_id(cluster)
    assert reply.headers["x-raygate-passed-over"] == "broken"


def test_streams_fall_back_too_and_name_the_serving_model_in_every_chunk(
    cluster: Cluster,
) -> None:
    reply = chat(cluster, "broken", stream=True)
    assert reply.status_code == 200
    chunks = [json.loads(e[6:]) for e in sse_events(reply) if e.startswith("data: {")]
    assert chunks and {c["model"] for c in chunks} == {fast_id(cluster)}


def test_a_failure_after_the_first_token_without_a_fallback_is_an_error_event(
    cluster: Cluster,
) -> None:
    reply = chat(cluster, "stranded", max_tokens=32, stream=True)
    assert reply.status_code == 200  # the first chunk went out
    events = sse_events(reply)
    assert events[-1] == "data: [DONE]"
    error = json.loads(events[-2][len("data: ") :])
    validate(error, "ErrorResponse")
    assert "injected fault" in error["error"]["message"]
    assert all(json.loads(e[6:]).get("model") == "stranded" for e in events[:-2])
    whole = chat(cluster, "stranded", max_tokens=32)  # not streamed: fails, no fallback
    assert whole.status_code == 503 and "injected fault" in whole.json()["error"]["message"]


@dataclass(frozen=True)
class Streamed:
    text: str
    usage: dict[str, int]
    errors: list[dict[str, Any]]


def streamed(reply: httpx.Response) -> Streamed:
    assert reply.status_code == 200, reply.text
    events = sse_events(reply)
    assert events[-1] == "data: [DONE]"
    bodies = [json.loads(e[len("data: ") :]) for e in events[:-1]]
    text = "".join(c["delta"].get("content") or "" for b in bodies for c in b.get("choices", []))
    return Streamed(text, bodies[-1].get("usage") or {}, [b for b in bodies if "error" in b])


def test_a_stream_whose_model_fails_goes_on_on_the_same_weights(cluster: Cluster) -> None:
    """`midstream` fails after its first chunk; its fallback, the fast tier whose weights
    it serves, carries the stream on: with greedy decoding the client gets the text and
    the usage of an unbroken answer, and no error event."""
    fields = {"messages": COUNT, "max_tokens": 32, "stream": True}
    fields["stream_options"] = {"include_usage": True}
    healthy = streamed(chat(cluster, fast_id(cluster), **fields))
    continued = streamed(chat(cluster, "midstream", **fields))
    assert continued.errors == []
    assert continued.text == healthy.text and len(healthy.text) > 1
    assert continued.usage == healthy.usage and healthy.usage["completion_tokens"] > 1
    whole = chat(cluster, "midstream", messages=COUNT, max_tokens=32)  # not streamed: same
    assert whole.status_code == 200, whole.text
    assert whole.json()["choices"][0]["message"]["content"] == healthy.text
    assert whole.json()["usage"] == healthy.usage
    wait_until(  # Ray exports metrics every few seconds
        lambda: continuations(cluster).get(fast_id(cluster), 0) >= 2,
        timeout_s=30,
        what="no continuation counted from 'midstream'",
    )


def continuations(cluster: Cluster) -> dict[str, float]:
    return counter_totals(
        cluster, "raygate_gateway_router_continuations_total", "to_model", from_model="midstream"
    )


def test_a_stalled_model_times_out_and_the_next_one_answers(cluster: Cluster) -> None:
    started = time.monotonic()
    reply = chat(cluster, "stalled")
    took = time.monotonic() - started
    assert reply.status_code == 200 and reply.headers["x-raygate-model"] == fast_id(cluster)
    assert took >= FIRST_TOKEN_TIMEOUT_S
    wait_until(  # Ray exports metrics every few seconds
        lambda: failures(cluster, "stalled").get("first_token_timeout", 0) >= 1,
        timeout_s=30,
        what="no first_token_timeout counted for 'stalled'",
    )


def test_breaker_opens_and_recovers_once_the_model_does(cluster: Cluster) -> None:
    """`recovering` fails its first 4 calls: breakers (2 failures, 15 s) open in front of
    it, stop sending it traffic, and close again after a successful probe."""
    served: list[tuple[str, float]] = []  # who answered, and when (s since the start)
    started = time.monotonic()

    def recovered() -> bool:
        reply = chat(cluster, "recovering")
        assert reply.status_code == 200  # always answered: by the fallback meanwhile
        served.append((reply.headers["x-raygate-model"], time.monotonic() - started))
        return served[-1][0] == "recovering"

    wait_until(recovered, timeout_s=60, what="recovering never served again")
    assert served[0][0] == fast_id(cluster)  # it was failing at first
    wait_until(  # calls were skipped while a circuit was open (Ray exports every few s)
        lambda: failures(cluster, "recovering").get("circuit_open", 0) >= 1,
        timeout_s=30,
        what=f"no circuit_open counted for 'recovering'; answers: {served}",
    )
    assert failures(cluster, "recovering").get("error", 0) <= 4  # its 4 faults, no more


def test_a_killed_replica_costs_no_request(cluster: Cluster) -> None:
    assert chat(cluster, "victim").headers["x-raygate-model"] == "victim"
    victims = [
        p
        for p in psutil.process_iter(["cmdline"])
        if "ServeReplica:raygate:llm-victim" in " ".join(p.info["cmdline"] or [])
    ]
    assert len(victims) == 1
    os.kill(victims[0].pid, signal.SIGKILL)
    reply = chat(cluster, "victim")
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-raygate-model"] in {"victim", fast_id(cluster)}
    wait_until(
        lambda: chat(cluster, "victim").headers["x-raygate-model"] == "victim",
        timeout_s=120,
        what="Serve did not bring the killed replica back",
    )


def test_full_queues_get_503_with_retry_after_not_an_endless_wait(cluster: Cluster) -> None:
    """`jammed` takes one call and queues one per gateway replica; the rest is refused."""
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda _: chat(cluster, "jammed"), range(8)))
    statuses = sorted(r.status_code for r in replies)
    refused = [r for r in replies if r.status_code == 503]
    assert refused, statuses
    for reply in refused:
        validate(reply.json(), "ErrorResponse")
        assert reply.json()["error"]["code"] == "overloaded"
        assert int(reply.headers["retry-after"]) >= 1
    assert set(statuses) <= {503, 504}  # the admitted ones stall into the first-token timeout


def test_auto_sends_short_requests_to_the_fast_tier_and_long_ones_to_default(
    cluster: Cluster,
) -> None:
    short = chat(cluster, "auto", max_tokens=8)
    assert short.status_code == 200 and short.headers["x-raygate-model"] == fast_id(cluster)
    long_prompt = [{"role": "user", "content": "word " * 400}]
    long = chat(cluster, "auto", messages=long_prompt, max_tokens=8)
    assert long.status_code == 200 and long.headers["x-raygate-model"] == cluster.llm_id
    unbounded = chat(cluster, "auto", max_tokens=None)  # no max_tokens: not a short request
    assert unbounded.headers["x-raygate-model"] == cluster.llm_id


def test_a_conversation_stays_on_one_replica_and_conversations_spread(cluster: Cluster) -> None:
    messages: list[dict[str, str]] = [{"role": "system", "content": "You are terse."}]
    replicas = []
    for turn in range(4):
        messages.append({"role": "user", "content": f"Question {turn}: name a colour."})
        reply = chat(cluster, "fast", messages=messages, prompt_cache_key="conversation-1")
        assert reply.status_code == 200
        replicas.append(reply.headers["x-raygate-replica"])
        messages.append(
            {"role": "assistant", "content": reply.json()["choices"][0]["message"]["content"]}
        )
    assert len(set(replicas)) == 1, replicas
    spread = {
        chat(cluster, "fast", prompt_cache_key=f"conversation-{k}").headers["x-raygate-replica"]
        for k in range(2, 18)
    }
    assert len(spread) == 2  # both replicas of the fast tier get conversations
