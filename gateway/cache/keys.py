"""What a cached answer is keyed by (pure).

An entry belongs to a *partition*: tenant, model and a fingerprint of everything that
shapes the answer besides the last user message (the endpoint, system prompt, earlier
turns, sampling parameters). Lookups never leave their partition, so two tenants, two
models or two conversations never share an entry, whatever the similarity. Inside a
partition the exact tier matches the normalised query text; the semantic tier compares
embeddings of it.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from schemas.openai import ChatCompletionRequest, CompletionRequest

_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Unicode NFKC and collapsed whitespace; case is kept ("US" is not "us")."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip()


def _digest(value: Any) -> str:
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class CacheKey:
    partition: str  # digest of tenant, model and fingerprint
    exact: str  # digest of the partition and the normalised query
    query: str | None  # the text the semantic tier embeds; None: exact tier only
    max_tokens: int  # a stored answer longer than this would have been cut short


def deterministic(req: ChatCompletionRequest | CompletionRequest) -> bool:
    """Greedy decoding or a fixed seed: the same request gives the same answer."""
    return req.temperature == 0 or req.top_k == 1 or req.seed is not None


def _sampling(req: ChatCompletionRequest | CompletionRequest) -> dict[str, Any]:
    # Everything that changes the tokens produced. max_tokens is left out: only answers
    # that stopped by themselves are stored, and a hit checks it against their length.
    fields = req.model_dump(
        include={
            "temperature", "top_p", "top_k", "min_p", "seed", "presence_penalty",
            "frequency_penalty", "repetition_penalty", "ignore_eos", "min_tokens",
        }
    )  # fmt: skip
    fields["stop"] = sorted(req.stop_list())
    fields["logit_bias"] = sorted(req.token_bias().items())
    fields["n"], fields["logprobs"] = req.n, req.top_logprob_count()
    shaping = {"response_format", "tools", "tool_choice", "parallel_tool_calls"}
    fields |= req.model_dump(mode="json", include=shaping, by_alias=True, exclude_none=True)
    return fields


def cacheable(req: ChatCompletionRequest | CompletionRequest) -> bool:
    """One answer without log probabilities: what a stored entry can replay exactly."""
    return req.n == 1 and req.top_logprob_count() is None


def cache_key(
    tenant: str,
    model_id: str,
    req: ChatCompletionRequest | CompletionRequest,
    max_tokens: int,
) -> CacheKey:
    shape: dict[str, Any] = {"tenant": tenant, "model": model_id, "sampling": _sampling(req)}
    query: str | None
    if isinstance(req, ChatCompletionRequest):
        turns = [(m.role, normalise(m.text())) for m in req.messages]
        shape["endpoint"] = "chat"
        if turns[-1][0] == "user":
            query = turns[-1][1]
            shape["context"] = turns[:-1]
        else:  # e.g. an assistant prefix to continue: only an exact repeat matches
            query = None
            shape["context"] = turns
    else:
        shape["endpoint"] = "completions"
        prompt = req.prompts()[0]  # several prompts are never cached
        if isinstance(prompt, list):
            query = None
            shape["context"] = prompt
        else:
            query = normalise(prompt)
            shape["context"] = None
    partition = _digest(shape)
    exact = _digest([partition, query])
    return CacheKey(partition, exact, query or None, max_tokens)
