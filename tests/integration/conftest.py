"""One real raygate per test run: local Ray, Ray Serve, vLLM CPU engine, embedder.

The app is built from serve_config.yaml's own args (the local profile), served on a free
loopback port, and torn down with the Ray cluster this process started.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
APP_NAME = "raygate"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def local_args() -> dict[str, Any]:
    args: dict[str, Any] = yaml.safe_load((ROOT / "serve_config.yaml").read_text())["applications"][
        0
    ]["args"]
    return args


@dataclass
class Cluster:
    base_url: str
    args: dict[str, Any]

    @property
    def llm_id(self) -> str:
        return str(self.args["models"][0]["id"])

    @property
    def embedder_id(self) -> str:
        return str(self.args["embedders"][0]["id"])

    def handle(self, deployment: str) -> Any:
        from ray import serve

        return serve.get_deployment_handle(deployment, app_name=APP_NAME)

    def llm_handle(self) -> Any:
        from gateway.app import deployment_name

        return self.handle(deployment_name("llm", self.llm_id))


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


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    import ray
    from ray import serve

    from gateway.app import build_app

    os.chdir(ROOT)  # model folders in the config are relative to the project root
    port = free_port()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        args = local_args()
        serve.run(build_app(args), name=APP_NAME, route_prefix="/")
        base_url = f"http://127.0.0.1:{port}"
        wait_ready(base_url, timeout_s=180)
        yield Cluster(base_url, args)
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="session")
def client(cluster: Cluster) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=f"{cluster.base_url}/v1", api_key="unused", max_retries=0, timeout=120)
