"""The Helm chart, linted and rendered offline with Helm's own SDK: core manifests
validated against Kubernetes' schemas, `serveConfigV2` against Ray Serve's schema and
raygate's own config, and equal to the local profile except where it must differ; the
network policies, pod security and Redis stores checked for what they let happen."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from gateway.build import load_config
from gateway.cluster_env import CLUSTER_ENV_FILE, cluster_env
from observability.dashboards import OUT as DASHBOARDS
from observability.prometheus import RULES
from tests.paths import ROOT
from tests.unit.helm.network_policy import Pod, allows

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
    "NetworkPolicy",
}
INSTALL = {"redis": {"passwordSalt": "salt-of-this-cluster"}}  # what every install must give


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = (
            merged(out[key], value)
            if isinstance(out.get(key), dict) and isinstance(value, dict)
            else copy.deepcopy(value)
        )
    return out


def render(
    values: dict[str, Any] | None = None, name: str = "rg", namespace: str = "ai"
) -> list[dict[str, Any]]:
    chart = helm.Chart.load(str(CHART))
    manifests = chart.render(
        merged(INSTALL, values or {}), name=name, namespace=namespace, is_install=True
    )
    docs = [d for text in manifests.values() for d in yaml.safe_load_all(text) if d]
    return docs


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, (kind, name, [d["metadata"]["name"] for d in found])
    return found[0]


def serve_config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(one(docs, "RayService")["spec"]["serveConfigV2"])
    return config


def pod_templates(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(owner/part, pod template) for every pod the chart's manifests make."""
    for doc in docs:
        name, spec = f"{doc['kind']}/{doc['metadata']['name']}", doc.get("spec", {})
        if doc["kind"] == "RayService":
            cluster = spec["rayClusterConfig"]
            yield f"{name}/head", cluster["headGroupSpec"]["template"]
            for group in cluster["workerGroupSpecs"]:
                yield f"{name}/{group['groupName']}", group["template"]
        elif doc["kind"] in ("StatefulSet", "Deployment", "DaemonSet", "Job"):
            yield name, spec["template"]
        elif doc["kind"] == "CronJob":
            yield name, spec["jobTemplate"]["spec"]["template"]


def containers(template: dict[str, Any]) -> list[dict[str, Any]]:
    spec = template["spec"]
    found: list[dict[str, Any]] = spec["containers"] + spec.get("initContainers", [])
    return found


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
    for values in (INSTALL, merged(INSTALL, GPU_VALUES), merged(INSTALL, FULL)):
        report = helm.lint(str(CHART), values, strict=True)
        assert not report["errors"], report
        assert all(m["severity"] < 2 for m in report["messages"]), report


def test_the_chart_carries_the_projects_own_app_configs() -> None:
    assert (CHART / "files/serve_config.yaml").read_text() == (
        ROOT / "serve_config.yaml"
    ).read_text()
    assert (CHART / "files/gpu.yaml").read_text() == (ROOT / "configs/gpu.yaml").read_text()
    assert (CHART / "files/cluster.env").read_text() == CLUSTER_ENV_FILE.read_text()


