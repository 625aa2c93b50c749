"""Judges of a verification: does the model's fresh answer agree with the cached one?

The error bound of verified hits (verified.py) is a bound on the judge's notion of "the
same answer", so a judge errs towards "no": tool calls must match exactly whatever the
judge, and `exact` (the default) counts any rewording as a disagreement, which can only
overstate the error rate. `embedding` and `model` accept rewordings (more hits) and are
as right as their embedder or model: `model` asks one of the cluster's LLMs, constrained
to "yes" or "no" (vLLM's structured outputs), and is meant for profiles whose model can
judge (the GPU profile's 8B, not the local 135M).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import numpy as np

from gateway.cache.redis_store import CachedAnswer
from gateway.targets import ModelBackend
from schemas.generation import GenerationRequest, SamplingOptions

# (question, cached answer, fresh answer) -> they agree
Judge = Callable[[str, CachedAnswer, CachedAnswer], Awaitable[bool]]
Embed = Callable[[str], Awaitable[np.ndarray]]

_INSTRUCTIONS = (
    "You check a cache. Two answers to the same question are given. Reply yes only if a "
    "person asking the question would be served equally well by either: the same verdict, "
    "facts, numbers, steps and recommendations. Reply no if they differ in any of these."
)


def _same_calls(a: CachedAnswer, b: CachedAnswer) -> bool:
    return [(c.name, c.arguments) for c in a.tool_calls] == [
        (c.name, c.arguments) for c in b.tool_calls
    ]


def exact_judge() -> Judge:
    """The same text (surrounding whitespace aside) and the same tool calls."""

    async def judge(question: str, cached: CachedAnswer, fresh: CachedAnswer) -> bool:
        return _same_calls(cached, fresh) and cached.text.strip() == fresh.text.strip()

    return judge


def embedding_judge(embed: Embed, min_similarity: float) -> Judge:
    """The same tool calls, and answer embeddings at least `min_similarity` alike."""

    async def judge(question: str, cached: CachedAnswer, fresh: CachedAnswer) -> bool:
        if not _same_calls(cached, fresh):
            return False
        a, b = await asyncio.gather(embed(cached.text), embed(fresh.text))
        return float(np.dot(a, b)) >= min_similarity

    return judge


def model_judge(backend: ModelBackend) -> Judge:
    """The same tool calls, and the model says "yes" to "do these answers agree?".
    Raises what the model call raises (the verification is then not counted)."""

    async def judge(question: str, cached: CachedAnswer, fresh: CachedAnswer) -> bool:
        if not _same_calls(cached, fresh):
            return False
        if cached.text.strip() == fresh.text.strip():
            return True
        prompt = f"Question: {question}\n\nAnswer A: {cached.text}\n\nAnswer B: {fresh.text}"
        request = GenerationRequest(
            f"cache-judge-{uuid.uuid4().hex}",
            SamplingOptions(max_tokens=4, temperature=0, json_schema={"enum": ["yes", "no"]}),
            messages=[
                {"role": "system", "content": _INSTRUCTIONS},
                {"role": "user", "content": prompt + "\n\nDo A and B agree?"},
            ],
        )
        text = "".join([chunk.text async for chunk in backend.stream(request)])
        return text.strip().strip('"') == "yes"

    return judge
