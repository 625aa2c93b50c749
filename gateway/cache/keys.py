"""What a cached answer is keyed by (pure).

An entry belongs to a *partition*: tenant (and API key, for a tenant whose cache is
partitioned per key), model and a fingerprint of everything that
shapes the answer besides the last user message (the endpoint, system prompt, earlier
turns, sampling parameters). Lookups never leave their partition, so two tenants, two
models or two conversations never share an entry, whatever the similarity. Inside a
partition the exact tier matches the query text; the semantic tier compares embeddings
of it.

Nothing is normalised, not even to Unicode NFC: the model reads the token ids of the
text exactly as sent, and texts that differ in any byte can differ in tokens and so in
the answer ("x²" is not "x2", code indented differently is other code, "a  b" and
"a b" tokenize apart, and byte-level BPE tokenizers split a precomposed "é" from "e" +
combining accent). The exact tier therefore keys on the text as sent, and on the
messages as the chat template reads them; what a client varies in spelling only, the
semantic tier may still find.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from schemas.openai import ChatCompletionRequest, CompletionRequest


def _digest(value: Any) -> str:
    # Key order is kept: a client's objects (a JSON schema's properties, tool-call
    # arguments) reach the model in their order, and their order can change the answer.
    blob = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class CacheKey:
    partition: str  # digest of tenant, model and fingerprint
    exact: str  # digest of the partition and the query as sent
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
    key_name: str | None = None,
) -> CacheKey:
    """The keys of `req` in the partition of `tenant` and `model_id`, and of the API key
    `key_name` where one is given (a tenant whose keys must not share answers)."""
    shape: dict[str, Any] = {"tenant": tenant, "model": model_id, "sampling": _sampling(req)}
    if key_name is not None:
        shape["key"] = key_name
    query: str | None
    if isinstance(req, ChatCompletionRequest):
        messages = [m.for_template() for m in req.messages]  # what the template reads
        shape["endpoint"] = "chat"
        if messages[-1]["role"] == "user":
            query = messages[-1].pop("content")  # the rest of the message is context
        else:  # e.g. an assistant prefix to continue: only an exact repeat matches
            query = None
        shape["context"] = messages
    else:
        shape["endpoint"] = "completions"
        prompt = req.prompts()[0]  # several prompts are never cached
        if isinstance(prompt, list):
            query = None
            shape["context"] = prompt
        else:
            query = prompt
            shape["context"] = None
    partition = _digest(shape)
    exact = _digest([partition, query])
    semantic = query if query is not None and query.strip() else None
    return CacheKey(partition, exact, semantic, max_tokens)
