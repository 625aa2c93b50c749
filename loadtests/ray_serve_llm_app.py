"""The same model on Ray Serve LLM's own OpenAI app (`ray.serve.llm`), for comparison only.

Settings from the local profile (serve_config.yaml) carried over to `LLMConfig`, with the
CPU placement that Ray Serve LLM needs on a machine without GPUs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.serve import Application


def build_app(args: dict[str, Any]) -> Application:
    from ray.serve.llm import LLMConfig, build_openai_app

    model = args["model"]
    llm_config = LLMConfig.model_validate(
        {
            "model_loading_config": {
                "model_id": model["id"],
                "model_source": str(Path(model["model"]).resolve()),
            },
            "accelerator_config": {"kind": "cpu"},
            "placement_group_config": {"bundles": [{"CPU": 1}]},
            "engine_kwargs": dict(model["engine_kwargs"]),
            "deployment_config": {
                "num_replicas": 1,
                "max_ongoing_requests": model["deployment"]["max_ongoing_requests"],
                "ray_actor_options": {"num_cpus": model["deployment"]["num_cpus"]},
            },
            "runtime_env": {"env_vars": dict(model["deployment"]["env"])},
        }
    )
    ingress = {"max_ongoing_requests": 512, "ray_actor_options": {"num_cpus": 0.25}}
    return build_openai_app({"llm_configs": [llm_config], "ingress_deployment_config": ingress})
