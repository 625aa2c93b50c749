"""Relay capacity of one gateway replica, against synthetic engines (no model computes).

The local profile with its models replaced by two synthetic ones (stream_interval 1
and 4; same tokenizer and template), no fallbacks, no cache, the quota off unless
`--quota`, one gateway replica. Per level, `c` closed-loop streams start evenly spread
over one answer's length, then `--seconds` are measured: delivered output tok/s,
chunks/s, requests/s, per-stream rate, TTFT, and CPU by process role (the load client
included: it shares the cores). A pass at max_tokens 1 splits each role's CPU
into a cost per request and per chunk. Each sweep runs `--repeat` times, the two
intervals alternating first; every figure is the median of a level's repeats (the raw
runs stay in the JSON). Capacity: loadtests.relay_capacity.capacity.

    python -m loadtests.bench_relay [--levels 16,32,64,128,256] [--seconds 30]
                                    [--repeat 2] [--quota] [--knob serve-proxy]

`--knob` runs the cluster with one of the streaming benchmark's Serve knobs
(loadtests.llm_systems.KNOBS, those that keep the proxy's address) and writes
`relay_<knob>.{json,md}` instead of `relay.*`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from loadtests.harness import (
    RESULTS,
    cpu_delta,
    cpu_snapshot,
    load_client,
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
from loadtests.llm_systems import KNOBS
from loadtests.relay_capacity import capacity, medians, replicas_needed, split_cpu
from tests.ports import free_port

FIRST_TOKEN_S, TOKENS_PER_S, MAX_TOKENS = 0.05, 20.0, 256
INTERVALS = (1, 4)
ENGINE_RATES = (2500, 10000)
# harness roles, by the names of this benchmark's table
RELAY_ROLES = {
    "serve-proxy": "proxy",
    "gateway": "gateway",
    "llm-replica": "model",
    "load-client": "client",
}


def model_id(interval: int) -> str:
    return f"synthetic-si{interval}"


def relay_profile(redis_url: str, tenants_file: Path, quota: bool) -> dict[str, Any]:
    config = with_redis(local_profile(), redis_url)
    args = config["applications"][0]["args"]
    args["quota"]["enabled"] = quota
    template = args["models"][0]
    args["models"] = [
        {
            "id": model_id(si),
            "model": template["model"],
            "chat_template": template["chat_template"],
            "prefix_affinity": None,
            "synthetic": {
                "first_token_s": FIRST_TOKEN_S,
                "tokens_per_s": TOKENS_PER_S,
                "stream_interval": si,
            },
            "deployment": {"max_ongoing_requests": 4096, "num_cpus": 0},
        }
        for si in INTERVALS
    ]
    args["routing"].pop("auto", None)
    args["routing"]["fallbacks"] = {}
    args.pop("cache", None)
    args["auth"]["tenants_file"] = str(tenants_file)
    args["gateway"]["deployment"]["max_ongoing_requests"] = 4096
    return config


def roomy_tenants(path: Path) -> Path:
    """With --quota the quota runs (Redis round trips) but never refuses at these levels."""
    big = {"per_minute": 10**9, "burst": 10**9}
    limits: dict[str, Any] = {"requests": big, "tokens": big, "concurrent_requests": 100_000}
    tenant = {"id": "local", "models": ["*"], "limits": limits}
    path.write_text(yaml.safe_dump({"tenants": [tenant]}))
    return path


def relay_cpu(used: dict[str, float]) -> dict[str, float]:
    """CPU seconds by harness role, as this benchmark's roles: Serve's proxy and
    replicas, and this client (the rest left out)."""
    out: dict[str, float] = {}
    for role, seconds in used.items():
        if (name := RELAY_ROLES.get(role)) is not None:
            out[name] = out.get(name, 0.0) + seconds
    return out


@dataclass(frozen=True)
class Window:
    """The measured part of a level: after every stream has started, staggered over one
    answer's length, so the streams' phases are spread as in a steady state."""

    start: float
    end: float

    def __contains__(self, t: float) -> bool:
        return self.start <= t < self.end


async def stream(
    client: aiohttp.ClientSession,
    model: str,
    max_tokens: int,
    begin: float,
    window: Window,
    out: dict[str, Any],
) -> None:
    """One closed-loop stream from `begin`: requests back to back until the window ends,
    when it hangs up (the gateway cancels). Counts the chunks with text (not the role or
    finish events) and tokens that arrive in the window, and the TTFT (read even past
    the window's end) and pace of the requests that start in it."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Count."}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    interval = int(model.rsplit("si", 1)[1])
    await asyncio.sleep(max(0.0, begin - time.monotonic()))
    while (start := time.monotonic()) < window.end:
        counted = start in window
        out["started"] += counted
        first = last = 0.0
        tokens = 0
        async with client.post("/v1/chat/completions", json=body) as response:
            if response.status != 200:
                out["errors"] += counted
                await response.read()
                await asyncio.sleep(0.1)  # a refused stream backs off instead of spinning
                continue
            async for raw in response.content:  # one line at a time
                now = time.monotonic()
                if now >= window.end and (first or not counted):
                    response.close()  # hang up; a counted request first gets its first token
                    break
                line = raw.decode().strip()
                if not line.startswith("data: {") or '"usage":{' in line:
                    continue
                choices = json.loads(line[6:])["choices"]
                if not choices or not choices[0].get("delta", {}).get("content"):
                    continue  # the role event, the finish event: no tokens
                size = min(interval if tokens else 1, max_tokens - tokens)
                tokens += size
                if now in window:
                    out["chunks"] += 1
                    out["tokens"] += size
                if not first:
                    first = now
                    if counted:
                        out["ttft"].append(first - start)
                last = now
            else:
                out["requests"] += time.monotonic() in window
        if counted and last > first:
            out["rates"].append((tokens - 1) / (last - first))


async def cpu_at(t: float, roots: list[int]) -> dict[int, tuple[str, float]]:
    """A CPU snapshot of the processes under `roots`, and this one, at monotonic time `t`."""
    await asyncio.sleep(max(0.0, t - time.monotonic()))
    return cpu_snapshot(roots)


async def level(
    base_url: str, roots: list[int], model: str, c: int, max_tokens: int, seconds: float
) -> dict[str, Any]:
    """`c` closed-loop streams started evenly over one answer's length, measured for
    `seconds` once all have started; CPU counted over the process trees under `roots`
    (the cluster) and this client."""
    out: dict[str, Any] = {
        "chunks": 0,
        "tokens": 0,
        "started": 0,
        "requests": 0,
        "errors": 0,
        "ttft": [],
        "rates": [],
    }
    ramp = FIRST_TOKEN_S + max_tokens / TOKENS_PER_S
    async with load_client(base_url, c, 120) as client:
        t0 = time.monotonic() + 0.5
        window = Window(t0 + ramp, t0 + ramp + seconds)
        streams = [
            stream(client, model, max_tokens, t0 + i * ramp / c, window, out) for i in range(c)
        ]
        _, before, after = await asyncio.gather(
            asyncio.gather(*streams), cpu_at(window.start, roots), cpu_at(window.end, roots)
        )
        cpu = relay_cpu(cpu_delta(before, after))
    return {
        "model": model,
        "concurrency": c,
        "max_tokens": max_tokens,
        "seconds": seconds,
        "ramp_s": ramp,
        "tok_s": out["tokens"] / seconds,
        "chunks_s": out["chunks"] / seconds,
        "requests_s": out["requests"] / seconds,
        "requests": out["requests"],
        "started": out["started"],
        "chunks": out["chunks"],
        "errors": out["errors"],
        # None: no stream finished (rate) or started (TTFT) inside the window
        "stream_rate": percentile(out["rates"], 0.5) if out["rates"] else None,
        "ttft_p50_s": percentile(out["ttft"], 0.5) if out["ttft"] else None,
        "ttft_p95_s": percentile(out["ttft"], 0.95) if out["ttft"] else None,
        "cpu_s": cpu,
        "cpu_share": {k: v / seconds for k, v in cpu.items()},
    }


def _shown(value: float | None, scale: float, spec: str) -> str:
    return "-" if value is None else format(value * scale, spec)


def markdown(record: dict[str, Any]) -> str:
    lines = [
        record["machine_line"],
        f"Command: `{record['command']}`",
        "",
        f"Synthetic engine: first token {FIRST_TOKEN_S * 1000:.0f} ms, {TOKENS_PER_S:.0f} tok/s "
        f"per stream, max_tokens {MAX_TOKENS}; one gateway replica; {record['quota']}. "
        f"Each figure is the median of {record['repeat']} interleaved repeat(s).",
        "",
        "| stream_interval | c | out tok/s | chunks/s | req/s | stream tok/s | TTFT p50 / p95 ms "
        "| CPU cores: proxy / gateway / model / client | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in record["levels"]:
        share = row["cpu_share"]
        cores = " / ".join(
            f"{share.get(r, 0):.2f}" for r in ("proxy", "gateway", "model", "client")
        )
        lines.append(
            f"| {row['model'][-1]} | {row['concurrency']} | {row['tok_s']:.0f} "
            f"| {row['chunks_s']:.0f} "
            f"| {row['requests_s']:.1f} | {_shown(row['stream_rate'], 1, '.1f')} "
            f"| {_shown(row['ttft_p50_s'], 1000, '.0f')} "
            f"/ {_shown(row['ttft_p95_s'], 1000, '.0f')} "
            f"| {cores} "
            f"| {row['errors']} |"
        )
    lines += [
        "",
        "| stream_interval | capacity out tok/s (c) | CPU ms per request / per chunk: "
        "proxy, gateway, model, load client | gateway replicas per engine at "
        + ", ".join(f"{r:,} tok/s" for r in ENGINE_RATES)
        + " |",
        "|---|---|---|---|",
    ]
    for si, cap in record["capacity"].items():
        split = ", ".join(
            f"{v['per_request_ms']:.2f} / {v['per_chunk_ms']:.3f}"
            for v in cap["cpu_split"].values()
        )
        best = (
            "none kept pace"
            if cap["level"] is None
            else f"{cap['level']['tok_s']:.0f} ({cap['level']['concurrency']})"
        )
        need = ", ".join(str(n) for n in cap["replicas_needed"].values()) or "-"
        lines.append(f"| {si} | {best} | {split} | {need} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--levels", default="16,32,64,128,256")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured per level")
    parser.add_argument("--repeat", type=int, default=2, help="sweeps per interval")
    parser.add_argument("--quota", action="store_true", help="the Redis quota on (default off)")
    same_address = [name for name, knob in KNOBS.items() if not knob.direct_ingress]
    parser.add_argument("--knob", choices=same_address, help="a Serve knob for the cluster")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    levels = [int(c) for c in args.levels.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="relay-"))
    redis = redis_server(free_port(), workdir)
    redis.start(ready_path=None)
    wait_for_port(int(redis.base_url.rsplit(":", 1)[1]))
    profile = relay_profile(
        redis.base_url + "/0", roomy_tenants(workdir / "tenants.yaml"), args.quota
    )
    name = f"relay_{args.knob}".replace("-", "_") if args.knob else "relay"
    knob_env = KNOBS[args.knob].env if args.knob else {}
    log = RESULTS / f"{name}.log.tmp"
    server = serve_server(name, profile, free_port(), workdir, log, knob_env)
    runs: list[list[dict[str, Any]]] = []  # per repeat
    try:
        server.start(ready_path="/ready", timeout_s=400)
        roots = [server.process.pid] if server.process else []
        url = server.base_url
        for repeat in range(args.repeat):
            runs.append([])
            order = INTERVALS if repeat % 2 == 0 else INTERVALS[::-1]
            for si in order:
                model = model_id(si)
                asyncio.run(level(url, roots, model, 8, 8, 2))  # warm-up
                sweep = [(c, MAX_TOKENS, args.seconds) for c in levels]
                for c, max_tokens, seconds in [*sweep, (64, 1, args.seconds / 2)]:
                    run = asyncio.run(level(url, roots, model, c, max_tokens, seconds))
                    runs[-1].append(run)
                    print(json.dumps({k: v for k, v in run.items() if k != "cpu_s"}), flush=True)
    finally:
        server.stop()
        redis.stop()
    command = "python -m loadtests.bench_relay " + " ".join(sys.argv[1:] if argv is None else argv)
    quota = "quota on (Redis round trips; limits never reached)" if args.quota else "quota off"
    setting = quota + ", no cache" + (f", knob {args.knob}" if args.knob else "")
    write_result(name, *report(runs, machine(), command, setting))
    return 0


def report(
    runs: list[list[dict[str, Any]]], m: dict[str, Any], command: str, quota: str
) -> tuple[dict[str, Any], str]:
    """The JSON record and Markdown of a run's sweeps (one list of levels per repeat):
    the medians per level, capacity and CPU split per stream_interval."""
    rows = medians([run for sweep in runs for run in sweep])  # the first repeat's order
    caps: dict[str, Any] = {}
    for si in INTERVALS:
        mine = [r for r in rows if r["model"] == model_id(si) and r["max_tokens"] > 1]
        short = next(r for r in rows if r["model"] == model_id(si) and r["max_tokens"] == 1)
        best = capacity(mine, TOKENS_PER_S, FIRST_TOKEN_S)
        base = best or max(mine, key=lambda r: r["tok_s"])
        cpu_split = {}
        for role in ("proxy", "gateway", "model", "client"):
            a, b = split_cpu(
                (base["cpu_s"].get(role, 0.0), base["started"], base["chunks"]),
                (short["cpu_s"].get(role, 0.0), short["started"], short["chunks"]),
            )
            cpu_split[role] = {"per_request_ms": a * 1000, "per_chunk_ms": b * 1000}
        need = {} if best is None else {r: replicas_needed(r, best["tok_s"]) for r in ENGINE_RATES}
        caps[str(si)] = {"level": best, "cpu_split": cpu_split, "replicas_needed": need}
    record = {
        "machine": m,
        "machine_line": machine_line(m),
        "command": command,
        "quota": quota,
        "repeat": len(runs),
        "levels": rows,
        "runs": runs,
        "capacity": caps,
    }
    return record, markdown(record)


if __name__ == "__main__":
    raise SystemExit(main())
