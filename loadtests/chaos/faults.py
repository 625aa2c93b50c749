"""The drill's faults, one per phase, against a running raygate (`DrillTarget`).

Each fault is injected while the mixed load runs; `inject` returns when the fault is over
(Redis restarted, the slow spell ended, the process killed) with a record of what it did.
`recovered`, where a fault has one, says when the cluster is whole again beyond serving
requests (the primary model answering again, the gateway back to its replicas).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import psutil
import redis.asyncio as aioredis

from loadtests.chaos.load import Attempt, Tenant, walk_away


class Restartable(Protocol):
    """A redis-server this process started: killed by its PID, restarted on its port."""

    port: int

    def kill(self) -> None: ...

    def start(self) -> None: ...


@dataclass
class DrillTarget:
    """The raygate under drill and the handles on its parts that the faults need."""

    base_url: str
    tenants: list[Tenant]
    quota_redis: Restartable
    app_name: str
    primary_model: str  # the LLM whose engine is killed; the load's streams ask for it
    gateway_deployment: str = "gateway"
    gateway_replicas: int = 2

    def redis(self) -> aioredis.Redis:
        return aioredis.Redis(host="127.0.0.1", port=self.quota_redis.port, socket_timeout=5)

    def lease_keys(self) -> list[str]:
        """The quota's lease sets (gateway/quota/policy.py: one zset per tenant)."""
        return [f"rg:q:{{{t.id}}}:leases" for t in self.tenants]


async def live_leases(target: DrillTarget) -> int:
    """Leases in Redis that have not expired: each is a request the quota thinks runs."""
    client = target.redis()
    try:
        seconds, micros = await client.time()
        now_ms = seconds * 1000 + micros // 1000
        return sum([await client.zcount(key, now_ms, "+inf") for key in target.lease_keys()])
    finally:
        await client.aclose()


@dataclass
class FaultRecord:
    what: str
    held_s: float  # how long the fault lasted (0 for a kill the cluster must heal itself)
    facts: dict[str, Any] = field(default_factory=dict)


class Fault:
    """A fault of one phase. `recovered` may block (it may ask Ray): call it in a thread."""

    name: ClassVar[str]

    async def inject(self, target: DrillTarget) -> FaultRecord:
        raise NotImplementedError

    def recovered(self, target: DrillTarget, fault_at: float, attempts: Sequence[Attempt]) -> bool:
        """Whether the cluster is whole again beyond answering requests; by default, yes."""
        return True


@dataclass
class RedisKill(Fault):
    """SIGKILL the quota Redis, keep it down `down_s`, restart it on the same port (empty:
    the drill's Redis keeps nothing on disk, like a lost cache node)."""

    down_s: float = 8.0
    name: ClassVar[str] = "redis_kill"

    async def inject(self, target: DrillTarget) -> FaultRecord:
        start = time.monotonic()
        await asyncio.to_thread(target.quota_redis.kill)
        await asyncio.sleep(self.down_s)  # the outage itself
        await asyncio.to_thread(target.quota_redis.start)
        held = time.monotonic() - start
        return FaultRecord(f"quota Redis SIGKILLed, restarted after {held:.0f} s", held)


@dataclass
class RedisSlow(Fault):
    """Keep the quota Redis busy with back-to-back `DEBUG SLEEP` for `slow_s`: every command
    waits up to `sleep_s`, beyond the quota's timeout (0.1 s in the local profile)."""

    slow_s: float = 8.0
    sleep_s: float = 0.5
    name: ClassVar[str] = "redis_slow"

    async def inject(self, target: DrillTarget) -> FaultRecord:
        client = target.redis()
        start = time.monotonic()
        try:
            while time.monotonic() - start < self.slow_s:
                await client.execute_command("DEBUG", "SLEEP", str(self.sleep_s))
        finally:
            await client.aclose()
        held = time.monotonic() - start
        return FaultRecord(
            f"quota Redis stalled {self.sleep_s} s per command for {held:.0f} s", held
        )


