"""`python -m loadtests.chaos`: start a raygate, run the drill, write its table and JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from loadtests.chaos.cluster import GATEWAY_REPLICAS, TENANTS, drill_cluster
from loadtests.chaos.drill import PhaseTiming, run_drill
from loadtests.chaos.faults import FAULTS, Disconnects, Fault, RedisKill, RedisSlow
from loadtests.chaos.load import LoadMix
from loadtests.chaos.report import markdown
from loadtests.harness import ROOT, machine

LEGEND = (
    "`held s`: how long the fault lasted (Redis down, Redis slow, the streams being left); "
    "0 for a kill the cluster heals itself. `lost`: no response at all (connection refused, "
    "reset or timed out before a status). `5xx`/`4xx`: responses by status. `broken streams`: "
    "a 200 stream that ended without `[DONE]` or with an error event. `leaked leases`: quota "
    "leases (`rg:q:{tenant}:leases`) still live once every request of the phase had ended "
    "and up to 45 s more (past the 30 s lease TTL) had passed. `recovery s`: from the fault "
    "to the end of the first "
    "success of each kind sent after its last failure (0: no request of that kind failed; "
    "the fault's own `held s` is included). `whole again s`: from the fault to the primary "
    "model answering again (engine) or Serve running every gateway replica again (gateway). "
    "Serve's health-check period is 10 s (its default)."
)


def setup_text(args: dict[str, Any], mix: LoadMix, timing: PhaseTiming, streams: int) -> str:
    quota = args["quota"]
    kinds = ", ".join(f"{n} {kind}" for kind, n in mix.workers)
    return (
        f"Local profile models (serve_config.yaml): `{mix.stream_model}` primary, falling back "
        f"to `{args['models'][1]['id']}`; {GATEWAY_REPLICAS} gateway replicas; auth on with "
        f"tenants {', '.join(t.id for t in TENANTS)} (cache off for them); quota Redis and "
        "cache Redis are separate redis-servers started by the drill (faults hit the quota "
        f"one); quota timeout {quota['timeout_s']} s, on Redis error {quota['on_redis_error']}. "
        f"Load per tenant, each worker at most one request per {mix.pace_s} s: {kinds} "
        f"(streams {mix.stream_tokens} tokens and chats {mix.chat_tokens} tokens of "
        f"`{mix.stream_model}`, embeddings of 2 inputs on `{mix.embed_model}`). Each phase: "
        f"{timing.warmup_s:g} s of load, the fault, {timing.duration_s:g} s more load (longer "
        f"until whole again, up to {timing.recovery_cap_s:g} s). The disconnect storm is "
        f"{streams} extra streams, not counted as load."
    )


def make_faults(names: list[str], streams: int, hold_s: float) -> list[Fault]:
    faults: list[Fault] = []
    for name in names:
        if name == "redis_kill":
            faults.append(RedisKill(down_s=hold_s))
        elif name == "redis_slow":
            faults.append(RedisSlow(slow_s=hold_s))
        elif name == "disconnects":
            faults.append(Disconnects(streams=streams))
        else:
            faults.append(FAULTS[name]())
    return faults


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--phases", default=",".join(FAULTS), help="comma-separated, in order")
    parser.add_argument("--duration-s", type=float, default=40.0, help="load after each fault")
    parser.add_argument("--hold-s", type=float, default=8.0, help="Redis down / slow for")
    parser.add_argument("--streams", type=int, default=200, help="streams left by clients")
    parser.add_argument("--out", type=Path, default=ROOT / "loadtests" / "results" / "chaos.md")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.phases.split(",") if n.strip()]
    unknown = sorted(set(names) - set(FAULTS))
    if unknown:
        parser.error(f"unknown phases {unknown}; choose from {sorted(FAULTS)}")
    timing = PhaseTiming(duration_s=args.duration_s)
    with tempfile.TemporaryDirectory() as tmp, drill_cluster(Path(tmp)) as (target, app_args):
        mix = LoadMix(
            stream_model=target.primary_model,
            chat_model=target.primary_model,
            embed_model=str(app_args["embedders"][0]["id"]),
        )
        faults = make_faults(names, args.streams, args.hold_s)
        outcome = asyncio.run(run_drill(target, faults, mix, timing))
    record = {
        "machine": machine(),
        "command": "python -m loadtests.chaos " + " ".join(argv or sys.argv[1:]),
        "setup": setup_text(app_args, mix, timing, args.streams),
        "legend": LEGEND,
        **outcome,
    }
    table = markdown(record)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(table)
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
