"""Routing cost, and prefix affinity on a multi-turn workload with two LLM replicas.

1. Decision cost, in process: the `auto` tier choice, a full `RoutePlanner.route` (alias or
   auto, access check, context check, fallback chain; tokenization stubbed out) and the
   prefix-affinity bookkeeping for a 1,500-token prompt.
2. Multi-turn: the local profile's default model with two replicas (no fast tier,
   embedder, reranker or cache, so the engines have the machine), `--conversations`
   conversations, each with its own ~900-token system prompt, `--turns` turns each and
   `--concurrency` conversations at a time; once with prefix affinity and once with
   Serve's default replica choice. vLLM's prefix cache saves the prefill of earlier
   turns only on the replica that served them.
Writes loadtests/results/routing.{json,md}.

    .venv/bin/python -m loadtests.bench_routing [--conversations 12 --turns 4]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from deployments.prefix_affinity import PrefixIndex, block_hashes
from deployments.prompt import DEFAULT_PROMPT, PromptOptions
from gateway.routing.config import RoutingConfig
from gateway.routing.planner import RoutePlanner
from gateway.routing.policy import TierPolicy
from gateway.targets import LLMTarget
from loadtests.harness import (
    RESULTS,
    local_profile,
    machine,
    machine_line,
    percentile,
    redis_server,
    serve_server,
    wait_for_port,
    with_redis,
    write_result,
)
from schemas.generation import GenerationChunk, GenerationRequest, SamplingOptions
from tests.fakes import WordCounter
from tests.ports import free_port

TOPICS = "tides volcanoes bees glaciers comets deserts coral owls rivers fungi storms moss".split()


class _Model:
    async def max_model_len(self) -> int:
        return 2048

    async def stream(self, request: GenerationRequest) -> Any:  # never called here
        yield GenerationChunk("", 0, 0, "stop")


class _Ids(WordCounter):
    def __init__(self, ids: list[int]):
        super().__init__()
        self.ids = ids

    def encode(
        self, request: GenerationRequest, options: PromptOptions = DEFAULT_PROMPT
    ) -> list[int]:
        return self.ids


def _per_call_us(fn: Any, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return round((time.perf_counter() - start) / n * 1e6, 2)


def decision_cost() -> dict[str, Any]:
    config = RoutingConfig.model_validate(
        {
            "auto": {
                "default": "default",
                "rules": [{"model": "fast", "max_prompt_tokens": 256, "max_tokens": 128}],
            },
            "fallbacks": {"big": ["fast"], "small": ["default"]},
        }
    )
    assert config.auto is not None
    policy = TierPolicy(config.auto)
    ids = _Ids(list(range(200)))
    targets = {"big": LLMTarget(_Model(), ids), "small": LLMTarget(_Model(), ids)}
    router = RoutePlanner(targets, {"default": "big", "fast": "small"}, config)
    request = GenerationRequest(
        "r", SamplingOptions(max_tokens=64), [{"role": "user", "content": "hi"}]
    )

    async def routes(name: str, n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            await router.route(name, request, lambda _: True)
        return round((time.perf_counter() - start) / n * 1e6, 1)

    prompt = list(range(1500))
    index = PrefixIndex(200_000)
    for conversation in range(2000):  # a warm index
        index.record(block_hashes([conversation, *prompt[1:]], 16, 512), f"r{conversation % 2}")
    hashes = block_hashes(prompt, 16, 512)
    return {
        "tier_choice_us": _per_call_us(lambda: policy.choose(120, 64), 100_000),
        "route_alias_us": asyncio.run(routes("default", 2000)),
        "route_auto_us": asyncio.run(routes("auto", 2000)),
        "prefix_hashes_1500_tokens_us": _per_call_us(lambda: block_hashes(prompt, 16, 512), 2000),
        "prefix_match_us": _per_call_us(lambda: index.longest_match(hashes, {"r0", "r1"}), 2000),
    }


def system_prompt(conversation: int) -> str:
    words = [TOPICS[(conversation * 5 + k) % len(TOPICS)] for k in range(380)]
    return f"Conversation {conversation}. You are an expert on " + " ".join(words) + "."


async def conversation(
    client: httpx.AsyncClient, model: str, index: int, turns: int, out: list[dict[str, Any]]
) -> None:
    messages = [{"role": "system", "content": system_prompt(index)}]
    for turn in range(turns):
        messages.append({"role": "user", "content": f"Question {turn}: tell me one fact."})
        body = {
            "model": model,
            "messages": messages,
            "max_tokens": 24,
            "temperature": 0.7,
            "ignore_eos": True,
            "stream": True,
        }
        start = time.perf_counter()
        ttft: float | None = None
        text: list[str] = []
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            response.raise_for_status()
            replica = response.headers.get("x-raygate-replica", "?")
            async for line in response.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                delta = (json.loads(line[6:]).get("choices") or [{}])[0].get("delta", {})
                if delta.get("content"):
                    ttft = ttft if ttft is not None else time.perf_counter() - start
                    text.append(delta["content"])
        messages.append({"role": "assistant", "content": "".join(text)})
        out.append({"conversation": index, "turn": turn, "replica": replica, "ttft_s": ttft})


def multi_turn(
    affinity: bool, conversations: int, turns: int, concurrency: int, workdir: Path
) -> dict[str, Any]:
    redis = redis_server(free_port(), workdir)
    redis.start(ready_path=None)
    wait_for_port(int(redis.base_url.rsplit(":", 1)[1]))
    profile = copy.deepcopy(with_redis(local_profile(), redis.base_url + "/0"))
    args = profile["applications"][0]["args"]
    model = args["models"][0]
    model["deployment"]["num_replicas"] = 2
    model["deployment"]["num_cpus"] = 0.25
    if not affinity:
        model["prefix_affinity"] = None
    args.update(models=[model], embedders=[], rerankers=[], cache=None, routing={})
    server = serve_server(
        "raygate", profile, free_port(), workdir, RESULTS / "routing.raygate.log.tmp"
    )
    server.start(ready_path="/ready", timeout_s=300)
    try:
        return asyncio.run(drive(server.base_url, model["id"], conversations, turns, concurrency))
    finally:
        server.stop()
        redis.stop()


async def drive(
    base_url: str, model: str, conversations: int, turns: int, concurrency: int
) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(base_url=base_url, timeout=300, limits=limits) as client:
        await conversation(client, model, 10_000, 1, [])  # warm-up, not counted
        pending = list(range(conversations))
        start = time.perf_counter()

        async def worker() -> None:
            while pending:
                await conversation(client, model, pending.pop(0), turns, out)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    later = [r["ttft_s"] * 1000 for r in out if r["turn"] > 0 and r["ttft_s"] is not None]
    first = [r["ttft_s"] * 1000 for r in out if r["turn"] == 0 and r["ttft_s"] is not None]
    by_conversation: dict[int, Counter[str]] = {}
    for r in out:
        by_conversation.setdefault(r["conversation"], Counter())[r["replica"]] += 1
    stayed = statistics.mean(
        c.most_common(1)[0][1] / sum(c.values()) for c in by_conversation.values()
    )
    return {
        "requests": len(out),
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(out) / wall, 2),
        "ttft_first_turn_p50_ms": round(percentile(first, 0.5), 1),
        "ttft_later_turns_p50_ms": round(percentile(later, 0.5), 1),
        "ttft_later_turns_p95_ms": round(percentile(later, 0.95), 1),
        "turns_on_the_conversations_main_replica": round(stayed, 3),
        "replica_share": dict(Counter(r["replica"] for r in out)),
    }


def markdown(record: dict[str, Any]) -> str:
    cost = record["decision_cost"]
    lines = [
        "# Routing",
        "",
        f"{machine_line(record['machine'])} Command: `{record['command']}`.",
        "",
        "## Decision cost (in process, per call)",
        "",
        f"- `auto` tier choice: {cost['tier_choice_us']} µs",
        f"- `RoutePlanner.route` (alias): {cost['route_alias_us']} µs; (auto): "
        f"{cost['route_auto_us']} µs. These include the thread hop of tokenization "
        "(stubbed out) and the context check, not the tokenizer itself.",
        f"- prefix affinity: hashing a 1,500-token prompt {cost['prefix_hashes_1500_tokens_us']} "
        f"µs, longest-prefix lookup {cost['prefix_match_us']} µs",
        "",
        "## Multi-turn, two replicas of the default model",
        "",
        "| replica choice | requests/s | TTFT turn 1 p50 ms | TTFT later turns p50 ms | "
        "later p95 ms | turns on the conversation's main replica |",
        "|---|---|---|---|---|---|",
    ]
    for label, key in (("prefix affinity", "affinity"), ("Serve default", "default")):
        r = record["multi_turn"][key]
        lines.append(
            f"| {label} | {r['requests_per_s']} | {r['ttft_first_turn_p50_ms']} | "
            f"{r['ttft_later_turns_p50_ms']} | {r['ttft_later_turns_p95_ms']} | "
            f"{r['turns_on_the_conversations_main_replica']:.0%} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--conversations", type=int, default=12)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args(argv)
    record: dict[str, Any] = {
        "machine": machine(),
        "command": "python -m loadtests.bench_routing " + " ".join(argv or sys.argv[1:]),
        "decision_cost": decision_cost(),
        "multi_turn": {},
    }
    for key, affinity in (("affinity", True), ("default", False)):
        with tempfile.TemporaryDirectory() as tmp:
            record["multi_turn"][key] = multi_turn(
                affinity, args.conversations, args.turns, args.concurrency, Path(tmp)
            )
    write_result("routing", record, markdown(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
