"""The judges of a verification: exact, by answer embeddings, by asking a model."""

from __future__ import annotations

import numpy as np

from gateway.cache.judge import embedding_judge, exact_judge, model_judge
from gateway.cache.redis_store import CachedAnswer
from schemas.generation import ToolCallPart
from tests.fakes import ScriptedModel

CALL = ToolCallPart(0, "call_1", "weather", '{"city": "Paris"}')
OTHER_CALL = ToolCallPart(0, "call_2", "weather", '{"city": "Rome"}')


def answer(text: str, *calls: ToolCallPart) -> CachedAnswer:
    return CachedAnswer(text, 3, calls, "tool_calls" if calls else "stop")


async def test_exact_counts_any_rewording_as_a_disagreement() -> None:
    judge = exact_judge()
    assert await judge("q", answer("Yes."), answer(" Yes.\n"))
    assert not await judge("q", answer("Yes."), answer("Yes!"))
    assert await judge("q", answer("", CALL), answer("", CALL))
    assert not await judge("q", answer("", CALL), answer("", OTHER_CALL))


async def test_embedding_judge_compares_answer_vectors() -> None:
    vectors = {"a": np.array([1.0, 0.0]), "b": np.array([0.96, 0.28]), "c": np.array([0.0, 1.0])}

    async def embed(text: str) -> np.ndarray:
        return vectors[text]

    judge = embedding_judge(embed, 0.95)
    assert await judge("q", answer("a"), answer("b"))  # 0.96 alike
    assert not await judge("q", answer("a"), answer("c"))
    assert not await judge("q", answer("a", CALL), answer("a", OTHER_CALL))  # calls first


async def test_model_judge_asks_for_a_constrained_yes_or_no() -> None:
    says_yes, says_no = ScriptedModel(('"', "yes", '"')), ScriptedModel(('"no"',))
    question = "Is it legal to record a phone call?"
    assert await model_judge(says_yes)(question, answer("Yes."), answer("Yes, it is."))
    assert not await model_judge(says_no)(question, answer("Yes."), answer("No."))
    [request] = says_yes.calls
    assert request.sampling.json_schema == {"enum": ["yes", "no"]}
    assert request.sampling.temperature == 0 and request.messages is not None
    assert question in request.messages[-1]["content"]
    assert "Yes, it is." in request.messages[-1]["content"]
    # The same text needs no model; different tool calls never agree.
    silent = ScriptedModel()
    assert await model_judge(silent)("q", answer("Yes."), answer("Yes."))
    assert not await model_judge(silent)("q", answer("", CALL), answer("", OTHER_CALL))
    assert silent.calls == []
