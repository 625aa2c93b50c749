"""Embedding and rerank throughput through the cluster vs the model in one process.

In-process: sentence-transformers (the deployments' own wrappers) called directly with
the best of several batch sizes, all threads of this machine, measured before and after
the cluster run and averaged (this machine's speed drifts by up to a quarter). Cluster:
the local profile under `serve run` (its own Redis), /v1/embeddings with 1 and with 32
texts per request (a search query; an indexing job) and /v1/rerank with `--docs`
documents per request, at concurrency 1, 8 and 32. For each cluster run the CPU time of
the proxy, gateway and model replicas (and of Ray's own processes and the load client) is
sampled: the per-request cost of each hop. `--trials` runs the cluster once per trial
(the local profile, or it with the overrides of TRIALS), `--repeat` times in rotating
order; each figure is the median of the repeats.
Writes loadtests/results/encoders.{json,md}.

    .venv/bin/python -m loadtests.bench_encoders [--seconds 20] [--trials profile unshared]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from deployments.embedder import SentenceEmbedder
from deployments.reranker import BiEncoderScorer
from loadtests.harness import (
    RESULTS,
    ROOT,
    SAME_LOOP_ENV,
    Server,
    cpu_delta,
    cpu_snapshot,
    load_client,
    local_profile,
    machine,
    machine_line,
    median_per_key,
    percentile,
    redis_server,
    serve_server,
    wait_for_port,
    with_redis,
    write_result,
)
from loadtests.llm_systems import KNOBS
from tests.ports import free_port

MODEL = str(ROOT / "models" / "all-MiniLM-L6-v2")
WORDS = "the quick brown fox jumps over a lazy dog near river bank while children play".split()


def sentence(i: int, words: int = 24) -> str:
    """Distinct texts of realistic length (~30 tokens)."""
    return " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(words)) + f" {i}."


def in_process(seconds: float, docs: int) -> dict[str, Any]:
    embedder = SentenceEmbedder(MODEL, "cpu", normalize=True, batch_size=256)
    best: dict[str, Any] = {}
    texts = [sentence(i) for i in range(512)]
    embedder.encode(texts[:32])  # warm-up
    for batch in (8, 32, 64, 128):
        start, done = time.perf_counter(), 0
        while time.perf_counter() - start < seconds / 4:
            embedder.encode(texts[:batch])
            done += batch
        rate = done / (time.perf_counter() - start)
        best.setdefault("by_batch", {})[batch] = round(rate, 1)
    best["embeddings_per_s"] = max(best["by_batch"].values())
    scorer = BiEncoderScorer(MODEL, "cpu", batch_size=256, max_batch_tokens=1 << 20)
    pairs = [(sentence(q, 8), sentence(q * 100 + d)) for q in range(64) for d in range(docs)]
    rerank: dict[int, float] = {}
    for requests in (1, 8, 32):  # pairs of this many requests scored in one call
        chunk = pairs[: requests * docs]
        start, done = time.perf_counter(), 0
        while time.perf_counter() - start < seconds / 4:
            scorer.score(chunk)
            done += len(chunk)
        rerank[requests * docs] = round(done / (time.perf_counter() - start), 1)
    best["rerank_by_batch"] = rerank
    best["rerank_pairs_per_s"] = max(rerank.values())
    return best


async def drive(
    server: Server, path: str, make: Any, concurrency: int, seconds: float, per_request: int
) -> dict[str, Any]:
    """`concurrency` clients (harness.load_client) POST `make(i)` to `path` back to back
    for `seconds`. Returns items/s, latency p50/p95 and CPU ms per request by process role
    (the load client's too); raises aiohttp.ClientResponseError on an error status."""
    latencies: list[float] = []
    async with load_client(server.base_url, concurrency, 120) as client:
        stop = time.perf_counter() + seconds
        counter = iter(range(10**9))

        async def worker() -> None:
            while time.perf_counter() < stop:
                body = make(next(counter))
                t0 = time.perf_counter()
                async with client.post(path, json=body) as response:
                    response.raise_for_status()
                    await response.read()
                latencies.append((time.perf_counter() - t0) * 1000)

        roots = [server.process.pid] if server.process else []
        before = cpu_snapshot(roots)
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
        cpu = cpu_delta(before, cpu_snapshot(roots))
    requests = max(len(latencies), 1)
    cpu = {role: round(seconds * 1000 / requests, 1) for role, seconds in sorted(cpu.items())}
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "items_per_s": round(len(latencies) * per_request / wall, 1),
        "p50_ms": round(percentile(latencies, 0.5), 1),
        "p95_ms": round(percentile(latencies, 0.95), 1),
        "cpu_ms_per_request": cpu,
    }


