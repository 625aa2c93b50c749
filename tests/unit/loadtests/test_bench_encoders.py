"""The encoders benchmark's summary: a trial's runs become one row per route and level."""

from __future__ import annotations

from typing import Any

from gateway.build import load_config
from loadtests.bench_encoders import medians, with_trial
from loadtests.harness import local_profile


def row(concurrency: int, items_per_s: float, gateway_ms: float, **cpu: float) -> dict[str, Any]:
    return {
        "concurrency": concurrency,
        "per_request": 1,
        "requests": 10,
        "items_per_s": items_per_s,
        "p50_ms": items_per_s * 2,
        "p95_ms": items_per_s * 3,
        "cpu_ms_per_request": {"gateway": gateway_ms, **cpu},
    }


def run(items_per_s: float, gateway_ms: float, **cpu: float) -> dict[str, Any]:
    return {
        "trial": "profile",
        "embeddings": [row(1, items_per_s, gateway_ms, **cpu), row(8, 2 * items_per_s, 1.0)],
        "rerank": [row(1, 5.0, 1.0)],
    }


def test_each_figure_is_the_median_of_the_runs_row_by_row() -> None:
    summary = medians([run(10.0, 4.0), run(30.0, 2.0), run(20.0, 9.0)])
    first, second = summary["embeddings"]
    assert (first["items_per_s"], first["p95_ms"], first["requests"]) == (20.0, 60.0, 30)
    assert first["cpu_ms_per_request"]["gateway"] == 4.0  # CPU figures: medians too
    assert second["concurrency"] == 8 and second["items_per_s"] == 40.0
    assert summary["trial"] == "profile" and summary["runs"] == 3


def test_a_role_missing_from_a_run_counts_as_no_cpu_there() -> None:
    summary = medians([run(10.0, 1.0, embedder=6.0), run(10.0, 1.0)])
    assert summary["embeddings"][0]["cpu_ms_per_request"]["embedder"] == 3.0


def encoder_envs(args: dict[str, Any]) -> list[dict[str, str]]:
    config = load_config(args)
    return [
        encoder.deployment_options("x")["ray_actor_options"]["runtime_env"]["env_vars"]
        for encoder in (*config.embedders, *config.rerankers)
    ]


def test_a_trial_overlays_the_encoders_settings_and_keeps_the_rest() -> None:
    args = local_profile()["applications"][0]["args"]
    spin_briefly = with_trial(args, "spin-10k")
    for env in encoder_envs(spin_briefly):
        assert env["GOMP_SPINCOUNT"] == "10000" and "OMP_WAIT_POLICY" not in env
        assert env["HF_HUB_OFFLINE"] == "1"  # the profile's own env is kept
    kept = spin_briefly["embedders"][0]["deployment"]
    assert kept["num_cpus"] == args["embedders"][0]["deployment"]["num_cpus"]
    for env in encoder_envs(args):  # the profile itself is left as it was
        assert env["OMP_WAIT_POLICY"] == "PASSIVE" and "GOMP_SPINCOUNT" not in env


def test_a_trial_reaches_the_gateway_section_as_well() -> None:
    args = local_profile()["applications"][0]["args"]
    one_loop = {
        "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
        "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    }
    assert load_config(with_trial(args, "same-loop")).gateway.deployment.env == one_loop
    assert not load_config(with_trial(args, "encoders-same-loop")).gateway.deployment.env
    for trial in ("same-loop", "encoders-same-loop"):
        for env in encoder_envs(with_trial(args, trial)):
            assert one_loop.items() <= env.items() and env["HF_HUB_OFFLINE"] == "1"
    assert not load_config(args).gateway.deployment.env  # the profile: Serve's defaults
    for env in encoder_envs(args):
        assert "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD" not in env
