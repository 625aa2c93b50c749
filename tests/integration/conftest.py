"""One real raygate per test run: Redis, local Ray, Ray Serve, vLLM CPU engine, embedder.

The app is built from serve_config.yaml's own args (the local profile) with only values
changed: auth switched on with the test tenants below, Redis on a free port, and two
gateway replicas (quotas must hold across replicas). Everything listens on free loopback
ports and is stopped by PID (Redis) or with the Ray cluster this process started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
APP_NAME = "raygate"

MAIN_KEY, TIGHT_KEY, TOKENS_KEY, RESTRICTED_KEY = "sk-main", "sk-tight", "sk-tokens", "sk-emb"
CACHE_A_KEY, CACHE_B_KEY = "sk-cache-a", "sk-cache-b"  # the tenants with the cache on
CACHE_K1_KEY, CACHE_K2_KEY = "sk-cache-k1", "sk-cache-k2"  # one tenant, a partition per key
ONE_SLOT_KEY = "sk-one-slot"  # a tenant with one request in flight at a time
TIGHT_BURST = 25  # requests; refills 1 per 100 s, i.e. not during a test
TOKENS_BURST = 20_000


def tenants_yaml() -> str:
    """Test tenants. The cache is off for all but cache-a, cache-b and cache-keys, so that
    tests of the engine are never answered from the cache."""
    from gateway.auth import key_digest

    return f"""
tenants:
  - id: main
    limits:
      requests: {{per_minute: 100000, burst: 100000}}
      tokens: {{per_minute: 100000000, burst: 100000000}}
    keys: [{{name: main, sha256: {key_digest(MAIN_KEY)}}}]
    cache: {{enabled: false}}
  - id: tight
    limits:
      requests: {{per_minute: 0.6, burst: {TIGHT_BURST}}}
    keys: [{{name: tight, sha256: {key_digest(TIGHT_KEY)}}}]
    cache: {{enabled: false}}
  - id: tokens
    limits:
      tokens: {{per_minute: 0.06, burst: {TOKENS_BURST}}}
    keys: [{{name: tokens, sha256: {key_digest(TOKENS_KEY)}}}]
    cache: {{enabled: false}}
  - id: one-slot
    limits:
      concurrent_requests: 1
    keys: [{{name: one-slot, sha256: {key_digest(ONE_SLOT_KEY)}}}]
    cache: {{enabled: false}}
  - id: restricted
    models: [all-minilm-l6-v2]
    keys: [{{name: emb-only, env: RAYGATE_TEST_RESTRICTED_KEY}}]
  - id: cache-a
    limits:
      tokens: {{per_minute: 0, burst: 1000000}}
    keys: [{{name: cache-a, sha256: {key_digest(CACHE_A_KEY)}}}]
  - id: cache-b
    keys: [{{name: cache-b, sha256: {key_digest(CACHE_B_KEY)}}}]
  - id: cache-keys
    keys:
      - {{name: k1, sha256: {key_digest(CACHE_K1_KEY)}}}
      - {{name: k2, sha256: {key_digest(CACHE_K2_KEY)}}}
    cache: {{partition: key}}
"""


class RedisServer:
    """A redis-server of this test run on a loopback port; stopped and restarted by PID."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> None:
        argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port)]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.client().ping():
                    return
            except Exception:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)  # polling until the server answers

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(10)

    def kill(self) -> None:
        """SIGKILL, as a crash would; `start` brings it back (empty) on the same port."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)


def local_args() -> dict[str, Any]:
    args: dict[str, Any] = yaml.safe_load((ROOT / "serve_config.yaml").read_text())["applications"][
        0
    ]["args"]
    return args


@dataclass
class Cluster:
    base_url: str
    args: dict[str, Any]
    redis: RedisServer
    metrics_url: str
    cache_redis: RedisServer

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {MAIN_KEY}"}

    @property
    def llm_id(self) -> str:
        return str(self.args["models"][0]["id"])

    @property
    def embedder_id(self) -> str:
        return str(self.args["embedders"][0]["id"])

    def deployed_models(self) -> set[str]:
        """Every model id with a deployment: LLMs, fault models, embedders, rerankers."""
        kinds = ("models", "fault_injection", "embedders", "rerankers")
        return {item["id"] for kind in kinds for item in self.args.get(kind, [])}

    def handle(self, deployment: str) -> Any:
        from ray import serve

        return serve.get_deployment_handle(deployment, app_name=APP_NAME)

    def llm_handle(self) -> Any:
        from gateway.build import deployment_name

        return self.handle(deployment_name("llm", self.llm_id))


def wait_until(predicate: Any, timeout_s: float, what: str) -> None:
    """Poll `predicate` until it holds; fail with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)  # polling a condition with a deadline, not a fixed wait


def counter_totals(cluster: Cluster, metric: str, label: str, **match: str) -> dict[str, float]:
    """A counter from Ray's metrics endpoint, summed by `label`, over the series whose
    labels include `match` (e.g. tenant="cache-a")."""
    totals: dict[str, float] = {}
    wanted = [f'{k}="{v}"' for k, v in match.items()]
    for line in httpx.get(cluster.metrics_url, timeout=10).text.splitlines():
        if line.startswith("#") or metric + "{" not in line:
            continue
        if all(w in line for w in wanted):
            labels, value = line.rsplit(" ", 1)
            key = labels.split(f'{label}="', 1)[1].split('"', 1)[0]
            totals[key] = totals.get(key, 0.0) + float(value)
    return totals