@pytest.mark.parametrize("values", [None, GPU_VALUES], ids=["local", "gpu"])
def test_every_ray_container_starts_in_the_clusters_environment(
    values: dict[str, Any] | None,
) -> None:
    expected = cluster_env()
    assert expected  # the file names at least the ingress setting
    cluster = one(render(values), "RayService")["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        for container in containers(group["template"]):
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert {name: env.get(name) for name in expected} == expected, container["name"]


@pytest.mark.parametrize("values", [None, GPU_VALUES, FULL], ids=["local", "gpu", "full"])
def test_core_manifests_pass_kubernetes_schemas(values: dict[str, Any] | None) -> None:
    docs = render(values)
    checked = [d for d in docs if d["kind"] in CORE_KINDS]
    for doc in checked:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    kinds = {d["kind"] for d in docs}
    assert {"RayService", "Secret", "Service", "StatefulSet", "ConfigMap", "ServiceMonitor",
            "PrometheusRule", "PodDisruptionBudget", "NetworkPolicy"} <= kinds  # fmt: skip
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
        expected[section] |= {"redis_url": f"redis://rg-raygate-redis-{section}:6379/0",
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
    external = {
        "internal": {"enabled": False},
        "external": {"quotaUrl": "redis://quota.prod:6379/0", "cacheUrl": "redis://c.prod:6379/1"},
    }
    values = {**GPU_VALUES, "redis": external}
    docs = render(values)
    worker = one(docs, "RayService")["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    container = worker["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker["rayStartParams"]["num-gpus"] == "1"
    assert not [d for d in docs if d["kind"] == "StatefulSet"]
    args = serve_config(docs)["applications"][0]["args"]
    assert args["quota"]["redis_url"] == "redis://quota.prod:6379/0"
    assert args["cache"]["redis_url"] == "redis://c.prod:6379/1"


def test_secrets_monitoring_and_the_nightly_job() -> None:
    docs = render(FULL)
    password = one(docs, "Secret", "rg-raygate-redis")["stringData"]["redis-password"]
    assert len(password) == 32  # derived when not given
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
        ({"redis": {"passwordSalt": ""}}, "at '/redis': 'anyOf' failed"),
        ({"redis": {"password": "two words"}}, "/redis/password"),
        (
            {"networkPolicy": {"monitoring": {"podSelector": {"app": "x"}}}},
            "/networkPolicy/monitoring/podSelector",
        ),
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


RELEASE = {"app.kubernetes.io/name": "raygate", "app.kubernetes.io/instance": "rg"}
INGRESS = Pod("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
LOOKALIKE = Pod("team-b", {"app.kubernetes.io/name": "ingress-nginx"})  # wrong namespace
PROMETHEUS = Pod("monitoring", {"app.kubernetes.io/name": "prometheus"})
OPERATOR = Pod("kuberay-system", {"app.kubernetes.io/name": "kuberay-operator"})
NEIGHBOUR = Pod("ai", {"app": "notebook"})  # another workload in the release's namespace
OTHER_RELEASE = Pod("ai", RELEASE | {"app.kubernetes.io/instance": "rg2"})
BATCH = Pod("ai", RELEASE | {"app.kubernetes.io/component": "batch"})
WORKER = Pod("ai", RELEASE | {"app.kubernetes.io/component": "ray-worker"})
WORKER_PORT = 10123  # one of the ports Ray gives its workers


@pytest.fixture(scope="module")
def full() -> list[dict[str, Any]]:
    return render(FULL)


def targets(docs: list[dict[str, Any]]) -> dict[str, Pod]:
    """Each rendered pod by its component label, as NetworkPolicies see it."""
    found = {}
    for _, template in pod_templates(docs):
        labels = template["metadata"]["labels"]
        ports = {
            p["name"]: p["containerPort"]
            for c in containers(template)
            for p in c.get("ports", [])
            if "name" in p
        }
        found[labels["app.kubernetes.io/component"]] = Pod("ai", labels, ports)
    return found


def policies(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == "NetworkPolicy"]


@pytest.mark.parametrize(
    ("source", "component", "port", "allowed"),
    [
        (INGRESS, "ray-head", 8000, True),
        (INGRESS, "ray-worker", 8000, True),
        (INGRESS, "ray-head", 8265, False),
        (INGRESS, "ray-head", 10001, False),
        (INGRESS, "ray-head", 6379, False),
        (INGRESS, "ray-head", 8080, False),
        (INGRESS, "redis-quota", 6379, False),
        (LOOKALIKE, "ray-head", 8000, False),
        (NEIGHBOUR, "ray-head", 8000, False),
        (NEIGHBOUR, "ray-head", 8265, False),
        (NEIGHBOUR, "ray-head", 10001, False),
        (NEIGHBOUR, "ray-worker", WORKER_PORT, False),
        (NEIGHBOUR, "redis-quota", 6379, False),
        (NEIGHBOUR, "redis-cache", 6379, False),
        (NEIGHBOUR, "batch", 8080, False),
        (OTHER_RELEASE, "ray-head", 8265, False),
        (OTHER_RELEASE, "redis-quota", 6379, False),
        (BATCH, "ray-head", 10001, True),
        (BATCH, "ray-head", 8265, True),
        (WORKER, "ray-head", 6379, True),
        (WORKER, "ray-worker", WORKER_PORT, True),
        (WORKER, "redis-quota", 6379, True),
        (WORKER, "redis-cache", 6379, True),
        (WORKER, "redis-quota", 16379, False),
        (PROMETHEUS, "ray-head", 8080, True),
        (PROMETHEUS, "ray-worker", 8080, True),
        (PROMETHEUS, "ray-head", 8000, False),
        (PROMETHEUS, "ray-head", 8265, False),
        (OPERATOR, "ray-head", 8265, True),  # it deploys serveConfigV2 there
        (OPERATOR, "ray-head", 8000, True),  # and checks the head's proxy
        (OPERATOR, "ray-head", 10001, False),
        (OPERATOR, "ray-worker", 8265, False),
    ],
)
def test_network_policies_let_in_only_the_release_the_ingress_and_prometheus(
    full: list[dict[str, Any]], source: Pod, component: str, port: int, allowed: bool
) -> None:
    assert allows(policies(full), "ai", source, targets(full)[component], port) is allowed


def test_network_policy_peers_come_from_values_and_can_be_switched_off() -> None:
    traefik = Pod("edge", {"app.kubernetes.io/name": "traefik"})
    peer = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "edge"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "traefik"}},
    }
    docs = render({"networkPolicy": {"ingressController": peer, "monitoring": peer}})
    head = targets(docs)["ray-head"]
    assert allows(policies(docs), "ai", traefik, head, 8000)
    assert allows(policies(docs), "ai", traefik, head, 8080)
    assert not allows(policies(docs), "ai", INGRESS, head, 8000)
    assert not allows(policies(docs), "ai", PROMETHEUS, head, 8080)
    assert not policies(render({"networkPolicy": {"enabled": False}}))


@pytest.mark.parametrize("values", [None, GPU_VALUES, FULL], ids=["local", "gpu", "full"])
def test_every_pod_runs_as_non_root_without_privileges(values: dict[str, Any] | None) -> None:
    docs = render(values)
    templates = dict(pod_templates(docs))
    for name, template in templates.items():
        pod = template["spec"].get("securityContext", {})
        for container in containers(template):
            context = pod | container.get("securityContext", {})
            where = f"{name}/{container['name']}"
            assert context.get("runAsNonRoot") is True, where
            assert context.get("runAsUser", 0) != 0, where
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("capabilities") == {"drop": ["ALL"]}, where
            assert context.get("seccompProfile") == {"type": "RuntimeDefault"}, where
    workers = len(one(docs, "RayService")["spec"]["rayClusterConfig"]["workerGroupSpecs"])
    batch = 1 if values is FULL else 0
    assert len(templates) == 1 + workers + 2 + batch  # head, workers, both Redis, batch
    # the autoscaler sidecar KubeRay adds to the head
    autoscaler = one(docs, "RayService")["spec"]["rayClusterConfig"]["autoscalerOptions"]
    assert autoscaler["securityContext"]["allowPrivilegeEscalation"] is False
    assert autoscaler["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_the_image_runs_as_the_user_the_ray_pods_run_as() -> None:
    lines = (ROOT / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users, "the Dockerfile sets no USER: the image runs as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0  # numeric: runAsNonRoot can verify it
    assert re.search(rf"useradd [^\n]*--uid {uid}\b", "\n".join(lines))
    assert any(line.startswith(f"COPY --chown={uid}:") for line in lines)  # owns /app
    for name, template in pod_templates(render(FULL)):
        if "redis" not in name:
            context = template["spec"]["securityContext"]
            assert (context["runAsUser"], context["runAsGroup"]) == (int(uid), int(gid)), name


def redis_secret_env(container: dict[str, Any], secret: str) -> set[str]:
    return {
        e["name"]
        for e in container.get("env", [])
        if e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == secret
    }


def command_lines(container: dict[str, Any]) -> list[str]:
    probes = [container.get(p, {}) for p in ("readinessProbe", "livenessProbe", "startupProbe")]
    execs = [line for p in probes if "exec" in p for line in p["exec"]["command"]]
    return [*container.get("command", []), *container.get("args", []), *execs]


def test_no_command_line_carries_the_redis_password() -> None:
    password = "Pw-only-in-the-Secret"
    docs = render(merged(FULL, {"redis": {"password": password}}))
    secret = one(docs, "Secret", "rg-raygate-redis")
    assert secret["stringData"]["redis-password"] == password
    assert password not in yaml.safe_dump_all([d for d in docs if d is not secret])
    for name, template in pod_templates(docs):
        for container in containers(template):
            env = redis_secret_env(container, "rg-raygate-redis")
            for line in command_lines(container):
                for variable in env:  # $(VAR) is expanded by the kubelet, $VAR by a shell
                    assert not re.search(rf"\$\(?\{{?{variable}\b", line), (name, line)


def test_the_redis_password_is_the_same_on_every_render() -> None:
    def password(docs: list[dict[str, Any]]) -> str:
        value: str = one(docs, "Secret", "rg-raygate-redis")["stringData"]["redis-password"]
        return value

    first = password(render())
    assert password(render()) == first  # helm template, GitOps: no drift, no rotation
    assert len(first) == 32
    assert password(render(namespace="ai-staging")) != first
    assert password(render({"redis": {"passwordSalt": "another cluster"}})) != first
    assert password(render({"redis": {"password": "given"}})) == "given"
    annotations = [t["metadata"].get("annotations", {}) for _, t in pod_templates(render())]
    assert all("checksum/redis-password" in a for a in annotations)  # a change rolls the pods


def test_an_existing_redis_secret_is_used_and_none_rendered() -> None:
    docs = render(merged(FULL, {"redis": {"existingSecret": "theirs", "passwordSalt": ""}}))
    assert not [d for d in docs if d["kind"] == "Secret" and "redis" in d["metadata"]["name"]]
    references = []
    for _, template in pod_templates(docs):
        for container in containers(template):
            for e in container.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef", {})
                if ref.get("key") == "redis-password":
                    references.append(ref["name"])
        for volume in template["spec"].get("volumes", []):
            items = volume.get("secret", {}).get("items", [])
            if any(i["key"] == "redis-password" for i in items):
                references.append(volume["secret"]["secretName"])
    assert references and set(references) == {"theirs"}
    assert len(references) >= 4  # head, worker, both Redis stores


def redis_store(docs: list[dict[str, Any]], url: str) -> tuple[dict[str, str], dict[str, Any]]:
    """The redis.conf directives and pod template of the Redis a redis:// URL reaches."""
    host = url.removeprefix("redis://").split(":")[0]
    selector = one(docs, "Service", host)["spec"]["selector"]
    (statefulset,) = [
        d
        for d in docs
        if d["kind"] == "StatefulSet"
        and selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
    ]
    template = statefulset["spec"]["template"]
    (config,) = [v["configMap"]["name"] for v in template["spec"]["volumes"] if "configMap" in v]
    text = one(docs, "ConfigMap", config)["data"]["redis.conf"]
    directives = dict(line.split(" ", 1) for line in text.splitlines() if line.strip())
    return directives, statefulset


def test_quota_and_cache_have_their_own_redis_and_only_the_cache_evicts() -> None:
    docs = render({"redis": {"internal": {"cache": {"maxmemory": "2gb"}}}})
    args = serve_config(docs)["applications"][0]["args"]
    quota, quota_set = redis_store(docs, args["quota"]["redis_url"])
    cache, cache_set = redis_store(docs, args["cache"]["redis_url"])
    assert quota_set is not cache_set
    assert quota["maxmemory-policy"] == "noeviction"  # a bucket or lease is never dropped
    assert quota["appendonly"] == "yes"
    claims = quota_set["spec"]["volumeClaimTemplates"]
    assert [c["metadata"]["name"] for c in claims] == ["data"] and quota["dir"] == "/data"
    assert cache["maxmemory-policy"] == "volatile-lru" and cache["maxmemory"] == "2gb"
    assert cache["appendonly"] == "no"
    unpersisted = render({"redis": {"internal": {"quota": {"persistence": {"enabled": False}}}}})
    _, quota_set = redis_store(unpersisted, args["quota"]["redis_url"])
    assert "volumeClaimTemplates" not in quota_set["spec"]
