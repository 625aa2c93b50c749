"""A real Prometheus and Pushgateway for the tests, on free loopback ports, stopped by PID."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.ports import free_port


class Daemon:
    """A server binary of this test run: started, waited for (`/-/ready`), stopped."""

    def __init__(self, argv: list[str], port: int, log: Path):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        with log.open("wb") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{argv[0]} did not start; see {log}")
            time.sleep(0.1)  # polling until the server answers

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(20)


def start_pushgateway(workdir: Path) -> Daemon:
    port = free_port()
    argv = ["prometheus-pushgateway", f"--web.listen-address=127.0.0.1:{port}"]
    return Daemon(argv, port, workdir / "pushgateway.log")


class Prometheus(Daemon):
    def __init__(self, workdir: Path, config: dict[str, Any]):
        path = workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        port = free_port()
        argv = [
            "prometheus",
            f"--config.file={path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        super().__init__(argv, port, workdir / "prometheus.log")

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result; a query Prometheus rejects raises with its error."""
        reply = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=30)
        body = reply.json()
        if body.get("status") != "success":
            raise ValueError(f"{expr}: {body.get('errorType')}: {body.get('error')}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def rules(self) -> list[dict[str, Any]]:
        reply = httpx.get(f"{self.url}/api/v1/rules", timeout=30).json()
        return [rule for group in reply["data"]["groups"] for rule in group["rules"]]

    def targets(self) -> list[str]:
        """Each scrape target's state: job, URL, health, last scrape's duration and error."""
        reply = httpx.get(f"{self.url}/api/v1/targets", timeout=30).json()
        return [
            f"{t['labels'].get('job')} {t['scrapeUrl']}: {t['health']}"
            f" ({t.get('lastScrapeDuration', 0):.2f}s) {t.get('lastError', '')}"
            for t in reply["data"]["activeTargets"]
        ]
