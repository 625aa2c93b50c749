"""Free loopback ports for the servers that tests and benchmarks start."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (outside Ray's worker range)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # the kernel's ephemeral range lies above Ray's worker ports
        port: int = s.getsockname()[1]
        return port
