"""Streaming chat throughput, TTFT, per-stage time and CPU by process: raygate vs vLLM's
own server, vLLM behind LiteLLM, and Ray Serve LLM, in one interleaved run.

The same model and engine settings (the local profile's first model) are served by each
system in turn, one engine up at a time, and driven with the same streaming load:
concurrency 1, 4 and 16, fixed output length (ignore_eos), distinct seeded prompts. The
run order rotates every repeat (a Latin square); TTFT percentiles pool every request of
every repeat, throughput is the median of the runs. Every request must report
usage.completion_tokens == max_tokens. Systems and raygate trials are named variants
(loadtests/llm_systems.py). Writes loadtests/results/llm_streaming.{json,md}.

    flock /tmp/raygate-cluster.lock .venv/bin/python -m loadtests.bench_llm --repeat 2 \\
        [--systems vllm vllm+litellm ray-serve-llm raygate raygate+quota+cache \\
         raygate/direct-ingress+same-loop]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gateway.config import AppConfig
from loadtests.haproxy_log import AccessLog, split_remainder
from loadtests.harness import (
    ENV,
    LOOP_LAG_PERIOD_S,
    LOOP_LAG_THRESHOLD_S,
    PY,
    RESULTS,
    ROOT,
    Server,
    cpu_delta,
    cpu_snapshot,
    haproxy_on,
    local_profile,
    machine,
    machine_line,
    redis_server,
    serve_run,
    streaming_level,
    wait_for_port,
    with_redis,
    write_result,
)
from loadtests.llm_stats import (
    cpu_per_request,
    latin_order,
    pool_cpu,
    pool_level,
    ratios,
    stage_summary,
)
from loadtests.llm_systems import Variant, names, variant
from tests.ports import free_port

LITELLM = Path(os.environ.get("RAYGATE_LITELLM_VENV", ROOT / ".venv-litellm")) / "bin" / "litellm"
LITELLM_ENV = {
    "LITELLM_MODE": "PRODUCTION",
    "LITELLM_LOG": "ERROR",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the price list at start-up
    # no key, as raygate's local profile has no auth (1.106 refuses to start without one)
    "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
    "DISABLE_ADMIN_UI": "True",
    "NO_DOCS": "True",
}
DEFAULT_REQUESTS = {1: 32, 4: 64, 16: 128}
CHAT_PATH = "/v1/chat/completions"


class Unavailable(RuntimeError):
    """A system that cannot run on this checkout or machine (skipped, with the reason)."""


@dataclass
class Launched:
    servers: list[Server]
    base_url: str
    env: dict[str, str]

    def roots(self) -> list[int]:
        return [s.process.pid for s in self.servers if s.process is not None]


def vllm_server(model: dict[str, Any], port: int, log: Path) -> Server:
    """vLLM's own OpenAI server with the same engine arguments as the raygate profile."""
    argv = [
        PY, "-m", "vllm.entrypoints.openai.api_server",
        "--model", model["model"], "--served-model-name", model["id"],
        "--host", "127.0.0.1", "--port", str(port), "--disable-uvicorn-access-log",
    ]  # fmt: skip
    for key, value in model["engine_kwargs"].items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is not False:
            argv += [flag, str(value)]
    return Server("vllm", argv, f"http://127.0.0.1:{port}", dict(ENV), log)


def litellm_config(model_id: str, vllm_port: int) -> dict[str, Any]:
    """LiteLLM's proxy config for one vLLM server: no database, no key, no retries."""
    return {
        "model_list": [
            {
                "model_name": model_id,
                "litellm_params": {
                    "model": f"hosted_vllm/{model_id}",
                    "api_base": f"http://127.0.0.1:{vllm_port}/v1",
                    "api_key": "none",
                },
            }
        ],
        "litellm_settings": {"request_timeout": 600, "num_retries": 0, "set_verbose": False},
        "general_settings": {"disable_spend_logs": True, "disable_error_logs": True},
    }


def serve_config(v: Variant, profile: dict[str, Any], redis_url: str, port: int) -> dict:
    """The variant's serve config on `port`, its quota and cache on `redis_url`.

    Raises Unavailable when this checkout's gateway rejects the patched app config.
    """
    config = v.config(profile)
    config["http_options"]["port"] = port
    app = config["applications"][0]
    if app["import_path"].startswith("gateway."):
        config = with_redis(config, redis_url)
        try:
            AppConfig.model_validate(config["applications"][0]["args"])
        except ValueError as e:
            raise Unavailable(f"this checkout's gateway rejects the config: {e}") from e
    return config


