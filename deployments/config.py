"""Configuration of the model deployments (strict: unknown keys are errors)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from schemas.strict import Strict

_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$"


class Autoscaling(Strict):
    """Ray Serve's replica autoscaling for one deployment (its `autoscaling_config`)."""

    min_replicas: int = Field(default=1, ge=0, description="Fewest replicas (0: scale to zero).")
    max_replicas: int = Field(ge=1, description="Most replicas.")
    target_ongoing_requests: float = Field(
        default=2.0, gt=0, description="Ongoing requests per replica that Serve aims for."
    )
    upscale_delay_s: float = Field(default=30.0, ge=0, description="Wait before scaling up.")
    downscale_delay_s: float = Field(default=600.0, ge=0, description="Wait before scaling down.")

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("autoscaling.min_replicas must not exceed max_replicas")
        return self


class ServeOptions(Strict):
    """How Ray Serve runs one deployment."""

    num_replicas: int = Field(
        default=1, ge=1, description="Replicas of this deployment (without autoscaling)."
    )
    autoscaling: Autoscaling | None = Field(
        default=None, description="Scale replicas with load instead of a fixed num_replicas."
    )
    max_ongoing_requests: int = Field(
        ge=1,
        description="Requests one replica takes at once; set deliberately (Serve's default, "
        "5, starves a batching engine).",
    )
    max_queued_requests: int = Field(
        default=-1,
        ge=-1,
        description="Requests a caller may queue for this deployment before Serve rejects "
        "them (-1: unbounded).",
    )
    num_cpus: float = Field(default=0.5, ge=0, description="CPUs Ray reserves per replica.")
    num_gpus: float = Field(default=0, ge=0, description="GPUs Ray reserves per replica.")
    env: dict[str, str] = Field(
        default_factory=dict, description="Environment variables of the replica's process."
    )

    def ray_actor_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"num_cpus": self.num_cpus}
        if self.num_gpus:
            options["num_gpus"] = self.num_gpus
        if self.env:
            options["runtime_env"] = {"env_vars": dict(self.env)}
        return options

    def deployment_options(self, name: str) -> dict[str, Any]:
        options: dict[str, Any] = {
            "name": name,
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "ray_actor_options": self.ray_actor_options(),
        }
        if self.autoscaling is None:
            options["num_replicas"] = self.num_replicas
        else:
            options["autoscaling_config"] = self.autoscaling.model_dump()
        return options


def resolve_model_source(source: str, base: Path) -> str:
    """A local folder (made absolute against `base`) or, if no such folder, a hub id."""
    path = Path(source).expanduser()
    candidate = path if path.is_absolute() else base / path
    if candidate.is_dir():
        return str(candidate.resolve())
    if source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise ValueError(f"model folder '{candidate}' does not exist (run scripts/setup.sh)")
    return source


class PrefixAffinity(Strict):
    """deployments.prefix_affinity.PrefixAffinityRouter's settings."""

    block_tokens: int = Field(default=16, ge=1, description="Tokens per hashed prefix block.")
    max_prefix_tokens: int = Field(
        default=8192, ge=1, description="Longest prefix considered (hashing cost bound)."
    )
    max_imbalance: int = Field(
        default=4,
        ge=0,
        description="Queue-length lead over the least loaded replica beyond which the "
        "replica holding the prefix is passed over.",
    )
    capacity_blocks: int = Field(
        default=200_000, ge=1, description="Prefix blocks remembered per gateway replica."
    )

    def request_router_config(self) -> dict[str, Any]:
        """Serve's `request_router_config` deployment option."""
        return {
            "request_router_class": "deployments.prefix_affinity.PrefixAffinityRouter",
            "request_router_kwargs": self.model_dump(),
        }


