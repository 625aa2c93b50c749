"""`raygate-batch` (or `python -m batch`): classify a file, or train an embedding head."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from batch.config import EmbeddingHead, load_job_config


def classify(args: argparse.Namespace) -> int:
    from batch.job import run_job
    from batch.metrics import JobMetrics

    config_path = Path(args.config)
    config = load_job_config(config_path)
    metrics = None
    if args.pushgateway:
        metrics = JobMetrics(args.pushgateway, args.pipeline or config_path.stem, args.job_id)
    run_job(config, args.input, Path(args.output), args.job_id, args.address, metrics=metrics)
    return 0


def train(args: argparse.Namespace) -> int:
    from batch.io import read_input
    from batch.train import train_from_table

    config = load_job_config(Path(args.config))
    if not isinstance(config.classifier, EmbeddingHead):
        raise ValueError("train-head needs a job config with classifier kind embedding-head")
    table = read_input(args.data)
    head, accuracy = train_from_table(config, table, args.label_field)
    path = head.save(Path(args.out), args.name)
    print(json.dumps({"artifact": str(path), "version": head.version, "train_accuracy": accuracy}))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="raygate-batch", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("classify", help="classify an input file into the job's labels")
    c.add_argument("--config", required=True, help="job config (YAML)")
    c.add_argument("--input", required=True, help="JSONL or Parquet: a path or URI")
    c.add_argument("--output", required=True, help="folder; results go to <output>/<job-id>/")
    c.add_argument("--job-id", required=True, help="the same id resumes a killed run")
    c.add_argument("--address", default=None, help="Ray cluster address (default: local)")
    c.add_argument(
        "--pushgateway",
        default=os.environ.get("RAYGATE_PUSHGATEWAY"),
        help="Prometheus Pushgateway (host:port or URL) for the job's metrics "
        "(default: $RAYGATE_PUSHGATEWAY; none: no metrics)",
    )
    c.add_argument(
        "--pipeline", default=None, help="metrics label of this job (default: config file name)"
    )
    c.set_defaults(run=classify)
    t = sub.add_parser("train-head", help="train the embedding classifier's head")
    t.add_argument("--config", required=True, help="job config (YAML), kind embedding-head")
    t.add_argument("--data", required=True, help="labelled JSONL or Parquet")
    t.add_argument("--label-field", default="label", help="column holding the label")
    t.add_argument("--out", required=True, help="folder for the artifact")
    t.add_argument("--name", default="head", help="artifact name (before the version)")
    t.set_defaults(run=train)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except ValueError as exc:
        print(f"raygate-batch: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    raise SystemExit(main())
