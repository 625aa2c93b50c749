"""The systems the streaming benchmark compares, as named variants.

A variant is a launcher (which servers start, in which order), a patch of the serve
config (Serve systems only) and environment variables. Trials of raygate are variants
too: `raygate/<trial>` applies the knobs of `<trial>` (joined by `+`) to `raygate`.
Every run records the environment its servers got.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.cluster_env import cluster_env
from loadtests.harness import SAME_LOOP_ENV

Launcher = Literal["vllm", "vllm+litellm", "serve"]
Config = dict[str, Any]
Patch = Callable[[Config], None]

# Placeholder in env values: the port of the ingress replica's own HTTP server.
DIRECT_PORT = "{direct_port}"


def _one_model(config: Config, *, keep_embedder: bool = False) -> None:
    """The profile reduced to its first model (one engine, as every other system runs):
    no second tier, no fallbacks, no reranker; the embedder only where the cache needs it."""
    args = config["applications"][0]["args"]
    args["models"] = args["models"][:1]
    routing = args.get("routing", {})
    routing.pop("auto", None)
    routing["fallbacks"] = {}
    args["rerankers"] = []
    if not keep_embedder:
        args["embedders"] = []


def quota_off(config: Config) -> None:
    """raygate with neither quota nor cache: the quota-free column."""
    _one_model(config)
    args = config["applications"][0]["args"]
    args["quota"]["enabled"] = False
    args.pop("cache", None)


def quota_and_cache(config: Config) -> None:
    """raygate with quota (Redis) and the semantic cache (exact GET, embedder, vector search)."""
    _one_model(config, keep_embedder=True)


def ray_serve_llm(config: Config) -> None:
    """The profile's first model on Ray Serve LLM's own OpenAI app."""
    app = config["applications"][0]
    app["import_path"] = "loadtests.ray_serve_llm_app:build_app"
    app["args"] = {"model": app["args"]["models"][0]}


@dataclass(frozen=True)
class Knob:
    """One trial setting: environment variables, and whether clients must use the ingress
    replica's own port instead of the Serve proxy's."""

    env: Mapping[str, str] = field(default_factory=dict)
    direct_ingress: bool = False


DIRECT_INGRESS_ENV = {
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
    # The replica takes the lowest free port in range(min, max): pinned to one, the bench's.
    "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": DIRECT_PORT,
    "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": "{direct_port_end}",
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",  # default 30 s at every stop
}

KNOBS: dict[str, Knob] = {
    "direct-ingress": Knob(DIRECT_INGRESS_ENV, direct_ingress=True),
    "same-loop": Knob(SAME_LOOP_ENV),
    # Serve's own Python proxy instead of the profile's HAProxy (configs/cluster.env)
    "serve-proxy": Knob({"RAY_SERVE_ENABLE_HA_PROXY": "0"}),
    # Implies direct ingress (Ray's constants.py): served on the replica's port as well.
    "throughput-optimized": Knob(
        {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", **DIRECT_INGRESS_ENV}, direct_ingress=True
    ),
    "qlen-cache-600": Knob({"RAY_SERVE_QUEUE_LENGTH_CACHE_TIMEOUT_S": "600"}),
    # Serve's default control loop (every 0.1 s) instead of the profile's 0.5 s (cluster.env)
    "control-loop-100ms": Knob({"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.1"}),
    # HAProxy with 2 threads, one per core of this machine, instead of Serve's default 4
    "haproxy-2-threads": Knob({"RAY_SERVE_HAPROXY_NBTHREAD": "2"}),
    # Ray's default: its workers (the replicas, and the engine processes they spawn) at
    # nice 15, below its own daemons, instead of the profile's 0 (configs/cluster.env)
    "worker-nice-15": Knob({"RAY_worker_niceness": "15"}),
}


@dataclass(frozen=True)
class Variant:
    """A system under test. `patches` edit the serve config in order; `env` values may hold
    {direct_port} and {direct_port_end}, filled at launch."""

    name: str
    launcher: Launcher
    patches: tuple[Patch, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    direct_ingress: bool = False
    redis: bool = False

    def config(self, profile: Config) -> Config:
        """The serve config for this variant: the profile, patched, with Serve's access log
        off (the same logging for every Serve system)."""
        config = copy.deepcopy(profile)
        for patch in self.patches:
            patch(config)
        config["logging_config"] = {"enable_access_log": False}
        return config

    def environment(self, direct_port: int | None = None) -> dict[str, str]:
        """The variant's environment with the port placeholders filled in.

        Raises ValueError when the variant serves on a direct-ingress port and none is given.
        """
        if self.direct_ingress and direct_port is None:
            raise ValueError(f"{self.name} needs a direct-ingress port")
        ports = {"direct_port": direct_port, "direct_port_end": (direct_port or 0) + 1}
        return {key: value.format(**ports) for key, value in self.env.items()}


SYSTEMS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("vllm", "vllm"),
        Variant("vllm+litellm", "vllm+litellm"),
        Variant("ray-serve-llm", "serve", (ray_serve_llm,)),
        # raygate runs in its profile's cluster environment; the peers on their defaults
        Variant("raygate", "serve", (quota_off,), cluster_env()),
        Variant("raygate+quota+cache", "serve", (quota_and_cache,), cluster_env(), redis=True),
    )
}


def compose(trial: str, base: Variant) -> Variant:
    """`base` with the knobs named in `trial` ("a+b") applied, named `<base>/<trial>`.

    A knob's variables override the base's. Raises KeyError for an unknown knob and
    ValueError when two knobs set one variable to different values.
    """
    knobs: dict[str, str] = {}
    direct = base.direct_ingress
    for name in trial.split("+"):
        if name not in KNOBS:
            raise KeyError(f"unknown trial knob {name!r}; known: {', '.join(KNOBS)}")
        knob = KNOBS[name]
        for key, value in knob.env.items():
            if knobs.get(key, value) != value:
                raise ValueError(f"{trial}: {key} set to {knobs[key]!r} and {value!r}")
            knobs[key] = value
        direct = direct or knob.direct_ingress
    env = {**base.env, **knobs}
    return Variant(f"{base.name}/{trial}", base.launcher, base.patches, env, direct, base.redis)


TRIALS = (
    "serve-proxy",
    "direct-ingress",
    "direct-ingress+same-loop",
    "throughput-optimized",
    "qlen-cache-600",
)


def variant(name: str) -> Variant:
    """The variant called `name`: a system of SYSTEMS or `<system>/<knob>[+<knob>...]`.

    Raises KeyError for an unknown system or knob; a trial of a non-Serve system is a
    ValueError (Serve's variables do nothing there).
    """
    base_name, _, trial = name.partition("/")
    if base_name not in SYSTEMS:
        raise KeyError(f"unknown system {base_name!r}; known: {', '.join(SYSTEMS)}")
    base = SYSTEMS[base_name]
    if not trial:
        return base
    if base.launcher != "serve":
        raise ValueError(f"{name}: trials apply to Serve systems only")
    return compose(trial, base)


def names() -> list[str]:
    """Every system and every listed raygate trial, for --help."""
    return [*SYSTEMS, *(f"raygate/{t}" for t in TRIALS)]
