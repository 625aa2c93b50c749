"""Dashboards and alerts against a real Prometheus scraping the test cluster: after a
short load, every panel's query and every alert rule evaluates without error, and the
key panels show data. Batch metrics go through a real Pushgateway."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from batch.metrics import JobMetrics
from observability.dashboards import DASHBOARDS, GW, Panel
from observability.prometheus import prometheus_config
from tests.integration.conftest import CACHE_A_KEY, Cluster, wait_until
from tests.integration.monitoring import Daemon, Prometheus, start_pushgateway

GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__range": "5m",
    "$tenant": ".*",
    "$model": ".*",
    "$pipeline": ".*",
}


def as_prometheus_query(expr: str) -> str:
    """What Grafana sends for a panel with all values of every variable selected."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def label_values_query(query: str) -> str:
    """Grafana's `label_values(metric, label)` as a plain PromQL query."""
    match = re.fullmatch(r"label_values\((\w+), (\w+)\)", query)
    assert match, query
    return f"group by ({match[2]}) ({match[1]})"


@pytest.fixture(scope="module")
def monitoring(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Prometheus, Daemon]]:
    workdir = tmp_path_factory.mktemp("prometheus")
    pushgateway = start_pushgateway(workdir)
    try:
        ray_target = cluster.metrics_url.removeprefix("http://").removesuffix("/metrics")
        config = prometheus_config([ray_target], f"127.0.0.1:{pushgateway.port}", interval_s=5)
        prometheus = Prometheus(workdir, config)
        try:
            yield prometheus, pushgateway
        finally:
            prometheus.stop()
    finally:
        pushgateway.stop()


def generate_load(cluster: Cluster, pushgateway: Daemon) -> None:
    url = cluster.base_url
    chat: dict[str, Any] = {"messages": [{"role": "user", "content": "Name a colour."}]}
    chat |= {"max_tokens": 8, "ignore_eos": True, "temperature": 0}
    for model, stream in (("default", False), ("default", True), ("auto", False)):
        reply = httpx.post(
            f"{url}/v1/chat/completions",
            json={**chat, "model": model, "stream": stream},
            headers=cluster.auth,
            timeout=120,
        )
        assert reply.status_code == 200, reply.text
    cached = {"Authorization": f"Bearer {CACHE_A_KEY}"}
    question: dict[str, Any] = {"messages": [{"role": "user", "content": "What is Prometheus?"}]}
    question |= {"model": "default", "max_tokens": 48, "stop": ["\n", "."], "temperature": 0}
    for _ in range(2):  # a complete answer is stored, then replayed
        reply = httpx.post(f"{url}/v1/chat/completions", json=question, headers=cached, timeout=120)
        assert reply.status_code == 200, reply.text
    assert reply.headers["x-raygate-cache"].startswith("hit"), reply.headers
    embedding = {"model": cluster.embedder_id, "input": ["alpha", "beta"]}
    assert httpx.post(
        f"{url}/v1/embeddings", json=embedding, headers=cluster.auth, timeout=60
    ).is_success
    rerank = {"model": "rerank-default", "query": "colour", "documents": ["red", "loud", "blue"]}
    assert httpx.post(f"{url}/v1/rerank", json=rerank, headers=cluster.auth, timeout=60).is_success
    missing = httpx.post(
        f"{url}/v1/chat/completions", json={**chat, "model": "nope"}, headers=cluster.auth
    )
    assert missing.status_code == 404  # an error for the error panels
    broken = httpx.post(  # fails after its first chunk: status 200, then an error event
        f"{url}/v1/chat/completions",
        json={**chat, "model": "stranded", "stream": True},
        headers=cluster.auth,
        timeout=120,
    )
    assert broken.status_code == 200 and '"error"' in broken.text
    job = JobMetrics(pushgateway.url, "observability-test", "job-1")
    job.progress(classified=90, dead=10, pending=0, seconds=4.0)
    job.ended(ok=True)


def test_every_panel_and_rule_evaluates_and_key_panels_show_data(
    cluster: Cluster, monitoring: tuple[Prometheus, Daemon]
) -> None:
    prometheus, pushgateway = monitoring
    generate_load(cluster, pushgateway)
    panels: list[tuple[str, Panel]] = [(d.uid, p) for d in DASHBOARDS for p in d.panels]

    def empty_key_panels() -> list[str]:
        empty = []
        for uid, panel in panels:
            results = [prometheus.query(as_prometheus_query(e)) for e in panel.exprs.values()]
            if panel.key and not any(results):
                empty.append(f"{uid}: {panel.title}")
        return empty

    # Every query runs (a bad one raises); the key panels fill once Ray exports the
    # load's metrics and Prometheus has scraped them twice (rate needs two samples).
    missing: list[str] = []

    def key_panels_have_data() -> bool:
        missing[:] = empty_key_panels()
        return not missing

    try:
        wait_until(key_panels_have_data, timeout_s=120, what="key panels without data")
    except TimeoutError:
        pytest.fail(f"key panels without data: {missing}; targets: {prometheus.targets()}")

    def series(expr: str) -> list[dict[str, str]]:
        return [r["metric"] for r in prometheus.query(expr)]

    chat_ok = {"tenant": "cache-a", "model": cluster.llm_id, "route": "/v1/chat/completions"}
    chat_ok["status"] = "200"
    not_found = {"model": "none", "status": "404", "type": "model_not_found"}

    def labelled_right() -> bool:  # once Ray has exported the last requests
        requests = series(f"sum by (tenant, model, route, status) ({GW}requests_total)")
        errors = series(f"sum by (model, status, type) ({GW}errors_total)")
        stranded = [e for e in errors if e["model"] == "stranded" and e["status"] == "200"]
        return chat_ok in requests and not_found in errors and bool(stranded)

    wait_until(labelled_right, timeout_s=60, what="requests/errors not labelled as expected")

    for dashboard in DASHBOARDS:
        for name, query in dashboard.variables:
            assert prometheus.query(label_values_query(query)), (
                f"{dashboard.uid}: ${name} has no values"
            )

    def rules_evaluated() -> bool:
        return all(r["lastEvaluation"] > "2000" for r in prometheus.rules())

    wait_until(rules_evaluated, timeout_s=60, what="rules not evaluated")
    rules = prometheus.rules()
    assert len(rules) == 13
    for rule in rules:
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
    states = {r["name"]: r.get("state") for r in rules if r["type"] == "alerting"}
    assert states["RaygateEngineDown"] == "inactive"  # every model has a healthy replica
    assert states["RaygateBatchJobStale"] == "inactive"  # the job just succeeded
