"""The Helm chart, linted and rendered offline with Helm's own SDK: core manifests
validated against Kubernetes' schemas, `serveConfigV2` against Ray Serve's schema and
raygate's own config, and equal to the local profile except where it must differ."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from gateway.build import load_config
from observability.dashboards import OUT as DASHBOARDS
from observability.prometheus import RULES
from tests.paths import ROOT

CHART = ROOT / "helm" / "raygate"
KUBERNETES = "1.30.0"
CORE_KINDS = {
    "Secret",
    "Service",
    "StatefulSet",
    "CronJob",
    "PodDisruptionBudget",
    "Ingress",
    "ConfigMap",
}


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    chart = helm.Chart.load(str(CHART))
    manifests = chart.render(values, name="rg", namespace="ai", is_install=True)
    docs = [d for text in manifests.values() for d in yaml.safe_load_all(text) if d]
    return docs


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, (kind, name, [d["metadata"]["name"] for d in found])
    return found[0]


def serve_config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(one(docs, "RayService")["spec"]["serveConfigV2"])
    return config


def profile_args(path: Path) -> dict[str, Any]:
    args: dict[str, Any] = yaml.safe_load(path.read_text())["applications"][0]["args"]
    return args


GPU_VALUES = yaml.safe_load((CHART / "values-gpu.yaml").read_text())
FULL = {  # every optional part switched on
    "ingress": {"enabled": True, "host": "llm.example.com", "className": "nginx"},
    "batch": {"enabled": True, "input": "s3://b/tickets-{date}.jsonl", "outputClaim": "batch-out",
              "pushgateway": "pushgateway.monitoring:9091"},
}  # fmt: skip


def test_lint_finds_no_warnings_or_errors() -> None:
    for values in (None, GPU_VALUES, FULL):
        report = helm.lint(str(CHART), values, strict=True)
        assert not report["errors"], report
        assert all(m["severity"] < 2 for m in report["messages"]), report


def test_the_chart_carries_the_projects_own_app_configs() -> None:
    assert (CHART / "files/serve_config.yaml").read_text() == (
        ROOT / "serve_config.yaml"
    ).read_text()
    assert (CHART / "files/gpu.yaml").read_text() == (ROOT / "configs/gpu.yaml").read_text()


@pytest.mark.parametrize("values", [None, GPU_VALUES, FULL], ids=["local", "gpu", "full"])
def test_core_manifests_pass_kubernetes_schemas(values: dict[str, Any] | None) -> None:
    docs = render(values)
    checked = [d for d in docs if d["kind"] in CORE_KINDS]
    for doc in checked:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    kinds = {d["kind"] for d in docs}
    assert {"RayService", "Secret", "Service", "StatefulSet", "ConfigMap", "ServiceMonitor",
            "PrometheusRule", "PodDisruptionBudget"} <= kinds  # fmt: skip
    if values is FULL:
        assert {"CronJob", "Ingress"} <= kinds


@pytest.mark.parametrize(
    ("values", "profile"),
    [(None, ROOT / "serve_config.yaml"), (GPU_VALUES, ROOT / "configs/gpu.yaml")],
    ids=["local", "gpu"],
)
def test_serve_config_is_the_profile_with_only_the_intended_differences(
    values: dict[str, Any] | None, profile: Path
) -> None:
    config = serve_config(render(values))
    ServeDeploySchema.model_validate(config)  # Ray Serve's own schema of serveConfigV2
    assert config["http_options"] == {"host": "0.0.0.0", "port": 8000, "request_timeout_s": 600}
    args = config["applications"][0]["args"]
    load_config(args)  # raygate's own config model accepts it
    expected = copy.deepcopy(profile_args(profile))
    expected["auth"] = {"enabled": True, "tenants_file": "/etc/raygate/tenants.yaml"}
    for section in ("quota", "cache"):
        expected[section] |= {"redis_url": "redis://rg-raygate-redis:6379/0",
                              "redis_password_env": "RAYGATE_REDIS_PASSWORD"}  # fmt: skip
    for model_id, override in ((values or {}).get("app", {}).get("models") or {}).items():
        entry = next(m for m in expected["models"] if m["id"] == model_id)
        entry["deployment"] |= override["deployment"]
    assert json.loads(json.dumps(args)) == json.loads(json.dumps(expected))


def test_values_override_models_replicas_and_autoscaling() -> None:
    local = profile_args(ROOT / "serve_config.yaml")
    llm, embedder = local["models"][0]["id"], local["embedders"][0]["id"]
    values = {
        "app": {
            "profile": "local",
            "models": {
                llm: {"deployment": {"autoscaling": {"min_replicas": 1, "max_replicas": 3}}}
            },
            "embedders": {embedder: {"deployment": {"num_replicas": 2}}},
            "gateway": {"deployment": {"num_replicas": 3}},
        }
    }
    args = serve_config(render(values))["applications"][0]["args"]
    config = load_config(args)
    assert (
        config.models[0].deployment.deployment_options("x")["autoscaling_config"]["max_replicas"]
        == 3
    )
    assert (
        config.models[0].deployment.max_ongoing_requests
        == local["models"][0]["deployment"]["max_ongoing_requests"]
    )
    assert config.embedders[0].deployment.num_replicas == 2
    assert config.gateway.deployment.num_replicas == 3


def test_gpu_workers_ask_for_gpus_and_redis_can_be_external() -> None:
    external = {"internal": {"enabled": False}, "external": {"url": "redis://cache.prod:6379/1"}}
    values = {**GPU_VALUES, "redis": external}
    docs = render(values)
    worker = one(docs, "RayService")["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    container = worker["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker["rayStartParams"]["num-gpus"] == "1"
    assert not [d for d in docs if d["kind"] == "StatefulSet"]
    args = serve_config(docs)["applications"][0]["args"]
    assert args["quota"]["redis_url"] == args["cache"]["redis_url"] == "redis://cache.prod:6379/1"


def test_secrets_monitoring_and_the_nightly_job() -> None:
    docs = render(FULL)
    password = one(docs, "Secret", "rg-raygate-redis")["stringData"]["redis-password"]
    assert len(password) == 32  # generated when not given
    tenants = one(docs, "Secret", "rg-raygate-tenants")["stringData"]["tenants.yaml"]
    assert yaml.safe_load(tenants)["tenants"]
    rule = one(docs, "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    boards = [
        d for d in docs if d["kind"] == "ConfigMap" and "-dashboard-" in d["metadata"]["name"]
    ]
    assert len(boards) == len(list(DASHBOARDS.glob("*.json")))
    assert all(b["metadata"]["labels"]["grafana_dashboard"] == "1" for b in boards)
    job = one(docs, "CronJob")
    assert job["spec"]["schedule"] == "0 2 * * *" and job["spec"]["concurrencyPolicy"] == "Forbid"
    command = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert (
        "--address ray://rg-raygate-head-svc:10001" in command
        and '--job-id "nightly-$day"' in command
    )
    with_secrets = render(
        {"auth": {"existingSecret": "mine"}, "redis": {"existingSecret": "theirs"}}
    )
    assert not [d for d in with_secrets if d["kind"] == "Secret"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"app": {"profile": "tpu"}}, "value must be one of 'local', 'gpu'"),
        ({"app": {"profile": "local", "models": {"nope": {}}}}, "app.models.nope: no such id"),
        ({"redis": {"internal": {"enabled": False}}}, "/redis/external"),
        ({"batch": {"enabled": True}}, "/batch/input"),
        ({"batch": {"schedule": "nightly"}}, "/batch/schedule"),
        ({"ray": {"workerGroups": []}}, "/ray/workerGroups"),
        ({"auth": {"tenants": ""}}, "/auth"),
        ({"replicas": 3}, "additional properties 'replicas' not allowed"),
    ],
)
def test_bad_values_fail_with_a_clear_message(values: dict[str, Any], message: str) -> None:
    with pytest.raises((helm.HelmValuesError, helm.HelmRenderError), match=message):
        render(values)