def launch(
    v: Variant, profile: dict[str, Any], workdir: Path, redis_url: str, access_log: AccessLog
) -> Launched:
    """The variant's servers, started in order and ready, with the env each got; a Serve
    system whose load goes through HAProxy sends HAProxy's access log to `access_log`.

    Raises Unavailable (nothing left running) when the variant cannot run here.
    """
    model = profile["applications"][0]["args"]["models"][0]
    log = RESULTS / f"llm_streaming.{v.name.replace('/', '_')}.log.tmp"
    port = free_port()
    if v.launcher == "serve":
        direct = free_port() if v.direct_ingress else None
        config = serve_config(v, profile, redis_url, port)
        base = f"http://127.0.0.1:{direct or port}"  # direct ingress: the replica's own port
        env = v.environment(direct)
        if haproxy_on(env) and not v.direct_ingress:  # the load goes through HAProxy
            env |= access_log.env
        servers = [serve_run(v.name, config, workdir, base, env, log)]
    else:
        vllm = vllm_server(model, port, log)
        servers = [vllm]
        if v.launcher == "vllm+litellm":
            if not LITELLM.exists():
                raise Unavailable(f"{LITELLM} not found: run scripts/setup_litellm.sh")
            front = free_port()
            path = workdir / "litellm.yaml"
            path.write_text(yaml.safe_dump(litellm_config(model["id"], port)))
            argv = [str(LITELLM), "--config", str(path), "--host", "127.0.0.1"]
            argv += ["--port", str(front), "--num_workers", "1"]
            servers.append(
                Server(
                    "litellm",
                    argv,
                    f"http://127.0.0.1:{front}",
                    LITELLM_ENV,
                    log.with_suffix(".litellm.tmp"),
                )
            )
    started: list[Server] = []
    try:
        for server in servers:
            started.append(server)
            server.start(ready_path="/v1/models", timeout_s=300)
    except BaseException:
        for server in reversed(started):
            server.stop()
        raise
    merged: dict[str, str] = {}
    for server in servers:
        merged.update(server.env)
    return Launched(servers, servers[-1].base_url, merged)


@contextmanager
def running(
    v: Variant, profile: dict[str, Any], workdir: Path, redis_url: str, access_log: AccessLog
) -> Iterator[Launched]:
    launched = launch(v, profile, workdir, redis_url, access_log)
    try:
        yield launched
    finally:
        for server in reversed(launched.servers):
            server.stop()


