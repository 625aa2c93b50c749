"""Semantic cache: hit vs miss latency through the whole gateway, and the index at scale.

1. Gateway (local profile under `serve run`, its own Redis): sequential non-streaming
   chats. Exact hits (the stored question again), semantic hits (a fixed paraphrase),
   misses (new questions: the model answers, then the answer is stored) and, as the
   floor of any request on this machine, GET /health. Semantic hits are verified ones:
   evidence certifying every similarity is written first (what ~300 agreeing
   verifications per bin leave), so the evidence read is in every hit's time.
2. Index (the gateway's ResponseCache and Redis store, in this process): N entries in
   one partition (the worst case: a single-turn FAQ tenant), random 384-d vectors.
   Bulk store rate, cold start of a new replica, lookup latency (Redis exact tier,
   FAISS search, guards, read-back) with a static threshold and with verification (the
   evidence read added to every semantic hit), search alone, put -> visible on another
   replica, and the index's memory.

Writes loadtests/results/cache.{json,md}.

    .venv/bin/python -m loadtests.bench_cache [--entries 10000 100000] [--requests 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from gateway.build import build_cache
from gateway.cache.config import CacheConfig, TenantCache, VerificationConfig
from gateway.cache.index import IndexedEntry, VectorIndex
from gateway.cache.keys import cache_key
from gateway.cache.redis_store import CachedAnswer, RedisCacheStore
from gateway.cache.service import CacheMetrics, CacheQuery, ResponseCache, evidence_scope
from gateway.cache.verified import bin_of
from gateway.redis_conn import redis_client
from loadtests.harness import (
    RESULTS,
    Server,
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
from schemas.openai import ChatCompletionRequest
from tests.ports import free_port

QUESTION = "What is the capital of France? Answer in one short sentence."
PARAPHRASE = "What's the capital city of France? Answer in one short sentence."
DIMENSIONS = 384


def sync_redis(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url)


def summary(samples_ms: list[float]) -> dict[str, float]:
    return {
        "n": len(samples_ms),
        "p50_ms": round(percentile(samples_ms, 0.5), 2),
        "p95_ms": round(percentile(samples_ms, 0.95), 2),
    }


def certify(redis: Any, prefix: str, config: CacheConfig, tenant: str, model: str) -> None:
    """Evidence that certifies every similarity from the floor up (sync redis client)."""
    scope = evidence_scope(config.verification, tenant, model)
    counts = {f"a:{b}": 300 for b in range(bin_of(config.similarity_threshold), bin_of(1) + 1)}
    redis.hset(f"{prefix}:evidence:{scope}", mapping=counts)


# ------------------------------------------------------------------- 1. gateway


def chat(model: str, text: str) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "temperature": 0,
        "max_tokens": 32,
        "stop": ["\n", "."],
    }


def timed(
    client: httpx.Client, body: dict[str, Any], cache_control: str = ""
) -> tuple[float, httpx.Response]:
    headers = {"Cache-Control": cache_control} if cache_control else {}
    start = time.perf_counter()
    response = client.post("/v1/chat/completions", json=body, headers=headers)
    elapsed = (time.perf_counter() - start) * 1000
    response.raise_for_status()
    return elapsed, response


def gateway_latency(
    base_url: str, model: str, requests: int, misses: int, certified: Callable[[], None]
) -> dict[str, Any]:
    certified()
    with httpx.Client(base_url=base_url, timeout=120) as client:
        timed(client, chat(model, QUESTION))
        deadline = time.monotonic() + 30
        while True:  # the store happens in the background: wait until it is readable
            probe = client.post(
                "/v1/chat/completions",
                json=chat(model, QUESTION),
                headers={"Cache-Control": "only-if-cached"},
            )
            if probe.status_code == 200 or time.monotonic() > deadline:
                break
        probe.raise_for_status()

        def run(body: dict[str, Any], expect: str, tier: str | None) -> list[float]:
            samples = []
            for _ in range(requests):
                elapsed, response = timed(client, body)
                assert response.headers["x-raygate-cache"] == expect, response.headers
                assert response.headers.get("x-raygate-cache-tier") == tier
                samples.append(elapsed)
            return samples

        for _ in range(20):  # warm-up: connections, code paths
            timed(client, chat(model, PARAPHRASE))
        exact = run(chat(model, QUESTION), "hit", "exact")
        semantic = run(chat(model, PARAPHRASE), "hit", "semantic")
        miss = []
        for i in range(misses):  # a new question each time: the model answers
            elapsed, response = timed(client, chat(model, f"What is {i} plus {i + 7}?"))
            assert response.headers["x-raygate-cache"] == "miss"
            miss.append(elapsed)
        health = []
        for _ in range(requests):  # the floor: a request that does nothing
            start = time.perf_counter()
            client.get("/health").raise_for_status()
            health.append((time.perf_counter() - start) * 1000)
    return {
        "health": summary(health),
        "exact_hit": summary(exact),
        "semantic_hit": summary(semantic),
        "miss": summary(miss),
    }


# --------------------------------------------------------------------- 2. index


def random_units(n: int, rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal((n, DIMENSIONS)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def ask(text: str) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": text}], "temperature": 0}
    )


def rss_mib() -> float:
    return psutil.Process(os.getpid()).memory_info().rss / 2**20


def holding(n: int) -> Callable[[ResponseCache], bool]:
    return lambda cache: cache.index_size >= n


async def put_to_visible_ms(
    store: RedisCacheStore, reader: ResponseCache, partition: str, entries: int, rng: Any
) -> list[float]:
    """Put 100 entries on one replica's store; how long until the other's index holds each."""
    visible_ms = []
    for i in range(100):
        target = entries + i + 1
        t0 = time.perf_counter()
        vector = random_units(1, rng)[0]
        await store.put(partition, f"new-{i}", f"n{i}", vector, CachedAnswer("x", 1), 3600)
        await asyncio.wait_for(reader.until(holding(target)), 10)
        visible_ms.append((time.perf_counter() - t0) * 1000)
    return visible_ms


async def index_at(url: str, entries: int, lookups: int) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    vectors = random_units(entries, rng)
    current: dict[str, np.ndarray] = {"v": vectors[0]}

    async def embed(_: str) -> np.ndarray:
        return current["v"]

    config = CacheConfig(
        redis_url=url,
        key_prefix=f"bench:{uuid.uuid4().hex}",
        embedder="e",
        timeout_s=1.0,
        verification=None,
        index_max_entries=entries + 1000,  # room for the puts timed below
    )
    store = RedisCacheStore(redis_client(url, None, 5.0), 5.0, config.key_prefix, 1_000_000)
    tenant = TenantCache()
    key = cache_key("bench", "m", ask("q"), 64)  # the partition of these questions
    start = time.perf_counter()
    sem = asyncio.Semaphore(32)

    async def put(i: int) -> None:
        async with sem:
            answer = CachedAnswer(f"answer {i}", 2)
            await store.put(key.partition, f"exact-{i}", f"q{i}", vectors[i], answer, 3600)

    await asyncio.gather(*(put(i) for i in range(entries)))
    put_s = time.perf_counter() - start

    rss_before = rss_mib()
    reader = build_cache(config, embed, CacheMetrics())
    verified_config = config.model_copy(update={"verification": VerificationConfig(verify_share=0)})
    verified = build_cache(verified_config, embed, CacheMetrics())
    certify(sync_redis(url), config.key_prefix, verified_config, "bench", "m")
    start = time.perf_counter()
    reader.start()
    await reader.synced.wait()
    rebuild_s = time.perf_counter() - start
    index_mib = rss_mib() - rss_before
    assert reader.index_size == entries

    verified.start()
    await verified.synced.wait()
    lookup_ms, verified_ms, search_ms = [], [], []
    hits = verified_hits = 0
    index = VectorIndex(
        config.index_max_entries
    )  # the same index alone, for the cost of the search itself
    for i, vector in enumerate(vectors):
        index.add(IndexedEntry(i, key.partition, f"q{i}", time.time() + 3600), vector)
    for _ in range(lookups):
        i = int(rng.integers(entries))
        noise = rng.standard_normal(DIMENSIONS).astype(np.float32) * 0.01
        current["v"] = vectors[i] + noise  # a near neighbour of entry i
        t0 = time.perf_counter()
        found = await reader.lookup(CacheQuery.of("bench", tenant, "m", 64), ask(f"q{i}!"))
        lookup_ms.append((time.perf_counter() - t0) * 1000)
        hits += found.tier == "semantic"
        t0 = time.perf_counter()
        found = await verified.lookup(CacheQuery.of("bench", tenant, "m", 64), ask(f"q{i}!"))
        verified_ms.append((time.perf_counter() - t0) * 1000)
        verified_hits += found.hit and found.tier == "semantic"
        t0 = time.perf_counter()
        index.search(key.partition, current["v"], config.candidates)
        search_ms.append((time.perf_counter() - t0) * 1000)

    visible_ms = await put_to_visible_ms(store, reader, key.partition, entries, rng)
    await reader.stop()
    await verified.stop()
    return {
        "entries": entries,
        "bulk_store_per_s": round(entries / put_s),
        "cold_start_s": round(rebuild_s, 2),
        "index_rss_mib": round(index_mib),
        "semantic_hit_rate": hits / lookups,
        "verified_hit_rate": verified_hits / lookups,
        "lookup": summary(lookup_ms),
        "verified_lookup": summary(verified_ms),
        "faiss_search": summary(search_ms),
        "put_to_visible": summary(visible_ms),
    }


# ---------------------------------------------------------------------- report


def markdown(record: dict[str, Any]) -> str:
    lines = [
        "# Semantic cache",
        "",
        f"{machine_line(record['machine'])} Command: `{record['command']}`.",
        "",
    ]
    if "gateway" in record:
        g = record["gateway"]
        lines += [
            "## Through the gateway (sequential, non-streaming chat, local profile)",
            "",
            "| request | n | p50 ms | p95 ms |",
            "|---|---|---|---|",
        ]
        names = {
            "health": "GET /health (Serve proxy + gateway, no work)",
            "exact_hit": "exact hit",
            "semantic_hit": "semantic hit (verified: evidence read included)",
            "miss": "miss (the model answers; stored afterwards)",
        }
        for key, label in names.items():
            s = g[key]
            lines.append(f"| {label} | {s['n']} | {s['p50_ms']} | {s['p95_ms']} |")
        lines.append("")
    if "index" in record:
        lines += [
            "## Index (one partition, 384-d, in-process FAISS flat + Redis)",
            "",
            "| entries | bulk store /s | cold start s | index MiB | lookup p50/p95 ms "
            "| verified lookup p50/p95 ms | FAISS search p50/p95 ms "
            "| put -> other replica p50/p95 ms |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in record["index"]:
            lines.append(
                f"| {r['entries']} | {r['bulk_store_per_s']} | {r['cold_start_s']} "
                f"| {r['index_rss_mib']} | {r['lookup']['p50_ms']} / {r['lookup']['p95_ms']} "
                f"| {r['verified_lookup']['p50_ms']} / {r['verified_lookup']['p95_ms']} "
                f"| {r['faiss_search']['p50_ms']} / {r['faiss_search']['p95_ms']} "
                f"| {r['put_to_visible']['p50_ms']} / {r['put_to_visible']['p95_ms']} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--entries", nargs="*", type=int, default=[10_000, 100_000])
    parser.add_argument("--lookups", type=int, default=500)
    parser.add_argument("--requests", type=int, default=200, help="per kind of hit")
    parser.add_argument("--misses", type=int, default=30)
    parser.add_argument("--skip-gateway", action="store_true")
    args = parser.parse_args(argv)

    record: dict[str, Any] = {
        "machine": machine(),
        "command": "python -m loadtests.bench_cache " + " ".join(argv or sys.argv[1:]),
    }
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        redis = redis_server(free_port(), workdir)
        redis.start(ready_path=None)
        wait_for_port(int(redis.base_url.rsplit(":", 1)[1]))
        url = redis.base_url + "/0"
        try:
            record["index"] = [asyncio.run(index_at(url, n, args.lookups)) for n in args.entries]
            if not args.skip_gateway:
                record["gateway"] = gateway(url, workdir, args.requests, args.misses)
        finally:
            redis.stop()
    write_result("cache", record, markdown(record))
    return 0


def gateway(redis_url: str, workdir: Path, requests: int, misses: int) -> dict[str, Any]:
    profile = with_redis(local_profile(), redis_url)
    cache = profile["applications"][0]["args"]["cache"]
    # Every certified candidate served (none of the 5% still verified, whose fresh answers
    # would be stored and turn the paraphrase into an exact hit); the evidence is still read.
    cache["verification"] = {**cache["verification"], "verify_share": 0}
    model = profile["applications"][0]["args"]["models"][0]["id"]
    log = RESULTS / "cache.raygate.log.tmp"
    server: Server = serve_server("raygate", profile, free_port(), workdir, log)
    server.start(ready_path="/ready", timeout_s=300)
    try:
        config = CacheConfig.model_validate(profile["applications"][0]["args"]["cache"])

        def certified() -> None:
            certify(sync_redis(redis_url), config.key_prefix, config, "local", model)

        return gateway_latency(server.base_url, model, requests, misses, certified)
    finally:
        server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
