"""The Ray cluster's environment raygate is served with (`configs/cluster.env`).

Serve reads these variables once per process, when the process starts, so they belong to
whoever starts Ray: `scripts/run_local.sh` (which sources the file), the test cluster and
the benchmarks (which call `cluster_env`), and the Helm chart (a copy of the file).
"""

from __future__ import annotations

from pathlib import Path

CLUSTER_ENV_FILE = Path(__file__).resolve().parents[1] / "configs" / "cluster.env"


def cluster_env(path: Path = CLUSTER_ENV_FILE) -> dict[str, str]:
    """The variables of an env file: `NAME=value` lines; blank lines and `#` comments skipped.

    Raises ValueError naming the line when one is neither.
    """
    env: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.isidentifier():
            raise ValueError(f"{path}:{number}: expected NAME=value, got {raw!r}")
        env[name] = value
    return env


def private_haproxy_ports(metrics_port: int, stats_port: int) -> dict[str, str]:
    """Variables that move HAProxy's Prometheus exporter and stats page off their fixed
    ports (9101, 8404, on every interface), for a second cluster on one machine (tests,
    benchmarks) beside a running local profile."""
    return {
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics_port),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(stats_port),
    }
