"""HAProxy's per-request timers, read from its access log, to split the client-side
remainder of TTFT (client TTFT minus the gateway's own time) into where it was spent.

Serve's HAProxy logs one `option httplog` line per request, when the request ends, to
`RAY_SERVE_HAPROXY_LOG_TARGET` (a UDP syslog address; nobody listens on the default).
`AccessLog` listens on a free loopback port for the benchmark's cluster. Each line
carries the client's port, the date HAProxy got the request's first byte (%tr, ms) and
the timers TR/Tw/Tc/Tr/Ta. A load client that records each request's local port and
wall-clock start can match its requests to the lines: on one keep-alive connection the
requests run one after another, so per client port the n-th request is the n-th line.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# `127.0.0.1:40312 [07/Dec/2026:23:59:00.123] http_frontend be/srv 0/0/1/412/1530 200 ...
#  "POST /v1/chat/completions HTTP/1.1"`; a timer is -1 when its step never happened.
_LINE = re.compile(
    r"\S+:(?P<port>\d+) \[(?P<date>[^\]]+)\] \S+ \S+ "
    r"(?P<TR>-?\d+)/(?P<Tw>-?\d+)/(?P<Tc>-?\d+)/(?P<Tr>-?\d+)/\+?(?P<Ta>-?\d+) (?P<status>\d+) "
    r'.*"(?P<method>[A-Z]+) (?P<path>\S+)'
)


@dataclass(frozen=True)
class Entry:
    """One request as HAProxy saw it; times in ms, `received` in epoch seconds."""

    client_port: int
    received: float  # %tr: the request's first byte at HAProxy
    header_ms: int  # TR: the client's request headers, first byte to last
    queue_ms: int  # Tw: waiting for a server slot
    connect_ms: int  # Tc: connecting to the replica (0 on a reused connection)
    server_ms: int  # Tr: request sent (body included) to the replica's response headers
    active_ms: int  # Ta: the whole request, to its last byte
    status: int
    method: str
    path: str


def parse_line(data: bytes) -> Entry | None:
    """The request in one syslog datagram, None for anything else (health checks are
    tagged `debug` and never reach an `info` target; other lines do not match)."""
    match = _LINE.search(data.decode("utf-8", "replace"))
    if match is None:
        return None
    received = datetime.strptime(match["date"], "%d/%b/%Y:%H:%M:%S.%f").timestamp()
    return Entry(
        int(match["port"]), received, int(match["TR"]), int(match["Tw"]), int(match["Tc"]),
        int(match["Tr"]), int(match["Ta"]), int(match["status"]), match["method"], match["path"],
    )  # fmt: skip


class AccessLog:
    """A UDP syslog listener on loopback for HAProxy's access log; a daemon thread keeps
    every request line until `take` hands them over. Use as a context manager."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._entries: list[Entry] = []
        self._arrived = threading.Condition()
        self._thread = threading.Thread(target=self._receive, name="haproxy-log", daemon=True)

    @property
    def env(self) -> dict[str, str]:
        """The variable that points Serve's HAProxy at this listener."""
        host, port = self._sock.getsockname()
        return {"RAY_SERVE_HAPROXY_LOG_TARGET": f"{host}:{port}"}

    def __enter__(self) -> AccessLog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sock.close()  # the thread's recv fails and it ends

    def _receive(self) -> None:
        while True:
            try:
                data = self._sock.recv(65536)
            except OSError:
                return
            if (entry := parse_line(data)) is not None:
                with self._arrived:
                    self._entries.append(entry)
                    self._arrived.notify_all()

    def take(self, path: str, count: int, timeout_s: float = 5.0) -> list[Entry]:
        """Every line kept so far for `path`, waiting up to `timeout_s` for `count` of them
        (HAProxy logs a request after its last byte, so the last lines trail the client);
        the rest are dropped."""

        def matching() -> list[Entry]:
            return [e for e in self._entries if e.path == path]

        with self._arrived:
            self._arrived.wait_for(lambda: len(matching()) >= count, timeout_s)
            taken = matching()
            self._entries.clear()
            return taken


def split_remainder(requests: Sequence[dict[str, Any]], entries: Sequence[Entry]) -> int:
    """Add HAProxy's stages (ms) to each request of `requests` (ttft_ms, stages,
    client_port, started_at) that a line of `entries` matches, in place:

    - `hap-to`: the client's start to HAProxy's first byte (the client's own loop,
      connecting, the kernel, HAProxy picking the request up);
    - `hap-in`: TR + Tw + Tc (headers in, a server slot, a connection to the replica);
    - `hap-replica`: Tr, request out to the replica's response headers, and when the
      gateway reports `total`, `hap-replica-extra` = Tr minus it (the replica's HTTP
      server before and after the gateway's own time);
    - `hap-back`: what is left of the client's TTFT (headers and first chunk relayed,
      the client reading them).

    Per client port both sides are matched in order; a port whose counts differ is
    skipped. Returns how many requests were matched.
    """
    by_port: dict[int, list[dict[str, Any]]] = {}
    for request in requests:
        if request.get("client_port") is not None:
            by_port.setdefault(request["client_port"], []).append(request)
    lines: dict[int, list[Entry]] = {}
    for entry in entries:
        lines.setdefault(entry.client_port, []).append(entry)
    matched = 0
    for port, mine in by_port.items():
        theirs = sorted(lines.get(port, []), key=lambda e: e.received)
        if len(theirs) != len(mine):
            continue
        for request, entry in zip(sorted(mine, key=lambda r: r["started_at"]), theirs, strict=True):
            to = max(0.0, (entry.received - request["started_at"]) * 1000)
            inside = entry.header_ms + entry.queue_ms + entry.connect_ms
            stages = request.setdefault("stages", {})
            stages["hap-to"] = round(to, 1)
            stages["hap-in"] = float(inside)
            stages["hap-replica"] = float(entry.server_ms)
            if "total" in stages:
                stages["hap-replica-extra"] = round(entry.server_ms - stages["total"], 1)
            stages["hap-back"] = round(request["ttft_ms"] - to - inside - entry.server_ms, 1)
            matched += 1
    return matched
