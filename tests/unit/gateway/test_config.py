from pathlib import Path
from typing import Any

import pytest
import yaml

from deployments.config import resolve_model_source
from gateway.build import build_app, deployment_name, load_config
from tests.paths import ROOT


def app_section(path: Path) -> dict[str, Any]:
    apps = yaml.safe_load(path.read_text())["applications"]
    assert len(apps) == 1
    app: dict[str, Any] = apps[0]
    return app


def local_args() -> dict[str, Any]:
    args: dict[str, Any] = app_section(ROOT / "serve_config.yaml")["args"]
    return args


def test_local_profile_config_is_valid() -> None:
    config = load_config(local_args())
    assert config.models[0].engine_kwargs["enforce_eager"] is True
    deployments = [m.deployment for m in config.models] + [e.deployment for e in config.embedders]
    assert all(d.max_ongoing_requests > 5 for d in deployments)


def test_gpu_profile_differs_from_local_only_in_values() -> None:
    local, gpu = app_section(ROOT / "serve_config.yaml"), app_section(ROOT / "configs/gpu.yaml")
    assert gpu["import_path"] == local["import_path"]
    config = load_config(gpu["args"])
    assert config.models[0].deployment.num_gpus >= 1
    assert config.embedders[0].device == "cuda"
    assert config.rerankers[0].kind == "cross-encoder"
    local_rerank = load_config(local["args"]).rerankers[0]
    assert local_rerank.kind == "bi-encoder" and "bi-encoder" in local_rerank.id


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: a.update(surprise=1), "surprise"),
        (lambda a: a["models"][0].update(engine_kwargz={}), "engine_kwargz"),
        (
            lambda a: a["models"][0]["deployment"].pop("max_ongoing_requests"),
            "max_ongoing_requests",
        ),
        (lambda a: a["models"][0]["engine_kwargs"].update(model="x"), "set by raygate"),
        (lambda a: a["embedders"][0].update(aliases=["default"]), "used twice"),
        (lambda a: a.update(models=[]), "models"),
        (lambda a: a["cache"].update(embedder="nope"), "cache.embedder 'nope'"),
        (lambda a: a["cache"].update(similarity_threshold=1.5), "similarity_threshold"),
        (lambda a: a["cache"].update(guards=["vibes"]), "guards"),
        (lambda a: a["cache"].update(verification={"judge": "model"}), "needs .*judge_model"),
        (
            lambda a: a["cache"].update(verification={"judge": "model", "judge_model": "x"}),
            "judge_model 'x' is not a model id",
        ),
        (lambda a: a["cache"].update(verification={"max_error_rate": 0}), "max_error_rate"),
        (
            lambda a: a["cache"].update(embedder=None, verification={"judge": "embedding"}),
            "judge 'embedding' needs cache.embedder",
        ),
        (lambda a: a["rerankers"][0].pop("kind"), "kind"),
        (lambda a: a["rerankers"][0].update(aliases=["default"]), "used twice"),
        (lambda a: a["routing"].update(first_token_timeouts={"fast": 5}), "first_token_timeouts"),
        (
            lambda a: a["routing"].update(first_token_timeouts={a["models"][0]["id"]: 9999}),
            "must not exceed timeout_s",
        ),
        (lambda a: a["routing"].update(fallbacks={"nope": []}), "fallbacks keys"),
    ],
)
def test_bad_config_fails_fast_with_a_readable_message(mutate: Any, message: str) -> None:
    args = local_args()
    mutate(args)
    with pytest.raises(ValueError, match=message):
        build_app(args)


def test_model_source_is_a_local_folder_or_a_hub_id(tmp_path: Path) -> None:
    (tmp_path / "models" / "m").mkdir(parents=True)
    assert resolve_model_source("models/m", tmp_path) == str(tmp_path / "models" / "m")
    assert resolve_model_source("org/name", tmp_path) == "org/name"
    with pytest.raises(ValueError, match="does not exist"):
        resolve_model_source("./models/missing", tmp_path)


def test_deployment_names_are_safe_for_serve() -> None:
    assert deployment_name("llm", "org/model:v1.5") == "llm-org_model_v1_5"


def test_autoscaling_replaces_a_fixed_replica_count() -> None:
    args = local_args()
    args["models"][0]["deployment"]["autoscaling"] = {"min_replicas": 1, "max_replicas": 4}
    options = load_config(args).models[0].deployment.deployment_options("llm-x")
    assert "num_replicas" not in options
    assert options["autoscaling_config"]["max_replicas"] == 4
    args["models"][0]["deployment"]["autoscaling"] = {"min_replicas": 5, "max_replicas": 4}
    with pytest.raises(ValueError, match="min_replicas must not exceed"):
        load_config(args)


def encoder_env(args: dict[str, Any], section: str) -> dict[str, str]:
    config = load_config(args)
    encoder = config.embedders[0] if section == "embedders" else config.rerankers[0]
    env: dict[str, str] = (
        encoder.deployment_options("x")["ray_actor_options"]
        .get("runtime_env", {})
        .get("env_vars", {})
    )
    return env


@pytest.mark.parametrize("section", ["embedders", "rerankers"])
def test_encoders_run_openmp_passive_unless_told_otherwise(section: str) -> None:
    args = local_args()
    env = encoder_env(args, section)
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    assert env["HF_HUB_OFFLINE"] == "1"  # the deployment's own env is kept
    args[section][0]["deployment"]["env"]["OMP_WAIT_POLICY"] = "ACTIVE"
    assert encoder_env(args, section)["OMP_WAIT_POLICY"] == "ACTIVE"
    args = local_args()
    args[section][0]["omp_wait_policy"] = None
    assert "OMP_WAIT_POLICY" not in encoder_env(args, section)
    args[section][0]["omp_wait_policy"] = "sometimes"
    with pytest.raises(ValueError, match="omp_wait_policy"):
        load_config(args)
