"""A classification job's config file (YAML), validated strictly."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from schemas.strict import Strict


class EmbeddingHead(Strict):
    """Embed each text with a sentence-transformers model, then a trained linear head."""

    kind: Literal["embedding-head"] = "embedding-head"
    embedder: str = Field(description="sentence-transformers folder (the cluster's embedder).")
    head: str = Field(description="Trained head artifact (.npz) from `train-head`.")
    torch_threads: int = Field(default=1, ge=1, description="torch threads per actor.")


class ZeroShotLLM(Strict):
    """Ask the LLM to pick one label; its answer is constrained to the label set."""

    kind: Literal["zero-shot-llm"] = "zero-shot-llm"
    model: str = Field(description="Hugging Face folder of the LLM (the cluster's model).")
    instructions: str = Field(
        default="Classify the text into one of the categories.",
        description="What the classification is about, said to the model.",
    )
    engine_kwargs: dict[str, object] = Field(
        default_factory=dict, description="vLLM engine arguments (max_model_len, dtype, ...)."
    )


Classifier = Annotated[EmbeddingHead | ZeroShotLLM, Field(discriminator="kind")]


class Resources(Strict):
    """What the job takes from the machine, so it can run beside the online cluster."""

    actors: int = Field(default=1, ge=1, description="Classifier actors (model copies).")
    cpus_per_actor: float = Field(
        default=1.0, gt=0, description="CPUs Ray reserves per actor (fractions allowed)."
    )
    batch_size: int = Field(default=64, ge=1, description="Rows per model call.")
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Environment of the classifier actors (e.g. VLLM_CPU_KVCACHE_SPACE: the "
        "CPU build of vLLM otherwise reserves 92% of the machine's memory).",
    )
    chunk_rows: int = Field(
        default=1000,
        ge=1,
        description="Rows per output part: the unit of checkpointing (a killed job redoes "
        "at most one chunk per actor).",
    )


class JobConfig(Strict):
    labels: list[str] = Field(min_length=2, description="The label set, in a fixed order.")
    classifier: Classifier
    id_field: str = Field(default="id", description="Input column holding the row id.")
    text_field: str = Field(default="text", description="Input column holding the text.")
    resources: Resources = Field(default_factory=Resources)

    @model_validator(mode="after")
    def _distinct_labels(self) -> JobConfig:
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be distinct")
        return self


def load_job_config(path: Path) -> JobConfig:
    if not path.is_file():
        raise ValueError(f"job config '{path}' does not exist")
    try:
        return JobConfig.model_validate(yaml.safe_load(path.read_text()))
    except ValidationError as exc:
        raise ValueError(f"invalid job config '{path}':\n{exc}") from None
