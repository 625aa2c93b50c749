"""The drill's own raygate: the local profile's models, two gateway replicas, two tenants,
and its quota and cache Redis as redis-servers of its own on free loopback ports.

Everything is started by this process and stopped by it: the Redis servers by PID, Ray
with the local cluster `ray.init` started here (never `ray stop`).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from loadtests.chaos.faults import DrillTarget
from loadtests.chaos.load import Tenant
from loadtests.harness import ENV, ROOT, Server, local_profile, redis_server, wait_for_port
from tests.ports import free_port

APP_NAME = "raygate"
TENANTS = [Tenant("chaos-a", "sk-chaos-a"), Tenant("chaos-b", "sk-chaos-b")]
GATEWAY_REPLICAS = 2


class DrillRedis:
    """A redis-server on loopback without persistence (a restart comes back empty) that
    accepts DEBUG from loopback (the slow-Redis fault); killed and restarted by PID."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self._server: Server = redis_server(self.port, workdir, ("--enable-debug-command", "local"))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self._server.start(ready_path=None)
        wait_for_port(self.port)

    def kill(self) -> None:
        process = self._server.process
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()

    def stop(self) -> None:
        self._server.stop()


def tenants_yaml(tenants: list[Tenant]) -> str:
    """Tenants whose limits never bind (the drill measures faults, not quotas) and whose
    cache is off (every request reaches a model)."""
    from gateway.auth import key_digest

    lines = ["tenants:"]
    for t in tenants:
        lines += [
            f"  - id: {t.id}",
            "    limits:",
            "      requests: {per_minute: 1000000, burst: 1000000}",
            "      tokens: {per_minute: 1000000000, burst: 1000000000}",
            f"    keys: [{{name: {t.id}, sha256: {key_digest(t.key)}}}]",
            "    cache: {enabled: false}",
        ]
    return "\n".join(lines) + "\n"


def drill_args(quota_url: str, cache_url: str, tenants_file: Path) -> dict[str, Any]:
    """The local profile's args with auth on, the drill's Redis servers and two gateway
    replicas; everything else (quota timeout, failure modes, routing) as the profile has it."""
    args: dict[str, Any] = local_profile()["applications"][0]["args"]
    args["auth"] = {"enabled": True, "tenants_file": str(tenants_file)}
    args["quota"] = {**args["quota"], "redis_url": quota_url}
    args["cache"] = {**args["cache"], "redis_url": cache_url}
    args["gateway"]["deployment"]["num_replicas"] = GATEWAY_REPLICAS
    return args


@contextmanager
def drill_cluster(workdir: Path) -> Iterator[tuple[DrillTarget, dict[str, Any]]]:
    """A running raygate for the drill and its args; stopped, with its Redis servers, on exit."""
    import ray
    from ray import serve

    from gateway.build import build_app

    os.chdir(ROOT)  # model folders in the profile are relative to the project root
    os.environ.update(ENV)
    (workdir / "cache").mkdir(exist_ok=True)
    quota, cache = DrillRedis(workdir), DrillRedis(workdir / "cache")
    tenants_file = workdir / "tenants.yaml"
    tenants_file.write_text(tenants_yaml(TENANTS))
    try:
        quota.start()
        cache.start()
        port = free_port()
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            args = drill_args(quota.url, cache.url, tenants_file)
            serve.run(build_app(args), name=APP_NAME, route_prefix="/")  # waits until running
            target = DrillTarget(
                base_url=f"http://127.0.0.1:{port}",
                tenants=TENANTS,
                quota_redis=quota,
                app_name=APP_NAME,
                primary_model=str(args["models"][0]["id"]),
                gateway_replicas=GATEWAY_REPLICAS,
            )
            yield target, args
        finally:
            serve.shutdown()
            ray.shutdown()
    finally:
        quota.stop()
        cache.stop()
