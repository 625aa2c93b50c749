"""One phase: steady mixed load, one fault, recovery, settled leases; then the next phase."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from loadtests.chaos.faults import DrillTarget, Fault, live_leases
from loadtests.chaos.load import LoadMix, MixedLoad
from loadtests.chaos.report import summarize

# What "whole again" means for the faults that have it (Fault.recovered).
WHOLE_AGAIN = {
    "engine_kill": "primary model serves again",
    "gateway_kill": "all gateway replicas running",
}


@dataclass(frozen=True)
class PhaseTiming:
    warmup_s: float = 5.0  # steady load before the fault
    duration_s: float = 40.0  # load from the fault on (longer while not whole again)
    recovery_cap_s: float = 300.0  # the longest a phase waits to be whole again
    settle_s: float = 45.0  # leases settle once the load stopped; a dead replica's expire (30 s)
    ready_timeout_s: float = 300.0  # for the cluster to be healthy before a phase


def cluster_healthy(target: DrillTarget) -> bool:
    """/ready answers 200 and Serve reports the app running, every deployment healthy."""
    from ray import serve

    try:
        if httpx.get(f"{target.base_url}/ready", timeout=10).status_code != 200:
            return False
    except httpx.HTTPError:
        return False
    app = serve.status().applications.get(target.app_name)
    return (
        app is not None
        and app.status == "RUNNING"
        and all(d.status == "HEALTHY" for d in app.deployments.values())
    )


async def wait_healthy(target: DrillTarget, timeout_s: float) -> float:
    """Seconds until the cluster is healthy; raises TimeoutError after `timeout_s`."""
    start = time.monotonic()
    while not await asyncio.to_thread(cluster_healthy, target):
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"cluster not healthy after {timeout_s} s")
        await asyncio.sleep(1)  # polling Serve's status with a deadline
    return time.monotonic() - start


async def settled_leases(target: DrillTarget, baseline: int, settle_s: float) -> int:
    """Live leases once the load has ended: polled until back at `baseline` or `settle_s`."""
    deadline = time.monotonic() + settle_s
    while True:
        leases = await live_leases(target)
        if leases <= baseline or time.monotonic() > deadline:
            return leases
        await asyncio.sleep(0.5)  # polling Redis with a deadline


async def run_phase(
    target: DrillTarget, fault: Fault, mix: LoadMix, timing: PhaseTiming
) -> dict[str, Any]:
    """Run `fault` under the mixed load and return the phase's figures (see summarize):
    plus the fault's record, leaked leases (live leases beyond those before the phase,
    once every request ended and `settle_s` passed) and when it was whole again."""
    waited = await wait_healthy(target, timing.ready_timeout_s)
    baseline = await live_leases(target)
    load = MixedLoad(target.base_url, target.tenants, mix)
    stop = asyncio.Event()
    running = asyncio.create_task(load.run(stop))
    try:
        await asyncio.sleep(timing.warmup_s)  # steady load before the fault
        fault_at = time.monotonic()
        print(f"[{fault.name}] fault at +{timing.warmup_s:.0f} s", flush=True)
        record = await fault.inject(target)
        whole_at = await _until_whole(target, fault, load, fault_at, timing)
    finally:
        stop.set()
        await running
    leases = await settled_leases(target, baseline, timing.settle_s)
    figures = summarize(load.attempts, fault_at)
    whole = WHOLE_AGAIN.get(fault.name)
    return {
        "phase": fault.name,
        "fault": record.what,
        "held_s": round(record.held_s, 1),
        "fault_facts": record.facts,
        "healthy_before_s": round(waited, 1),
        **figures,
        "leases_before": baseline,
        "leases_after": leases,
        "leaked_leases": max(0, leases - baseline),
        "whole_again": whole,
        "whole_again_s": None
        if whole is None or whole_at is None
        else round(whole_at - fault_at, 1),
    }


async def _until_whole(
    target: DrillTarget, fault: Fault, load: MixedLoad, fault_at: float, timing: PhaseTiming
) -> float | None:
    """Keep the load on for `duration_s` after the fault, and beyond while the cluster is
    not whole again (up to `recovery_cap_s`). Returns when it was whole, if it was."""
    whole_at: float | None = None
    while True:
        now = time.monotonic()
        if whole_at is None:
            attempts = list(load.attempts)
            if await asyncio.to_thread(fault.recovered, target, fault_at, attempts):
                whole_at = time.monotonic()
        elapsed = time.monotonic() - fault_at
        if elapsed >= timing.duration_s and (
            whole_at is not None or elapsed >= timing.recovery_cap_s
        ):
            return whole_at
        await asyncio.sleep(max(0.0, 0.5 - (time.monotonic() - now)))  # polling the fault


async def run_drill(
    target: DrillTarget, faults: Sequence[Fault], mix: LoadMix, timing: PhaseTiming
) -> dict[str, Any]:
    """Every phase in turn. Returns {"phases": each phase's figures (or its "error" if it
    could not run), "healthy_after_drill", "leases_after_drill": live leases at the end}."""
    phases: list[dict[str, Any]] = []
    for fault in faults:
        try:
            phase = await run_phase(target, fault, mix, timing)
        except Exception as exc:  # reported, and the drill goes on with the next fault
            phase = {"phase": fault.name, "error": repr(exc)}
        phases.append(phase)
        print({k: v for k, v in phase.items() if k not in ("by_kind", "failure_samples")})
    try:
        await wait_healthy(target, timing.ready_timeout_s)
        healthy = True
    except TimeoutError:
        healthy = False
    leases = await live_leases(target)
    return {"phases": phases, "healthy_after_drill": healthy, "leases_after_drill": leases}