# Overrides of the local profile's settings, by the section they apply to: each encoder of
# a list section (embedders, rerankers), or a single section (gateway); under CLUSTER_ENV,
# environment variables for the whole cluster (`serve run` and every process it starts).
CLUSTER_ENV = "cluster-env"
TRIALS: dict[str, dict[str, dict[str, Any]]] = {
    "profile": {},
    "one-thread": {"embedders": {"torch_threads": 1}, "rerankers": {"torch_threads": 1}},
    "unshared": {"embedders": {"single_text_calls_in_flight": None}},  # a call per request
    # OpenMP's default wait policy (threads spin before they sleep) instead of PASSIVE
    "spin": {"embedders": {"omp_wait_policy": None}, "rerankers": {"omp_wait_policy": None}},
    # a batch that is not full waits 5 ms for more (the profile's batches start at once)
    "wait-5ms": {
        "embedders": {"batch_wait_timeout_s": 0.005},
        "rerankers": {"batch_wait_timeout_s": 0.005},
    },
    # spin for 10,000 turns (well under a millisecond), then sleep: libgomp's GOMP_SPINCOUNT
    "spin-10k": {
        section: {"omp_wait_policy": None, "deployment": {"env": {"GOMP_SPINCOUNT": "10000"}}}
        for section in ("embedders", "rerankers")
    },
    # Serve runs the encoders' user code and handle routers on the replica's own event loop
    # instead of a thread and a loop of their own; `same-loop`: the gateway's as well
    "encoders-same-loop": {
        section: {"deployment": {"env": SAME_LOOP_ENV}} for section in ("embedders", "rerankers")
    },
    "same-loop": {
        section: {"deployment": {"env": SAME_LOOP_ENV}}
        for section in ("gateway", "embedders", "rerankers")
    },
    # Serve's own Python proxy instead of the profile's HAProxy (configs/cluster.env)
    "serve-proxy": {CLUSTER_ENV: dict(KNOBS["serve-proxy"].env)},
    # Serve's default control loop (every 0.1 s) instead of the profile's 0.5 s
    "control-loop-100ms": {CLUSTER_ENV: dict(KNOBS["control-loop-100ms"].env)},
    # single-text requests share at most 2 (8) embedder calls in flight per gateway (profile: 4)
    "calls-2": {"embedders": {"single_text_calls_in_flight": 2}},
    "calls-8": {"embedders": {"single_text_calls_in_flight": 8}},
    # Ray's default worker niceness (15) instead of the profile's 0
    "worker-nice-15": {CLUSTER_ENV: dict(KNOBS["worker-nice-15"].env)},
}


def merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` laid over it, nested dicts merged key by key."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            value = merged(out[key], value)
        out[key] = value
    return out


def with_trial(args: dict[str, Any], trial: str) -> dict[str, Any]:
    """The gateway's `args` with each section's settings overlaid by TRIALS[trial]."""
    out = dict(args)
    for section, overrides in TRIALS[trial].items():
        if section == CLUSTER_ENV:
            continue
        base = args.get(section, {})
        if isinstance(base, list):
            out[section] = [merged(encoder, overrides) for encoder in base]
        else:
            out[section] = merged(base, overrides)
    return out


def cluster(seconds: float, docs: int, workdir: Path, trial: str) -> dict[str, Any]:
    """One run of the local profile with the overrides of TRIALS[trial]."""
    redis = redis_server(free_port(), workdir)
    redis.start(ready_path=None)
    wait_for_port(int(redis.base_url.rsplit(":", 1)[1]))
    profile = with_redis(local_profile(), redis.base_url + "/0")
    args = with_trial(profile["applications"][0]["args"], trial)
    profile["applications"][0]["args"] = args
    embedder, reranker = args["embedders"][0]["id"], args["rerankers"][0]["id"]
    server = serve_server(
        "raygate",
        profile,
        free_port(),
        workdir,
        RESULTS / "encoders.raygate.log.tmp",
        TRIALS[trial].get(CLUSTER_ENV),
    )
    server.start(ready_path="/ready", timeout_s=300)
    try:

        def embed_body(texts: int) -> Any:
            def body(i: int) -> dict[str, Any]:
                return {"model": embedder, "input": [sentence(i * 64 + k) for k in range(texts)]}

            return body

        def rerank_body(i: int) -> dict[str, Any]:
            documents = [sentence(i * 100 + d) for d in range(docs)]
            return {"model": reranker, "query": sentence(i, 8), "documents": documents}

        out: dict[str, Any] = {"trial": trial, "embeddings": [], "rerank": []}
        for c in (1, 8, 32):
            for texts in (1, 32):
                row = asyncio.run(
                    drive(server, "/v1/embeddings", embed_body(texts), c, seconds, texts)
                )
                out["embeddings"].append({**row, "per_request": texts})
            row = asyncio.run(drive(server, "/v1/rerank", rerank_body, c, seconds, docs))
            out["rerank"].append({**row, "per_request": docs})
        return out
    finally:
        server.stop()
        redis.stop()


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The runs of one trial as one: each row's figures the median over the runs."""

    def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
        cpu = median_per_key(row["cpu_ms_per_request"] for row in rows)
        return {
            "concurrency": rows[0]["concurrency"],
            "per_request": rows[0]["per_request"],
            "requests": sum(row["requests"] for row in rows),
            **{
                key: round(statistics.median(row[key] for row in rows), 1)
                for key in ("items_per_s", "p50_ms", "p95_ms")
            },
            "cpu_ms_per_request": {role: round(ms, 1) for role, ms in cpu.items()},
        }

    return {
        "trial": runs[0]["trial"],
        "runs": len(runs),
        **{
            route: [median_row(list(rows)) for rows in zip(*(r[route] for r in runs), strict=True)]
            for route in ("embeddings", "rerank")
        },
    }


def markdown(record: dict[str, Any]) -> str:
    base = record["in_process"]
    lines = [
        "# Embedding and rerank throughput",
        "",
        f"{machine_line(record['machine'])} Command: `{record['command']}`.",
        "",
        f"In one process (best batch size, mean of a run before and one after the cluster): "
        f"{base['embeddings_per_s']} embeddings/s, {base['rerank_pairs_per_s']} rerank pairs/s.",
        "",
    ]
    for label, run in zip(("before", "after"), base["runs"], strict=True):
        lines.append(
            f"- {label}: embeddings/s by texts per call {run['by_batch']}; "
            f"rerank pairs/s by pairs per call {run['rerank_by_batch']}"
        )
    lines += [
        "",
        "CPU ms per request: CPU time of the proxy (HAProxy and its manager, or Serve's "
        "proxy), the gateway replica, the model replica and the load client (aiohttp, on the "
        "same cores) during the run, divided by the requests served; every role is in the "
        "JSON. Each figure is the median of the trial's runs (`runs` in the JSON, in the order "
        "they ran).",
        "",
        "| trial | route | items per request | concurrency | items/s | vs in-process "
        "| p50 ms | p95 ms | CPU ms/request: proxy, gateway, model, client |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for trial in record["cluster"]:
        for route, key in (("embeddings", "embeddings_per_s"), ("rerank", "rerank_pairs_per_s")):
            for row in trial[route]:
                ratio = row["items_per_s"] / base[key]
                cpu = row["cpu_ms_per_request"]
                model = cpu.get("embedder" if route == "embeddings" else "reranker", 0.0)
                lines.append(
                    f"| {trial['trial']} | {route} | {row['per_request']} "
                    f"| {row['concurrency']} | {row['items_per_s']} | {ratio:.2f}x "
                    f"| {row['p50_ms']} | {row['p95_ms']} "
                    f"| {cpu.get('serve-proxy', 0.0)}, {cpu.get('gateway', 0.0)}, {model}, "
                    f"{cpu.get('load-client', 0.0)} |"
                )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=20, help="per measurement")
    parser.add_argument("--docs", type=int, default=10, help="documents per rerank request")
    parser.add_argument("--trials", nargs="+", choices=TRIALS, default=["profile"])
    parser.add_argument("--repeat", type=int, default=1, help="runs of each trial")
    args = parser.parse_args(argv)
    trials: list[str] = args.trials
    record: dict[str, Any] = {
        "machine": machine(),
        "command": "python -m loadtests.bench_encoders " + " ".join(argv or sys.argv[1:]),
    }
    first = in_process(args.seconds, args.docs)
    runs: list[dict[str, Any]] = []
    for repeat in range(args.repeat):
        for trial in trials[repeat % len(trials) :] + trials[: repeat % len(trials)]:
            with tempfile.TemporaryDirectory() as tmp:
                runs.append(cluster(args.seconds, args.docs, Path(tmp), trial))
    record["runs"] = runs
    record["trials"] = {trial: TRIALS[trial] for trial in trials}
    record["cluster"] = [medians([r for r in runs if r["trial"] == t]) for t in trials]
    second = in_process(args.seconds, args.docs)
    record["in_process"] = {
        "runs": [first, second],
        "embeddings_per_s": round((first["embeddings_per_s"] + second["embeddings_per_s"]) / 2, 1),
        "rerank_pairs_per_s": round(
            (first["rerank_pairs_per_s"] + second["rerank_pairs_per_s"]) / 2, 1
        ),
    }
    write_result("encoders", record, markdown(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