class SyntheticEngine(Strict):
    """A stand-in engine that streams tokens on a schedule without computing them
    (deployments.synthetic): for measuring what the serving path relays, never for
    real traffic."""

    first_token_s: float = Field(default=0.05, ge=0, description="Delay before the first chunk.")
    tokens_per_s: float = Field(
        default=50, gt=0, description="Tokens per second per stream, after the first token."
    )
    stream_interval: int = Field(
        default=1, ge=1, description="Tokens per chunk after the first (vLLM's stream_interval)."
    )
    output_tokens: int = Field(
        default=256, ge=1, description="Tokens of an answer whose request sets no max_tokens."
    )
    max_model_len: int = Field(default=2048, ge=1, description="Context length it reports.")


class LLMModelConfig(Strict):
    """One vLLM model deployment (or, with `synthetic`, a stand-in that computes nothing)."""

    id: str = Field(pattern=_ID_PATTERN, description="Model name clients send as `model`.")
    model: str = Field(
        description="Local Hugging Face folder (relative to the working directory) or a "
        "Hugging Face model id (GPU profile)."
    )
    aliases: list[str] = Field(default_factory=list, description="Other names for this model.")
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments of vLLM's AsyncEngineArgs (max_model_len, dtype, "
        "enforce_eager, tensor_parallel_size, gpu_memory_utilization, ...).",
    )
    chat_template: str | None = Field(
        default=None,
        description="Jinja chat template file (relative to the working directory) used "
        "instead of the tokenizer's own, on the gateway and the engine alike; needed "
        "where the model's own template does not render tools.",
    )
    tool_parser: str | None = Field(
        default=None,
        description="vLLM tool-call parser that reads tool calls out of this model's "
        "answers (vLLM's --tool-call-parser names: hermes, llama3_json, mistral, ...); "
        "null: the model is not offered tools (requests with tools pass it over).",
    )
    tool_strict_level: Literal["auto", "function", "parameter"] = Field(
        default="parameter",
        description="vLLM's --tool-strict-level: how tightly decoding is held to the tools "
        "(parameter: every call's arguments match its function's schema, as if each tool "
        "were `strict`; function: only the call's shape; auto: arguments only of tools "
        "marked `strict`).",
    )
    prefix_affinity: PrefixAffinity | None = Field(
        default_factory=lambda: PrefixAffinity(),
        description="Send prompts that share a prefix to the replica that has it in its KV "
        "cache (while load allows); null: Serve's default (least loaded of two).",
    )
    synthetic: SyntheticEngine | None = Field(
        default=None,
        description="Serve this model with a synthetic engine that streams tokens at a set "
        "rate without computing them (relay capacity measurement only); the tokenizer and "
        "chat template of `model` still count prompts.",
    )
    deployment: ServeOptions = Field(description="How Ray Serve runs this model.")

    @model_validator(mode="after")
    def _synthetic_has_no_engine(self) -> LLMModelConfig:
        if self.synthetic is not None and self.engine_kwargs:
            raise ValueError(
                f"model '{self.id}': engine_kwargs ({', '.join(sorted(self.engine_kwargs))}) "
                "have no effect on a synthetic engine; remove them or `synthetic`"
            )
        return self

    @field_validator("engine_kwargs")
    @classmethod
    def _no_identity_overrides(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in ("model", "served_model_name", "tokenizer"):
            if key in v:
                raise ValueError(f"engine_kwargs.{key} is set by raygate from `id`/`model`")
        return v


class EncoderConfig(Strict):
    """A sentence-transformers model deployment (embedder or reranker)."""

    id: str = Field(pattern=_ID_PATTERN, description="Model name clients send as `model`.")
    model: str = Field(description="Local sentence-transformers folder or hub id.")
    aliases: list[str] = Field(default_factory=list, description="Other names for this model.")
    device: str = Field(default="cpu", description="torch device: cpu, cuda, cuda:1, ...")
    torch_threads: int | None = Field(
        default=None,
        ge=1,
        description="CPU threads of torch in the replica (Ray's default is num_cpus, at "
        "least 1); unset leaves it.",
    )
    omp_wait_policy: Literal["PASSIVE", "ACTIVE"] | None = Field(
        default="PASSIVE",
        description="OpenMP's wait policy in the replica (OMP_WAIT_POLICY). PASSIVE: "
        "torch's threads sleep between parallel regions instead of spinning, which on "
        "CPUs shared with other processes keeps a thread from burning its core while "
        "its partner is descheduled; null leaves OpenMP's default (spin, then sleep). "
        "An `OMP_WAIT_POLICY` in `deployment.env` wins.",
    )
    encode_batch_size: int = Field(
        default=64, ge=1, description="Most texts per forward pass inside one dynamic batch."
    )
    max_batch_tokens: int = Field(
        default=16384,
        ge=1,
        description="Most padded tokens (texts x longest) per forward pass: long inputs "
        "are split into more passes instead of one that blows memory or latency.",
    )
    truncate: bool = Field(
        default=True,
        description="Inputs over the model's token limit are truncated (true) or refused "
        "with a 400 (false).",
    )
    max_batch_size: int = Field(
        default=32, ge=1, description="Requests merged into one dynamic batch."
    )
    batch_wait_timeout_s: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="How long a batch that is not full waits for more once the model is "
        "free. 0: it starts at once with whatever queued while the previous one ran (under "
        "load that is already a full batch; idle, a lone request does not wait).",
    )
    deployment: ServeOptions = Field(description="How Ray Serve runs this model.")

    def deployment_options(self, name: str) -> dict[str, Any]:
        """Serve's options for this encoder: `deployment`'s, with the OpenMP wait policy
        added to the replica's environment (an explicit `deployment.env` entry wins)."""
        env = dict(self.deployment.env)
        if self.omp_wait_policy is not None:
            env.setdefault("OMP_WAIT_POLICY", self.omp_wait_policy)
        return self.deployment.model_copy(update={"env": env}).deployment_options(name)