def run_system(
    v: Variant,
    profile: dict[str, Any],
    workdir: Path,
    redis: Server,
    plan: list[tuple[int, int]],
    max_tokens: int,
    access_log: AccessLog,
) -> dict[str, Any]:
    """One run of `v`: start, warm up, each (concurrency, requests) level with CPU by
    process role (the servers' process trees, Redis and this client) and, behind HAProxy,
    its timers per request (`haproxy_matched` says for how many), stop."""
    model_id = profile["applications"][0]["args"]["models"][0]["id"]
    with running(v, profile, workdir, redis.base_url + "/0", access_log) as up:
        haproxy = "RAY_SERVE_HAPROXY_LOG_TARGET" in up.env  # launch pointed it at access_log
        tag = f" ({uuid.uuid4().hex[:8]})"  # a fresh prompt set per run: every cache lookup misses
        asyncio.run(streaming_level(up.base_url, model_id, 2, 8, max_tokens, tag + " warm-up"))
        if haproxy:
            access_log.take(CHAT_PATH, 8)  # the warm-up's lines
        roots = up.roots() + ([redis.process.pid] if v.redis and redis.process else [])
        levels = []
        for c, n in plan:
            before = cpu_snapshot(roots)
            level = asyncio.run(streaming_level(up.base_url, model_id, c, n, max_tokens, tag))
            level["cpu_ms_per_request"] = cpu_per_request(cpu_delta(before, cpu_snapshot(roots)), n)
            if haproxy:
                entries = access_log.take(CHAT_PATH, n)
                level["haproxy_matched"] = split_remainder(level["requests_detail"], entries)
            print(
                f"  {v.name} c={c}: {level['output_tok_s']} tok/s, TTFT p50 "
                f"{level['ttft_p50_ms']} p95 {level['ttft_p95_ms']} ms",
                flush=True,
            )
            levels.append(level)
        return {"env": up.env, "base_url": up.base_url, "levels": levels}


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Pooled levels, ratios to vLLM, stages and CPU per system from the runs."""
    pooled: dict[str, list[dict]] = {}
    stages: dict[str, list[dict]] = {}
    cpu: dict[str, list[dict]] = {}
    lag: dict[str, list[dict]] = {}
    for name, reps in runs.items():
        if not reps:
            continue
        by_level = list(zip(*(r["levels"] for r in reps), strict=True))
        pooled[name] = [pool_level(levels) for levels in by_level]
        stages[name] = [
            {
                "concurrency": levels[0]["concurrency"],
                "stages": stage_summary([q for lv in levels for q in lv["requests_detail"]]),
            }
            for levels in by_level
        ]
        cpu[name] = [
            {
                "concurrency": levels[0]["concurrency"],
                "cpu_ms_per_request": pool_cpu([lv["cpu_ms_per_request"] for lv in levels]),
            }
            for levels in by_level
        ]
        lag[name] = [
            {
                "concurrency": levels[0]["concurrency"],
                "late_wakeups": sum(lv["client_lag"]["late_wakeups"] for lv in levels),
                "max_ms": max(lv["client_lag"]["max_ms"] for lv in levels),
            }
            for levels in by_level
        ]
    return {
        "systems": pooled,
        "comparison": ratios(pooled),
        "stages": stages,
        "cpu": cpu,
        "client_lag": lag,
    }


def markdown(record: dict[str, Any]) -> str:
    comparison = {
        (name, r["concurrency"]): r for name, rows in record["comparison"].items() for r in rows
    }
    lines = [
        "# Streaming chat: raygate, vLLM, vLLM behind LiteLLM, Ray Serve LLM",
        "",
        machine_line(record["machine"]),
        f"Command: `{record['command']}`",
        f"Model: {record['model']} ({record.get('dtype', 'bfloat16')}); "
        f"{record['max_tokens']} output tokens per request "
        "(ignore_eos; usage checked on every request), streamed with include_usage, distinct "
        f"seeded prompts. {record['repeat']} interleaved repeat(s)"
        f"{'' if record['complete'] else ' (INCOMPLETE: interrupted)'}, order rotated each repeat "
        "(orders in the JSON). TTFT percentiles pool every request of every repeat; tok/s is "
        "the median of the runs (each run's in the JSON). Ratios are against raw vLLM.",
        "",
        "| system | concurrency | requests | output tok/s | vs vLLM | TTFT p50 ms | p95 ms "
        "| p99 ms | p95 vs vLLM | p50 added ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, rows in record["systems"].items():
        for r in rows:
            cmp = comparison.get((name, r["concurrency"]), {})
            lines.append(
                f"| {name} | {r['concurrency']} | {r['requests']} | {r['output_tok_s']} "
                f"| {_x(cmp.get('throughput_ratio'))} | {r['ttft_p50_ms']} | {r['ttft_p95_ms']} "
                f"| {r['ttft_p99_ms']} | {_x(cmp.get('ttft_p95_ratio'))} "
                f"| {cmp.get('ttft_p50_added_ms', '-')} |"
            )
    stage_rows = [
        f"| {name} | {s['concurrency']} | {stage} | {v['n']} | {v['p50_ms']} | {v['p95_ms']} |"
        for name, levels in record["stages"].items()
        for s in levels
        for stage, v in s["stages"].items()
    ]
    lines += [
        "",
        "Per-request stages (the `Server-Timing` header, LiteLLM's overhead header; "
        "client-remainder = client TTFT minus the server's ttft; behind HAProxy, its "
        "access log's timers split the client's TTFT: hap-to = client start to HAProxy's "
        "first byte, hap-in = TR+Tw+Tc, hap-replica = Tr (request out to the replica's "
        "response headers), hap-replica-extra = Tr minus the gateway's total, hap-back = "
        "the rest, the first bytes relayed and read; see loadtests/haproxy_log.py):",
        "",
    ]
    if stage_rows:
        lines += ["| system | concurrency | stage | requests | p50 ms | p95 ms |",
                  "|---|---|---|---|---|---|", *stage_rows]  # fmt: skip
    else:
        lines.append("No system sent stage timings.")
    roles = sorted({role for levels in record["cpu"].values() for lv in levels
                    for role in lv["cpu_ms_per_request"]})  # fmt: skip
    lines += ["", "CPU ms per request by process role (median of the runs; the load client "
              "shares the machine):", "",
              "| system | concurrency | " + " | ".join(roles) + " |",
              "|---|---|" + "---|" * len(roles)]  # fmt: skip
    for name, levels in record["cpu"].items():
        for lv in levels:
            cells = " | ".join(str(lv["cpu_ms_per_request"].get(role, "-")) for role in roles)
            lines.append(f"| {name} | {lv['concurrency']} | {cells} |")
    lines += ["", f"The load client's own event loop, woken every {LOOP_LAG_PERIOD_S * 1000:.0f} "
              f"ms: wake-ups more than {LOOP_LAG_THRESHOLD_S * 1000:.0f} ms late over the runs, "
              "and the latest (ms). A late client adds its wait to every TTFT it measures.", "",
              "| system | concurrency | late wake-ups | max ms |", "|---|---|---|---|"]  # fmt: skip
    for name, levels in record["client_lag"].items():
        for lv in levels:
            row = f"| {name} | {lv['concurrency']} | {lv['late_wakeups']} | {lv['max_ms']} |"
            lines.append(row)
    for name, reason in record["skipped"].items():
        lines.append(f"\nSkipped {name}: {reason}")
    for name, reason in record["failed"].items():
        lines.append(f"\nFAILED {name}: {reason}")
    return "\n".join(lines) + "\n"


def _x(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def with_dtype(profile: dict[str, Any], dtype: str | None) -> dict[str, Any]:
    """The profile with every model's engine dtype set to `dtype` (unchanged if None)."""
    if dtype is None:
        return profile
    patched = copy.deepcopy(profile)
    for model in patched["applications"][0]["args"]["models"]:
        model["engine_kwargs"] = {**model["engine_kwargs"], "dtype": dtype}
    return patched