def engine_pids(app_name: str, model_id: str) -> tuple[int, list[int]]:
    """The LLM replica's PID and its vLLM engine-core processes."""
    from ray import serve

    from gateway.build import deployment_name

    handle = serve.get_deployment_handle(deployment_name("llm", model_id), app_name=app_name)
    replica: int = handle.info.remote().result(timeout_s=60)["pid"]
    children = psutil.Process(replica).children(recursive=True)
    return replica, [p.pid for p in children if "EngineCore" in p.name()]


@dataclass
class EngineKill(Fault):
    """SIGKILL the vLLM engine process of the primary model's replica (that one process)."""

    name: ClassVar[str] = "engine_kill"

    async def inject(self, target: DrillTarget) -> FaultRecord:
        replica, engines = await asyncio.to_thread(
            engine_pids, target.app_name, target.primary_model
        )
        if not engines:
            raise RuntimeError(f"no vLLM engine process under replica {replica}")
        for pid in engines:
            os.kill(pid, signal.SIGKILL)
        facts = {"replica_pid": replica, "engine_pids": engines}
        return FaultRecord(f"vLLM engine of {target.primary_model} SIGKILLed", 0.0, facts)

    def recovered(self, target: DrillTarget, fault_at: float, attempts: Sequence[Attempt]) -> bool:
        """The primary answers again: a request sent after the kill was served by it."""
        return any(
            a.ok and a.start > fault_at and a.model == target.primary_model for a in attempts
        )


def gateway_replica_names(app_name: str, deployment: str) -> list[str]:
    """Named actors of the gateway's replicas (Serve names them SERVE_REPLICA::app#dep#id)."""
    import ray

    prefix = f"SERVE_REPLICA::{app_name}#{deployment}#"
    return sorted(
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if str(a["name"]).startswith(prefix)
    )


def running_replicas(app_name: str, deployment: str) -> int:
    from ray import serve
    from ray.serve.schema import ReplicaState

    app = serve.status().applications.get(app_name)
    if app is None or deployment not in app.deployments:
        return 0
    return int(app.deployments[deployment].replica_states.get(ReplicaState.RUNNING, 0))


@dataclass
class GatewayKill(Fault):
    """Kill one gateway replica's actor (ray.kill: its worker process dies at once)."""

    name: ClassVar[str] = "gateway_kill"
    killed: str | None = None  # the killed replica's actor name, once injected

    async def inject(self, target: DrillTarget) -> FaultRecord:
        import ray

        names = await asyncio.to_thread(
            gateway_replica_names, target.app_name, target.gateway_deployment
        )
        if len(names) < 2:
            raise RuntimeError(f"need two gateway replicas to kill one, found {names}")
        actor = await asyncio.to_thread(ray.get_actor, names[0], namespace="serve")
        await asyncio.to_thread(ray.kill, actor, no_restart=True)
        self.killed = names[0]
        return FaultRecord("one of two gateway replicas killed", 0.0, {"actor": names[0]})

    def recovered(self, target: DrillTarget, fault_at: float, attempts: Sequence[Attempt]) -> bool:
        """Serve has replaced the killed replica and runs the full replica count again
        (right after the kill it still counts the dead one as running)."""
        names = gateway_replica_names(target.app_name, target.gateway_deployment)
        running = running_replicas(target.app_name, target.gateway_deployment)
        return self.killed not in names and min(len(names), running) >= target.gateway_replicas


@dataclass
class Disconnects(Fault):
    """`streams` extra streams at once, each left by its client: half before the first
    response byte, half after the first token."""

    streams: int = 200
    name: ClassVar[str] = "disconnects"

    async def inject(self, target: DrillTarget) -> FaultRecord:
        start = time.monotonic()
        outcomes = await walk_away(
            target.base_url, target.tenants, target.primary_model, self.streams
        )
        held = time.monotonic() - start
        return FaultRecord(f"{self.streams} streams left by their clients", held, outcomes)


FAULTS: dict[str, Callable[[], Fault]] = {
    "redis_kill": RedisKill,
    "redis_slow": RedisSlow,
    "engine_kill": EngineKill,
    "gateway_kill": GatewayKill,
    "disconnects": Disconnects,
}
