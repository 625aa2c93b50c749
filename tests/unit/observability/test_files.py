"""The dashboards and alert rules as files: generated from code, valid, complete."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import jsonschema
import pytest
import yaml

from observability.dashboards import DASHBOARDS, OUT, render
from observability.prometheus import RAY_SERVICE_DISCOVERY, RULES, prometheus_config
from tests.paths import ROOT

SCHEMA = json.loads((ROOT / "observability" / "dashboard.schema.json").read_text())


def shipped() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(OUT.glob("*.json"))}


def test_the_shipped_dashboards_are_what_the_code_renders() -> None:
    rendered = {f"{d.uid.removeprefix('raygate-')}.json": render(d) for d in DASHBOARDS}
    assert shipped() == rendered, "run `python -m observability.dashboards`"
    assert {"overview.json", "tenants.json", "engine.json", "cache.json", "batch.json"} <= set(
        rendered
    )


@pytest.mark.parametrize("name", sorted(shipped()))
def test_dashboard_passes_the_schema_and_its_panels_do_not_overlap(name: str) -> None:
    dashboard = shipped()[name]
    jsonschema.validate(dashboard, SCHEMA)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for used in ("tenant", "model", "pipeline"):
                if f"${used}" in target["expr"]:
                    assert used in variables, f"{panel['title']} uses ${used}, not defined"


def test_the_schema_rejects_a_broken_dashboard() -> None:
    broken = json.loads(json.dumps(render(DASHBOARDS[0])))
    broken["panels"][0]["gridPos"]["w"] = 30
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)
    del broken["panels"][0]["gridPos"]["w"]
    broken["panels"][1]["targets"][0].pop("expr")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)


def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is installed by scripts/setup.sh (Debian's prometheus)"
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_severity_a_summary_and_a_runbook() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = [r for g in groups for r in g["rules"] if "alert" in r]
    assert {a["alert"] for a in alerts} >= {
        "RaygateErrorBudgetBurnFast",
        "RaygateLatencyBudgetBurnFast",
        "RaygateQuotaRedisDegraded",
        "RaygateCacheDegraded",
        "RaygateEngineDown",
    }
    for alert in alerts:
        assert alert["labels"]["severity"] in {"page", "ticket"}
        assert alert["annotations"]["summary"] and len(alert["annotations"]["runbook"]) > 50


def test_local_prometheus_config_finds_ray_nodes_through_rays_discovery_file() -> None:
    config = prometheus_config(None, "127.0.0.1:9091")
    ray, push = config["scrape_configs"]
    assert ray["file_sd_configs"] == [{"files": [RAY_SERVICE_DISCOVERY]}]
    assert push["honor_labels"] is True and config["rule_files"] == [str(RULES)]
