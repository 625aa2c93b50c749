"""A dead vLLM engine fails the health check; Serve replaces the replica and recovers."""

from __future__ import annotations

import os
import signal
import time

import httpx
import psutil
import pytest

from tests.integration.conftest import Cluster, wait_ready

pytestmark = pytest.mark.integration


def test_dead_engine_fails_health_and_the_replica_is_replaced(cluster: Cluster) -> None:
    handle = cluster.llm_handle()
    replica_pid = handle.info.remote().result(timeout_s=30)["pid"]
    engines = [
        p for p in psutil.Process(replica_pid).children(recursive=True) if "EngineCore" in p.name()
    ]
    assert engines, "no vLLM engine process under the replica"
    for engine in engines:
        os.kill(engine.pid, signal.SIGKILL)

    deadline = time.monotonic() + 60
    while True:  # the engine's monitor notices the death asynchronously
        try:
            handle.check_health.remote().result(timeout_s=30)
        except Exception:
            break
        assert time.monotonic() < deadline, "check_health kept passing with a dead engine"
        time.sleep(0.2)

    ready = httpx.get(f"{cluster.base_url}/ready", timeout=30)
    if ready.status_code == 503:  # unless Serve already replaced the replica
        assert "unhealthy" in ready.json()["deployments"][cluster.llm_id]

    wait_ready(cluster.base_url, timeout_s=240)
    reply = httpx.post(
        f"{cluster.base_url}/v1/completions",
        json={"model": "default", "prompt": "Hello", "max_tokens": 3},
        headers=cluster.auth,
        timeout=60,
    )
    assert reply.status_code == 200
    new_pid = cluster.llm_handle().info.remote().result(timeout_s=30)["pid"]
    assert new_pid != replica_pid