def wait_ready(base_url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(f"{base_url}/ready", timeout=10)
            if last.status_code == 200:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.5)  # polling a readiness probe, not synchronising on time
    raise TimeoutError(f"raygate not ready after {timeout_s}s: {last!r}")


def testing_args(redis: RedisServer, cache: RedisServer, tenants_file: Path) -> dict[str, Any]:
    """The local profile's args with auth on, the test Redis servers (one for quotas, one
    for the cache, so either can be stopped alone), and two gateway replicas."""
    args = local_args()
    args["auth"] = {"enabled": True, "tenants_file": str(tenants_file)}
    args["quota"] = {**args["quota"], "redis_url": redis.url}  # the profile's own timeouts
    # A loaded CI machine can take longer than the profile's 0.5 s to embed a question
    # and than its 50 ms per cache Redis call (a verification's evidence write timed out
    # so, and went uncounted); both deadlines have unit tests.
    args["cache"] = {
        **args["cache"],
        "redis_url": cache.url,
        "embed_timeout_s": 10.0,
        "timeout_s": 2.0,
    }
    args["gateway"]["deployment"]["num_replicas"] = 2
    add_routing_faults(args)
    return args


# Fault-injection "models" in front of the fast tier (see test_routing_api.py).
FAULTS: dict[str, dict[str, Any]] = {
    "broken": {"before_first_token": "error"},
    "stalled": {"before_first_token": "stall"},
    "midstream": {"before_first_token": "pass", "error_after_chunks": 1},
    "stranded": {"before_first_token": "pass", "error_after_chunks": 1},  # no fallback
    "recovering": {"before_first_token": "error", "first_n": 4},
    "victim": {"before_first_token": "pass"},  # healthy until a test kills its replica
    "jammed": {  # one slot, one queued call per caller, no fallback: backpressure
        "before_first_token": "stall",
        "deployment": {"max_ongoing_requests": 1, "max_queued_requests": 1, "num_cpus": 0},
    },
}
FIRST_TOKEN_TIMEOUT_S = 2.0


def add_routing_faults(args: dict[str, Any]) -> None:
    """The fast tier gets two replicas (prefix affinity); the fault models but two fall
    back to it (and wrap it: a stream they break goes on there), and the stalling ones
    give up on a first token after 2 s (the others, like the real models, keep the
    config's: a loaded CI machine can take longer than 2 s to a first token that does
    come). Breakers open after 2 failures for 15 s: far longer than the next call takes
    to arrive even on a loaded machine (with 5 s, a slow CI run once saw no call meet
    an open circuit), so it does, and short enough for the tests to see them recover."""
    fast = args["models"][1]
    fast["deployment"]["num_replicas"] = 2
    args["fault_injection"] = [
        {"id": name, "wraps": fast["id"], **fault} for name, fault in FAULTS.items()
    ]
    routing = args["routing"]
    alone = {"jammed", "stranded"}
    routing["fallbacks"] |= {name: [fast["id"]] for name in FAULTS if name not in alone}
    stalling = [name for name, fault in FAULTS.items() if fault["before_first_token"] == "stall"]
    routing["first_token_timeouts"] = {name: FIRST_TOKEN_TIMEOUT_S for name in stalling}
    routing["breaker"] = {"failure_threshold": 2, "open_s": 15.0}


def running_redis(workdir: Path) -> Iterator[RedisServer]:
    redis = RedisServer(workdir)
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from running_redis(tmp_path_factory.mktemp("redis"))


@pytest.fixture(scope="session")
def cache_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from running_redis(tmp_path_factory.mktemp("cache-redis"))


@pytest.fixture(scope="session")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, cache_redis: RedisServer
) -> Iterator[Cluster]:
    import ray
    from ray import serve

    from gateway.build import build_app
    from gateway.cluster_env import cluster_env, private_haproxy_ports

    os.chdir(ROOT)  # model folders in the config are relative to the project root
    workdir = tmp_path_factory.mktemp("raygate")
    tenants_file = workdir / "tenants.yaml"
    tenants_file.write_text(tenants_yaml())
    os.environ["RAYGATE_TEST_RESTRICTED_KEY"] = RESTRICTED_KEY  # a key given by env var
    redis = redis_server
    port, metrics_port = free_port(), free_port()
    # The profile's cluster environment, as scripts/run_local.sh gives it, with HAProxy's
    # own ports free ones: a local profile may run beside the tests.
    os.environ.update(cluster_env() | private_haproxy_ports(free_port(), free_port()))
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _metrics_export_port=metrics_port,
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        args = testing_args(redis, cache_redis, tenants_file)
        serve.run(build_app(args), name=APP_NAME, route_prefix="/")
        base_url = f"http://127.0.0.1:{port}"
        wait_ready(base_url, timeout_s=180)
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        yield Cluster(base_url, args, redis, metrics_url, cache_redis)
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="session")
def client(cluster: Cluster) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=f"{cluster.base_url}/v1", api_key=MAIN_KEY, max_retries=0, timeout=120)
