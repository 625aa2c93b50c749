"""The engine side of a request's options: vLLM SamplingParams, and log probabilities
back in the streaming contract's shape."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from schemas.errors import InvalidRequest
from schemas.generation import INT64_MAX, INT64_MIN, SamplingOptions, TokenLogprob

# OpenAI's stand-in for a log probability too small to report (JSON has no -inf).
MIN_LOGPROB = -9999.0


def structured_outputs(options: SamplingOptions) -> Any:
    """vLLM StructuredOutputsParams for a response format, or None."""
    from vllm.sampling_params import StructuredOutputsParams

    if options.json_schema is not None:
        return StructuredOutputsParams(json=options.json_schema)
    if options.json_object:
        return StructuredOutputsParams(json_object=True)
    return None


def sampling_params(
    options: SamplingOptions,
    max_tokens: int,
    structured: Any = None,
    skip_special_tokens: bool = True,
) -> Any:
    """vLLM SamplingParams for one request, streaming deltas; OpenAI's defaults.

    `structured` (StructuredOutputsParams) overrides the options' response format: forced
    tool calls bring their own. Raises InvalidRequest (naming `param` where vLLM does) for
    options the engine would refuse: vLLM's own checks run here, in the constructor, and
    the seed is bounded to what the engine's transport can carry (past it vLLM fails
    inside the engine, where the failure looks like the model's)."""
    from vllm.exceptions import VLLMValidationError
    from vllm.sampling_params import RequestOutputKind, SamplingParams

    if options.seed is not None and not INT64_MIN <= options.seed <= INT64_MAX:
        raise InvalidRequest("seed must be a 64-bit signed integer", param="seed")
    try:
        return SamplingParams(
            n=options.n,
            max_tokens=max_tokens,
            temperature=1.0 if options.temperature is None else options.temperature,
            top_p=1.0 if options.top_p is None else options.top_p,
            top_k=0 if options.top_k is None else options.top_k,
            min_p=0.0 if options.min_p is None else options.min_p,
            seed=options.seed,
            stop=list(options.stop) or None,
            presence_penalty=options.presence_penalty or 0.0,
            frequency_penalty=options.frequency_penalty or 0.0,
            repetition_penalty=options.repetition_penalty or 1.0,
            ignore_eos=options.ignore_eos,
            min_tokens=options.min_tokens,
            logprobs=options.logprobs,
            logit_bias=dict(options.logit_bias) or None,
            structured_outputs=structured or structured_outputs(options),
            skip_special_tokens=skip_special_tokens,
            output_kind=RequestOutputKind.DELTA,
        )
    except VLLMValidationError as exc:
        raise InvalidRequest(str(exc), param=exc.parameter) from None
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidRequest(f"Invalid sampling parameters: {exc}") from None


def token_logprobs(
    token_ids: Sequence[int], positions: Sequence[Mapping[int, Any] | None] | None, top: int
) -> tuple[TokenLogprob, ...]:
    """The contract's log probabilities of newly generated tokens, from vLLM's per-token
    {token id: Logprob} (the sampled token and the `top` most likely, by rank)."""
    if not positions:
        return ()
    out = []
    for token_id, candidates in zip(token_ids, positions, strict=False):
        if candidates is None:
            continue
        chosen = candidates[token_id]
        ranked = sorted(
            (c for c in candidates.values() if c.rank is not None and c.rank <= top),
            key=lambda c: c.rank,
        )
        out.append(
            TokenLogprob(
                chosen.decoded_token or "",
                max(chosen.logprob, MIN_LOGPROB),
                tuple((c.decoded_token or "", max(c.logprob, MIN_LOGPROB)) for c in ranked),
            )
        )
    return tuple(out)
