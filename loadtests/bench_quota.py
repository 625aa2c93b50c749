"""What the quota check adds to a request: admit + settle latency and Redis round trips.

Runs the gateway's own QuotaPolicy and Redis store (same client settings) against a
real redis-server on loopback, sequentially and with 32 concurrent requests, and counts
the commands Redis executed per request (INFO commandstats). Writes
loadtests/results/quota.{json,md}.

    .venv/bin/python -m loadtests.bench_quota [--requests 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis as redis_sync

from gateway.auth import BucketLimit, KeyConfig, Limits, Principal, TenantConfig
from gateway.quota.config import QuotaConfig
from gateway.quota.policy import Lease, QuotaPolicy
from gateway.quota.redis_store import open_quota_store
from gateway.redis_conn import redis_client
from loadtests.harness import (
    machine,
    machine_line,
    percentile,
    redis_server,
    wait_for_port,
    write_result,
)
from tests.ports import free_port

BIG = BucketLimit(per_minute=1e12, burst=1e12)  # never limiting: measure the check itself
LIMITS = Limits(requests=BIG, tokens=BIG, concurrent_requests=1_000_000)


def principal() -> Principal:
    key = KeyConfig(name="bench", sha256="0" * 64, limits=Limits(requests=BIG, tokens=BIG))
    return Principal(TenantConfig(id="bench", limits=LIMITS, keys=[key]), key)


def commands_executed(info: dict[str, Any]) -> int:
    """Every command Redis ran, those inside Lua scripts included."""
    return sum(int(v["calls"]) for k, v in info.items() if k.startswith("cmdstat_"))


def script_calls(info: dict[str, Any]) -> int:
    """Commands clients sent: script calls (and loads) are the quota's only traffic.
    Concurrent requests' calls share pipelined round trips, so there are fewer of those."""
    sent = ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_script", "cmdstat_info")
    return sum(int(info[k]["calls"]) for k in sent if k in info)


async def measure(url: str, requests: int, concurrency: int) -> dict[str, Any]:
    config = QuotaConfig(redis_url=url)
    redis = redis_client(url, None, config.timeout_s)  # for INFO only
    policy = QuotaPolicy(open_quota_store(config), config, lambda *_: None)
    who = principal()

    async def admit(tokens: int) -> Lease:
        lease = await policy.admit(who, "generation")
        await policy.reserve(lease, tokens)
        return lease

    await policy.settle(await admit(100), 50)  # load the scripts
    admit_ms: list[float] = []
    settle_ms: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            queue.get_nowait()
            t0 = time.perf_counter()
            lease = await admit(300)
            t1 = time.perf_counter()
            await policy.settle(lease, 120)
            t2 = time.perf_counter()
            admit_ms.append((t1 - t0) * 1000)
            settle_ms.append((t2 - t1) * 1000)

    stats = await redis.info("commandstats")
    before, trips_before = commands_executed(stats), script_calls(stats)
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    stats = await redis.info("commandstats")
    after, trips_after = commands_executed(stats), script_calls(stats)
    await redis.aclose()
    total = [a + s for a, s in zip(admit_ms, settle_ms, strict=True)]
    return {
        "concurrency": concurrency,
        "requests": requests,
        "checks_per_s": round(requests / wall),
        "admit_p50_ms": round(percentile(admit_ms, 0.5), 3),
        "admit_p99_ms": round(percentile(admit_ms, 0.99), 3),
        "settle_p50_ms": round(percentile(settle_ms, 0.5), 3),
        "settle_p99_ms": round(percentile(settle_ms, 0.99), 3),
        "added_p50_ms": round(percentile(total, 0.5), 3),
        "added_p99_ms": round(percentile(total, 0.99), 3),
        # the first INFO is counted in the second snapshot: subtract it
        "script_calls_per_request": round((trips_after - trips_before - 1) / requests, 3),
        "redis_commands_per_request": round((after - before - 1) / requests, 3),
    }


def markdown(record: dict[str, Any]) -> str:
    m = record["machine"]
    lines = [
        "# Quota check cost on the request path",
        "",
        machine_line(m),
        f"Command: `{record['command']}`",
        "Each request: admit (tenant + key request buckets, both concurrency leases), "
        "reserve (tenant + key token buckets), then settle (refund unused tokens, end the "
        "leases), calls of concurrent requests sharing pipelined round trips, against redis-server "
        f"{record['redis']} on loopback.",
        "",
        "| concurrency | checks/s | admit p50 / p99 ms | settle p50 / p99 ms "
        "| added p50 / p99 ms | script calls per request | commands run in Redis |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in record["runs"]:
        lines.append(
            f"| {r['concurrency']} | {r['checks_per_s']} | {r['admit_p50_ms']} / "
            f"{r['admit_p99_ms']} | {r['settle_p50_ms']} / {r['settle_p99_ms']} | "
            f"{r['added_p50_ms']} / {r['added_p99_ms']} | {r['script_calls_per_request']} | "
            f"{r['redis_commands_per_request']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        server = redis_server(port, Path(tmp))
        server.start(ready_path=None)
        try:
            wait_for_port(port)
            url = f"redis://127.0.0.1:{port}/0"
            runs = [asyncio.run(measure(url, args.requests, c)) for c in (1, 32)]
            version = redis_sync.Redis(port=port).info("server")["redis_version"]
        finally:
            server.stop()
    record = {
        "machine": machine(),
        "command": "python -m loadtests.bench_quota " + " ".join(argv or sys.argv[1:]),
        "redis": version,
        "runs": runs,
    }
    write_result("quota", record, markdown(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
