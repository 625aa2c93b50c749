"""raygate's Grafana dashboards, as code: `python -m observability.dashboards` writes them
as JSON into the Helm chart (helm/raygate/dashboards/), where Grafana's sidecar loads
them. Tests check that the files are what this module writes, that they pass the
dashboard schema, and that every query runs on a real Prometheus.

Metric names: Ray exports metrics with a `ray_` prefix (`ray_raygate_gateway_*`,
`ray_vllm_*`, `ray_serve_*`); batch jobs push `raygate_batch_*` via the Pushgateway.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "helm" / "raygate" / "dashboards"
GW = "ray_raygate_gateway_"
DEP = "ray_raygate_deployments_"
RATE = "[$__rate_interval]"
API_ROUTES = 'route!~"other|/health|/ready"'
SLO_AVAILABILITY = 0.995  # also in rules/alerts.yaml


@dataclass
class Panel:
    title: str
    exprs: dict[str, str]  # legend -> PromQL
    unit: str = "short"
    kind: str = "timeseries"  # timeseries or stat
    description: str = ""
    key: bool = False  # must show data after a short load (checked by the tests)


@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    panels: list[Panel]
    variables: list[tuple[str, str]] = field(default_factory=list)  # name, label_values()


def _rate(metric: str, selector: str = "", by: str = "") -> str:
    grouping = f"sum by ({by}) " if by else "sum "
    return f"{grouping}(rate({metric}{{{selector}}}{RATE}))"


def _gauge(agg: str, metric: str, selector: str, by: str) -> str:
    return f"{agg} by ({by}) ({metric}{{{selector}}})"


def _quantile(q: float, metric: str, by: str, selector: str = "") -> str:
    groups = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({groups}) (rate({metric}_bucket{{{selector}}}{RATE})))"


def _quantiles(
    metric: str, by: str, selector: str = "", qs: tuple[float, ...] = (0.5, 0.95)
) -> dict[str, str]:
    """Legend -> query for each quantile, e.g. "p95 {{model}}"."""
    legend = " ".join(f"{{{{{label.strip()}}}}}" for label in by.split(",") if label.strip())
    return {f"p{round(q * 100)} {legend}".strip(): _quantile(q, metric, by, selector) for q in qs}


def _bad_ratio(window: str) -> str:
    """Share of API requests that failed on the server side (5xx, or mid-stream)."""
    return (
        f'sum(rate({GW}errors_total{{{API_ROUTES}, status!~"4.."}}[{window}])) / '
        f"sum(rate({GW}requests_total{{{API_ROUTES}}}[{window}]))"
    )


TENANT = 'tenant=~"$tenant"'
MODEL = 'model=~"$model"'
MODEL_NAME = 'model_name=~"$model"'  # vLLM's label
PIPELINE = 'pipeline=~"$pipeline"'

OVERVIEW = Dashboard(
    "raygate-overview",
    "raygate / Overview and SLOs",
    "Traffic, errors, latency and the availability SLO of the gateway.",
    [
        Panel(
            "Requests per second by route",
            {"{{route}}": _rate(GW + "requests_total", f"{API_ROUTES}, {MODEL}", "route")},
            "reqps",
            key=True,
        ),
        Panel(
            "Errors per second by type",
            {"{{status}} {{type}}": _rate(GW + "errors_total", MODEL, "status, type")},
            "reqps",
            description="4xx are the callers' mistakes or quota limits; 5xx and status 200 "
            "(a stream that failed after it started) count against the SLO.",
            key=True,
        ),
        Panel(
            f"Availability over the range (SLO {SLO_AVAILABILITY:.1%})",
            {"availability": "1 - (" + _bad_ratio("$__range") + ")"},
            "percentunit",
            kind="stat",
        ),
        Panel(
            "Error budget burn rate (1 h)",
            {"burn rate": f"({_bad_ratio('1h')}) / {1 - SLO_AVAILABILITY:g}"},
            kind="stat",
            description="1 spends the budget exactly over 30 days; the page fires at 14.4.",
        ),
        Panel(
            "Request latency by route (p50, p95, p99)",
            _quantiles(
                GW + "request_duration_seconds",
                "route",
                f"{API_ROUTES}, {MODEL}",
                (0.5, 0.95, 0.99),
            ),
            "s",
            key=True,
        ),
        Panel(
            "Time to first token by model (p50, p95)",
            _quantiles(GW + "time_to_first_token_seconds", "model", MODEL),
            "s",
            key=True,
        ),
        Panel(
            "Time per output token by model (p50, p95)",
            _quantiles(GW + "time_per_output_token_seconds", "model", MODEL),
            "s",
            key=True,
        ),
        Panel(
            "Request stages before the first byte, p95 (Server-Timing's names)",
            _quantiles(GW + "stage_seconds", "stage", MODEL, qs=(0.95,)),
            "s",
        ),
        Panel(
            "Requests in flight by route",
            {"{{route}}": f"sum by (route) ({GW}requests_in_flight{{{API_ROUTES}}})"},
        ),
        Panel(
            "Tokens per second by model",
            {"{{model}} {{kind}}": _rate(GW + "tokens_total", MODEL, "model, kind")},
            key=True,
        ),
    ],
    [("model", f"label_values({GW}requests_total, model)")],
)

TENANTS = Dashboard(
    "raygate-tenants",
    "raygate / Tenants and quotas",
    "Per-tenant traffic, token usage and quota decisions.",
    [
        Panel(
            "Requests per second by tenant",
            {"{{tenant}}": _rate(GW + "requests_total", f"{API_ROUTES}, {TENANT}", "tenant")},
            "reqps",
            key=True,
        ),
        Panel(
            "Tokens per second by tenant",
            {"{{tenant}} {{kind}}": _rate(GW + "tokens_total", TENANT, "tenant, kind")},
            key=True,
        ),
        Panel(
            "Tokens used over the range by tenant",
            {"{{tenant}}": f"sum by (tenant) (increase({GW}tokens_total{{{TENANT}}}[$__range]))"},
            kind="stat",
        ),
        Panel(
            "Quota decisions by tenant",
            {
                "{{tenant}} {{decision}}": _rate(
                    GW + "quota_decisions_total", TENANT, "tenant, decision"
                )
            },
            "reqps",
            key=True,
        ),
        Panel(
            "Share of requests rate limited by tenant",
            {
                "{{tenant}}": _rate(
                    GW + "quota_decisions_total", f'{TENANT}, decision=~"limited_.*"', "tenant"
                )
                + " / "
                + _rate(GW + "quota_decisions_total", TENANT, "tenant")
            },
            "percentunit",
        ),
        Panel(
            "Quota decided without Redis",
            {
                "{{decision}}": _rate(
                    GW + "quota_decisions_total",
                    'decision=~".*_without_redis|.*_locally|settle_failed|ghost_settled"',
                    "decision",
                )
            },
            "reqps",
            description="Non-zero: the quota Redis is judged down (or failed a round trip) "
            "and each gateway replica applies its route class's mode alone: local (its "
            "share of every limit), open or closed.",
        ),
        Panel(
            "Errors per second by tenant",
            {"{{tenant}} {{type}}": _rate(GW + "errors_total", TENANT, "tenant, type")},
            "reqps",
        ),
    ],
    [("tenant", f"label_values({GW}requests_total, tenant)")],
)

ENGINE = Dashboard(
    "raygate-engine",
    "raygate / LLM engines and routing",
    "vLLM engine metrics per model deployment, the router, and the encoders' batches.",
    [
        Panel(
            "Running requests by model",
            {
                "{{model_name}}": _gauge(
                    "sum", "ray_vllm_num_requests_running", MODEL_NAME, "model_name"
                )
            },
            key=True,
        ),
        Panel(
            "Waiting requests by model",
            {
                "{{model_name}}": _gauge(
                    "sum", "ray_vllm_num_requests_waiting", MODEL_NAME, "model_name"
                )
            },
            key=True,
        ),
        Panel(
            "KV cache usage by replica",
            {
                "{{model_name}} {{ReplicaId}}": "max by (model_name, ReplicaId) "
                '(ray_vllm_kv_cache_usage_perc{model_name=~"$model"})'
            },
            "percentunit",
            key=True,
        ),
        Panel(
            "Prefix cache hit rate by model",
            {
                "{{model_name}}": _rate(
                    "ray_vllm_prefix_cache_hits_total", MODEL_NAME, "model_name"
                )
                + " / "
                + _rate("ray_vllm_prefix_cache_queries_total", MODEL_NAME, "model_name")
            },
            "percentunit",
        ),
        Panel(
            "Generated tokens per second by model",
            {"{{model_name}}": _rate("ray_vllm_generation_tokens_total", MODEL_NAME, "model_name")},
            key=True,
        ),
        Panel(
            "Engine queue time and time to first token (p95)",
            {
                "queue {{model_name}}": _quantile(
                    0.95,
                    "ray_vllm_request_queue_time_seconds",
                    "model_name",
                    MODEL_NAME,
                ),
                "first token {{model_name}}": _quantile(
                    0.95,
                    "ray_vllm_time_to_first_token_seconds",
                    "model_name",
                    MODEL_NAME,
                ),
            },
            "s",
            key=True,
        ),
        Panel(
            "Healthy replicas by deployment",
            {
                "{{deployment}}": "sum by (deployment) "
                '(ray_serve_deployment_replica_healthy{application="raygate"})'
            },
            key=True,
        ),
        Panel(
            "Router decisions by model",
            {
                "{{decision}} -> {{model}}": _rate(
                    GW + "router_decisions_total", MODEL, "decision, model"
                )
            },
            "reqps",
            key=True,
        ),
        Panel(
            "Models passed over before the first token",
            {"{{model}} {{reason}}": _rate(GW + "router_failures_total", MODEL, "model, reason")},
            "reqps",
        ),
        Panel(
            "Fallbacks",
            {
                "{{from_model}} -> {{to_model}}": _rate(
                    GW + "router_fallbacks_total", "", "from_model, to_model"
                )
            },
            "reqps",
        ),
        Panel(
            "Circuit breakers (0 closed, 1 half-open, 2 open)",
            {"{{model}}": f"max by (model) ({GW}router_breaker_state{{{MODEL}}})"},
        ),
        Panel(
            "Encoder batch size (texts or pairs, p50 and p95)",
            _quantiles(DEP + "batch_items", "kind, model"),
            key=True,
        ),
        Panel(
            "Requests merged per encoder batch (mean)",
            {
                "{{kind}} {{model}}": _rate(DEP + "batch_requests_sum", "", "kind, model")
                + " / "
                + _rate(DEP + "batch_requests_count", "", "kind, model")
            },
            key=True,
        ),
    ],
    [("model", "label_values(ray_vllm_num_requests_running, model_name)")],
)

CACHE = Dashboard(
    "raygate-cache",
    "raygate / Semantic cache",
    "Hits, misses, verifications (the model asked anyway and compared), similarity and "
    "the guards that turn near matches down.",
    [
        Panel(
            "Lookups by result",
            {"{{result}}": _rate(GW + "cache_lookups_total", TENANT, "result")},
            "reqps",
            key=True,
        ),
        Panel(
            "Hit ratio (exact and semantic over hits, misses and verifications)",
            {
                "hit ratio": "("
                + _rate(GW + "cache_lookups_total", f'{TENANT}, result=~"hit_.*"')
                + " or vector(0)) / "
                + _rate(
                    GW + "cache_lookups_total",
                    f'{TENANT}, result=~"hit_.*|miss|verify|semantic_timeout"',
                )
            },
            "percentunit",
            key=True,
        ),
        Panel(
            "Similarity of the nearest candidate (p50, p90)",
            _quantiles(GW + "cache_similarity", "", qs=(0.5, 0.9)),
        ),
        Panel(
            "Verifications by outcome (agree, disagree with the cached answer; failed)",
            {"{{outcome}}": _rate(GW + "cache_verifications_total", TENANT, "outcome")},
            "reqps",
        ),
        Panel(
            "Candidates turned down by a guard (pre-filter)",
            {"{{guard}}": _rate(GW + "cache_guard_rejects_total", TENANT, "guard")},
            "reqps",
        ),
        Panel(
            "Answers stored",
            {"{{result}}": _rate(GW + "cache_stores_total", TENANT, "result")},
            "reqps",
            key=True,
        ),
        Panel(
            "Semantic index entries by gateway replica",
            {"{{replica}}": f"max by (replica) ({GW}cache_index_entries)"},
        ),
    ],
    [("tenant", f"label_values({GW}cache_lookups_total, tenant)")],
)

BATCH = Dashboard(
    "raygate-batch",
    "raygate / Batch jobs",
    "Nightly classification jobs, pushed through the Pushgateway.",
    [
        Panel(
            "Rows of the latest run by status",
            {
                "{{pipeline}} {{status}}": _gauge(
                    "sum", "raygate_batch_rows", PIPELINE, "pipeline, status"
                )
            },
            key=True,
        ),
        Panel(
            "Rows per second",
            {"{{pipeline}}": _gauge("max", "raygate_batch_rows_per_second", PIPELINE, "pipeline")},
            key=True,
        ),
        Panel(
            "Run time",
            {"{{pipeline}}": _gauge("max", "raygate_batch_duration_seconds", PIPELINE, "pipeline")},
            "s",
            key=True,
        ),
        Panel(
            "ETA of the running job",
            {
                "{{pipeline}}": "sum by (pipeline) "
                f'(raygate_batch_rows{{status="pending", {PIPELINE}}}) / max by (pipeline) '
                f"(raygate_batch_rows_per_second{{{PIPELINE}}} > 0)"
            },
            "s",
        ),
        Panel(
            "Hours since the last successful run",
            {
                "{{pipeline}}": "(time() - max by (pipeline) "
                f"(raygate_batch_last_success_timestamp_seconds{{{PIPELINE}}})) / 3600"
            },
            "h",
            kind="stat",
            key=True,
        ),
    ],
    [("pipeline", "label_values(raygate_batch_rows, pipeline)")],
)

DASHBOARDS = [OVERVIEW, TENANTS, ENGINE, CACHE, BATCH]


def _panel_json(panel: Panel, panel_id: int) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 8 if panel.kind == "stat" else 12, "x": 0, "y": 0},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "expr": expr,
                "legendFormat": legend,
            }
            for i, (legend, expr) in enumerate(panel.exprs.items())
        ],
    }


def _layout(panels: list[dict[str, Any]]) -> None:
    """Rows left to right, top to bottom on Grafana's 24-column grid."""
    x = y = row_height = 0
    for panel in panels:
        grid = panel["gridPos"]
        if x + grid["w"] > 24:
            x, y = 0, y + row_height
        grid["x"], grid["y"] = x, y
        x += grid["w"]
        row_height = grid["h"]


def _variable(name: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": name,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": name},
        "definition": query,
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "current": {"selected": True, "text": "All", "value": "$__all"},
        "refresh": 2,
        "sort": 1,
    }


def render(dashboard: Dashboard) -> dict[str, Any]:
    panels = [_panel_json(p, i) for i, p in enumerate(dashboard.panels, start=1)]
    _layout(panels)
    datasource = {
        "name": "datasource",
        "label": "Prometheus",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
    }
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": ["raygate"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "timezone": "browser",
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": [datasource, *(_variable(n, q) for n, q in dashboard.variables)]},
        "panels": panels,
    }


def write(out: Path = OUT) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for dashboard in DASHBOARDS:
        path = out / f"{dashboard.uid.removeprefix('raygate-')}.json"
        path.write_text(json.dumps(render(dashboard), indent=2) + "\n")
        paths.append(path)
    return paths


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Write the Grafana dashboards as JSON.")
    parser.add_argument("--out", type=Path, default=OUT)
    for written in write(parser.parse_args().out):
        print(written)
