"""Streaming chat throughput and TTFT: raygate vs vLLM's own OpenAI server (and Ray Serve LLM).

The same model and engine settings (the local profile's) are served by each system in
turn, on this machine, and driven with the same streaming load: concurrency 1, 4 and 16,
fixed output length (ignore_eos). Writes loadtests/results/llm_streaming.{json,md}.

    .venv/bin/python -m loadtests.bench_llm [--systems vllm raygate ray-serve-llm]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from loadtests.harness import (
    ENV,
    PY,
    RESULTS,
    Server,
    local_profile,
    machine,
    machine_line,
    redis_server,
    serve_server,
    streaming_level,
    wait_for_port,
    with_redis,
    write_result,
)
from tests.ports import free_port


def vllm_server(model: dict[str, Any], port: int, log: Path) -> Server:
    """vLLM's own OpenAI server with the same engine arguments as the raygate profile."""
    argv = [
        PY, "-m", "vllm.entrypoints.openai.api_server",
        "--model", model["model"], "--served-model-name", model["id"],
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    for key, value in model["engine_kwargs"].items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is not False:
            argv += [flag, str(value)]
    return Server("vllm", argv, f"http://127.0.0.1:{port}", ENV, log)


def ray_serve_llm_config(profile: dict[str, Any]) -> dict[str, Any]:
    config = copy.deepcopy(profile)
    app = config["applications"][0]
    app["import_path"] = "loadtests.ray_serve_llm_app:build_app"
    app["args"] = {"model": app["args"]["models"][0]}
    return config


def run_system(server: Server, model_id: str, levels: list[int], max_tokens: int) -> list[dict]:
    try:
        server.start()
        asyncio.run(streaming_level(server.base_url, model_id, 2, 4, 16))  # warm-up
        results = []
        for c in levels:
            requests = max(8, 4 * c)
            level = asyncio.run(streaming_level(server.base_url, model_id, c, requests, max_tokens))
            print(f"  {server.name} c={c}: {level}", flush=True)
            results.append(level)
        return results
    finally:
        server.stop()


def markdown(record: dict[str, Any]) -> str:
    m = record["machine"]
    lines = [
        "# Streaming chat: raygate vs vLLM's own server",
        "",
        machine_line(m),
        f"Command: `{record['command']}`",
        f"Model: {record['model']}; {record['max_tokens']} output tokens per request "
        "(ignore_eos), streamed with include_usage. Figures are medians of "
        f"{record['repeat']} interleaved run(s) per system; every run is in the JSON.",
        "",
        "| system | concurrency | requests | output tok/s | TTFT p50 ms | TTFT p95 ms |",
        "|---|---|---|---|---|---|",
    ]
    for system, levels in record["systems"].items():
        for r in levels:
            lines.append(
                f"| {system} | {r['concurrency']} | {r['requests']} | {r['output_tok_s']} | "
                f"{r['ttft_p50_ms']} | {r['ttft_p95_ms']} |"
            )
    if record.get("comparison"):
        lines += [
            "",
            "| vs vLLM | concurrency | throughput ratio | TTFT p50 added ms |",
            "|---|---|---|---|",
        ]
        for system, rows in record["comparison"].items():
            for r in rows:
                lines.append(
                    f"| {system} | {r['concurrency']} | {r['throughput_ratio']} | "
                    f"{r['ttft_p50_added_ms']} |"
                )
    return "\n".join(lines) + "\n"


def median_levels(repetitions: list[list[dict]]) -> list[dict]:
    """Per concurrency level, the median of each figure over the repetitions."""
    merged = []
    for levels in zip(*repetitions, strict=True):
        row = dict(levels[0])
        for key in ("output_tok_s", "ttft_p50_ms", "ttft_p95_ms"):
            row[key] = round(statistics.median(level[key] for level in levels), 1)
        row["requests"] = sum(level["requests"] for level in levels)
        merged.append(row)
    return merged


def compare(systems: dict[str, list[dict]]) -> dict[str, list[dict]]:
    base = {r["concurrency"]: r for r in systems.get("vllm", [])}
    out: dict[str, list[dict]] = {}
    for name, levels in systems.items():
        if name == "vllm" or not base:
            continue
        out[name] = [
            {
                "concurrency": r["concurrency"],
                "throughput_ratio": round(
                    r["output_tok_s"] / base[r["concurrency"]]["output_tok_s"], 3
                ),
                "ttft_p50_added_ms": round(
                    r["ttft_p50_ms"] - base[r["concurrency"]]["ttft_p50_ms"], 1
                ),
            }
            for r in levels
            if r["concurrency"] in base
        ]
    return out


def make_server(name: str, profile: dict[str, Any], workdir: Path, redis: Server) -> Server:
    model = profile["applications"][0]["args"]["models"][0]
    port = free_port()
    log = RESULTS / f"llm_streaming.{name}.log.tmp"
    if name == "vllm":
        return vllm_server(model, port, log)
    if name == "raygate":
        return serve_server(name, with_redis(profile, redis.base_url + "/0"), port, workdir, log)
    return serve_server(name, ray_serve_llm_config(profile), port, workdir, log)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--systems", nargs="+", default=["vllm", "raygate", "ray-serve-llm"],
        choices=["vllm", "raygate", "ray-serve-llm"],
    )  # fmt: skip
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument(
        "--repeat", type=int, default=1, help="interleaved runs per system; medians reported"
    )
    args = parser.parse_args(argv)

    profile = local_profile()
    model_id = profile["applications"][0]["args"]["models"][0]["id"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[list[dict]]] = {name: [] for name in args.systems}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        redis = redis_server(free_port(), workdir)  # raygate's quota store
        redis.start(ready_path=None)
        wait_for_port(int(redis.base_url.rsplit(":", 1)[1]))
        try:
            for rep in range(args.repeat):  # interleaved: drift hits every system alike
                for name in args.systems:
                    server = make_server(name, profile, workdir, redis)
                    print(f"{name} (run {rep + 1}): starting at {server.base_url}", flush=True)
                    levels = run_system(server, model_id, args.concurrency, args.max_tokens)
                    runs[name].append(levels)
        finally:
            redis.stop()

    systems = {name: median_levels(reps) for name, reps in runs.items()}
    record = {
        "machine": machine(),
        "command": "python -m loadtests.bench_llm " + " ".join(argv or sys.argv[1:]),
        "model": model_id,
        "max_tokens": args.max_tokens,
        "repeat": args.repeat,
        "systems": systems,  # medians over the repetitions
        "comparison": compare(systems),
        "runs": runs,
    }
    write_result("llm_streaming", record, markdown(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
