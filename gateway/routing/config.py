"""Routing config: the `routing` section of the application args."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from schemas.strict import Strict


class TierRule(Strict):
    """Requests within both limits go to `model` (rules are tried in order)."""

    model: str = Field(description="Model id or alias this rule routes to.")
    max_prompt_tokens: int = Field(ge=1, description="Longest prompt (tokens) of the tier.")
    max_tokens: int = Field(ge=1, description="Largest requested max_tokens of the tier.")


class AutoPolicy(Strict):
    """`model: "auto"`: pick a tier by prompt length and requested max_tokens."""

    name: str = Field(default="auto", description="The model name clients send for it.")
    rules: list[TierRule] = Field(
        default_factory=list, description="First matching rule wins; order from small to big."
    )
    default: str = Field(description="Model id or alias when no rule matches.")


class BreakerConfig(Strict):
    """Per-model circuit breaker (each gateway replica keeps its own)."""

    failure_threshold: int = Field(
        default=5, ge=1, description="Consecutive failures that open the circuit."
    )
    open_s: float = Field(
        default=10.0,
        gt=0,
        description="How long an open circuit refuses calls before one "
        "probe request is let through (half-open).",
    )


class RoutingConfig(Strict):
    """How the gateway picks a model and keeps requests alive when one fails."""

    auto: AutoPolicy | None = Field(default=None, description="The `auto` model; absent: none.")
    fallbacks: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Model id -> the models (ids or aliases) to try next, in order, when it "
        "fails, times out or has an open circuit before the first token.",
    )
    continue_streams: bool = Field(
        default=True,
        description="When a model fails after its first token, go on with the same stream "
        "on the next model of its chain that serves the same weights (same `model` "
        "folder): it gets the prompt and the tokens generated so far as token ids, with "
        "max_tokens reduced by them, so the client sees one stream (with greedy decoding, "
        "the text the failed model would have written). False, or no such fallback: the "
        "stream ends with an error event.",
    )
    max_attempts: int = Field(
        default=3, ge=1, description="Most model calls per request, the first included."
    )
    backoff_s: float = Field(
        default=0.05,
        ge=0,
        description="Backoff before the 2nd call; doubles per call, full "
        "jitter (a random wait between 0 and the bound).",
    )
    backoff_max_s: float = Field(default=1.0, ge=0, description="Upper bound of one backoff.")
    timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="Whole request, streaming included: past it the "
        "request fails (504 before the first token, an error event after).",
    )
    first_token_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Per call: no first token by then counts as a failure "
        "and the next model in the chain is tried.",
    )
    first_token_timeouts: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict,
        description="Model id -> its own first_token_timeout_s, for models whose first "
        "token comes much sooner or later than the rest's.",
    )
    retry_after_s: float = Field(
        default=1.0,
        gt=0,
        description="Retry-After sent with 503s when every model is overloaded or failing.",
    )
    breaker: BreakerConfig = Field(default_factory=BreakerConfig, description="Circuit breakers.")

    @model_validator(mode="after")
    def _deadlines(self) -> RoutingConfig:
        longest = max([self.first_token_timeout_s, *self.first_token_timeouts.values()])
        if longest > self.timeout_s:
            raise ValueError("first token timeouts must not exceed timeout_s")
        return self

    def first_token_timeout(self, model_id: str) -> float:
        """How long a call to `model_id` may take to its first token."""
        return self.first_token_timeouts.get(model_id, self.first_token_timeout_s)
