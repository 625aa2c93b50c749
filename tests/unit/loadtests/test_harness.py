"""The benchmark harness's process handling."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import yaml

from loadtests.harness import ROOT, LoopLag, Server

SCRIPT = """
import signal
from loadtests.harness import Server

server = Server("sleeper", ["sleep", "600"], "http://127.0.0.1:1")
try:
    server.start(ready_path=None)
    print(server.process.pid, flush=True)
    signal.pause()  # until a signal ends this script
finally:
    server.stop()
"""


def test_a_terminated_benchmark_stops_the_servers_it_started() -> None:
    """SIGTERM (a `timeout`, a CI runner) ends the script through its `finally:`; the
    server, in a session of its own, does not outlive it."""
    script = subprocess.Popen(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert script.stdout is not None
    child = int(script.stdout.readline())
    try:
        assert psutil.pid_exists(child)
        script.send_signal(signal.SIGTERM)
        assert script.wait(timeout=60) == 128 + signal.SIGTERM
        assert not psutil.pid_exists(child)
    finally:
        if psutil.pid_exists(child):  # what a failed run left: stopped by its PID
            os.kill(child, signal.SIGKILL)


def test_haproxys_own_ports_move_to_free_ones_only_when_haproxy_is_on() -> None:
    from loadtests.harness import with_private_haproxy_ports

    on = with_private_haproxy_ports({"RAY_SERVE_ENABLE_HA_PROXY": "1", "A": "x"})
    ports = {on["RAY_SERVE_HAPROXY_METRICS_PORT"], on["RAY_SERVE_HAPROXY_STATS_PORT"]}
    assert len(ports) == 2 and not ports & {"9101", "8404"} and on["A"] == "x"
    off = {"RAY_SERVE_ENABLE_HA_PROXY": "0", "A": "x"}
    assert with_private_haproxy_ports(off) == off
    assert with_private_haproxy_ports({}) == {}


def test_serve_server_runs_the_config_on_its_port_in_the_clusters_environment(
    tmp_path: Path,
) -> None:
    from gateway.cluster_env import cluster_env
    from loadtests.harness import local_profile, serve_server

    server = serve_server(
        "relay", local_profile(), 18123, tmp_path, tmp_path / "log", {"EXTRA": "1"}
    )
    written = yaml.safe_load((tmp_path / "relay.yaml").read_text())
    assert written["http_options"]["port"] == 18123
    assert server.base_url == "http://127.0.0.1:18123"
    assert server.argv[-2:] == ["run", str(tmp_path / "relay.yaml")]
    assert {k: server.env[k] for k in cluster_env()} == cluster_env()
    assert server.env["EXTRA"] == "1"


def test_loop_lag_counts_the_wakeups_a_blocked_event_loop_made_late() -> None:
    async def load(block_s: float) -> dict[str, float]:
        async with LoopLag(period_s=0.005, threshold_s=0.05) as lag:
            await asyncio.sleep(0.02)
            time.sleep(block_s)  # noqa: ASYNC251 - the loop held, as a CPU-starved client's is
            await asyncio.sleep(0.02)
        return lag.summary()

    blocked = asyncio.run(load(0.2))
    assert blocked["late_wakeups"] == 1
    assert 150 <= blocked["max_ms"] <= blocked["total_ms"]


def test_a_server_gets_its_own_process_group_in_the_benchmarks_session() -> None:
    server = Server("sleeper", ["sleep", "600"], "http://127.0.0.1:1")
    server.start(ready_path=None)
    try:
        assert server.process is not None
        pid = server.process.pid
        assert os.getpgid(pid) == pid  # stopped as a group, apart from the benchmark
        assert os.getsid(pid) == os.getsid(0)  # one autogroup with the load client
    finally:
        server.stop()