def level_plan(concurrency: list[int], requests: list[int] | None) -> list[tuple[int, int]]:
    """(concurrency, requests) per level: `requests` in order, else 32/64/128 at 1/4/16
    and max(32, 8c) elsewhere. Raises ValueError when the two lists differ in length."""
    if requests is None:
        requests = [DEFAULT_REQUESTS.get(c, max(32, 8 * c)) for c in concurrency]
    if len(requests) != len(concurrency):
        raise ValueError("--requests needs one count per --concurrency level")
    return list(zip(concurrency, requests, strict=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--systems", nargs="+", metavar="SYSTEM",
        default=["vllm", "vllm+litellm", "ray-serve-llm", "raygate", "raygate+quota+cache"],
        help="systems and raygate trials: " + ", ".join(names()),
    )  # fmt: skip
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument("--requests", nargs="+", type=int, help="per level (default 32/64/128)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs per system")
    parser.add_argument(
        "--out",
        default="llm_streaming",
        help="the result files' name under loadtests/results (default llm_streaming, "
        "the README's table; a run of a few systems to compare a knob goes elsewhere)",
    )
    parser.add_argument(
        "--dtype",
        help="the engine's dtype for every system (default: the profile's; float32 on a CPU "
        "without native bf16, where bf16 prefill is several times slower)",
    )
    args = parser.parse_args(argv)
    try:
        variants = {name: variant(name) for name in args.systems}
        plan = level_plan(args.concurrency, args.requests)
    except (KeyError, ValueError) as e:
        parser.error(str(e))

    profile = with_dtype(local_profile(), args.dtype)
    RESULTS.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    skipped: dict[str, str] = {}
    failed: dict[str, str] = {}
    orders: list[list[str]] = []
    command = "python -m loadtests.bench_llm " + " ".join(argv or sys.argv[1:])

    def save(done: bool) -> None:
        kept = {name: reps for name, reps in runs.items() if name not in failed and reps}
        record = {
            "machine": machine(),
            "command": command,
            "complete": done,
            "model": profile["applications"][0]["args"]["models"][0]["id"],
            "max_tokens": args.max_tokens,
            "dtype": profile["applications"][0]["args"]["models"][0]["engine_kwargs"]["dtype"],
            "repeat": args.repeat,
            "plan": plan,
            "orders": orders,
            **summarise(kept),
            "skipped": skipped,
            "failed": failed,
            "runs": runs,
        }
        write_result(args.out, record, markdown(record), echo=done)

    with tempfile.TemporaryDirectory() as tmp, AccessLog() as access_log:
        workdir = Path(tmp)
        redis = redis_server(free_port(), workdir)  # raygate's quota store and cache
        redis.start(ready_path=None)
        wait_for_port(int(redis.base_url.rsplit(":", 1)[1]))
        try:
            for rep in range(args.repeat):
                order = [n for n in latin_order(list(variants), rep) if n not in skipped | failed]
                orders.append(order)
                for position, name in enumerate(order):
                    print(f"{name} (repeat {rep + 1}, position {position + 1})", flush=True)
                    try:
                        run = run_system(
                            variants[name], profile, workdir, redis, plan, args.max_tokens,
                            access_log,
                        )  # fmt: skip
                    except Unavailable as e:
                        skipped[name] = str(e)
                        print(f"  SKIPPED {name}: {e}", file=sys.stderr, flush=True)
                        continue
                    except Exception as e:  # recorded and reported; exit status 1
                        failed[name] = f"{type(e).__name__}: {e}"
                        print(f"  FAILED {name}: {failed[name]}", file=sys.stderr, flush=True)
                        continue
                    runs[name].append({"repeat": rep, "position": position, **run})
                    save(done=False)  # an interrupted run still leaves what it measured
        finally:
            redis.stop()
    save(done=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