class EmbedderConfig(EncoderConfig):
    """One sentence-transformers embedding deployment."""

    normalize: bool = Field(default=True, description="L2-normalise the vectors.")
    single_text_calls_in_flight: int | None = Field(
        default=4,
        ge=1,
        description="Requests of one text (search queries, the cache's questions) share "
        "calls: one gateway replica keeps at most this many in flight to this embedder, "
        "and the texts that arrive meanwhile go together in the next one (up to "
        "`encode_batch_size`), one Ray hop for many. null: every request its own call.",
    )


class RerankerConfig(EncoderConfig):
    """One reranker deployment: a query against documents, scored per pair."""

    kind: Literal["cross-encoder", "bi-encoder"] = Field(
        description="cross-encoder: a sentence-transformers CrossEncoder reads query and "
        "document together (the production choice: ms-marco MiniLM, BGE reranker). "
        "bi-encoder: the cosine similarity of separately embedded query and document (a "
        "weaker relevance score, for where no cross-encoder is installed)."
    )
    max_documents: int = Field(
        default=1000, ge=1, description="Most documents in one rerank request."
    )


class FaultConfig(Strict):
    """A deployment that stands in front of a model and misbehaves on purpose (fault
    injection, for chaos drills and the router's tests): it fails or stalls before the
    first token, or fails after some chunks, and otherwise passes requests through."""

    id: str = Field(pattern=_ID_PATTERN, description="Model name clients send as `model`.")
    wraps: str = Field(description="Id of the LLM model it passes requests to.")
    before_first_token: Literal["pass", "error", "stall"] = Field(
        default="error", description="What a faulty request meets before its first token."
    )
    stall_s: float = Field(default=3600.0, gt=0, description="How long a stall lasts.")
    error_after_chunks: int | None = Field(
        default=None, ge=1, description="Fail after passing this many chunks through."
    )
    first_n: int | None = Field(
        default=None,
        ge=0,
        description="Only the first n requests of each replica are faulty (then it "
        "recovers); unset: all of them.",
    )
    deployment: ServeOptions = Field(
        default=ServeOptions(max_ongoing_requests=64, num_cpus=0),
        description="How Ray Serve runs the wrapper.",
    )
