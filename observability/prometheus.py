"""The Prometheus config that scrapes raygate: Ray's metrics (every node's metrics
export port: the gateway, the model deployments and vLLM's engine metrics), the batch
jobs' Pushgateway, and raygate's alerting rules.

`python -m observability.prometheus --out run/prometheus.yml` writes the local
profile's (Ray's own service-discovery file lists the nodes); the tests write one
with the ports of the cluster they started.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

RULES = Path(__file__).resolve().parents[1] / "helm" / "raygate" / "rules" / "alerts.yaml"
# Written by Ray's dashboard on the head node; lists every node's metrics export port.
RAY_SERVICE_DISCOVERY = "/tmp/ray/prom_metrics_service_discovery.json"


def prometheus_config(
    ray_targets: list[str] | None = None,
    pushgateway: str | None = None,
    interval_s: float = 15,
    rules: Path = RULES,
) -> dict[str, Any]:
    """Scrape `ray_targets` (host:port), or the nodes in Ray's discovery file if None."""
    ray_job: dict[str, Any] = {"job_name": "ray"}
    if ray_targets is None:
        ray_job["file_sd_configs"] = [{"files": [RAY_SERVICE_DISCOVERY]}]
    else:
        ray_job["static_configs"] = [{"targets": ray_targets}]
    jobs = [ray_job]
    if pushgateway is not None:
        # honor_labels: the job's own labels (pipeline, job_id) win over the scrape's
        jobs.append(
            {
                "job_name": "pushgateway",
                "honor_labels": True,
                "static_configs": [{"targets": [pushgateway]}],
            }
        )
    return {
        "global": {
            "scrape_interval": f"{interval_s:g}s",
            "evaluation_interval": f"{interval_s:g}s",
        },
        "rule_files": [str(rules)],
        "scrape_configs": jobs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--pushgateway", default="127.0.0.1:9091")
    parser.add_argument("--interval-s", type=float, default=15)
    args = parser.parse_args()
    config = prometheus_config(None, args.pushgateway, args.interval_s)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(yaml.safe_dump(config, sort_keys=False))


if __name__ == "__main__":
    main()
